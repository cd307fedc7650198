package dcapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// liveAgentStatus is an answer of the live API (one status per provider,
// api/src/database/agent_delegations.rs AgentStatus: no agents field).
const liveAgentStatus = `{"providerPubkey":"ab","online":true,"lastHeartbeatNs":5,"version":"0.6.0","provisionerType":"proxmox","capabilities":[],"activeContracts":2,"resources":null}`

// TestAgentStatusAgents: the agents list of dc-api's default profile is
// parsed; the live API's answer has none (nil, not an error); a malformed
// list is refused with a message naming the field.
func TestAgentStatusAgents(t *testing.T) {
	withAgents := strings.TrimSuffix(liveAgentStatus, "}") +
		`,"agents":[{"keyPrefix":"0123abcd","online":true,"lastHeartbeatNs":5,"provisionerType":"proxmox","activeContracts":2},` +
		`{"keyPrefix":"ffee0011","online":false,"lastHeartbeatNs":1,"provisionerType":null,"activeContracts":0}]}`
	proxmox := "proxmox"
	for _, tc := range []struct {
		name, data string
		want       []ProviderAgent
		err        string
	}{
		{name: "live: none", data: liveAgentStatus},
		{name: "default: two", data: withAgents, want: []ProviderAgent{
			{KeyPrefix: "0123abcd", Online: true, LastHeartbeatNs: 5, ProvisionerType: &proxmox, ActiveContracts: 2},
			{KeyPrefix: "ffee0011", LastHeartbeatNs: 1}}},
		{name: "a whole key", data: strings.Replace(withAgents, "0123abcd", strings.Repeat("ab", 32), 1), err: "agents[0].keyPrefix"},
		{name: "control characters", data: strings.Replace(withAgents, "ffee0011", `\u001b[2Jx`, 1), err: "agents[1].keyPrefix"},
		{name: "negative count", data: strings.Replace(withAgents, `"activeContracts":0}`, `"activeContracts":-1}`, 1), err: "agents[1].activeContracts is -1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, _ := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
				if !strings.HasSuffix(s.Path, "/agent-status") {
					t.Errorf("path %s", s.Path)
				}
				writeEnvelope(w, 200, json.RawMessage(tc.data), "")
			})
			st, err := newClient(t, srv.URL).AgentStatus(context.Background())
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !IsPermanent(err) {
					t.Fatalf("error %v, want a permanent one with %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !st.Online || st.ActiveContracts != 2 || len(st.Agents) != len(tc.want) {
				t.Fatalf("status %+v", st)
			}
			for i, a := range st.Agents {
				w := tc.want[i]
				if a.KeyPrefix != w.KeyPrefix || a.Online != w.Online || a.LastHeartbeatNs != w.LastHeartbeatNs || a.ActiveContracts != w.ActiveContracts ||
					(a.ProvisionerType == nil) != (w.ProvisionerType == nil) || a.ProvisionerType != nil && *a.ProvisionerType != *w.ProvisionerType {
					t.Fatalf("agent %d: %+v, want %+v", i, a, w)
				}
			}
		})
	}
}

// FuzzAgentStatus: any agent-status data either fails to parse or to
// validate, or every agent's keyPrefix is 8 lowercase hex characters (safe
// to print) and its count not negative.
func FuzzAgentStatus(f *testing.F) {
	f.Add([]byte(liveAgentStatus))
	f.Add([]byte(`{"online":true,"agents":[{"keyPrefix":"0123abcd","online":true,"lastHeartbeatNs":5,"provisionerType":"docker","activeContracts":1}]}`))
	f.Add([]byte(`{"agents":[{"keyPrefix":"\u001b[2J0000"}]}`))
	f.Add([]byte(`{"agents":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var st AgentStatus
		if json.Unmarshal(data, &st) != nil {
			return
		}
		if err := st.Validate(); err != nil {
			if !strings.HasPrefix(err.Error(), "agent-status: agents[") {
				t.Fatalf("error %q does not name the field", err)
			}
			return
		}
		for _, a := range st.Agents {
			if len(a.KeyPrefix) != AgentKeyPrefixLen || strings.Trim(a.KeyPrefix, "0123456789abcdef") != "" || a.ActiveContracts < 0 {
				t.Fatalf("accepted %+v", a)
			}
		}
	})
}
