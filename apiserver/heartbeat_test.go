package apiserver_test

import (
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// TestHeartbeatBodies: dc-api remembers an agent's last heartbeat body and
// what it decoded to. A repeated body, a changed one of the same length, an
// invalid one repeated, and malformed JSON after a good body are each
// answered and stored as if nothing were remembered.
func TestHeartbeatBodies(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *apitest.Server) {
		prov := srv.NewProvider("P")
		agent := srv.NewAgent(prov)
		path := dcapi.APIPrefix + "/providers/" + prov.Pubkey + "/heartbeat"
		beat := func(body string) reply {
			t.Helper()
			return send(t, srv.URL, signedReq{method: "POST", path: path, body: []byte(body), key: agent})
		}
		steps := []struct {
			body    string
			status  int
			version string // stored afterwards
			active  int
			errPart string
		}{
			{`{"version":"1.0.0","provisionerType":"docker","activeContracts":1}`, 200, "1.0.0", 1, ""},
			{`{"version":"1.0.0","provisionerType":"docker","activeContracts":1}`, 200, "1.0.0", 1, ""},
			{`{"version":"1.0.1","provisionerType":"docker","activeContracts":2}`, 200, "1.0.1", 2, ""}, // same length
			{`{"version":"1.0.1","provisionerType":"docker","activeContracts":2}`, 200, "1.0.1", 2, ""},
			{`{"version":"","provisionerType":"docker","activeContracts":2}`, 422, "1.0.1", 2, "version is required"},
			{`{"version":"","provisionerType":"docker","activeContracts":2}`, 422, "1.0.1", 2, "version is required"},
			{`{"version":"1.0.1","provisionerType":"docker","activeContracts":2`, 400, "1.0.1", 2, "malformed JSON"},
			{`{"version":"1.0.1","provisionerType":"docker","activeContracts":-1}`, 422, "1.0.1", 2, "out of range"},
			{`{"version":"1.0.1","provisionerType":"docker","activeContracts":2}`, 200, "1.0.1", 2, ""},
			{`{"version":"2.0.0","provisionerType":"docker","activeContracts":3}`, 200, "2.0.0", 3, ""},
		}
		for i, st := range steps {
			got := beat(st.body)
			if got.status != st.status || (st.errPart != "" && !strings.Contains(got.env.Error, st.errPart)) {
				t.Fatalf("step %d %s: %d %q; want %d %q", i, st.body, got.status, got.env.Error, st.status, st.errPart)
			}
			as := srv.AgentStatus(prov)
			if as.Version == nil || *as.Version != st.version || as.ActiveContracts != st.active {
				t.Fatalf("step %d %s: stored %+v; want version %s, %d active", i, st.body, as, st.version, st.active)
			}
		}
	})
}
