package proxmox

import (
	"testing"

	"github.com/decent-stuff/dc-agent/config"
)

// FuzzParseInputs feeds what comes from outside (instance ids from the API,
// sizes and agent settings from a template's config) to their parsers:
// nothing may panic, and an accepted id must print back to itself.
func FuzzParseInputs(f *testing.F) {
	for _, s := range []string{"pve1/101", "101", "pve1/", "/101", "a/b/c", "3584M", "1.5T", "enabled=1,fstrim_cloned_disks=1", ""} {
		f.Add(s)
	}
	p := &Provisioner{cfg: config.ProxmoxConfig{Node: "pve1"}}
	f.Fuzz(func(t *testing.T, s string) {
		if node, vmid, err := p.parseExternalID(s); err == nil {
			if vmid < 100 || !nodeNameRe.MatchString(node) {
				t.Fatalf("%q accepted as %s/%d", s, node, vmid)
			}
			if n2, v2, err := p.parseExternalID(ExternalID(node, vmid)); err != nil || n2 != node || v2 != vmid {
				t.Fatalf("%q does not round-trip: %s/%d %v", s, n2, v2, err)
			}
		}
		_, _ = parseSize(s)
		_ = agentOn(s)
	})
}
