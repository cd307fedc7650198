package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// TestNonceCacheAgainstModel drives the replay cache through random
// traffic with time moving on (the ring buffers grow, wrap and are swept)
// and compares every answer with a plain map: a nonce is refused exactly
// while it was seen less than the TTL ago, per key.
func TestNonceCacheAgainstModel(t *testing.T) {
	const ttl = time.Second
	c := newNonceCache(1<<20, ttl) // never full here
	model := map[string]time.Time{}
	r := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(1_700_000_000, 0)
	keys := []string{"k1", "k2", "k3"}
	for i := 0; i < 50_000; i++ {
		now = now.Add(time.Duration(r.IntN(200)) * time.Microsecond)
		key, nonce := keys[r.IntN(len(keys))], strconv.Itoa(r.IntN(3000))
		id := key + "\x00" + nonce
		want := nonceNew
		if seen, ok := model[id]; ok && now.Sub(seen) < ttl {
			want = nonceReplayed
		}
		if got := c.add(key, nonce, now); got != want {
			t.Fatalf("op %d: add(%s, %s) = %d, want %d", i, key, nonce, got, want)
		}
		if want == nonceNew {
			model[id] = now
		}
	}
	live := 0
	for _, seen := range model {
		if now.Sub(seen) < ttl {
			live++
		}
	}
	// Sweeping is lazy (per shard, on the next add there): never fewer
	// entries than live ones, never more than ever accepted.
	if n := c.len(); n < live || n > len(model) {
		t.Fatalf("cache holds %d entries; %d are live, %d were ever accepted", n, live, len(model))
	}
}

// TestNonceCacheBounded: memory stays within the configured size; when a
// shard is full the cache says so instead of forgetting a nonce early;
// space comes back once entries expire.
func TestNonceCacheBounded(t *testing.T) {
	const ttl = 10 * time.Minute
	c := newNonceCache(64*16, ttl) // 16 per shard
	now := time.Unix(1_700_000_000, 0)
	var accepted []string
	full := 0
	for i := 0; i < 5000; i++ {
		n := fmt.Sprintf("n-%d", i)
		switch c.add("key", n, now) {
		case nonceNew:
			accepted = append(accepted, n)
		case nonceFull:
			full++
		default:
			t.Fatalf("fresh nonce %s reported as replayed", n)
		}
	}
	if len(accepted) != 64*16 || c.len() != 64*16 || full != 5000-64*16 {
		t.Fatalf("accepted %d, holds %d, refused %d as full; want exactly 1024 held", len(accepted), c.len(), full)
	}
	// Full, yet nothing forgotten: every accepted nonce is still a replay.
	for _, n := range accepted {
		if got := c.add("key", n, now.Add(ttl-time.Nanosecond)); got != nonceReplayed {
			t.Fatalf("nonce %s forgotten before its time (add = %d)", n, got)
		}
	}
	// After the TTL the entries expire and the cache takes new ones again.
	later := now.Add(ttl)
	for i := 0; i < 64*16; i++ {
		if got := c.add("key", fmt.Sprintf("m-%d", i), later); got == nonceReplayed {
			t.Fatalf("fresh nonce refused as a replay after expiry")
		}
	}
	if got := c.add("key", accepted[0], later.Add(time.Second)); got == nonceReplayed {
		t.Fatal("an expired nonce is still refused")
	}
	if c.len() > 64*16 {
		t.Fatalf("cache holds %d entries, bound is 1024", c.len())
	}
}

// TestReplayCacheFullAnswers503: a full replay cache makes the server
// answer 503 with Retry-After and a clear message, and nothing is stored.
func TestReplayCacheFullAnswers503(t *testing.T) {
	e := newFuzzEnv(t)
	e.srv.nonces = newNonceCache(0, 2*time.Duration(dcapi.TimestampWindowNs)) // 16 per shard
	agentHex := identity.PublicHex(e.agent)
	for held, i := 0, 0; held < 64*16; i++ {
		if e.srv.nonces.add(agentHex, fmt.Sprintf("filler-%d", i), time.Now()) == nonceNew {
			held++
		}
	}
	path := dcapi.APIPrefix + "/providers/" + e.provider + "/heartbeat"
	body := []byte(`{"version":"1.0.0","provisionerType":"script","capabilities":null,"activeContracts":0}`)
	ts := strconv.FormatInt(time.Now().UnixNano(), 10)
	nonce := uuid.NewString()
	req := httptest.NewRequest("POST", path, bytes.NewReader(body))
	req.Header.Set(dcapi.HeaderTimestamp, ts)
	req.Header.Set(dcapi.HeaderNonce, nonce)
	req.Header.Set(dcapi.HeaderAgentPubkey, agentHex)
	req.Header.Set(dcapi.HeaderSignature, identity.SignRequest(e.agent, ts, nonce, "POST", path, body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	e.srv.ServeHTTP(rec, req)
	var env dcapi.Envelope[json.RawMessage]
	_ = json.Unmarshal(rec.Body.Bytes(), &env)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" || env.Success || !strings.Contains(env.Error, "replay cache is full") {
		t.Fatalf("full replay cache: %d Retry-After=%q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body.String())
	}
	st, err := e.srv.st.AgentStatus(context.Background(), e.provider, time.Now().UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	if st.LastHeartbeatNs != nil {
		t.Fatalf("a refused heartbeat was stored: %+v", st)
	}
}
