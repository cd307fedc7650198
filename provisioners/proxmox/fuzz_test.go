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

// FuzzClusterResources feeds answers of /cluster/resources to the parser
// and the lookups built on it: nothing may panic, accepted nodes and
// guests have names that may go into request paths.
func FuzzClusterResources(f *testing.F) {
	for _, s := range []string{
		`[{"type":"node","node":"pve1","status":"online","maxmem":68719476736,"mem":2147483648,"maxcpu":16,"hastate":"maintenance"},{"type":"storage","id":"storage/pve1/ceph-vm","node":"pve1","storage":"ceph-vm","shared":1,"maxdisk":100,"disk":1,"status":"available"},{"type":"qemu","id":"qemu/101","vmid":101,"node":"pve1","name":"dc-` + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" + `","status":"running","template":0,"tags":"dc-agent;dc-replaces-100","lock":"clone","maxmem":2147483648,"maxcpu":2}]`,
		`[{"type":"qemu","vmid":5,"node":"../x"}]`, `[{"type":"node","node":"a b"}]`, `[{"type":"storage","shared":true}]`, `[{"template":"1"}]`, `{}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseResources(b)
		if err != nil {
			return
		}
		for n := range v.nodes {
			if !nodeNameRe.MatchString(n) {
				t.Fatalf("node %q accepted", n)
			}
		}
		var es []vmEntry
		for _, r := range v.vms {
			if r.VMID < 100 || !nodeNameRe.MatchString(r.Node) {
				t.Fatalf("guest %+v accepted", r)
			}
			es = append(es, vmEntry{node: r.Node, vmid: r.VMID, name: r.Name, tags: r.Tags, status: r.Status, online: v.online(r.Node)})
		}
		for _, group := range contractVMs(es) {
			if e, ok := best(group); ok && e.replacedBy != 0 {
				t.Fatalf("best picked a replaced VM: %+v", e)
			}
		}
		_ = replaced(string(b))
	})
}
