package all

import (
	"slices"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/provisioners/digitalocean"
	"github.com/decent-stuff/dc-agent/provisioners/docker"
	"github.com/decent-stuff/dc-agent/provisioners/hetzner"
	"github.com/decent-stuff/dc-agent/provisioners/manual"
	"github.com/decent-stuff/dc-agent/provisioners/proxmox"
	"github.com/decent-stuff/dc-agent/provisioners/script"
	"github.com/decent-stuff/dc-agent/provisioners/vultr"
)

func TestRegistryHasBuiltins(t *testing.T) {
	types := Registry().Types()
	for _, want := range []string{config.TypeScript, config.TypeManual, config.TypeProxmox, config.TypeHetzner, config.TypeDigitalOcean, config.TypeVultr, config.TypeDocker} {
		if !slices.Contains(types, want) {
			t.Errorf("registry %v lacks %s", types, want)
		}
	}
	for _, typ := range types {
		if !slices.Contains(config.ProvisionerTypes, typ) {
			t.Errorf("registered type %q is not a config.ProvisionerTypes entry", typ)
		}
	}
}

// The requester-settable keys of every backend, so that widening what a
// contract's instance_config may set is a visible decision (docs/agent.md).
func TestRequesterSettableKeys(t *testing.T) {
	for _, tc := range []struct {
		p    any
		want []string // nil: RequesterSettable not implemented, no keys
	}{
		{&proxmox.Provisioner{}, []string{"template", "nameserver"}},
		{&hetzner.Provisioner{}, []string{"architecture"}},
		{&digitalocean.Provisioner{}, nil},
		{&vultr.Provisioner{}, nil},
		{&docker.Provisioner{}, nil},
		{&script.Provisioner{}, nil},
		{&manual.Provisioner{}, []string{provisioners.AnyKey}},
	} {
		var got []string
		if rs, ok := tc.p.(provisioners.RequesterSettable); ok {
			for _, k := range rs.RequesterKeys() {
				got = append(got, k.Name)
			}
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%T: requester-settable keys %q, want %q", tc.p, got, tc.want)
		}
	}
}
