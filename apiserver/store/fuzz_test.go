package store

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// FuzzInstanceDetails: any instanceDetails string is either refused with an
// error or accepted with an external id — and an accepted one never carries
// a root_password that is not a sealed credential.
func FuzzInstanceDetails(f *testing.F) {
	f.Add(`{"external_id":"vm-1","ip_address":"10.0.0.1","ssh_port":22}`)
	f.Add(`{"external_id":"vm-1","root_password":"hunter2"}`)
	f.Add(`{"external_id":"vm-1","root_password":"{\"version\":2,\"ephemeral_pubkey\":\"\",\"nonce\":\"\",\"ciphertext\":\"\",\"aad\":\"\"}"}`)
	f.Add(`{"error":"no capacity","retry_possible":true}`)
	f.Add(`null`)
	f.Add(`{"external_id":"vm-1","ip_address":"10.77.0.2","public_ip":"203.0.113.1","gateway_slug":"k7m2p4","gateway_subdomain":"k7m2p4.dc-lk.gw.decent-cloud.org","gateway_ssh_port":20000,"gateway_port_range_start":20000,"gateway_port_range_end":20009}`)
	const cid = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	f.Fuzz(func(t *testing.T, details string) {
		info, err := parseInstanceDetails(details, cid)
		if err == nil {
			if info.ExternalID == "" {
				t.Fatalf("accepted without an external id: %q", details)
			}
			var raw map[string]any
			if json.Unmarshal([]byte(details), &raw) != nil {
				t.Fatalf("accepted details that are not a JSON object: %q", details)
			}
			if g := ParseGatewayAccess(details); g != nil && (CheckGatewaySlug(g.Slug) != nil || g.SSHPort < 0 || g.SSHPort > 65535) {
				t.Fatalf("accepted a gateway with slug %q, ssh port %d", g.Slug, g.SSHPort)
			}
			if pw, ok := raw["root_password"].(string); ok && pw != "" {
				var sc map[string]any
				if json.Unmarshal([]byte(pw), &sc) != nil || sc["version"] != float64(2) {
					t.Fatalf("accepted a root_password that is not a sealed credential: %q", pw)
				}
			}
		} else if KindOf(err) != KindInvalid {
			t.Fatalf("refusal of kind %d: %v", KindOf(err), err)
		}
		fd, err := parseFailureDetails(details)
		if err == nil && strings.TrimSpace(fd.Error) == "" && fd.Error == "" {
			t.Fatalf("failure accepted without an error message: %q", details)
		}
	})
}

// FuzzSealDetails: whatever instanceDetails a live-profile agent reports,
// what is stored never holds a plaintext root_password: a password that is
// not already sealed for this contract comes out sealed to the requester
// key (and opens to the same password) or, with no requester key, not at
// all; everything else is kept.
func FuzzSealDetails(f *testing.F) {
	const cid = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
	requester, _ := identity.GenerateKey()
	sealed, _ := identity.Seal([]byte("s3cret"), requester.Public().(ed25519.PublicKey), cid)
	sealedJSON, _ := json.Marshal(sealed)
	f.Add(`{"external_id":"vm-1","root_password":"hunter2"}`, true)
	f.Add(`{"external_id":"vm-1","root_password":"hunter2"}`, false)
	f.Add(`{"external_id":"vm-1","root_password":`+string(sealedJSON)+`}`, true)
	f.Add(`{"root_password":"{\"version\":2}","root_password":"x"}`, true)
	f.Add(`not json at all, root_password=hunter2`, true)
	f.Add(`{"external_id":7,"root_password":7}`, true)
	f.Fuzz(func(t *testing.T, details string, withKey bool) {
		c := &Contract{}
		c.ContractID = cid
		if withKey {
			c.RequesterPubkey = identity.PublicHex(requester)
		}
		stored, _, err := sealDetails(details, c)
		if err != nil {
			t.Fatalf("sealDetails(%q): %v", details, err)
		}
		var in map[string]json.RawMessage
		if json.Unmarshal([]byte(details), &in) != nil || in == nil {
			if stored != details {
				t.Fatalf("details that are not an object changed: %q -> %q", details, stored)
			}
			return
		}
		var pw string
		if json.Unmarshal(in["root_password"], &pw) != nil || pw == "" || checkSealed(pw, cid) == nil {
			if stored != details {
				t.Fatalf("details without a plaintext password changed: %q -> %q", details, stored)
			}
			return
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal([]byte(stored), &out); err != nil {
			t.Fatalf("stored details are not an object: %q", stored)
		}
		for k, v := range in {
			if k != "root_password" && string(out[k]) != string(v) {
				t.Fatalf("field %s changed: %s -> %s", k, v, out[k])
			}
		}
		raw, ok := out["root_password"]
		if !withKey {
			if ok {
				t.Fatalf("a password with no key to seal it to was stored: %s", stored)
			}
			return
		}
		var got string
		if err := json.Unmarshal(raw, &got); err != nil || checkSealed(got, cid) != nil {
			t.Fatalf("stored root_password is not sealed: %s", raw)
		}
		if plain, err := identity.Open(got, requester); err != nil || string(plain) != pw {
			t.Fatalf("the requester opens %q, %v; want %q", plain, err, pw)
		}
	})
}

// FuzzRecordBandwidth: whatever bandwidthStats a heartbeat carries, the
// store keeps them only when every entry names a contract and a slug and
// its counts fit, and then the latest snapshot is exactly what was sent.
func FuzzRecordBandwidth(f *testing.F) {
	f.Add("k7m2p4", "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff", uint64(1), uint64(2))
	f.Add("K7M2P4", "nope", uint64(1)<<63, uint64(0))
	s, err := Open(context.Background(), "sqlite:"+filepath.Join(f.TempDir(), "fuzz.db"), Options{Policy: testPolicy})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	f.Fuzz(func(t *testing.T, slug, cid string, in, out uint64) {
		r := dcapi.VMBandwidthReport{GatewaySlug: slug, ContractID: cid, BytesIn: in, BytesOut: out}
		err := s.RecordBandwidth(context.Background(), "fuzz-provider", []dcapi.VMBandwidthReport{r}, time.Now().UnixNano())
		if err != nil {
			if KindOf(err) != KindInvalid {
				t.Fatalf("refusal of kind %d: %v", KindOf(err), err)
			}
			return
		}
		got, err := s.LatestBandwidth(context.Background(), "fuzz-provider")
		if err != nil || got[cid].VMBandwidthReport != r {
			t.Fatalf("stored %+v, sent %+v (%v)", got[cid], r, err)
		}
	})
}
