package provisioners

import (
	"encoding/json"
	"slices"
	"testing"
)

// FuzzMergeConfig feeds contract data (both configs come from the API) to
// MergeConfig: nothing may panic, every failure is permanent, and an
// accepted merge sets no top-level key the policy refuses, nor leaves a key
// of the instance_config out.
func FuzzMergeConfig(f *testing.F) {
	for _, s := range [][2]string{
		{`{"template":"ubuntu-24.04","ipconfig0":"ip=dhcp"}`, `{"template":"debian-12"}`},
		{`{"template":"ubuntu-24.04"}`, `{"ipconfig0":"ip=10.0.0.5/24"}`},
		{`{"net":{"bridge":"vmbr0"}}`, `{"net":{"vlan":7}}`},
		{`{"net":1}`, `{"net":{"vlan":7},"hostname":"web1"}`},
		{``, `null`},
		{`null`, `{"template":9000}`},
		{`[]`, `{}`},
		{`{}`, `{"template":"debian-12","template":"x"}`},
		{`{"a":{"b":{"c":{}}}}`, `{"net":{"a":{"b":1}}}`},
	} {
		f.Add(s[0], s[1])
	}
	pol := ConfigPolicy{Type: "proxmox", Allow: []string{"hostname"}, Keys: []RequesterKey{
		{Name: "template", Check: OneOf("debian-12", "ubuntu-24.04")},
		{Name: "net"},
	}}
	settable := []string{"hostname", "template", "net"}
	f.Fuzz(func(t *testing.T, offering, instance string) {
		got, err := MergeConfig(offering, instance, pol)
		if err != nil {
			if RetryPossible(err) {
				t.Fatalf("retryable error for contract data: %v", err)
			}
			return
		}
		var over map[string]any
		if json.Unmarshal([]byte(instance), &over) != nil {
			return // empty or null
		}
		for k, v := range over {
			if !slices.Contains(settable, k) {
				t.Fatalf("instance_config key %q accepted", k)
			}
			if k == "template" && v != "debian-12" && v != "ubuntu-24.04" {
				t.Fatalf("template %v accepted", v)
			}
			if _, ok := got[k]; !ok {
				t.Fatalf("instance_config key %q missing from the merge %v", k, got)
			}
		}
	})
}
