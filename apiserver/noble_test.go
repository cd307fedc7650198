package apiserver_test

import (
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
)

// TestRequestsSignedByNoble: requests and a delegation signed by an
// independent implementation (@noble/curves ed25519ph under node, from
// PROTOCOL.md) are accepted by the server: the provider registers the agent
// with a noble-signed delegation in a noble-signed request, then the agent's
// noble-signed heartbeat, long-poll and status update go through.
func TestRequestsSignedByNoble(t *testing.T) {
	t.Parallel()
	testutil.JSDir(t)
	srv := apitest.Start(t)
	provKey, _ := identity.GenerateKey()
	agentKey, _ := identity.GenerateKey()
	prov := srv.AddProvider(provKey, "noble")
	agentHex := identity.PublicHex(agentKey)
	cid := srv.CreateContract(prov, apitest.ContractSpec{})

	type nodeOut struct {
		Delegations []struct{ Provider, Signature string } `json:"delegations"`
		Requests    []struct {
			Timestamp, Nonce, Pubkey, Signature string
		} `json:"requests"`
	}
	node := func(in any) nodeOut {
		var out nodeOut
		if err := json.Unmarshal(testutil.RunNode(t, "sign-requests.mjs", mustJSON(t, in)), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	perms := []string{"provision", "fetch_contracts", "heartbeat", "health_check"} // unsorted on purpose
	d := node(map[string]any{"delegations": []map[string]any{{
		"provider_seed": hex.EncodeToString(provKey.Seed()), "agent": agentHex, "permissions": perms,
		"expires_at_ns": nil, "label": "noble agent",
	}}}).Delegations[0]
	if d.Provider != prov.Pubkey {
		t.Fatalf("node derived provider key %s, Go %s", d.Provider, prov.Pubkey)
	}
	label := "noble agent"
	delegBody := string(mustJSON(t, dcapi.CreateDelegationRequest{AgentPubkey: agentHex, Permissions: perms, Label: &label, Signature: d.Signature}))

	p := dcapi.APIPrefix + "/providers/" + prov.Pubkey
	reqs := []struct {
		seed               []byte
		provider           bool
		method, path, body string
		want               int
	}{
		{provKey.Seed(), true, "POST", p + "/agent-delegations", delegBody, 201},
		{agentKey.Seed(), false, "POST", p + "/heartbeat", `{"version":"js-1.0","provisionerType":"script","capabilities":["vm"],"activeContracts":0}`, 200},
		{agentKey.Seed(), false, "GET", p + "/contracts/pending-provision?waitSeconds=0", "", 200},
		{agentKey.Seed(), false, "PUT", dcapi.APIPrefix + "/provider/rental-requests/" + cid + "/provisioning", `{"status":"provisioning","instanceDetails":""}`, 200},
		{provKey.Seed(), true, "GET", p + "/agent-delegations", "", 200},
	}
	var in []map[string]any
	for _, r := range reqs {
		in = append(in, map[string]any{"seed": hex.EncodeToString(r.seed), "method": r.method, "path": r.path, "body": r.body})
	}
	signed := node(map[string]any{"requests": in}).Requests
	for i, r := range reqs {
		s := signed[i]
		req, _ := http.NewRequest(r.method, srv.URL+r.path, strings.NewReader(r.body))
		req.Header.Set(dcapi.HeaderTimestamp, s.Timestamp)
		req.Header.Set(dcapi.HeaderNonce, s.Nonce)
		req.Header.Set(dcapi.HeaderSignature, s.Signature)
		if r.provider {
			req.Header.Set(dcapi.HeaderPublicKey, s.Pubkey)
		} else {
			req.Header.Set(dcapi.HeaderAgentPubkey, s.Pubkey)
		}
		if r.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		a := roundTrip(t, req)
		if a.status != r.want {
			t.Fatalf("noble-signed %s %s: %d %s", r.method, r.path, a.status, a.body)
		}
		if i == 2 && !strings.Contains(a.body, cid) {
			t.Fatalf("pending-provision answer lacks the contract: %s", a.body)
		}
	}
	if dl := srv.Delegation(prov, agentHex); !dl.Active(srv.Now().UnixNano()) || *dl.Label != label || len(dl.Permissions) != 4 {
		t.Fatalf("stored delegation = %+v", dl)
	}
	if st := srv.AgentStatus(prov); !st.Online || *st.Version != "js-1.0" {
		t.Fatalf("heartbeat not stored: %+v", st)
	}
	if s := srv.ContractStatus(cid); s != dcapi.StatusProvisioning {
		t.Fatalf("contract = %s", s)
	}
}
