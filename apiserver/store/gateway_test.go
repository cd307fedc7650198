package store

import (
	"context"
	"testing"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// The gateway's tables on both databases: a dc_id belongs to one
// provider, records only under one's own dc_id, no duplicate, delete of
// nothing succeeds; bandwidth snapshots, newest wins.
func TestGatewayStore(t *testing.T) {
	eachDB(t, func(t *testing.T, s *Store) {
		ctx := context.Background()
		const a, b = "provider-a", "provider-b"
		reg, err := s.RegisterGateway(ctx, a, "dc-lk", "https://api.example.org/", 1)
		if err != nil || reg.AcmeDNSServerURL != "https://api.example.org/api/v1/acme-dns" {
			t.Fatalf("register: %+v %v", reg, err)
		}
		again, err := s.RegisterGateway(ctx, a, "dc-lk", "https://api.example.org", 2)
		if err != nil || again.AcmeDNSPassword == reg.AcmeDNSPassword {
			t.Fatalf("re-register: %v (new password: %v)", err, again.AcmeDNSPassword != reg.AcmeDNSPassword)
		}
		if _, err := s.RegisterGateway(ctx, b, "dc-lk", "https://x", 3); KindOf(err) != KindConflict {
			t.Fatalf("another provider's dc_id: %v", err)
		}
		create := dcapi.GatewayDNSRequest{Action: dcapi.GatewayDNSCreate, Slug: "k7m2p4", DCID: "dc-lk", PublicIP: "198.51.100.7"}
		const fqdn = "k7m2p4.dc-lk.gw.decent-cloud.org"
		if err := s.GatewayDNS(ctx, b, create, fqdn, 4); KindOf(err) != KindForbidden {
			t.Fatalf("create under another's dc_id: %v", err)
		}
		if err := s.GatewayDNS(ctx, a, create, fqdn, 4); err != nil {
			t.Fatal(err)
		}
		if err := s.GatewayDNS(ctx, a, create, fqdn, 5); KindOf(err) != KindConflict {
			t.Fatalf("duplicate: %v", err)
		}
		if recs, err := s.DNSRecords(ctx, a); err != nil || len(recs) != 1 || recs[0].FQDN != fqdn || recs[0].CreatedAtNs != 4 {
			t.Fatalf("records %+v %v", recs, err)
		}
		if recs, _ := s.DNSRecords(ctx, b); len(recs) != 0 {
			t.Fatalf("b's records %+v", recs)
		}
		del := dcapi.GatewayDNSRequest{Action: dcapi.GatewayDNSDelete, Slug: "k7m2p4", DCID: "dc-lk"}
		for range 2 {
			if err := s.GatewayDNS(ctx, a, del, fqdn, 6); err != nil {
				t.Fatal(err)
			}
		}
		if recs, _ := s.DNSRecords(ctx, ""); len(recs) != 0 {
			t.Fatalf("records after delete %+v", recs)
		}

		const cid = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
		for i, in := range []uint64{10, 30, 20} {
			if err := s.RecordBandwidth(ctx, a, []dcapi.VMBandwidthReport{{GatewaySlug: "k7m2p4", ContractID: cid, BytesIn: in, BytesOut: 1 << 62}}, int64(10+i)); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.LatestBandwidth(ctx, a)
		if err != nil || got[cid].BytesIn != 20 || got[cid].BytesOut != 1<<62 || got[cid].RecordedAtNs != 12 {
			t.Fatalf("latest %+v %v", got, err)
		}
		if err := s.RecordBandwidth(ctx, a, []dcapi.VMBandwidthReport{{GatewaySlug: "k7m2p4", ContractID: cid, BytesIn: 1 << 63}}, 20); KindOf(err) != KindInvalid {
			t.Fatalf("out of range count: %v", err)
		}
	})
}
