package pveapi

import (
	"fmt"
	"os"
	"testing"

	"github.com/decent-stuff/dc-agent/internal/sim/pve"
)

// TestOptions configure StartTest.
type TestOptions struct {
	// Version of PVE (default 9.1.1).
	Version string
	// Timing of tasks (default pve.FastTiming: milliseconds).
	Timing *pve.Timing
	// Dir is the state directory (default a t.TempDir()).
	Dir string
	// Nodes, SharedStorage, TemplateStorage and NodeTemplates make a
	// cluster (see pve.InitOptions); the API runs on pve1.
	Nodes           int
	SharedStorage   bool
	TemplateStorage string
	NodeTemplates   bool
}

// TestSim is a running simulator with template 9000 and the
// least-privilege agent token.
type TestSim struct {
	*Sim
	TokenID string
	Secret  string
}

// StartTest starts a fresh simulated node "pve1" (or cluster
// pve1..pveN, its API on pve1) on a free loopback port and stops it when
// the test ends.
func StartTest(t testing.TB, o TestOptions) *TestSim {
	t.Helper()
	if o.Timing == nil {
		ft := pve.FastTiming()
		o.Timing = &ft
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	store, err := pve.OpenOrCreate(o.Dir, pve.InitOptions{Version: o.Version, Template: 9000, AgentToken: true, Timing: o.Timing,
		Nodes: o.Nodes, SharedStorage: o.SharedStorage, TemplateStorage: o.TemplateStorage, NodeTemplates: o.NodeTemplates})
	if err != nil {
		t.Fatal(err)
	}
	sim, err := Start(store, "pve1", "127.0.0.1:0", nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sim.Close() })
	ts := &TestSim{Sim: sim, TokenID: pve.AgentTokenID}
	if err := store.View(func(st *pve.State) error {
		ts.Secret, _ = st.TokenSecret(pve.AgentTokenID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return ts
}

// Update changes the simulator's state (faults, timing, capacity).
func (s *TestSim) Update(t testing.TB, fn func(st *pve.State) error) {
	t.Helper()
	if err := s.Store.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// ProvisionerTOML is the [provisioner] sections of a dc-agent.toml that
// drive this simulator with the agent's token, template 9000 and the
// simulator's certificate; it writes the token's secret to secretFile
// (0600). more are further lines of [provisioner.proxmox] (node, timing).
func (s *TestSim) ProvisionerTOML(t testing.TB, secretFile, more string) string {
	t.Helper()
	if err := os.WriteFile(secretFile, []byte(s.Secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`[provisioner]
type = "proxmox"

[provisioner.proxmox]
api_url = %q
api_token_id = %q
api_token_secret_file = %q
template_vmid = 9000
tls_fingerprint = %q
%s
`, s.URL, s.TokenID, secretFile, s.Fingerprint, more)
}
