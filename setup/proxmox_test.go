package setup

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
)

func imageSpecs() []pvehost.ImageSpec {
	var s []pvehost.ImageSpec
	for _, img := range Images {
		s = append(s, pvehost.ImageSpec{Path: img.Path, Sums: img.Sums, Algo: img.Algo})
	}
	return s
}

// fixture is one simulated node plus everything a setup run needs.
type fixture struct {
	t      testing.TB
	host   *pvehost.Host
	images *pvehost.ImageServer
	dir    string // the agent host's config dir
	pins   string
	prov   string
}

func newFixture(t *testing.T, version string) *fixture { return newFixtureTB(t, version) }

func newFixtureTB(t testing.TB, version string) *fixture {
	t.Helper()
	f := &fixture{t: t, host: pvehost.Start(t, pvehost.Options{Binary: hostSim, Version: version}), dir: t.TempDir()}
	f.images = pvehost.StartImageServer(t, imageSpecs())
	f.pins = filepath.Join(f.dir, "state", KnownHostsFile)
	main, _ := identity.GenerateKey()
	f.prov = identity.PublicHex(main)
	return f
}

func (f *fixture) connect() *Host {
	f.t.Helper()
	o := SSHOptions{Host: f.host.Host, Port: f.host.Port, User: f.host.User, IdentityFile: f.host.ClientKeyFile,
		Pins: HostKeyStore{Path: f.pins}, HostKeyFingerprint: f.host.HostKeyFingerprint()}
	h, err := Connect(context.Background(), o)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { h.Close() })
	return h
}

// run is one `setup proxmox` over SSH: discovery, then the plan.
func (f *fixture) run(templates ...string) (Result, *collect, error) {
	f.t.Helper()
	h := f.connect()
	c := &collect{}
	var disc *Discovery
	dp := Plan{Steps: []Step{{ID: "discover", Title: "Discover", Run: func(ctx context.Context, r *Reporter) error {
		var err error
		disc, err = Discover(ctx, h, r, "")
		return err
	}}}}
	if _, err := dp.Run(context.Background(), c.sink); err != nil {
		return Result{}, c, err
	}
	a := ProxmoxAnswers{ConfigPath: filepath.Join(f.dir, "dc-agent.toml"), StateDir: filepath.Join(f.dir, "state"),
		APIEndpoint: "http://127.0.0.1:9", ProviderPubkey: f.prov, Storage: "local-lvm", Bridge: "vmbr0", Templates: templates,
		ImageMirror: f.images.URL, ImageDir: filepath.Join(f.host.Dir, "images")}
	a.FillDefaults(nil, f.host.Host)
	run, err := NewProxmoxPlan(a, h, disc)
	if err != nil {
		return Result{}, c, err
	}
	plan := run.Plan
	r, err := plan.Run(context.Background(), c.sink)
	return r, c, err
}

func (f *fixture) stateBytes() []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.host.StateDir, "state.json"))
	if err != nil {
		f.t.Fatal(err)
	}
	return b
}

func TestSetupProxmoxOnPVE8And9(t *testing.T) {
	for version, templates := range map[string][]string{"8.4.1": {"ubuntu-22.04"}, "9.1.1": {"ubuntu-24.04", "debian-12"}} {
		t.Run(version, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, version)
			res, c, err := f.run(templates...)
			if err != nil {
				t.Fatalf("setup failed: %v\nevents: %v", err, c.lines(EventOutput))
			}
			if !res.Changed() {
				t.Fatal("first run changed nothing")
			}
			major := 9
			if strings.HasPrefix(version, "8") {
				major = 8
			}
			f.checkNode(major, len(templates))
			cfg := f.checkConfig(templates)

			// Twice: nothing changes, nothing is downloaded again.
			before := f.stateBytes()
			token, _ := os.ReadFile(filepath.Join(f.dir, "proxmox-token"))
			conf, _ := os.ReadFile(cfg.Path)
			img, _ := LookupImage(templates[0])
			downloads := f.images.Downloads(img.Path)
			res, c, err = f.run(templates...)
			if err != nil {
				t.Fatalf("second run: %v", err)
			}
			for _, o := range res.Outcomes {
				if o.Changed {
					t.Errorf("second run changed %s: %s", o.Step, o.Summary)
				}
			}
			if !bytes.Equal(before, f.stateBytes()) {
				t.Error("second run changed the node's state")
			}
			token2, _ := os.ReadFile(filepath.Join(f.dir, "proxmox-token"))
			conf2, _ := os.ReadFile(cfg.Path)
			if !bytes.Equal(token, token2) || !bytes.Equal(conf, conf2) {
				t.Error("second run rewrote the token secret or the config")
			}
			if f.images.Downloads(img.Path) != downloads {
				t.Error("second run downloaded the image again")
			}
			for _, l := range c.lines(EventCommand) {
				if strings.Contains(l, "qm create") || strings.Contains(l, "token add") {
					t.Errorf("second run ran %q", l)
				}
			}
		})
	}
}

// checkNode asserts what setup built on the node.
func (f *fixture) checkNode(major, templates int) {
	t := f.t
	f.host.View(t, func(st *pve.State) {
		var tpls []*pve.VM
		for _, id := range st.VMIDs() {
			tpls = append(tpls, st.VMs[id])
		}
		if len(tpls) != templates {
			t.Fatalf("want %d VMs (the templates), got %d", templates, len(tpls))
		}
		for _, vm := range tpls {
			c := vm.Config
			if !vm.IsTemplate() || c["scsihw"] != "virtio-scsi-pci" || c["serial0"] != "socket" || c["vga"] != "serial0" ||
				!pve.AgentEnabled(c["agent"]) || !strings.Contains(c["ide2"], "cloudinit") || c["boot"] != "order=scsi0" ||
				!strings.Contains(c["tags"], TagTemplate) || strings.Contains(c["tags"], TagBuilding) || !strings.HasPrefix(c["name"], "dc-") {
				t.Errorf("template %d is not what setup should build: %v", vm.VMID, c)
			}
			d, _ := pve.ParseDrive(c["scsi0"])
			vol := st.Volumes[d.File]
			if vol == nil || vol.Origin == nil || !slices.Contains(vol.Origin.Customizations, "install qemu-guest-agent") ||
				!slices.Contains(vol.Origin.Customizations, "truncate /etc/machine-id") {
				t.Errorf("template %d disk was not customized: %+v", vm.VMID, vol)
			}
			if vm.VMID < DefaultVMIDBase {
				t.Errorf("template VMID %d below the base", vm.VMID)
			}
		}
		role := st.Roles[PVERole]
		if role == nil || strings.Join(role.Privs, ",") != strings.Join(AgentPrivileges(major), ",") {
			t.Fatalf("role: %+v", role)
		}
		if major == 9 && (slices.Contains(role.Privs, "VM.Monitor") || !slices.Contains(role.Privs, "VM.GuestAgent.Audit")) ||
			major == 8 && (!slices.Contains(role.Privs, "VM.Monitor") || slices.Contains(role.Privs, "VM.GuestAgent.Audit")) {
			t.Errorf("PVE %d role has the wrong guest agent privilege: %v", major, role.Privs)
		}
		u := st.Users[PVEUser]
		if u == nil || u.Tokens[PVETokenName] == nil || !u.Tokens[PVETokenName].Privsep {
			t.Fatalf("user/token: %+v", u)
		}
		if st, err := os.Stat(filepath.Join(f.dir, "proxmox-token")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("token secret file must be 0600: %v %v", st, err)
		}
		secret, err := identity.ReadSecretFile(filepath.Join(f.dir, "proxmox-token"))
		if err != nil || secret != u.Tokens[PVETokenName].Value {
			t.Errorf("token secret file does not hold the token's secret: %v", err)
		}
		if st.Pools[PVEPool] == nil {
			t.Error("no pool")
		}
		// The token may clone the templates and create VMs in the pool,
		// but not destroy a template.
		for _, vm := range tpls {
			path := "/vms/" + strconv.Itoa(vm.VMID)
			if !st.Has(PVETokenID, path, "VM.Clone", "VM.Audit") || st.Has(PVETokenID, path, "VM.Allocate") {
				t.Errorf("token rights on %s: %v", path, st.Permissions(PVETokenID, path))
			}
		}
		if !st.Has(PVETokenID, "/pool/"+PVEPool, AgentPrivileges(major)...) ||
			!st.Has(PVETokenID, "/storage/local-lvm", "Datastore.AllocateSpace") ||
			!st.Has(PVETokenID, "/sdn/zones/localnetwork/vmbr0", "SDN.Use") || st.Has(PVETokenID, "/", "Sys.Audit") {
			t.Error("token rights are not exactly what the provisioner needs")
		}
		// Tenant requests: the token may make every guest agent call they
		// need, by the simulator's own rule of each PVE major.
		for _, cmd := range []string{"set-user-password", "file-read", "file-write", "exec"} {
			if need := pve.AgentCommandPrivs(major, cmd); !st.HasAny(PVETokenID, "/pool/"+PVEPool, need...) {
				t.Errorf("PVE %d: the token may not call the guest agent's %s (needs one of %v)", major, cmd, need)
			}
		}
	})
}

func (f *fixture) checkConfig(templates []string) *config.Config {
	t := f.t
	path := filepath.Join(f.dir, "dc-agent.toml")
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config: %v %v", st, err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	px := cfg.Provisioner.Proxmox
	if cfg.Provisioner.Type != config.TypeProxmox || px == nil || px.APITokenID != PVETokenID || px.Node != f.host.Node ||
		px.Storage != "local-lvm" || px.Bridge != "vmbr0" || px.Pool != PVEPool || len(px.Templates) != len(templates) ||
		px.TemplateVMID != px.Templates[templates[0]] || px.TLSFingerprint == "" {
		t.Fatalf("config proxmox section: %+v", px)
	}
	if cfg.API.ProviderPubkey != f.prov || cfg.AgentKeyPath() != filepath.Join(f.dir, "agent.key") {
		t.Fatalf("config api section: %+v", cfg.API)
	}
	return cfg
}

func TestSetupFailuresLeaveNothingHalfDone(t *testing.T) {
	f := newFixture(t, "9.1.1")
	imageDir := filepath.Join(f.host.Dir, "images")
	noVMs := func(when string) {
		t.Helper()
		f.host.View(t, func(st *pve.State) {
			if len(st.VMs) != 0 || len(st.Volumes) != 0 {
				t.Fatalf("%s: %d VMs and %d volumes left", when, len(st.VMs), len(st.Volumes))
			}
		})
		if m, _ := filepath.Glob(filepath.Join(imageDir, "*.part")); len(m) > 0 {
			t.Fatalf("%s: partial download left: %v", when, m)
		}
		if m, _ := filepath.Glob(filepath.Join(imageDir, "*.dc-build")); len(m) > 0 {
			t.Fatalf("%s: work copy left: %v", when, m)
		}
	}

	// A download that does not match the published checksum.
	f.images.Corrupt.Store(true)
	_, _, err := f.run("ubuntu-24.04")
	if err == nil || !strings.Contains(err.Error(), "checksum mismatch") || FixOf(err) == "" {
		t.Fatalf("corrupt image: %v", err)
	}
	noVMs("after a bad download")
	f.images.Corrupt.Store(false)

	// A step after the VM exists fails: the VM goes away again.
	f.host.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"qm template"}, Action: "fail", Message: "can't lock file '/var/lock/qemu-server/lock-9000.conf' - got timeout", Count: 1}}})
	_, c, err := f.run("ubuntu-24.04")
	if err == nil || !strings.Contains(err.Error(), "got timeout") {
		t.Fatalf("failing qm template: %v", err)
	}
	if !slices.ContainsFunc(c.lines(EventOutput), func(l string) bool { return strings.Contains(l, "removed the half-built VM 9000") }) {
		t.Errorf("no word about removing the half-built VM: %q", c.lines(EventOutput))
	}
	noVMs("after a failed template")

	// Now it works, reusing the verified download.
	downloads := f.images.Downloads(Images[0].Path)
	if _, _, err := f.run("ubuntu-24.04"); err != nil {
		t.Fatal(err)
	}
	if f.images.Downloads(Images[0].Path) != downloads {
		t.Error("the verified image was downloaded again")
	}

	// The token secret is lost: the token is replaced, and with it its
	// ACL entries (PVE drops a removed token's grants); nothing else.
	tokenFile := filepath.Join(f.dir, "proxmox-token")
	os.Remove(tokenFile)
	res, _, err := f.run("ubuntu-24.04")
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range res.Outcomes {
		if o.Changed != (o.Step == "pve-token" || o.Step == "pve-acl") {
			t.Errorf("step %s changed=%v (%s)", o.Step, o.Changed, o.Summary)
		}
	}
	secret, err := identity.ReadSecretFile(tokenFile)
	f.host.View(t, func(st *pve.State) {
		if err != nil || st.Users[PVEUser].Tokens[PVETokenName].Value != secret {
			t.Fatalf("new secret not written: %v", err)
		}
	})

	// Settings setup does not own survive a re-run untouched.
	cfgPath := filepath.Join(f.dir, "dc-agent.toml")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Polling.IntervalSeconds = 45
	cfg.Agent.MaxConcurrentProvisions = 7
	if err := config.Save(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.run("ubuntu-24.04"); err != nil {
		t.Fatal(err)
	}
	cfg, _ = config.Load(cfgPath)
	if cfg.Polling.IntervalSeconds != 45 || cfg.Agent.MaxConcurrentProvisions != 7 {
		t.Errorf("re-run reset settings: %+v %+v", cfg.Polling, cfg.Agent)
	}
}
