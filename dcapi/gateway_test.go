package dcapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// The gateway endpoints as the live server has them
// (api/src/openapi/agents.rs): signed POSTs with camelCase bodies, answers
// in the envelope, handler errors as HTTP 200 success:false.
func TestGatewayEndpoints(t *testing.T) {
	srv, requests := verifyingServer(t, func(w http.ResponseWriter, r *http.Request, s seen) {
		var body map[string]any
		_ = json.Unmarshal([]byte(s.Body), &body)
		switch {
		case s.Path == "/api/v1/agents/dns" && body["slug"] == "zzzzzz":
			writeEnvelope(w, 200, nil, "dc_id 'dc-lk' is not registered to this provider")
		case s.Path == "/api/v1/agents/dns":
			writeEnvelope(w, 200, map[string]string{"subdomain": body["slug"].(string) + ".dc-lk.gw.decent-cloud.org"}, "")
		case s.Path == "/api/v1/agents/gateway/register":
			writeEnvelope(w, 200, map[string]string{"acmeDnsServerUrl": "https://api.decent-cloud.org/api/v1/acme-dns",
				"acmeDnsUsername": "u1", "acmeDnsPassword": "secret-pw", "acmeDnsSubdomain": "u1"}, "")
		default:
			http.NotFound(w, r)
		}
	})
	c := newClient(t, srv.URL)
	ctx := context.Background()

	got, err := c.GatewayDNS(ctx, GatewayDNSRequest{Action: GatewayDNSCreate, Slug: "k7m2p4", DCID: "dc-lk", PublicIP: "198.51.100.7"})
	if err != nil || got.Subdomain != "k7m2p4.dc-lk.gw.decent-cloud.org" {
		t.Fatalf("create: %+v %v", got, err)
	}
	if _, err := c.GatewayDNS(ctx, GatewayDNSRequest{Action: GatewayDNSDelete, Slug: "k7m2p4", DCID: "dc-lk", PublicIP: "198.51.100.7"}); err != nil {
		t.Fatal(err)
	}
	_, err = c.GatewayDNS(ctx, GatewayDNSRequest{Action: GatewayDNSCreate, Slug: "zzzzzz", DCID: "dc-lk", PublicIP: "198.51.100.7"})
	if err == nil || !strings.Contains(err.Error(), "not registered to this provider") {
		t.Fatalf("success:false must be an error with the server's text: %v", err)
	}
	reg, err := c.RegisterGateway(ctx, "dc-lk")
	if err != nil || reg.AcmeDNSPassword != "secret-pw" || reg.AcmeDNSServerURL == "" || reg.AcmeDNSSubdomain != "u1" {
		t.Fatalf("register: %+v %v", reg, err)
	}
	if strings.Contains(reg.String(), "secret-pw") || strings.Contains(reg.String(), "secret") {
		t.Fatalf("String shows the password: %s", reg)
	}
	// Refused before anything is sent.
	for _, bad := range []GatewayDNSRequest{{Action: "update", Slug: "k7m2p4", DCID: "dc-lk"}, {Action: GatewayDNSCreate, Slug: "k7m2p4", DCID: "dc-lk"}} {
		if _, err := c.GatewayDNS(ctx, bad); err == nil {
			t.Errorf("%+v was sent", bad)
		}
	}

	rs := requests()
	if len(rs) != 4 {
		t.Fatalf("%d requests, want 4", len(rs))
	}
	for i, want := range []string{
		`{"action":"create","slug":"k7m2p4","dcId":"dc-lk","publicIp":"198.51.100.7"}`,
		`{"action":"delete","slug":"k7m2p4","dcId":"dc-lk"}`,
	} {
		if rs[i].Method != "POST" || rs[i].Body != want {
			t.Errorf("request %d: %s %s, want body %s", i, rs[i].Method, rs[i].Body, want)
		}
	}
	if rs[3].Path != "/api/v1/agents/gateway/register" || rs[3].Body != `{"dcId":"dc-lk"}` {
		t.Errorf("register request %+v", rs[3])
	}
	hb, _ := json.Marshal(Heartbeat{ActiveContracts: 1, BandwidthStats: []VMBandwidthReport{{GatewaySlug: "k7m2p4", ContractID: contractID, BytesIn: 1, BytesOut: 2}}})
	if !strings.Contains(string(hb), `"bandwidthStats":[{"gatewaySlug":"k7m2p4","contractId":"`+contractID+`","bytesIn":1,"bytesOut":2}]`) {
		t.Errorf("heartbeat %s", hb)
	}
	if err := CheckContractID(contractID); err != nil || CheckContractID("../x") == nil || CheckContractID(strings.ToUpper(contractID)) == nil {
		t.Error("CheckContractID")
	}
}
