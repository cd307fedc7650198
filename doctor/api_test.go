package doctor

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/setup"
)

// world is a configured agent host: a real dc-api with the provider and the
// agent's registered delegation, a simulated Proxmox node with a template
// and the agent's token, and the config, key, delegation and token files.
type world struct {
	t    *testing.T
	api  *apitest.Server
	pve  *pveapi.TestSim
	prov *apitest.Provider
	cfg  string
	key  []byte
}

func newWorld(t *testing.T, delegation ...apitest.DelegationOption) *world {
	t.Helper()
	return newWorldOn(t, pveapi.TestOptions{}, delegation...)
}

// newWorldOn is newWorld on a simulated node or cluster o; a cluster's
// config places on every node (nodes = "auto").
func newWorldOn(t *testing.T, o pveapi.TestOptions, delegation ...apitest.DelegationOption) *world {
	t.Helper()
	w := &world{t: t, api: apitest.Start(t), pve: pveapi.StartTest(t, o)}
	w.prov = w.api.NewProvider("Acme")
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "agent.key")
	var err error
	if w.key, _, err = identity.EnsureAgentKey(keyPath, false); err != nil {
		t.Fatal(err)
	}
	sd := w.api.Delegate(w.prov, identity.PublicHex(w.key), delegation...)
	if err := setup.SaveDelegation(identity.DelegationPath(keyPath), sd); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "proxmox-token")
	if err := os.WriteFile(tokenFile, []byte(w.pve.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &config.Config{
		API: config.APIConfig{Endpoint: w.api.URL, ProviderPubkey: w.prov.Pubkey, AgentSecretKey: keyPath},
		Provisioner: config.ProvisionerConfig{Type: config.TypeProxmox, Proxmox: &config.ProxmoxConfig{
			APIURL: w.pve.URL, APITokenID: w.pve.TokenID, APITokenSecretFile: tokenFile, Node: "pve1",
			TemplateVMID: 9000, Templates: map[string]int{"ubuntu-24.04": 9000}, Storage: "local-lvm", Bridge: "vmbr0",
			TLSFingerprint: w.pve.Fingerprint,
		}},
	}
	if o.Nodes > 1 {
		c.Provisioner.Proxmox.Nodes = config.ProxmoxNodes{config.NodesAuto}
	}
	w.cfg = filepath.Join(dir, "dc-agent.toml")
	if err := config.Save(w.cfg, c); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *world) doctor(now func() time.Time) Report {
	return Run(context.Background(), Options{ConfigPath: w.cfg, VerifyAPI: true, Now: now, Timeout: 5 * time.Second})
}

// failure asserts a failed finding of check whose message and fix contain
// the given words.
func failure(t *testing.T, r Report, check, msg, fix string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Check == check && f.Status == Fail && strings.Contains(f.Message, msg) && strings.Contains(f.Fix, fix) {
			return
		}
	}
	t.Errorf("no %s failure with %q / fix %q in:\n%s", check, msg, fix, dump(r))
}

func dump(r Report) string {
	var b strings.Builder
	for _, f := range r.Findings {
		b.WriteString(string(f.Status) + " " + f.Check + ": " + f.Message + " | fix: " + f.Fix + "\n")
	}
	return b.String()
}

func TestDoctorGoodSetupPasses(t *testing.T) {
	w := newWorld(t)
	r := w.doctor(nil)
	if r.ExitCode() != 0 {
		t.Fatalf("good setup: exit %d\n%s", r.ExitCode(), dump(r))
	}
	for _, check := range []string{"config", "agent-key", "delegation", "proxmox", "clock", "api", "registration"} {
		if f, ok := r.Find(check); !ok || f.Status != OK {
			t.Errorf("%s: %+v", check, f)
		}
	}
}

func TestDoctorNamesEachBrokenPiece(t *testing.T) {
	t.Run("expired delegation", func(t *testing.T) {
		w := newWorld(t, apitest.ExpiresAt(time.Now().Add(-time.Hour)))
		r := w.doctor(nil)
		failure(t, r, "delegation", "expired", "dc-agent register")
		failure(t, r, "api", "refused", "delegation")
		if r.ExitCode() != 2 {
			t.Errorf("exit %d", r.ExitCode())
		}
	})
	t.Run("missing template", func(t *testing.T) {
		w := newWorld(t)
		w.pve.Update(t, func(st *pve.State) error { delete(st.VMs, 9000); return nil })
		failure(t, w.doctor(nil), "proxmox", "template 9000 (ubuntu-24.04) is missing", "--templates ubuntu-24.04")
	})
	t.Run("missing storage", func(t *testing.T) {
		w := newWorld(t)
		w.pve.Update(t, func(st *pve.State) error { delete(st.Storages, "local-lvm"); return nil })
		failure(t, w.doctor(nil), "proxmox", "storage local-lvm on node pve1", "provisioner.proxmox.storage")
	})
	t.Run("node unreachable", func(t *testing.T) {
		w := newWorld(t)
		w.pve.Close()
		failure(t, w.doctor(nil), "proxmox", "is not reachable", "port 8006")
	})
	t.Run("revoked token", func(t *testing.T) {
		w := newWorld(t)
		w.pve.Update(t, func(st *pve.State) error {
			user, tok := pve.SplitAuthID(w.pve.TokenID)
			return st.DeleteToken(pve.Root, user, tok)
		})
		failure(t, w.doctor(nil), "proxmox", "refused token "+w.pve.TokenID, "dc-agent setup proxmox")
	})
	t.Run("token lacks a privilege", func(t *testing.T) {
		w := newWorld(t)
		w.pve.Update(t, func(st *pve.State) error {
			return st.ModifyRole(pve.Root, "DCAgent", []string{"VM.Audit", "VM.Clone"}, false)
		})
		failure(t, w.doctor(nil), "proxmox", "lacks", "DCAgent")
	})
	t.Run("wrong pin", func(t *testing.T) {
		w := newWorld(t)
		c, _ := config.Load(w.cfg)
		c.Provisioner.Proxmox.TLSFingerprint = strings.Repeat("AB:", 31) + "AB"
		config.Save(w.cfg, c)
		failure(t, w.doctor(nil), "proxmox", "pins AB:AB", "pin the new one")
	})
	t.Run("skewed clock", func(t *testing.T) {
		w := newWorld(t)
		r := w.doctor(func() time.Time { return time.Now().Add(10 * time.Minute) })
		failure(t, r, "clock", "ahead of", "timedatectl set-ntp true")
		failure(t, r, "api", "refused", "fix the clock first")
		r = w.doctor(func() time.Time { return time.Now().Add(-2 * time.Minute) })
		if f, _ := r.Find("clock"); f.Status != Warn || !strings.Contains(f.Message, "behind") || r.ExitCode() != 1 {
			t.Errorf("2 minutes behind: %+v (exit %d)\n%s", f, r.ExitCode(), dump(r))
		}
	})
	t.Run("revoked delegation", func(t *testing.T) {
		w := newWorld(t)
		w.api.RevokeDelegation(w.prov, identity.PublicHex(w.key))
		failure(t, w.doctor(nil), "api", "refused", "revoked")
	})
	t.Run("unregistered delegation", func(t *testing.T) {
		w := newWorld(t)
		// A delegation kept locally but never registered.
		other, _ := identity.GenerateKey()
		c, _ := config.Load(w.cfg)
		identity.SaveAgentKey(c.AgentKeyPath(), other, true)
		sd := w.api.SignDelegation(w.prov, identity.PublicHex(other))
		setup.SaveDelegation(identity.DelegationPath(c.AgentKeyPath()), sd)
		failure(t, w.doctor(nil), "api", "refused", "dc-agent register")
	})
}

// TestDoctorNodeLoad: on a cluster the token must read every node's size
// and load (Sys.Audit on /nodes), which placement needs; without the
// grant doctor names the nodes and the grant.
func TestDoctorNodeLoad(t *testing.T) {
	w := newWorldOn(t, pveapi.TestOptions{Nodes: 3, SharedStorage: true})
	r := w.doctor(nil)
	if r.ExitCode() != 0 || !strings.Contains(dump(r), "ok proxmox: the token reads the load of node pve1, pve2, pve3") {
		t.Fatalf("good cluster: exit %d\n%s", r.ExitCode(), dump(r))
	}
	w.pve.Update(t, func(st *pve.State) error {
		st.ACL = slices.DeleteFunc(st.ACL, func(e pve.ACLEntry) bool { return e.Path == "/nodes" })
		return nil
	})
	r = w.doctor(nil)
	failure(t, r, "proxmox", "cannot read the load of node pve1, pve2, pve3", "pveum acl modify /nodes --roles PVEAuditor")
	failure(t, r, "proxmox", "lacks Sys.Audit on /nodes", "dc-agent setup proxmox")
}
