package setup

import (
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/config"
)

// Host output is outside input: a compromised or odd node must not make
// the parsers panic, and what they accept must be well-formed.

func FuzzParsePVEVersion(f *testing.F) {
	for _, s := range []string{"pve-manager/9.1.1/42db4a6cf33dac83 (running kernel: 6.14.8-2-pve)", "pve-manager/8.4.1/2a5fa54a8503f96d",
		"pve-manager/7.4-3/9002ab8a", "bash: pveversion: command not found", "pve-manager//", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParsePVEVersion(s)
		if err == nil && (v.Version == "" || !strings.HasPrefix(v.Version, strings.Split(v.Version, ".")[0])) {
			t.Fatalf("accepted %q as %+v", s, v)
		}
	})
}

func FuzzParseChecksums(f *testing.F) {
	f.Add("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef *noble.img\n", "noble.img", 64)
	f.Add("SHA256 (noble.img) = 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", "noble.img", 64)
	f.Add("# comment\nzz  x\n", "x", 128)
	f.Fuzz(func(t *testing.T, list, file string, n int) {
		hexLen := 64
		if n%2 == 1 {
			hexLen = 128
		}
		sum, err := ParseChecksums(list, file, hexLen)
		if err == nil && (len(sum) != hexLen || !hexRe.MatchString(sum)) {
			t.Fatalf("accepted checksum %q", sum)
		}
	})
}

func FuzzParseHostJSON(f *testing.F) {
	for _, s := range []string{
		`[{"node":"pve1","status":"online","ssl_fingerprint":"AA:BB"}]`,
		`[{"storage":"local-lvm","type":"lvmthin","content":"images,rootdir","active":1,"enabled":1,"avail":429496729600,"total":1e12}]`,
		`[{"iface":"vmbr0","type":"bridge","active":"1","cidr":"10.0.0.1/24"}]`,
		`[{"vmid":9000,"name":"t","node":"pve1","type":"qemu","template":1,"tags":"dc-agent;dc-template"}]`,
		`[{"userid":"dc-agent@pve","enable":1,"tokens":[{"tokenid":"agent","comment":"dc-agent provisioning","privsep":1}]},{"userid":"root@pam"}]`,
		`{"data":[]}`, `[{"vmid":"x"}]`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if nodes, err := ParseNodes(b); err == nil {
			for _, n := range nodes {
				if n.Node == "" {
					t.Fatal("node without name accepted")
				}
			}
		}
		if toks, err := ParseAgentTokens(b); err == nil {
			for _, tk := range toks {
				if !tokenNameRe.MatchString(tk.Name) {
					t.Fatalf("token name %q accepted", tk.Name)
				}
			}
		}
		_, _ = ParseStorages(b)
		_, _ = ParseBridges(b)
		if vms, err := ParseVMs(b); err == nil {
			for _, v := range vms {
				if v.VMID < 100 {
					t.Fatalf("VMID %d accepted", v.VMID)
				}
			}
		}
	})
}

func FuzzNormalizeSSHFingerprint(f *testing.F) {
	for _, s := range []string{"SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s", "uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s=", "MD5:aa:bb", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fp, err := NormalizeSSHFingerprint(s)
		if err == nil {
			if len(fp) != 50 || !strings.HasPrefix(fp, "SHA256:") {
				t.Fatalf("accepted %q as %q", s, fp)
			}
			if again, err := NormalizeSSHFingerprint(fp); err != nil || again != fp {
				t.Fatalf("not idempotent: %q -> %q (%v)", fp, again, err)
			}
		}
	})
}

func FuzzAcceptDelegation(f *testing.F) {
	f.Add("dcds1:ZGVjZW50LWNsb3VkIGFnZW50IGRlbGVnYXRpb24gdjEK", "aa")
	f.Add("dcdr1:", "")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, code, agent string) {
		sd, _, err := AcceptDelegation(code, agent, "", timeZero)
		if err == nil && sd.AgentPubkey != agent {
			t.Fatalf("accepted a delegation for %q as agent %q", sd.AgentPubkey, agent)
		}
	})
}

var timeZero = time.Unix(1_700_000_000, 0)

func FuzzParseClusterResources(f *testing.F) {
	for _, s := range []string{
		`[{"type":"node","node":"pve1","status":"online"},{"type":"node","node":"pve2","status":"offline"},{"type":"storage","node":"pve1","storage":"ceph-vm","shared":1},{"id":"qemu/9000","type":"qemu","vmid":9000,"node":"pve1","name":"t","template":1,"tags":"dc-agent"}]`,
		`[{"type":"node","node":"-bad","status":"online"}]`, `[{"type":"pool","id":"/pool/x"}]`, `[{"type":"storage","shared":"1"}]`, `{}`, `null`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseClusterResources(b)
		if err != nil {
			return
		}
		if len(c.Online) == 0 {
			t.Fatalf("accepted a cluster without an online node: %q", b)
		}
		for _, n := range append(append([]string{}, c.Online...), c.Offline...) {
			if !config.ValidNodeName(n) {
				t.Fatalf("node name %q accepted", n)
			}
		}
		for _, v := range c.VMs {
			if v.VMID < 100 || !config.ValidNodeName(v.Node) {
				t.Fatalf("VM %+v accepted", v)
			}
		}
	})
}
