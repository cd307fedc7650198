package setup

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
)

// clusterFixture is the fixture on pve1 of a simulated 3-node cluster.
func clusterFixture(t *testing.T, shared bool) *fixture {
	t.Helper()
	f := &fixture{t: t, host: pvehost.Start(t, pvehost.Options{Binary: hostSim, Version: "9.1.1", Nodes: 3, SharedStorage: shared}), dir: t.TempDir()}
	f.images = pvehost.StartImageServer(t, imageSpecs())
	f.pins = filepath.Join(f.dir, "state", KnownHostsFile)
	main, _ := identity.GenerateKey()
	f.prov = identity.PublicHex(main)
	return f
}

// runFlow runs the flow to the node being set up (registering later).
func runFlow(t *testing.T, o FlowOptions) *scriptUI {
	t.Helper()
	ui := &scriptUI{}
	if err := NewFlow(o, ui).Run(context.Background()); err != nil {
		t.Fatalf("%v\nasked %v", err, ui.asked)
	}
	return ui
}

func proxmoxOf(t *testing.T, path string) *config.ProxmoxConfig {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Provisioner.Proxmox
}

// TestSetupClusterLocalStorage: on a node of a cluster with the templates
// on local storage, setup copies each template to every online node,
// grants the token Sys.Audit on /nodes (and nothing more there) and the
// clone right on every copy, and writes nodes = "auto" and node_templates.
// An offline node is skipped with a warning and gets its copy on the run
// after it is back; a run with nothing to do changes nothing.
func TestSetupClusterLocalStorage(t *testing.T) {
	t.Parallel()
	f := clusterFixture(t, false)
	if err := f.host.Store.Update(func(st *pve.State) error { return st.SetNodeOffline("pve3", false) }); err != nil {
		t.Fatal(err)
	}
	o := f.flowOptions("http://127.0.0.1:9", f.prov)
	o.Answers.Templates, o.Node = []string{"ubuntu-24.04"}, "pve1"
	ui := runFlow(t, o)
	warned := false
	for _, e := range ui.events {
		if e.Kind == EventWarning && strings.Contains(e.Text, "node pve3 is offline") {
			warned = true
		}
	}
	if !warned {
		t.Error("no warning about the offline node")
	}
	px := proxmoxOf(t, o.Answers.ConfigPath)
	tpl := px.Templates["ubuntu-24.04"]
	if !px.Nodes.Auto() || px.Node != "pve1" || len(px.NodeTemplates["ubuntu-24.04"]) != 1 || px.NodeTemplates["ubuntu-24.04"]["pve2"] == 0 {
		t.Fatalf("nodes %v node %q node_templates %v", px.Nodes, px.Node, px.NodeTemplates)
	}

	if err := f.host.Store.Update(func(st *pve.State) error { return st.SetNodeOnline("pve3") }); err != nil {
		t.Fatal(err)
	}
	ui = runFlow(t, o)
	if done := ui.texts(PhaseNode, EventDone); len(done) != 3 || !strings.Contains(done[0], "pve3") {
		// the copy, the grants on it, the config
		t.Errorf("after pve3 is back: %q", done)
	}
	px = proxmoxOf(t, o.Answers.ConfigPath)
	copies := px.NodeTemplates["ubuntu-24.04"]
	if len(copies) != 2 || copies["pve3"] == 0 {
		t.Fatalf("node_templates %v", px.NodeTemplates)
	}
	tokenID := PVEUser + "!" + PVETokenName
	f.host.View(t, func(st *pve.State) {
		for node, id := range copies {
			vm := st.VMs[id]
			if vm == nil || vm.Node != node || !vm.IsTemplate() || vm.Name() != st.VMs[tpl].Name() {
				t.Errorf("copy %d on %s: %+v", id, node, vm)
			}
			if !st.Has(tokenID, "/vms/"+itoa(id), "VM.Clone") || st.Has(tokenID, "/vms/"+itoa(id), "VM.Config.Disk") {
				t.Errorf("token rights on copy %d: %v", id, st.Permissions(tokenID, "/vms/"+itoa(id)))
			}
		}
		for _, n := range []string{"pve1", "pve2", "pve3"} {
			if !st.Has(tokenID, "/nodes/"+n, "Sys.Audit") || st.Has(tokenID, "/nodes/"+n, "Sys.Modify") {
				t.Errorf("token rights on /nodes/%s: %v", n, st.Permissions(tokenID, "/nodes/"+n))
			}
		}
		if st.Has(tokenID, "/", "Sys.Audit") {
			t.Error("Sys.Audit on / as well")
		}
	})
	ui = runFlow(t, o)
	if done := ui.texts(PhaseNode, EventDone); len(done) != 0 {
		t.Errorf("a third run changed: %q", done)
	}
	if again := proxmoxOf(t, o.Answers.ConfigPath).NodeTemplates; !maps.Equal(again["ubuntu-24.04"], copies) {
		t.Errorf("node_templates changed: %v", again)
	}
}

// TestSetupClusterSharedStorage: templates on shared storage need no
// copies: every node clones from it; the config places on every node.
func TestSetupClusterSharedStorage(t *testing.T) {
	t.Parallel()
	f := clusterFixture(t, true)
	o := f.flowOptions("http://127.0.0.1:9", f.prov)
	o.Answers.Templates, o.Answers.Storage, o.Node = []string{"ubuntu-24.04"}, pve.SharedStorageID, "pve1"
	ui := runFlow(t, o)
	skipped := ui.texts(PhaseNode, EventSkipped)
	if !slices.ContainsFunc(skipped, func(s string) bool {
		return strings.Contains(s, "shared storage ceph-vm, which every node clones from")
	}) {
		t.Errorf("skipped: %q", skipped)
	}
	px := proxmoxOf(t, o.Answers.ConfigPath)
	if !px.Nodes.Auto() || len(px.NodeTemplates) != 0 || px.Storage != pve.SharedStorageID {
		t.Fatalf("nodes %v node_templates %v storage %s", px.Nodes, px.NodeTemplates, px.Storage)
	}
	f.host.View(t, func(st *pve.State) {
		if n := len(st.VMIDs()); n != 1 {
			t.Errorf("%d VMs, want the one template", n)
		}
		if !st.Has(PVEUser+"!"+PVETokenName, "/storage/"+pve.SharedStorageID, "Datastore.AllocateSpace") {
			t.Error("no datastore grant on the shared storage")
		}
	})
}

// TestSecondAgentGetsItsOwnToken: a second agent host set up against a
// node already set up gets a token of its own; the first agent's token
// and secret stay valid, and each re-run keeps its own token.
func TestSecondAgentGetsItsOwnToken(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "9.1.1")
	first := f.flowOptions("http://127.0.0.1:9", f.prov)
	first.Answers.Templates = []string{"ubuntu-24.04"}
	before := func(ui *scriptUI) []string { // discovery's note on the agents set up before
		var out []string
		for _, o := range ui.texts(PhaseConnect, EventOutput) {
			if strings.HasPrefix(o, "agents set up before") {
				out = append(out, o)
			}
		}
		return out
	}
	if got := before(runFlow(t, first)); len(got) != 0 {
		t.Errorf("a fresh node: %q", got)
	}
	second := first
	second.Answers.ConfigPath, second.Answers.StateDir = filepath.Join(t.TempDir(), "dc-agent.toml"), filepath.Join(t.TempDir(), "state")
	if got := before(runFlow(t, second)); !slices.Equal(got, []string{"agents set up before: " + PVETokenID + " (each keeps its own token)"}) {
		t.Errorf("the second agent is not told about the first: %q", got)
	}

	px1, px2 := proxmoxOf(t, first.Answers.ConfigPath), proxmoxOf(t, second.Answers.ConfigPath)
	key2, err := identity.LoadAgentKey(filepath.Join(filepath.Dir(second.Answers.ConfigPath), "agent.key"))
	if err != nil {
		t.Fatal(err)
	}
	if px1.APITokenID != PVEUser+"!"+PVETokenName || px2.APITokenID != PVEUser+"!"+PVETokenName+"-"+identity.PublicHex(key2)[:8] {
		t.Fatalf("tokens %s and %s", px1.APITokenID, px2.APITokenID)
	}
	secret := func(px *config.ProxmoxConfig) string {
		s, err := identity.ReadSecretFile(px.APITokenSecretFile)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	f.host.View(t, func(st *pve.State) {
		for _, px := range []*config.ProxmoxConfig{px1, px2} {
			if v, ok := st.TokenSecret(px.APITokenID); !ok || v != secret(px) {
				t.Errorf("token %s: the secret on file does not work", px.APITokenID)
			}
			if !st.Has(px.APITokenID, "/vms/"+itoa(px.TemplateVMID), "VM.Clone") || !st.Has(px.APITokenID, "/nodes/pve1", "Sys.Audit") {
				t.Errorf("token %s lacks its grants", px.APITokenID)
			}
		}
	})
	for _, o := range []FlowOptions{first, second} {
		ui := runFlow(t, o)
		if done := ui.texts(PhaseNode, EventDone); len(done) != 0 {
			t.Errorf("re-run of %s changed: %q", o.Answers.ConfigPath, done)
		}
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
