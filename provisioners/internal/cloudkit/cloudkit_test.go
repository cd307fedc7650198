package cloudkit

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/provisioners"
)

func TestRateGateWaitsForReset(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	var calls int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls++
		if calls == 1 {
			w.Header().Set("RateLimit-Remaining", "0")
			w.Header().Set("RateLimit-Reset", strconv.FormatInt(now.Add(30*time.Second).Unix(), 10))
		} else {
			w.Header().Set("RateLimit-Remaining", "10")
		}
	}))
	defer ts.Close()
	var slept []time.Duration
	g := &Transport{MaxWait: 20 * time.Second, Now: func() time.Time { return now },
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	hc := &http.Client{Transport: g}
	for range 3 {
		resp, err := hc.Get(ts.URL)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	// The second request waits (capped at MaxWait); after a response with
	// quota left, the third does not.
	if len(slept) != 1 || slept[0] != 20*time.Second {
		t.Fatalf("slept %v", slept)
	}
	// Garbage headers are ignored.
	g.observe(http.Header{"Ratelimit-Remaining": {"0"}, "Ratelimit-Reset": {"soon"}})
	g.observe(http.Header{"Ratelimit-Remaining": {"x"}})
	if g.ResetIn() != 0 {
		t.Fatal("garbage reset honoured")
	}
}

// A 429 is retried after Retry-After with the body replayed; a POST answered
// 503 is not retried (it may have been processed), a GET is.
func TestTransportRetries(t *testing.T) {
	var n atomic.Int32
	var bodies []string
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b))
		switch k := n.Add(1); {
		case r.URL.Path == "/429" && k == 1:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusTooManyRequests)
		case r.URL.Path == "/503":
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer ts.Close()
	var slept []time.Duration
	tr := &Transport{Retries: 2, MaxWait: time.Minute, Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }}
	hc := &http.Client{Transport: tr}
	ctx, st := WithStatus(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, ts.URL+"/429", strings.NewReader(`{"a":1}`))
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != 200 || st.Code() != 200 {
		t.Fatalf("%v %v %d", resp, err, st.Code())
	}
	resp.Body.Close()
	if len(slept) != 1 || slept[0] != 7*time.Second || len(bodies) != 2 || bodies[1] != `{"a":1}` {
		t.Fatalf("slept %v bodies %q", slept, bodies)
	}

	n.Store(0)
	slept, bodies = nil, nil
	resp, err = hc.Post(ts.URL+"/503", "application/json", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != 503 || len(bodies) != 1 {
		t.Fatalf("POST 503: %v %v, %d tries", resp, err, len(bodies))
	}
	resp.Body.Close()
	resp, err = hc.Get(ts.URL + "/503")
	if err != nil || resp.StatusCode != 503 || len(bodies) != 4 || len(slept) != 2 {
		t.Fatalf("GET 503: %v %v, %d tries, slept %v", resp, err, len(bodies), slept)
	}
	resp.Body.Close()

	// A wait beyond MaxWait hands the 429 to the caller at once.
	n.Store(0)
	tr.MaxWait = time.Second
	slept = nil
	resp, err = hc.Get(ts.URL + "/429")
	if err != nil || resp.StatusCode != 429 || len(slept) != 0 {
		t.Fatalf("long Retry-After: %v %v slept %v", resp, err, slept)
	}
	resp.Body.Close()
}

// Rate limit headers come from the network.
func FuzzRateLimitHeaders(f *testing.F) {
	f.Add("0", "1700000000")
	f.Add("12", "")
	f.Add("-5", "99999999999999999999")
	f.Add("0", "-1")
	f.Fuzz(func(t *testing.T, remaining, reset string) {
		now := time.Unix(1_700_000_000, 0)
		g := &Transport{MaxWait: time.Minute, Now: func() time.Time { return now }}
		g.observe(http.Header{"Ratelimit-Remaining": {remaining}, "Ratelimit-Reset": {reset}})
		if d := g.ResetIn(); d < 0 {
			t.Fatalf("negative wait %v", d)
		}
		if n, err := strconv.Atoi(remaining); (err != nil || n > 0) && g.ResetIn() != 0 {
			t.Fatalf("blocked by remaining=%q reset=%q", remaining, reset)
		}
		if d, ok := RetryAfter(http.Header{"Retry-After": {reset}}, now); ok && (d < 0 || d > 24*time.Hour+time.Second && !strings.Contains(reset, "GMT")) {
			t.Fatalf("Retry-After %q -> %v", reset, d)
		}
	})
}

func TestCloudConfig(t *testing.T) {
	req := provisioners.Request{ContractID: strings.Repeat("ab", 32), PostProvisionScript: "#!/bin/bash\necho \"$(id)\"\n---\nruncmd: [rm -rf /]\n"}
	u := UserData{Provider: "Test", MaxBytes: 32 << 10, HasKey: true}
	ud, err := u.CloudConfig(req)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(ud, "rm -rf") || strings.Count(ud, "runcmd:") != 1 || !strings.Contains(ud, "ssh_pwauth: false") || strings.Contains(ud, "chpasswd") {
		t.Fatalf("script leaked into YAML:\n%s", ud)
	}
	if !strings.Contains(ud, base64.StdEncoding.EncodeToString([]byte(req.PostProvisionScript))) {
		t.Fatalf("script missing:\n%s", ud)
	}
	req.PostProvisionScript = strings.Repeat("x", 32<<10)
	if _, err := u.CloudConfig(req); err == nil || provisioners.RetryPossible(err) || !strings.Contains(err.Error(), "Test's limit") {
		t.Fatalf("oversized: %v", err)
	}
	if _, err := (UserData{RootPasswordHash: "x'\nruncmd: [x]"}).CloudConfig(provisioners.Request{}); err == nil {
		t.Fatal("a non-hash was written as the password hash")
	}
}

// The hash cloud-init gets verifies the password the requester gets.
func TestRootPassword(t *testing.T) {
	plain, hash, err := RootPassword()
	if err != nil {
		t.Fatal(err)
	}
	if len(plain) != 24 || !strings.HasPrefix(hash, "$6$") || strings.Contains(hash, plain) {
		t.Fatalf("%q %q", plain, hash)
	}
	ud, err := UserData{RootPasswordHash: hash}.CloudConfig(provisioners.Request{ContractID: strings.Repeat("cd", 32)})
	if err != nil || !strings.Contains(ud, "password: '"+hash+"'") || !strings.Contains(ud, "ssh_pwauth: true") {
		t.Fatalf("%v\n%s", err, ud)
	}
	// glibc's format, checked by an independent implementation: openssl
	// recomputes the hash from the password and the salt.
	parts := strings.Split(hash, "$") // "", "6", salt, digest
	if len(parts) != 4 {
		t.Fatalf("hash %q", hash)
	}
	openssl := testutil.RequireBinary(t, "openssl")
	for _, pw := range []string{plain, plain + "x"} {
		cmd := exec.Command(openssl, "passwd", "-6", "-salt", parts[2], "-stdin")
		cmd.Stdin = strings.NewReader(pw + "\n")
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(out)); (got == hash) != (pw == plain) {
			t.Fatalf("openssl gives %q for %q, hash %q", got, pw, hash)
		}
	}
	plain2, _, _ := RootPassword()
	if plain2 == plain {
		t.Fatal("passwords repeat")
	}
}

func TestAccessAndNames(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(sp)))
	a, err := RequestAccess(provisioners.Request{RequesterSSHPubkey: " " + line + " user@host"})
	if err != nil || !a.HasKey() || !SameKey(a.Line, line) {
		t.Fatalf("%+v %v", a, err)
	}
	if _, err := RequestAccess(provisioners.Request{}); err == nil || provisioners.RetryPossible(err) {
		t.Fatalf("no key, no password: %v", err)
	}
	if a, err := RequestAccess(provisioners.Request{WantPassword: true}); err != nil || a.HasKey() {
		t.Fatalf("password: %+v %v", a, err)
	}
	if _, err := RequestAccess(provisioners.Request{RequesterSSHPubkey: "ssh-rsa nope"}); err == nil || provisioners.RetryPossible(err) {
		t.Fatalf("bad key: %v", err)
	}
	if n := KeyName(sp); !strings.HasPrefix(n, KeyNamePrefix) || len(n) != len(KeyNamePrefix)+16 {
		t.Fatalf("key name %q", n)
	}
	id := strings.Repeat("0f", 32)
	if h := HostName(id); len(h) != 63 || h != "dc-"+id[:60] {
		t.Fatalf("host name %q", h)
	}
	if got, err := ContractID(" " + strings.ToUpper(id) + "\n"); err != nil || got != id {
		t.Fatalf("%q %v", got, err)
	}
	for _, bad := range []string{"", id[:63], id + "0", strings.Repeat("g", 64)} {
		if _, err := ContractID(bad); err == nil || provisioners.RetryPossible(err) {
			t.Errorf("contract id %q accepted", bad)
		}
	}
	if SameKey(line, "ssh-ed25519 AAAA") {
		t.Fatal("garbage matches")
	}
}

func TestStarts(t *testing.T) {
	var s Starts
	if _, ok := s.Get("a"); ok {
		t.Fatal("empty has a")
	}
	at := time.Unix(5, 0)
	s.Mark("a", at)
	if got, ok := s.Get("a"); !ok || !got.Equal(at) {
		t.Fatal(got)
	}
	s.Forget("a")
	if _, ok := s.Get("a"); ok {
		t.Fatal("forgotten a")
	}
}

// The datacenter city comes from the offering.
func FuzzChooseRegion(f *testing.F) {
	for _, s := range []string{"Helsinki", "Ashburn, VA", " nürnberg ", "", ",", "Frankfurt"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, city string) {
		r, why := ChooseRegion(provisioners.Request{DatacenterCity: city}, "region", map[string]string{"Frankfurt": "fra1", "frankfurt ": "fra2"}, map[string]string{"helsinki": "hel1"}, "def")
		if r == "" || why == "" {
			t.Fatalf("%q -> %q (%s)", city, r, why)
		}
		if NormCity(city) == "frankfurt" && r != "fra1" {
			t.Fatalf("%q -> %q: table order not deterministic", city, r)
		}
	})
}

// Tags come back from the API and can be edited by anyone with the token.
func FuzzContractIDFromTags(f *testing.F) {
	f.Add("dc-agent", "dc-contract-"+strings.Repeat("a", 64), "dc-sshkey-12")
	f.Add("dc-agent", "dc-contract-ABC", "")
	f.Add("x", "dc-contract-"+strings.Repeat("b", 64), "dc-contract-"+strings.Repeat("c", 64))
	f.Fuzz(func(t *testing.T, a, b, c string) {
		tags := []string{a, b, c}
		id := ContractIDFromTags(tags)
		if id == "" {
			return
		}
		if !IsContractID(id) || !HasTag(tags, TagManaged) || !HasTag(tags, ContractTag(id)) {
			t.Fatalf("accepted %q from %q", id, tags)
		}
		if k := KeyIDFromTags(tags); k != "" && !HasTag(tags, KeyTag(k)) {
			t.Fatalf("key id %q not from %q", k, tags)
		}
	})
}

func TestNeed(t *testing.T) {
	n := NeedOf(provisioners.Request{MemoryMB: 2048, StorageGB: 50})
	if n != (Need{Cores: 1, MemMB: 2048, DiskGB: 50}) || n.String() != "1 vCPUs, 2048 MB memory, 50 GB disk" {
		t.Fatalf("%+v %q", n, n)
	}
	for _, c := range []struct {
		cores       int
		memMB, disk int64
		fits        bool
	}{{1, 2048, 50, true}, {4, 8192, 160, true}, {0, 2048, 50, false}, {1, 2047, 50, false}, {1, 2048, 49, false}} {
		if got := n.Fits(c.cores, c.memMB, c.disk); got != c.fits {
			t.Errorf("Fits(%d, %d, %d) = %v", c.cores, c.memMB, c.disk, got)
		}
	}
}

func TestPickAndNamed(t *testing.T) {
	type mt struct {
		name  string
		size  int
		avail bool
	}
	types := []mt{{"c", 4, true}, {"a", 2, false}, {"b", 4, true}, {"d", 1, true}}
	name := func(m mt) string { return m.name }
	bySize := func(a, b mt) int { return cmp.Or(cmp.Compare(a.size, b.size), cmp.Compare(a.name, b.name)) }
	fits := func(m mt) bool { return m.size >= 2 }
	avail := func(m mt) bool { return m.avail }
	if best, un, ok := Pick(types, fits, avail, bySize, name); !ok || best.name != "b" || un != nil {
		t.Fatalf("%v %v %v", best, un, ok)
	}
	if _, un, ok := Pick(types, func(m mt) bool { return m.size == 2 }, avail, bySize, name); ok || len(un) != 1 || un[0] != "a" {
		t.Fatalf("only unavailable: %v %v", un, ok)
	}
	if _, un, ok := Pick(types, func(mt) bool { return false }, avail, bySize, name); ok || un != nil {
		t.Fatalf("nothing fits: %v %v", un, ok)
	}
	if m, _, ok := Named(types, name, "a"); !ok || m.size != 2 {
		t.Fatalf("named a: %v %v", m, ok)
	}
	if _, valid, ok := Named(types, name, "x"); ok || valid != "a, b, c, d" {
		t.Fatalf("named x: %q %v", valid, ok)
	}
}
