package wizard

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/testutil"
	"github.com/decent-stuff/dc-agent/internal/testutil/pvehost"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// lineReader answers one line per Read, as a terminal in line mode does;
// an answer can be computed when it is asked for (from what was printed).
type lineReader struct {
	answers []func() string
}

func (l *lineReader) Read(p []byte) (int, error) {
	if len(l.answers) == 0 {
		return 0, os.ErrClosed
	}
	a := l.answers[0]()
	l.answers = l.answers[1:]
	return copy(p, a+"\n"), nil
}

func lines(s ...string) []func() string {
	var out []func() string
	for _, x := range s {
		out = append(out, func() string { return x })
	}
	return out
}

// TestAccessibleWalk runs the line-prompt wizard (TERM=dumb) against the
// simulated Proxmox host over real sshd and a real dc-api: wrong answers
// are explained and asked again, and it ends registered, with the service
// files in a root and the same kind of config the screens write.
func TestAccessibleWalk(t *testing.T) {
	h, images := startNode(t, "8.3.2")
	srv := apitest.Start(t)
	prov := srv.NewProvider("Acme")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	o := Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), ImageMirror: images.URL, ImageDir: filepath.Join(h.Dir, "images")},
		Request: setup.DelegationAnswers{Label: "dumb-terminal"},
		Service: &service.Options{Root: filepath.Join(dir, "root")},
	}}
	var out bytes.Buffer
	in := &lineReader{answers: lines(srv.URL, "2", "not-a-key", prov.Pubkey, "1", h.Host, strconv.Itoa(h.Port), h.User, h.ClientKeyFile,
		"y", "", "", "0", "y", "n", "dcds1:bad")}
	in.answers = append(in.answers, func() string {
		for _, f := range strings.Fields(out.String()) {
			if strings.HasPrefix(f, "dcdr1:") {
				d, err := identity.DecodeRequest(f)
				if err != nil {
					t.Error(err)
					return ""
				}
				sd, err := d.Sign(prov.Key)
				if err != nil {
					t.Error(err)
					return ""
				}
				code, _ := sd.Encode()
				return code
			}
		}
		t.Error("no request printed before the paste")
		return ""
	})
	hint, err := RunAccessible(context.Background(), o, in, &out)
	if err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{
		"public key must be 64 hex", // explained, asked again
		h.HostKeyFingerprint(), "Is this the right key?",
		"Storage for templates", "Templates to build",
		"Agent key: created", "Write " + cfg,
		"dc-agent delegation sign --identity", "truncated or corrupted", "fix: paste the whole dcds1: code",
		"Register the delegation: registered agent", "Install the dc-agent service", "dc-agent is set up",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if !strings.Contains(hint, "service is installed") {
		t.Errorf("hint: %q", hint)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Endpoint != srv.URL || c.API.ProviderPubkey != prov.Pubkey || c.Provisioner.Proxmox == nil || c.Provisioner.Proxmox.TemplateVMID == 0 {
		t.Fatalf("config: %+v %+v", c.API, c.Provisioner.Proxmox)
	}
	if _, err := os.Stat(filepath.Join(dir, "root/etc/systemd/system/dc-agent.service")); err != nil {
		t.Fatal(err)
	}
	if d := srv.Delegation(prov, identity.PublicHex(mustKey(t, filepath.Join(dir, "agent.key")))); d == nil {
		t.Fatal("the API holds no delegation for the agent")
	}
	if t.Failed() {
		t.Log(text)
	}
}

// startNode is a simulated Proxmox node of version over real sshd, and a
// mirror of the cloud images.
func startNode(t *testing.T, version string) (*pvehost.Host, *pvehost.ImageServer) {
	t.Helper()
	testutil.RequireBinary(t, "sshd")
	sim, err := pvehost.Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	var specs []pvehost.ImageSpec
	for _, img := range setup.Images {
		specs = append(specs, pvehost.ImageSpec{Path: img.Path, Sums: img.Sums, Algo: img.Algo})
	}
	return pvehost.Start(t, pvehost.Options{Binary: sim, Version: version}), pvehost.StartImageServer(t, specs)
}

func mustKey(t *testing.T, path string) []byte {
	t.Helper()
	k, err := identity.LoadAgentKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestAccessibleInputEnds: when stdin ends, the wizard stops with what it
// was asking, never takes the default as an answer, never hangs.
func TestAccessibleInputEnds(t *testing.T) {
	o := Options{Flow: setup.FlowOptions{Answers: setup.ProxmoxAnswers{ConfigPath: filepath.Join(t.TempDir(), "dc-agent.toml")}}}
	var out bytes.Buffer
	hint, err := RunAccessible(context.Background(), o, strings.NewReader("https://api.example.org\n"), &out)
	if err == nil || !strings.Contains(err.Error(), "no answer for the registration") {
		t.Fatalf("err %v\n%s", err, out.String())
	}
	if !strings.Contains(hint, "nothing was changed") {
		t.Fatalf("hint %q", hint)
	}
}

// TestAccessibleSetupToken: the line prompts with a setup token against the
// live profile: the token is asked for (a malformed one explained), the
// node plan registers the agent, and nothing is signed offline.
func TestAccessibleSetupToken(t *testing.T) {
	h, images := startNode(t, "9.1.1")
	srv := apitest.Start(t, apitest.WithProfile("live"))
	prov := srv.NewProvider("Acme")
	pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	o := Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), ImageMirror: images.URL, ImageDir: filepath.Join(h.Dir, "images")},
		Service: &service.Options{Root: filepath.Join(dir, "root")},
	}}
	var out bytes.Buffer
	in := &lineReader{answers: lines(srv.URL, "1", prov.Pubkey, srv.SetupToken(pool, time.Hour), "1", h.Host, strconv.Itoa(h.Port), h.User, h.ClientKeyFile,
		"y", "", "", "0", "y", "n")}
	hint, err := RunAccessible(context.Background(), o, in, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for _, want := range []string{"1. a setup token from the Decent Cloud dashboard", "this is a 64-hex key, not a setup token",
		"Register with the setup token: registered agent", "in pool eu-proxmox (" + pool.PoolID + ", europe) of provider " + prov.Pubkey,
		"Install the dc-agent service", "dc-agent is set up"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if strings.Contains(text, "dcdr1:") || strings.Contains(text, "delegation sign") {
		t.Errorf("the token walk shows offline signing:\n%s", text)
	}
	if !strings.Contains(hint, "service is installed") {
		t.Errorf("hint: %q", hint)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.API.ProviderPubkey != prov.Pubkey || c.API.PoolID != pool.PoolID {
		t.Fatalf("config [api]: %+v", c.API)
	}
	if t.Failed() {
		t.Log(text)
	}
}

// TestAccessibleGateway: on the node's private bridge the line prompts
// offer the gateway, prefilled with the node's public address; a bad
// dc_id is explained and asked again, and the gateway is set up on the
// node at the paths the config names, registered with dc-api, and
// written into the config.
func TestAccessibleGateway(t *testing.T) {
	h, images := startNode(t, "9.1.1")
	srv := apitest.Start(t, apitest.WithProfile("live"), apitest.WithPublicURL("https://api.example.org"))
	prov := srv.NewProvider("Acme")
	pool := srv.NewPool(prov, "eu-proxmox", "europe", "proxmox")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "dc-agent.toml")
	caddyfile, sites := filepath.Join(dir, "caddy", "Caddyfile"), filepath.Join(dir, "caddy", "sites")
	if err := os.WriteFile(cfg, []byte("[gateway]\ncaddyfile = \""+caddyfile+"\"\ncaddy_sites_dir = \""+sites+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := Options{Flow: setup.FlowOptions{
		Answers: setup.ProxmoxAnswers{ConfigPath: cfg, StateDir: filepath.Join(dir, "state"), ImageMirror: images.URL, ImageDir: filepath.Join(h.Dir, "images"),
			GatewaySysctlFile: filepath.Join(dir, "sysctl.d", "99-dc-gateway.conf")},
		Service: &service.Options{Root: filepath.Join(dir, "root")},
	}}
	var out bytes.Buffer
	in := &lineReader{answers: lines(srv.URL, "1", srv.SetupToken(pool, time.Hour), "1", h.Host, strconv.Itoa(h.Port), h.User, h.ClientKeyFile,
		"y", "", "", "0", "y", "y", "Bad_ID", "dc-dumb", "")}
	hint, err := RunAccessible(context.Background(), o, in, &out)
	text := out.String()
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	for _, want := range []string{"The VMs' bridge vmbr0 has a private subnet (10.99.0.0/24", "Use the gateway?", "[203.0.113.10]",
		"dc_id \"Bad_ID\" is not usable in DNS", "Check the node's network for the gateway", "Register gateway dc-dumb: registered dc_id dc-dumb",
		"Write [gateway] into " + cfg, "dc-agent is set up"} {
		if !strings.Contains(text, want) {
			t.Errorf("the output lacks %q", want)
		}
	}
	if strings.Contains(hint, "[gateway]") {
		t.Errorf("the hint still offers the gateway: %q", hint)
	}
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := c.Gateway; g == nil || g.DCID != "dc-dumb" || g.PublicIP != "203.0.113.10" || g.Caddyfile != caddyfile {
		t.Fatalf("[gateway] %+v", c.Gateway)
	}
	if b, err := os.ReadFile(caddyfile); err != nil || !strings.Contains(string(b), "import "+sites+"/*.caddy") {
		t.Fatalf("Caddyfile: %v %q", err, b)
	}
	if t.Failed() {
		t.Log(text)
	}
}
