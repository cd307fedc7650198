package apiserver_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestSharedReplayCache (issue 15, finding 7): several dc-api instances on
// one database refuse each other's replays with --replay-cache database:
// a signed request served by one is refused by the other within the
// window. On PostgreSQL and on one SQLite file.
func TestSharedReplayCache(t *testing.T) {
	for name, dsn := range map[string]func(t testing.TB) string{
		"postgres": testutil.PostgresDB,
		"sqlite":   func(t testing.TB) string { return "sqlite:" + filepath.Join(t.TempDir(), "shared.db") },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			db := dsn(t)
			a := apitest.Start(t, apitest.WithDB(db), apitest.WithReplayCache(apiserver.ReplayCacheDatabase))
			b := apitest.Start(t, apitest.WithDB(db), apitest.WithReplayCache(apiserver.ReplayCacheDatabase))
			p := a.NewProvider("Twice Served")
			agent := a.NewAgent(p)
			req := signedReq{method: "POST", path: "/api/v1/providers/" + p.Pubkey + "/heartbeat", key: agent,
				body: []byte(`{"version":"1.0.0","provisionerType":"script","capabilities":null,"activeContracts":0}`), ts: time.Now().UnixNano(), nonce: "4a7c3e1e-9d5b-4c1e-8f3a-2b6d9e0f1a2b"}
			if r := send(t, a.URL, req); r.status != 200 {
				t.Fatalf("first instance: %d %s", r.status, r.raw)
			}
			for name, srv := range map[string]*apitest.Server{"the other instance": b, "the same instance": a} {
				if r := send(t, srv.URL, req); r.status != 401 || !strings.Contains(r.env.Error, "replayed request") {
					t.Fatalf("replay to %s: %d %s, want 401 replayed", name, r.status, r.raw)
				}
			}
			// A request with another nonce still passes on either.
			req.nonce = "5b8d4f2f-0e6c-4d2f-9a4b-3c7e0f1b2c3d"
			if r := send(t, b.URL, req); r.status != 200 {
				t.Fatalf("a fresh request to the other instance: %d %s", r.status, r.raw)
			}
			// Nonces of requests the window refuses are deleted.
			n, err := a.Store.ExpireNonces(context.Background(), time.Now().Add(time.Minute).UnixNano())
			if err != nil || n != 2 {
				t.Fatalf("expire: %d, %v; want the 2 recorded", n, err)
			}
		})
	}
}
