package apiserver_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/dcapi"
)

// The gateway endpoints in both profiles: a dc_id is registered to one
// provider (acme-dns credentials, live's API_PUBLIC_URL rule), DNS records
// go to the fake zone only for a registered dc_id, a duplicate create is
// refused and a delete of nothing succeeds (as Cloudflare behind live);
// heartbeats' bandwidthStats are stored; the dashboard shows a contract's
// gateway.
func TestGatewayEndpoints(t *testing.T) {
	eachProfile(t, func(t *testing.T, profile string) {
		ctx := context.Background()
		bare := newEnv(t, profile)
		if _, err := bare.srv.Client(bare.prov, bare.agent).RegisterGateway(ctx, "dc-lk"); err == nil || !strings.Contains(err.Error(), "API_PUBLIC_URL not set") {
			t.Fatalf("register without a public URL: %v", err)
		}

		e := newEnv(t, profile, apitest.WithPublicURL("https://api.example.org/"))
		c := e.srv.Client(e.prov, e.agent)
		dns := func(action, slug, dcID, ip string) (string, error) {
			r, err := c.GatewayDNS(ctx, dcapi.GatewayDNSRequest{Action: action, Slug: slug, DCID: dcID, PublicIP: ip})
			return r.Subdomain, err
		}
		if _, err := dns(dcapi.GatewayDNSCreate, "k7m2p4", "dc-lk", "198.51.100.7"); err == nil || !strings.Contains(err.Error(), "dc_id 'dc-lk' is not registered to this provider") {
			t.Fatalf("create before register: %v", err)
		}
		reg, err := c.RegisterGateway(ctx, "dc-lk")
		if err != nil {
			t.Fatal(err)
		}
		if reg.AcmeDNSServerURL != "https://api.example.org/api/v1/acme-dns" || reg.AcmeDNSUsername == "" || len(reg.AcmeDNSPassword) < 30 || reg.AcmeDNSSubdomain != reg.AcmeDNSUsername {
			t.Fatalf("registration %+v", reg)
		}
		if _, err := c.RegisterGateway(ctx, "-bad"); err == nil || !strings.Contains(err.Error(), "Invalid dc_id") {
			t.Fatalf("bad dc_id: %v", err)
		}
		other := e.srv.NewProvider("Other")
		oc := e.srv.Client(other, e.srv.NewPoolAgent(e.srv.NewPool(other, "us", "na", "docker")))
		if _, err := oc.RegisterGateway(ctx, "dc-lk"); err == nil || !strings.Contains(err.Error(), "already registered to a different provider") {
			t.Fatalf("another provider's dc_id: %v", err)
		}
		if _, err := dns(dcapi.GatewayDNSCreate, "k7m2p4", "dc-lk", ""); err == nil {
			t.Fatal("create without a public IP accepted")
		}
		if _, err := dns(dcapi.GatewayDNSCreate, "K7M2P4", "dc-lk", "198.51.100.7"); err == nil || !strings.Contains(err.Error(), "Invalid slug") {
			t.Fatalf("bad slug: %v", err)
		}
		sub, err := dns(dcapi.GatewayDNSCreate, "k7m2p4", "dc-lk", "198.51.100.7")
		if err != nil || sub != "k7m2p4.dc-lk.gw.decent-cloud.org" {
			t.Fatalf("create: %q %v", sub, err)
		}
		if _, err := dns(dcapi.GatewayDNSCreate, "k7m2p4", "dc-lk", "198.51.100.7"); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("duplicate create: %v", err)
		}
		if _, err := oc.GatewayDNS(ctx, dcapi.GatewayDNSRequest{Action: dcapi.GatewayDNSDelete, Slug: "k7m2p4", DCID: "dc-lk"}); err == nil {
			t.Fatal("another provider deleted the record")
		}
		recs, err := e.srv.Store.DNSRecords(ctx, "")
		if err != nil || len(recs) != 1 || recs[0].FQDN != sub || recs[0].PublicIP != "198.51.100.7" || recs[0].ProviderPubkey != e.prov.Pubkey {
			t.Fatalf("zone %+v %v", recs, err)
		}
		for range 2 { // a delete of nothing succeeds
			if got, err := dns(dcapi.GatewayDNSDelete, "k7m2p4", "dc-lk", ""); err != nil || got != sub {
				t.Fatalf("delete: %q %v", got, err)
			}
		}
		if recs, _ := e.srv.Store.DNSRecords(ctx, ""); len(recs) != 0 {
			t.Fatalf("zone after delete: %+v", recs)
		}

		// bandwidthStats are kept; the dashboard shows the gateway.
		stats := []dcapi.VMBandwidthReport{{GatewaySlug: "k7m2p4", ContractID: e.cid, BytesIn: 1234, BytesOut: 5678}}
		if _, err := c.Heartbeat(ctx, dcapi.Heartbeat{Version: "t", ProvisionerType: "docker", ActiveContracts: 1, BandwidthStats: stats}); err != nil {
			t.Fatal(err)
		}
		bw, err := e.srv.Store.LatestBandwidth(ctx, e.prov.Pubkey)
		if err != nil || bw[e.cid].VMBandwidthReport != stats[0] {
			t.Fatalf("bandwidth %+v %v", bw, err)
		}
		e.must(t, e.put("provisioning", ""))
		u, _ := dcapi.ProvisionedUpdate(dcapi.InstanceDetails{ExternalID: "vm-1", IPAddress: "10.10.0.9", PublicIP: "198.51.100.7",
			GatewaySlug: "k7m2p4", GatewaySubdomain: sub, GatewaySSHPort: 20000, GatewayPortRangeStart: 20000, GatewayPortRangeEnd: 20009})
		e.must(t, e.put("provisioned", u.InstanceDetails))
		if d, ok := e.srv.InstanceDetails(e.cid); !ok || d.GatewaySubdomain != sub || d.GatewaySSHPort != 20000 || d.PublicIP != "198.51.100.7" {
			t.Fatalf("stored details %+v", d)
		}
		resp, err := http.Get(e.srv.URL + "/")
		if err != nil {
			t.Fatal(err)
		}
		page, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := sub + " · ssh 198.51.100.7:20000"; !strings.Contains(string(page), want) {
			t.Fatalf("dashboard lacks %q", want)
		}
	})
}
