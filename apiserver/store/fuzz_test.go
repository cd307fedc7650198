package store

import (
	"encoding/json"
	"strings"
	"testing"
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
