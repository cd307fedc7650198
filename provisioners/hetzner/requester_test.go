package hetzner

import (
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/provisioners"
)

// A contract may pick the architecture of an automatically chosen server
// type; what the provider pays for and where stays the provider's.
func TestRequesterKeys(t *testing.T) {
	pol := provisioners.PolicyFor(&Provisioner{}, Type, nil)
	for _, tc := range []struct{ instance, want string }{
		{`{"architecture":"arm"}`, ""},
		{`{"architecture":"x86"}`, ""},
		{`{"architecture":"sparc"}`, `instance_config "architecture": value "sparc" is not accepted; use one of "x86", "arm"`},
		{`{"server_type":"ccx63"}`, `instance_config sets "server_type", which a contract may not set on this provider's hetzner backend (contracts may set: "architecture")`},
		{`{"cpu_type":"dedicated"}`, `instance_config sets "cpu_type"`},
		{`{"location":"ash"}`, `instance_config sets "location"`},
		{`{"image":"123456"}`, `instance_config sets "image"`},
	} {
		_, err := provisioners.MergeConfig(`{"server_type":"cx22"}`, tc.instance, pol)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: err = %v, want %q", tc.instance, err, tc.want)
		}
	}
}
