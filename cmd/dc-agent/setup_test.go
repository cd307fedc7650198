package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/charmbracelet/x/exp/golden"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pveapi"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
	"github.com/decent-stuff/dc-agent/setup"
)

type cliRun struct {
	out, err string
	code     int
}

// agentCmd prepares the real binary with a clean environment and a stdin
// that never ends (so a read from it would hang, not see EOF).
func agentCmd(bin string, env []string, args ...string) (*exec.Cmd, *bytes.Buffer, *bytes.Buffer, io.Closer) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/nonexistent"}, env...)
	pr, pw, _ := os.Pipe()
	cmd.Stdin = pr
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	return cmd, &o, &e, closers{pr, pw}
}

type closers []io.Closer

func (c closers) Close() error {
	for _, x := range c {
		x.Close()
	}
	return nil
}

func runSetup(t *testing.T, bin string, env []string, args ...string) cliRun {
	t.Helper()
	cmd, o, e, c := agentCmd(bin, env, args...)
	defer c.Close()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		cmd.Process.Kill()
		<-done
		t.Fatalf("dc-agent %v hung\nstdout:\n%s\nstderr:\n%s", args, o, e)
	}
	return cliRun{out: o.String(), err: e.String(), code: cmd.ProcessState.ExitCode()}
}

// without drops a flag and its value from args.
func without(args []string, flag string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		if args[i] == flag {
			i++
			continue
		}
		out = append(out, args[i])
	}
	return out
}

func TestSetupProxmoxCLI(t *testing.T) {
	testutil.RequireBinary(t, "sshd")
	bins := t.TempDir()
	agent := dcAgent
	sim, err := pvehost.Build(bins)
	if err != nil {
		t.Fatal(err)
	}
	images := pvehost.StartImageServer(t, imageSpecs())
	main, _ := identity.GenerateKey()
	provider := identity.PublicHex(main)

	// baseArgs is a complete --no-tui answer set for host h.
	baseArgs := func(h *pvehost.Host, dir string) []string {
		return []string{"--no-tui", "--config", filepath.Join(dir, "dc-agent.toml"), "setup", "proxmox",
			"--host", h.Host, "--port", strconv.Itoa(h.Port), "--user", h.User, "--identity-file", h.ClientKeyFile,
			"--host-key-fingerprint", h.HostKeyFingerprint(), "--provider-pubkey", provider, "--api-endpoint", "http://127.0.0.1:9",
			"--image-mirror", images.URL, "--image-dir", filepath.Join(h.Dir, "images"), "--state-dir", filepath.Join(dir, "state")}
	}

	t.Run("missing answers fail fast naming the flag", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		cfg := filepath.Join(dir, "dc-agent.toml")
		r := runSetup(t, agent, nil, "--no-tui", "--config", cfg, "setup", "proxmox")
		if r.code != exitUsage || !strings.Contains(r.err, "--host is required") || !strings.Contains(r.err, "DC_AGENT_HOST") {
			t.Fatalf("no host: code %d, stderr %q", r.code, r.err)
		}
		r = runSetup(t, agent, []string{"DC_AGENT_HOST=127.0.0.1"}, "--no-tui", "--config", cfg, "setup", "proxmox")
		if r.code != exitUsage || !strings.Contains(r.err, "--setup-token is required") || !strings.Contains(r.err, "DC_AGENT_SETUP_TOKEN") {
			t.Fatalf("no registration: code %d, stderr %q", r.code, r.err)
		}
		// Without a terminal, even without --no-tui, nothing is asked.
		r = runSetup(t, agent, []string{"DC_AGENT_PROVIDER_PUBKEY=" + provider}, "--config", cfg, "setup", "proxmox")
		if r.code != exitUsage || !strings.Contains(r.err, "--host is required") {
			t.Fatalf("no terminal: code %d, stderr %q", r.code, r.err)
		}
		// No SSH key, agent or password file, and no terminal to ask for a
		// password: the flags are named.
		r = runSetup(t, agent, []string{"DC_AGENT_PROVIDER_PUBKEY=" + provider}, "--no-tui", "--config", cfg, "setup", "proxmox", "--host", "127.0.0.1")
		if r.code != exitUsage || !strings.Contains(r.err, "--identity-file or --password-file is required") {
			t.Fatalf("no credentials: code %d, stderr %q", r.code, r.err)
		}
		// First contact without a fingerprint: the key is named, not trusted.
		h := pvehost.Start(t, pvehost.Options{Binary: sim})
		args := without(baseArgs(h, dir), "--host-key-fingerprint")
		r = runSetup(t, agent, nil, args...)
		if r.code != exitUsage || !strings.Contains(r.err, "--host-key-fingerprint "+h.HostKeyFingerprint()) {
			t.Fatalf("unknown host key: code %d, stderr %q", r.code, r.err)
		}
		if _, err := os.Stat(cfg); !os.IsNotExist(err) {
			t.Fatal("a failed setup wrote a config")
		}
	})

	t.Run("not a proxmox host", func(t *testing.T) {
		t.Parallel()
		h := pvehost.Start(t, pvehost.Options{NoTools: true})
		r := runSetup(t, agent, nil, baseArgs(h, t.TempDir())...)
		if r.code != exitFailure || !strings.Contains(r.out+r.err, "is not a Proxmox VE host: pveversion is not installed") {
			t.Fatalf("code %d\nstdout %s\nstderr %s", r.code, r.out, r.err)
		}
	})

	t.Run("interrupted mid-template then completed", func(t *testing.T) {
		t.Parallel()
		h := pvehost.Start(t, pvehost.Options{Binary: sim, Version: "9.1.1"})
		dir := t.TempDir()
		h.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"qm set", "import-from"}, Action: "hang", Count: 1}}})
		cmd, o, e, c := agentCmd(agent, nil, baseArgs(h, dir)...)
		defer c.Close()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		hung := filepath.Join(h.StateDir, pvecli.HungFile)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := os.Stat(hung); err == nil {
				break
			}
			select {
			case <-exited:
				t.Fatalf("setup ended before the import\nstdout:\n%s\nstderr:\n%s", o, e)
			default:
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				t.Fatalf("the import never started\nstdout:\n%s\nstderr:\n%s", o, e)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// kill -9 mid-template: no cleanup can run.
		cmd.Process.Signal(syscall.SIGKILL)
		<-exited
		var half []int
		h.View(t, func(st *pve.State) {
			for _, id := range st.VMIDs() {
				if !st.VMs[id].IsTemplate() {
					half = append(half, id)
				}
			}
		})
		if len(half) != 1 {
			t.Fatalf("expected the half-built VM after the kill, got %v", half)
		}
		// The hung tool notices its session is gone and exits.
		for i := 0; i < 500; i++ {
			if _, err := os.Stat(hung); os.IsNotExist(err) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		r := runSetup(t, agent, nil, baseArgs(h, dir)...)
		if r.code != 0 {
			t.Fatalf("re-run failed: %d\n%s\n%s", r.code, r.out, r.err)
		}
		if !strings.Contains(r.out, "half-built") {
			t.Errorf("re-run did not say it removed the half-built VM:\n%s", r.out)
		}
		h.View(t, func(st *pve.State) {
			ids := st.VMIDs()
			if len(ids) != 1 || !st.VMs[ids[0]].IsTemplate() || strings.Contains(st.VMs[ids[0]].Config["tags"], setup.TagBuilding) {
				t.Fatalf("want exactly one finished template, got %v", ids)
			}
			for volid, v := range st.Volumes {
				if v.VMID != ids[0] {
					t.Errorf("stray volume %s of VM %d", volid, v.VMID)
				}
			}
		})
		cfg, err := config.Load(filepath.Join(dir, "dc-agent.toml"))
		if err != nil {
			t.Fatal(err)
		}
		if px := cfg.Provisioner.Proxmox; px == nil || px.TemplateVMID == 0 {
			t.Fatalf("config: %+v", cfg.Provisioner)
		}
		if !strings.Contains(r.out, "dcdr1:") || !strings.Contains(r.out, "dc-agent delegation sign") {
			t.Errorf("no delegation request printed:\n%s", r.out)
		}
	})

	t.Run("changed host key aborts", func(t *testing.T) {
		t.Parallel()
		h := pvehost.Start(t, pvehost.Options{Binary: sim})
		dir := t.TempDir()
		// Pin on a first, read-only contact (discovery fails: no templates
		// flag problem here, so make it fail early on a bad storage).
		args := append(baseArgs(h, dir), "--storage", "nope")
		if r := runSetup(t, agent, nil, args...); r.code != exitUsage || !strings.Contains(r.err, `--storage "nope"`) {
			t.Fatalf("bad storage: %d %s", r.code, r.err)
		}
		h.RotateHostKey()
		r := runSetup(t, agent, nil, baseArgs(h, dir)...) // even with the new key's fingerprint
		if r.code != exitFailure || !strings.Contains(r.err, "HOST KEY CHANGED") || !strings.Contains(r.err, "fix:") ||
			!strings.Contains(r.err, filepath.Join(dir, "state", setup.KnownHostsFile)) {
			t.Fatalf("code %d\nstderr %s", r.code, r.err)
		}
	})

	t.Run("shell metacharacters cannot inject", func(t *testing.T) {
		t.Parallel()
		h := pvehost.Start(t, pvehost.Options{Binary: sim, Version: "8.3.2"})
		marker := filepath.Join(t.TempDir(), "pwned")
		dir := t.TempDir()
		evil := filepath.Join(h.Dir, "img $(touch "+marker+") `touch "+marker+"`; touch "+marker+" '\"")
		args := baseArgs(h, dir)
		args = append(args, "--image-dir", evil, "--label", "x'; touch pwned; echo '")
		r := runSetup(t, agent, nil, args...)
		if r.code != 0 {
			t.Fatalf("setup with odd paths failed: %d\n%s\n%s", r.code, r.out, r.err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("a metacharacter in an answer ran a command on the host")
		}
		if st, err := os.Stat(evil); err != nil || !st.IsDir() {
			t.Fatalf("the image dir was not created under its literal name: %v", err)
		}
		// A host name with metacharacters never reaches a shell.
		args = append(without(baseArgs(h, t.TempDir()), "--host"), "--host", "127.0.0.1;touch "+marker)
		r = runSetup(t, agent, nil, args...)
		if r.code == 0 || !strings.Contains(r.err, "not a host name") {
			t.Fatalf("hostile host accepted: %d %s", r.code, r.err)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatal("a metacharacter in the host name ran a command")
		}
	})
}

// TestSetupRegisterDoctorEndToEnd walks the whole --no-tui path: setup over
// SSH, the delegation signed in another process with the main key,
// register, doctor --verify-api against the node's API and a real dc-api,
// and a re-run of setup that changes nothing.
func TestSetupRegisterDoctorEndToEnd(t *testing.T) {
	testutil.RequireBinary(t, "sshd")
	w := startNodeWorld(t, "9.1.1")
	h, api, images, srv, prov, mainKey := w.host, w.pveAPI, w.images, w.api, w.prov, w.mainKey
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	args := []string{"--no-tui", "--config", cfg, "setup", "proxmox",
		"--host", h.Host, "--port", strconv.Itoa(h.Port), "--user", h.User, "--identity-file", h.ClientKeyFile,
		"--host-key-fingerprint", h.HostKeyFingerprint(), "--provider-pubkey", prov.Pubkey, "--api-endpoint", srv.URL,
		"--proxmox-api-url", api.URL, "--image-mirror", images.URL, "--image-dir", filepath.Join(h.Dir, "images"),
		"--state-dir", filepath.Join(dir, "state"), "--templates", "ubuntu-24.04,debian-12", "--expires", "365d", "--label", "e2e"}
	r := runSetup(t, dcAgent, nil, append(args, "--verbose")...)
	if r.code != 0 {
		t.Fatalf("setup: %d\n%s\n%s", r.code, r.out, r.err)
	}
	// The config is the one setup has always written for these answers
	// (testdata/TestSetupRegisterDoctorEndToEnd.golden, first written by
	// the setup before the flow was one: byte for byte, but for the
	// places and keys of this run).
	written, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	golden.RequireEqual(t, []byte(strings.NewReplacer(dir, "$DIR", h.Dir, "$HOSTDIR", srv.URL, "$API", api.URL, "$PVEAPI",
		prov.Pubkey, "$PROVIDER", api.Fingerprint, "$TLSFP").Replace(string(written))))
	// --verbose shows every remote command and its output, but never the
	// token secret pveum prints once.
	secret, err := identity.ReadSecretFile(filepath.Join(dir, "proxmox-token"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.out, "$ pveum user token add dc-agent@pve agent") || !strings.Contains(r.out, "$ qm create ") {
		t.Errorf("--verbose did not show the remote commands:\n%s", r.out)
	}
	if strings.Contains(r.out+r.err, secret) {
		t.Error("the token secret was printed")
	}
	var request string
	for _, f := range strings.Fields(r.out) {
		if strings.HasPrefix(f, "dcdr1:") {
			request = f
			break
		}
	}
	if request == "" {
		t.Fatalf("no delegation request in:\n%s", r.out)
	}
	// The provider signs on "another machine".
	signed := runAgent(t, runOpts{}, "delegation", "sign", "--identity", mainKey, "--yes", request)
	if signed.code != 0 {
		t.Fatalf("sign: %s", signed)
	}
	code := strings.TrimSpace(signed.stdout)
	if reg := runAgent(t, runOpts{}, "--config", cfg, "register", "--delegation", code); reg.code != 0 {
		t.Fatalf("register: %s", reg)
	}
	doc := runAgent(t, runOpts{}, "--config", cfg, "doctor", "--verify-api", "--json")
	if doc.code != 0 || !strings.Contains(doc.stdout, `"fail": 0`) || !strings.Contains(doc.stdout, `"warn": 0`) {
		t.Fatalf("doctor on a fresh setup: %s", doc)
	}
	for _, check := range []string{`"check": "proxmox"`, `"check": "api"`, `"check": "registration"`, `"check": "clock"`} {
		if !strings.Contains(doc.stdout, check) {
			t.Errorf("doctor did not run %s", check)
		}
	}

	// Setup again after register, without the delegation: the API holds
	// it, so the agent is reported registered, and not sent back to
	// offline signing with a new request.
	r = runSetup(t, dcAgent, nil, args...)
	if r.code != 0 {
		t.Fatalf("re-run after register: %d\n%s\n%s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.out, "already registered with "+srv.URL) || !strings.Contains(r.out, "The agent is registered") ||
		strings.Contains(r.out, "dcdr1:") || strings.Contains(r.out, "delegate this agent key") {
		t.Errorf("a re-run after register does not report the agent registered:\n%s", r.out)
	}

	// Everything again, now with the delegation: nothing changes.
	before, _ := os.ReadFile(filepath.Join(h.StateDir, "state.json"))
	conf, _ := os.ReadFile(cfg)
	r = runSetup(t, dcAgent, nil, append(args, "--delegation", code)...)
	if r.code != 0 {
		t.Fatalf("re-run: %d\n%s\n%s", r.code, r.out, r.err)
	}
	after, _ := os.ReadFile(filepath.Join(h.StateDir, "state.json"))
	conf2, _ := os.ReadFile(cfg)
	if string(before) != string(after) || string(conf) != string(conf2) {
		t.Error("the re-run changed the node or the config")
	}
	for _, l := range strings.Split(r.out, "\n") {
		if strings.Contains(l, "] ") && strings.Contains(l, ": ") && !strings.Contains(l, "unchanged") && !strings.Contains(l, "Discover") {
			t.Errorf("re-run step not unchanged: %s", l)
		}
	}
	if !strings.Contains(r.out, "already registered") {
		t.Errorf("re-run did not see the registration:\n%s", r.out)
	}

	// The config, token (with exactly its role's privileges) and template
	// setup made provision a VM through the node's API.
	tp := runAgent(t, runOpts{}, "--config", cfg, "test-provision", "--json")
	if tp.code != 0 || !strings.Contains(tp.stdout, `"ok": true`) || !strings.Contains(tp.stdout, `"terminated": true`) {
		t.Fatalf("test-provision on the node setup built: %s", tp)
	}
}

// nodeWorld is what an end-to-end setup test runs against: a simulated
// Proxmox host over real sshd with its API, a mirror of the cloud images,
// and a real dc-api with one provider whose main key is in a 0600 file.
type nodeWorld struct {
	host    *pvehost.Host
	pveAPI  *pveapi.Sim
	images  *pvehost.ImageServer
	api     *apitest.Server
	prov    *apitest.Provider
	mainKey string
}

func startNodeWorld(t *testing.T, pveVersion string, apiOpts ...apitest.Option) nodeWorld {
	t.Helper()
	sim, err := pvehost.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	w := nodeWorld{host: pvehost.Start(t, pvehost.Options{Binary: sim, Version: pveVersion})}
	if w.pveAPI, err = pveapi.Start(w.host.Store, w.host.Node, "127.0.0.1:0", nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pveAPI.Close() })
	w.images = pvehost.StartImageServer(t, imageSpecs())
	w.api = apitest.Start(t, apiOpts...)
	w.prov = w.api.NewProvider("Acme")
	w.mainKey = filepath.Join(t.TempDir(), "main.key")
	if err := os.WriteFile(w.mainKey, []byte(identity.SeedHex(w.prov.Key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return w
}

// imageSpecs are the cloud images setup knows, for the image mirror.
func imageSpecs() []pvehost.ImageSpec {
	var specs []pvehost.ImageSpec
	for _, img := range setup.Images {
		specs = append(specs, pvehost.ImageSpec{Path: img.Path, Sums: img.Sums, Algo: img.Algo})
	}
	return specs
}

// TestSetupProxmoxGatewayFlags: --no-tui on the node's private bridge.
// Without gateway flags setup prints the offer and goes on without it;
// --gateway-dc-id sets it up (public_ip from the node, paths from the
// config's [gateway], the dc_id registered with dc-api); --no-gateway
// then neither offers nor changes it; bad or contradicting flags are
// usage errors naming the flag.
func TestSetupProxmoxGatewayFlags(t *testing.T) {
	testutil.RequireBinary(t, "sshd")
	w := startNodeWorld(t, "9.1.1", apitest.WithProfile("live"), apitest.WithPublicURL("https://api.example.org"))
	h, srv := w.host, w.api
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	caddyfile, sites := filepath.Join(dir, "caddy", "Caddyfile"), filepath.Join(dir, "caddy", "sites")
	if err := os.WriteFile(cfg, []byte("[gateway]\ncaddyfile = \""+caddyfile+"\"\ncaddy_sites_dir = \""+sites+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "setup-token")
	if err := os.WriteFile(tokenFile, []byte(srv.SetupToken(srv.NewPool(w.prov, "eu", "europe", "proxmox"), time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sysctl := filepath.Join(dir, "sysctl.d", "99-dc-gateway.conf")
	args := []string{"--no-tui", "--config", cfg, "setup", "proxmox",
		"--host", h.Host, "--port", strconv.Itoa(h.Port), "--user", h.User, "--identity-file", h.ClientKeyFile,
		"--host-key-fingerprint", h.HostKeyFingerprint(), "--api-endpoint", srv.URL, "--setup-token", "file:" + tokenFile,
		"--image-mirror", w.images.URL, "--image-dir", filepath.Join(h.Dir, "images"), "--state-dir", filepath.Join(dir, "state"),
		"--templates", "debian-12", "--gateway-sysctl-file", sysctl}

	for _, bad := range []struct {
		flags []string
		want  string
	}{
		{[]string{"--gateway-dc-id", "Not_DNS"}, "--gateway-dc-id"},
		{[]string{"--gateway-dc-id", "dc-cli", "--gateway-public-ip", "300.1.1.1"}, "--gateway-public-ip"},
		{[]string{"--gateway-dc-id", "dc-cli", "--no-gateway"}, "--no-gateway and --gateway-dc-id"},
	} {
		if r := runSetup(t, dcAgent, nil, append(args, bad.flags...)...); r.code != exitUsage || !strings.Contains(r.err, bad.want) {
			t.Fatalf("%v: code %d, stderr %q", bad.flags, r.code, r.err)
		}
	}

	// Without the flags (and without [gateway]): the offer, and no gateway.
	plain := t.TempDir()
	plainToken := filepath.Join(plain, "setup-token")
	if err := os.WriteFile(plainToken, []byte(srv.SetupToken(srv.NewPool(w.prov, "eu2", "europe", "proxmox"), time.Hour)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	plainArgs := append(without(without(without(args, "--config"), "--setup-token"), "--state-dir"), "--setup-token", "file:"+plainToken, "--state-dir", filepath.Join(plain, "state"))
	r := runSetup(t, dcAgent, nil, append([]string{"--config", filepath.Join(plain, "dc-agent.toml")}, plainArgs...)...)
	if r.code != 0 {
		t.Fatalf("setup: %d\n%s\n%s", r.code, r.out, r.err)
	}
	for _, want := range []string{"The VMs' bridge vmbr0 has a private subnet (10.99.0.0/24", `public_ip = "203.0.113.10"`, "--gateway-dc-id ID"} {
		if !strings.Contains(r.out, want) {
			t.Errorf("the offer lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, "Install Caddy") {
		t.Fatalf("the gateway was set up unasked:\n%s", r.out)
	}

	// With --gateway-dc-id: set up, public_ip from the node.
	r = runSetup(t, dcAgent, nil, append(args, "--gateway-dc-id", "dc-cli")...)
	if r.code != 0 {
		t.Fatalf("setup with the gateway: %d\n%s\n%s", r.code, r.out, r.err)
	}
	for _, want := range []string{"Check the node's network for the gateway", "Register gateway dc-cli", "registered dc_id dc-cli", "Write [gateway] into " + cfg} {
		if !strings.Contains(r.out, want) {
			t.Errorf("the output lacks %q:\n%s", want, r.out)
		}
	}
	if strings.Contains(r.out, "has a private subnet") {
		t.Errorf("the offer printed although the gateway was chosen:\n%s", r.out)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Gateway; g == nil || g.DCID != "dc-cli" || g.PublicIP != "203.0.113.10" || g.CaddySitesDir != sites {
		t.Fatalf("[gateway] %+v", c.Gateway)
	}
	for _, p := range []string{caddyfile, sysctl, filepath.Join(filepath.Dir(caddyfile), "dc-gateway.env")} {
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	}

	// --no-gateway: silent, and the config stays as it is.
	before, _ := os.ReadFile(cfg)
	r = runSetup(t, dcAgent, nil, append(args, "--no-gateway")...)
	if r.code != 0 {
		t.Fatalf("setup --no-gateway: %d\n%s\n%s", r.code, r.out, r.err)
	}
	if after, _ := os.ReadFile(cfg); !bytes.Equal(before, after) || strings.Contains(r.out, "private subnet") || strings.Contains(r.out, "Install Caddy") {
		t.Errorf("--no-gateway changed the config or offered the gateway:\n%s", r.out)
	}
}
