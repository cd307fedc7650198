package apiserver

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// fastEnv is a served Server with one provider and one delegated agent.
type fastEnv struct {
	srv    *Server
	addr   string
	cancel context.CancelFunc
	served chan error
}

// fastKeys are the keys both servers of a differential test share.
type fastKeys struct {
	prov, agent, stranger ed25519.PrivateKey
}

func newFastKeys() fastKeys {
	var k fastKeys
	k.prov, _ = identity.GenerateKey()
	k.agent, _ = identity.GenerateKey()
	k.stranger, _ = identity.GenerateKey()
	return k
}

func startFastEnv(t *testing.T, keys fastKeys, disable bool, clock func() time.Time, grace time.Duration) *fastEnv {
	t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, "sqlite:"+filepath.Join(t.TempDir(), "api.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := clock().UnixNano()
	prov := identity.PublicHex(keys.prov)
	if _, err := st.AddProvider(ctx, prov, "fast", now); err != nil {
		t.Fatal(err)
	}
	sd, _ := identity.Delegation{AgentPubkey: identity.PublicHex(keys.agent), ProviderPubkey: prov, Permissions: []string{identity.PermHeartbeat}}.Sign(keys.prov)
	if _, _, err := st.PutDelegation(ctx, sd, false, now); err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{Store: st, Clock: clock, MaxBodyBytes: 2048, RateLimit: -1, DisableFastPath: disable})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	e := &fastEnv{srv: srv, addr: ln.Addr().String(), cancel: cancel, served: make(chan error, 1)}
	go func() { e.served <- srv.Serve(sctx, ln, grace) }()
	t.Cleanup(func() {
		cancel()
		if err := <-e.served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return e
}

// signedHeartbeat is the raw bytes of a signed heartbeat request.
func signedHeartbeat(key ed25519.PrivateKey, provider string, ts time.Time, nonce, body string, extra string) string {
	path := dcapi.APIPrefix + "/providers/" + provider + "/heartbeat"
	t := strconv.FormatInt(ts.UnixNano(), 10)
	sig := identity.SignRequest(key, t, nonce, "POST", path, []byte(body))
	return "POST " + path + " HTTP/1.1\r\nHost: dc-api.test\r\nContent-Type: application/json\r\n" +
		"Content-Length: " + strconv.Itoa(len(body)) + "\r\nX-Timestamp: " + t + "\r\nX-Nonce: " + nonce +
		"\r\nX-Agent-Pubkey: " + identity.PublicHex(key) + "\r\nX-Signature: " + sig + "\r\n" + extra + "\r\n" + body
}

// splitMark marks the pieces of one request written separately.
const splitMark = "\x00split\x00"

// splitRaw cuts raw into n pieces, written one after the other.
func splitRaw(raw string, n int) []string {
	var out []string
	size := (len(raw) + n - 1) / n
	for i := 0; i < len(raw); i += size {
		p := raw[i:min(i+size, len(raw))]
		if i > 0 {
			p = splitMark + p
		}
		out = append(out, p)
	}
	return out
}

// answer is what a client sees of one response.
type answer struct {
	status int
	header http.Header
	body   string
}

// exchange writes raw on a new connection (in one write, or request by
// request) and reads n answers, then whether the server closed the
// connection.
func exchange(t *testing.T, addr string, raws []string, n int) ([]answer, bool) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	var out []answer
	read := func() {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading answer %d: %v", len(out)+1, err)
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("reading answer %d body: %v", len(out)+1, err)
		}
		resp.Body.Close()
		out = append(out, answer{resp.StatusCode, resp.Header, string(b)})
	}
	if len(raws) > 1 && strings.HasPrefix(raws[1], splitMark) {
		for _, r := range raws {
			if _, err := io.WriteString(c, strings.TrimPrefix(r, splitMark)); err != nil {
				t.Fatal(err)
			}
		}
		for len(out) < n {
			read()
		}
	} else if len(raws) == 1 {
		if _, err := io.WriteString(c, raws[0]); err != nil {
			t.Fatal(err)
		}
		for len(out) < n {
			read()
		}
	} else {
		for _, r := range raws {
			if _, err := io.WriteString(c, r); err != nil {
				t.Fatal(err)
			}
			read()
		}
	}
	// Closed? Half-close our side: a server keeping the connection waits
	// for more and an idle timeout; one that closed answers EOF at once.
	_ = c.(*net.TCPConn).CloseWrite()
	_, err = br.ReadByte()
	closedBefore := errors.Is(err, io.EOF)
	return out, closedBefore
}

// TestFastPathDifferential sends the same requests to a server with the
// heartbeat fast path and one without: the answers are the same (status,
// envelope, Content-Type, Content-Length, request id, Retry-After), and the
// fast path answered exactly the plain heartbeats.
func TestFastPathDifferential(t *testing.T) {
	t.Parallel()
	keys := newFastKeys()
	at := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return at }
	on := startFastEnv(t, keys, false, clock, 5*time.Second)
	off := startFastEnv(t, keys, true, clock, 5*time.Second)
	prov := identity.PublicHex(keys.prov)
	good := `{"version":"0.9.0","provisionerType":"docker","capabilities":["vm"],"activeContracts":2}`
	hb := func(nonce string, extra string) string {
		return signedHeartbeat(keys.agent, prov, at, nonce, good, "X-Request-Id: "+nonce+"\r\n"+extra)
	}
	tamper := func(raw, from, to string) string { return strings.Replace(raw, from, to, 1) }
	type scenario struct {
		name    string
		raws    []string // one: written at once; more: one by one
		answers int
		fast    int64 // heartbeats the fast path must answer
	}
	bigBody := `{"version":"` + strings.Repeat("v", 3000) + `"}`
	chunked := func() string {
		r := hb("n-chunked", "")
		head, body, _ := strings.Cut(r, "\r\n\r\n")
		head = strings.Replace(head, "Content-Length: "+strconv.Itoa(len(good)), "Transfer-Encoding: chunked", 1)
		return head + "\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", len(body), body)
	}
	scenarios := []scenario{
		{"valid", []string{hb("n-valid", "")}, 1, 1},
		{"replay on one connection", []string{hb("n-replay", ""), hb("n-replay", "")}, 2, 2},
		{"pipelined heartbeats", []string{hb("n-pipe1", "") + hb("n-pipe2", "") + hb("n-pipe3", "")}, 3, 3},
		{"heartbeat then other endpoint, pipelined", []string{hb("n-mixed", "") + "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: r-h\r\n\r\n" + hb("n-after", "")}, 3, 1},
		{"bad signature", []string{tamper(hb("n-badsig", ""), `"activeContracts":2`, `"activeContracts":3`)}, 1, 1},
		{"malformed JSON", []string{signedHeartbeat(keys.agent, prov, at, "n-json", `{"version":`, "X-Request-Id: r-json\r\n")}, 1, 1},
		{"invalid values", []string{signedHeartbeat(keys.agent, prov, at, "n-422", `{"version":""}`, "X-Request-Id: r-422\r\n")}, 1, 1},
		{"stale timestamp", []string{signedHeartbeat(keys.agent, prov, at.Add(-time.Hour), "n-stale", good, "X-Request-Id: r-stale\r\n")}, 1, 1},
		{"missing signature", []string{tamper(hb("n-nosig", ""), "X-Signature:", "X-Not-Signature:")}, 1, 1},
		{"no delegation", []string{signedHeartbeat(keys.stranger, prov, at, "n-stranger", good, "X-Request-Id: r-stranger\r\n")}, 1, 1},
		{"unknown provider", []string{signedHeartbeat(keys.agent, identity.PublicHex(keys.stranger), at, "n-noprov", good, "X-Request-Id: r-noprov\r\n")}, 1, 1},
		{"no request id", []string{signedHeartbeat(keys.agent, prov, at, "n-noid", good, "")}, 1, 1},
		{"keep-alive said", []string{hb("n-ka", "Connection: keep-alive\r\n")}, 1, 1},
		{"large head", []string{hb("n-pad", "X-Pad: "+strings.Repeat("p", 6000)+"\r\n") + hb("n-pad2", "")}, 2, 2},
		{"split in pieces", splitRaw(hb("n-split", ""), 7), 1, 1},
		{"oversized body", []string{signedHeartbeat(keys.agent, prov, at, "n-big", bigBody, "X-Request-Id: r-big\r\n")}, 1, 0},
		{"chunked", []string{chunked()}, 1, 0},
		{"connection close", []string{hb("n-close", "Connection: close\r\n")}, 1, 0},
		{"expect continue", []string{hb("n-expect", "Expect: 100-continue\r\n")}, 2, 0},
		{"duplicate signature", []string{hb("n-dup", "X-Signature: "+strings.Repeat("0", 128)+"\r\n")}, 1, 0},
		{"bare LF ends the head", []string{tamper(hb("n-lf", ""), "\r\n\r\n", "\r\n\n")}, 1, 0},
		{"HTTP/1.0", []string{tamper(hb("n-10", ""), "HTTP/1.1", "HTTP/1.0")}, 1, 0},
		{"query string", []string{tamper(hb("n-query", ""), "/heartbeat ", "/heartbeat?x=1 ")}, 1, 0},
		{"uppercase key in path", []string{tamper(hb("n-upper", ""), "/providers/"+prov, "/providers/"+strings.ToUpper(prov))}, 1, 0},
		{"missing Host", []string{tamper(hb("n-nohost", ""), "Host: dc-api.test\r\n", "")}, 1, 0},
		{"other endpoint", []string{"GET " + dcapi.APIPrefix + "/providers/" + prov + "/agent-status HTTP/1.1\r\nHost: x\r\nX-Request-Id: r-st\r\n\r\n"}, 1, 0},
		{"wrong method", []string{tamper(hb("n-put", ""), "POST ", "PUT ")}, 1, 0},
	}
	for _, sc := range scenarios {
		before := on.srv.fastServed.Load()
		a, aClosed := exchange(t, on.addr, sc.raws, sc.answers)
		b, bClosed := exchange(t, off.addr, sc.raws, sc.answers)
		if got := on.srv.fastServed.Load() - before; got != sc.fast {
			t.Errorf("%s: the fast path answered %d requests, want %d", sc.name, got, sc.fast)
		}
		if aClosed != bClosed {
			t.Errorf("%s: connection closed after: fast path %v, net/http %v", sc.name, aClosed, bClosed)
		}
		for i := range a {
			x, y := a[i], b[i]
			if x.status != y.status || x.body != y.body {
				t.Errorf("%s, answer %d:\n fast path %d %s\n net/http  %d %s", sc.name, i+1, x.status, x.body, y.status, y.body)
			}
			for _, h := range []string{"Content-Type", "Content-Length", "Retry-After", "Connection"} {
				if x.header.Get(h) != y.header.Get(h) {
					t.Errorf("%s, answer %d: %s %q (fast path) vs %q", sc.name, i+1, h, x.header.Get(h), y.header.Get(h))
				}
			}
			xid, yid := x.header.Get(dcapi.HeaderRequestID), y.header.Get(dcapi.HeaderRequestID)
			if len(xid) != len(yid) || (strings.Contains(sc.raws[0], "X-Request-Id: n-") && sc.answers == 1 && xid != yid) {
				t.Errorf("%s, answer %d: request id %q (fast path) vs %q", sc.name, i+1, xid, yid)
			}
			if (x.header.Get("Date") == "") != (y.header.Get("Date") == "") {
				t.Errorf("%s, answer %d: Date %q (fast path) vs %q", sc.name, i+1, x.header.Get("Date"), y.header.Get("Date"))
			}
		}
	}
	if off.srv.fastServed.Load() != 0 {
		t.Errorf("DisableFastPath: %d requests on the fast path", off.srv.fastServed.Load())
	}
	// Both stored the same heartbeats.
	for _, e := range []*fastEnv{on, off} {
		agents, err := e.srv.Store().Agents(context.Background(), prov)
		if err != nil || len(agents) != 1 || agents[0].ActiveContracts != 2 {
			t.Errorf("stored agents: %+v %v", agents, err)
		}
	}
}

// TestFastPathShutdown: a graceful stop closes idle fast-path connections
// at once, lets a heartbeat in flight finish and answer, then closes its
// connection too.
func TestFastPathShutdown(t *testing.T) {
	t.Parallel()
	keys := newFastKeys()
	var armed atomic.Bool
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	at := time.Now()
	clock := func() time.Time {
		if armed.Load() {
			once.Do(func() { close(entered); <-release })
		}
		return at
	}
	e := startFastEnv(t, keys, false, clock, time.Minute)
	prov := identity.PublicHex(keys.prov)
	body := `{"version":"1"}`

	idle, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idleR := bufio.NewReader(idle)
	io.WriteString(idle, signedHeartbeat(keys.agent, prov, at, "n-idle", body, ""))
	if resp, err := http.ReadResponse(idleR, nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("first heartbeat: %v %v", resp, err)
	} else {
		io.Copy(io.Discard, resp.Body)
	}

	busy, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	armed.Store(true)
	io.WriteString(busy, signedHeartbeat(keys.agent, prov, at, "n-busy", body, ""))
	<-entered // the request is in the handler
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	e.cancel()
	if _, err := idleR.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("idle connection after shutdown: %v, want it closed", err)
	}
	select {
	case err := <-e.served:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	busyR := bufio.NewReader(busy)
	resp, err := http.ReadResponse(busyR, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("in-flight heartbeat: %v %v", resp, err)
	}
	var env envelope
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || !env.Success {
		t.Fatalf("in-flight answer: %+v %v", env, err)
	}
	if _, err := busyR.ReadByte(); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("busy connection after its answer: %v, want it closed", err)
	}
	if err := <-e.served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	e.served <- nil // for the cleanup
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op)
}

// TestFastPathTakesTheAgentClient: the heartbeats of the agent's own client
// (dcapi over Go's http.Client) are the plain shape the fast path answers.
func TestFastPathTakesTheAgentClient(t *testing.T) {
	t.Parallel()
	keys := newFastKeys()
	e := startFastEnv(t, keys, false, time.Now, 5*time.Second)
	c, err := dcapi.New("http://"+e.addr, identity.PublicHex(keys.prov), keys.agent)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		resp, err := c.Heartbeat(context.Background(), dcapi.Heartbeat{Version: "0.9.0", ProvisionerType: "docker", ActiveContracts: i})
		if err != nil || !resp.Acknowledged {
			t.Fatalf("heartbeat %d: %+v %v", i, resp, err)
		}
	}
	if n := e.srv.fastServed.Load(); n != 3 {
		t.Fatalf("the fast path answered %d of the client's 3 heartbeats", n)
	}
}

// TestFastPathCloseOnce: net/http's Shutdown and the fast path's own
// shutdown both close the listener, in either order; neither may see the
// other's close as an error (a graceful stop would report it).
func TestFastPathCloseOnce(t *testing.T) {
	t.Parallel()
	st, err := store.Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "api.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := New(Config{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	to := httpTimeouts{time.Second, time.Second, time.Second, time.Second}
	for _, shutdownFirst := range []bool{true, false} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		f := newFastPath(srv, ln, to, context.Background())
		if shutdownFirst {
			if err := f.shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown: %v", err)
			}
			if err := f.Close(); err != nil {
				t.Fatalf("Close after shutdown: %v", err)
			}
		} else {
			if err := f.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := f.shutdown(context.Background()); err != nil {
				t.Fatalf("shutdown after Close: %v", err)
			}
		}
		if c, err := f.Accept(); err == nil || c != nil {
			t.Fatalf("Accept after close: %v %v", c, err)
		}
	}
}
