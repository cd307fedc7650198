package all

import (
	"slices"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
)

func TestRegistryHasBuiltins(t *testing.T) {
	types := Registry().Types()
	for _, want := range []string{config.TypeScript, config.TypeManual, config.TypeProxmox, config.TypeHetzner, config.TypeDocker} {
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
