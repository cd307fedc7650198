package setup

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/decent-stuff/dc-agent/apiserver"
	"github.com/decent-stuff/dc-agent/apiserver/apitest"
	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/gateway"
	"github.com/decent-stuff/dc-agent/internal/sim/pve"
	"github.com/decent-stuff/dc-agent/internal/sim/pvecli"
)

// gatewayUI is scriptUI that also answers the gateway question.
type gatewayUI struct {
	*scriptUI
	gateway func(q GatewayQuestion) (GatewayAnswer, error)
}

func (u *gatewayUI) Gateway(_ context.Context, q GatewayQuestion) (GatewayAnswer, error) {
	u.note("gateway", q.Err)
	return u.gateway(q)
}

// gatewayPaths points [gateway]'s paths into dir through the config, as
// a provider would, and returns them.
func gatewayPaths(t *testing.T, cfgPath, dir string) config.GatewayConfig {
	t.Helper()
	g := config.GatewayConfig{CaddySitesDir: filepath.Join(dir, "caddy", "sites"), Caddyfile: filepath.Join(dir, "caddy", "Caddyfile"),
		PortAllocationsPath: filepath.Join(dir, "lib", "port-allocations.json")}
	text := "[gateway]\ncaddy_sites_dir = \"" + g.CaddySitesDir + "\"\ncaddyfile = \"" + g.Caddyfile + "\"\nport_allocations_path = \"" + g.PortAllocationsPath + "\"\n"
	if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return g
}

// TestFlowSetsUpTheGateway: on the simulated node, whose vmbr0 is private,
// the flow offers the gateway prefilled with the node's public address,
// installs what the node needs at the paths the config names, registers
// the dc_id with dc-api (both profiles: the agent registered by delegation
// and by setup token), and writes [gateway]; a second run changes
// nothing, and a dc_id of another provider is refused with the fix.
func TestFlowSetsUpTheGateway(t *testing.T) {
	for _, profile := range []string{apiserver.ProfileDefault, apiserver.ProfileLive} {
		t.Run(profile, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, "9.1.1")
			srv := apitest.Start(t, apitest.WithProfile(profile), apitest.WithPublicURL("https://api.example.org"))
			prov := srv.NewProvider("Acme")
			o := f.flowOptions(srv.URL, prov.Pubkey)
			if profile == apiserver.ProfileLive {
				o.Answers.ProviderPubkey = ""
				o.SetupToken = srv.SetupToken(srv.NewPool(prov, "eu", "europe", config.TypeProxmox), time.Hour)
			}
			gwDir := t.TempDir()
			gw := gatewayPaths(t, o.Answers.ConfigPath, gwDir)
			o.Answers.GatewaySysctlFile = filepath.Join(gwDir, "sysctl.d", "99-dc-gateway.conf")

			// Another provider holds "taken".
			other := srv.NewProvider("Other")
			if _, err := srv.Store.RegisterGateway(context.Background(), other.Pubkey, "taken", "https://api.example.org", time.Now().UnixNano()); err != nil {
				t.Fatal(err)
			}

			newUI := func(dcID string) *gatewayUI {
				ui := &gatewayUI{scriptUI: &scriptUI{delegate: func(q DelegationQuestion) (string, error) {
					return srv.SignDelegation(prov, q.Request.AgentPubkey).Encode()
				}}}
				asked := 0
				ui.gateway = func(q GatewayQuestion) (GatewayAnswer, error) {
					asked++
					if q.Offer.Bridge != "vmbr0" || q.Offer.Subnet != netip.MustParsePrefix("10.99.0.0/24") || q.Elsewhere != "" {
						t.Errorf("offer %+v, elsewhere %q", q.Offer, q.Elsewhere)
					}
					if q.Err == nil && q.Answer.PublicIP != "203.0.113.10" {
						t.Errorf("public_ip prefill %q, want the node's uplink address 203.0.113.10", q.Answer.PublicIP)
					}
					a := q.Answer
					a.Use, a.DCID = true, dcID
					if asked == 1 {
						a.PublicIP = "not-an-ip" // refused, asked again
					} else if q.Err != nil {
						var ae *AnswerError
						if !errors.As(q.Err, &ae) || ae.Field != "gateway-public-ip" {
							t.Errorf("a bad public_ip is refused with %v", q.Err)
						}
						a.PublicIP = "203.0.113.10"
					}
					return a, nil
				}
				return ui
			}

			ui := newUI("dc-test")
			flow := NewFlow(o, ui)
			if err := flow.Run(context.Background()); err != nil {
				t.Fatalf("%v\nasked %v\nfailed: %q", err, ui.asked, ui.texts(PhaseGateway, EventFailed))
			}
			if i := slices.Index(ui.asked, "gateway"); i < 0 || ui.asked[i-1] != "choose" || ui.count("gateway") != 2 ||
				!slices.Contains(ui.asked, "started:gateway") || slices.Index(ui.asked, "started:gateway") < slices.Index(ui.asked, "started:register") {
				t.Fatalf("asked %v", ui.asked)
			}
			cfg, err := config.Load(o.Answers.ConfigPath)
			if err != nil {
				t.Fatal(err)
			}
			if g := cfg.Gateway; g == nil || g.DCID != "dc-test" || g.PublicIP != "203.0.113.10" || g.Caddyfile != gw.Caddyfile || g.CaddySitesDir != gw.CaddySitesDir {
				t.Fatalf("[gateway] %+v", cfg.Gateway)
			}
			text, _ := os.ReadFile(o.Answers.ConfigPath)
			if strings.Contains(string(text), "port_range_start") || strings.Contains(string(text), "caddy_admin") {
				t.Errorf("the config names [gateway]'s defaults:\n%s", text)
			}
			caddyfile, err := os.ReadFile(gw.Caddyfile)
			if err != nil || !gateway.ImportsSites(caddyfile, gw.CaddySitesDir) || !strings.Contains(string(caddyfile), "*.dc-test.gw.decent-cloud.org {") {
				t.Fatalf("Caddyfile: %v\n%s", err, caddyfile)
			}
			if st, err := os.Stat(gw.CaddySitesDir); err != nil || !st.IsDir() {
				t.Fatalf("sites dir: %v", err)
			}
			if b, err := os.ReadFile(o.Answers.GatewaySysctlFile); err != nil || !strings.Contains(string(b), "net.ipv4.ip_forward = 1") {
				t.Fatalf("sysctl file: %v %q", err, b)
			}
			f.host.View(t, func(st *pve.State) {
				if !st.Nodes["pve1"].Forwarding {
					t.Error("the node does not forward IPv4")
				}
			})
			env := filepath.Join(filepath.Dir(gw.Caddyfile), "dc-gateway.env")
			if st, err := os.Stat(env); err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("credentials file: %v", err)
			}
			// Caddy has the acmedns module, loads the credentials (the drop-in
			// beside the simulated node's unit file), is enabled, was
			// restarted once and runs.
			dropIn := filepath.Join(f.host.StateDir, "systemd", "system", "caddy.service.d", "dc-gateway.conf")
			if b, err := os.ReadFile(dropIn); err != nil || !strings.Contains(string(b), "[Service]\nEnvironmentFile="+env+"\n") {
				t.Fatalf("drop-in: %v\n%s", err, b)
			}
			caddyState := func() (pkgs []string, u pve.Unit, reloads int) {
				f.host.View(t, func(st *pve.State) {
					n := st.Nodes["pve1"]
					pkgs, reloads = n.CaddyPackages, n.DaemonReloads
					if n.Units["caddy.service"] != nil {
						u = *n.Units["caddy.service"]
					}
				})
				return pkgs, u, reloads
			}
			if pkgs, u, reloads := caddyState(); !slices.Equal(pkgs, []string{"github.com/caddy-dns/acmedns"}) || u != (pve.Unit{Enabled: true, Active: true, Restarts: 1}) || reloads != 1 {
				t.Fatalf("Caddy on the node: packages %v, unit %+v, %d daemon-reloads", pkgs, u, reloads)
			}
			// dc-test is the provider's now: another cannot have it.
			if _, err := srv.Store.RegisterGateway(context.Background(), other.Pubkey, "dc-test", "https://api.example.org", time.Now().UnixNano()); err == nil {
				t.Fatal("dc-test is not registered to the provider")
			}
			for _, e := range ui.events {
				if strings.Contains(e.Text, "ACME_DNS_PASSWORD") {
					t.Fatalf("a secret in the events: %q", e.Text)
				}
			}
			if strings.Contains(flow.Hint(), "[gateway]") {
				t.Errorf("the hint offers the gateway that was set up:\n%s", flow.Hint())
			}

			// Again, same answers: nothing changes, byte for byte.
			before := snapshot(t, o.Answers.ConfigPath, gw.Caddyfile, env, o.Answers.GatewaySysctlFile, dropIn)
			again := newUI("dc-test")
			again.gateway = func(q GatewayQuestion) (GatewayAnswer, error) {
				if !q.Answer.Use || q.Answer.DCID != "dc-test" || q.Answer.PublicIP != "203.0.113.10" {
					t.Errorf("re-run prefill %+v", q.Answer)
				}
				return q.Answer, nil
			}
			if err := NewFlow(o, again).Run(context.Background()); err != nil {
				t.Fatalf("re-run: %v", err)
			}
			if done := again.texts(PhaseGateway, EventDone); len(done) != 0 {
				t.Errorf("the re-run changed the gateway: %q", done)
			}
			if after := snapshot(t, o.Answers.ConfigPath, gw.Caddyfile, env, o.Answers.GatewaySysctlFile, dropIn); !slices.EqualFunc(before, after, bytes.Equal) {
				t.Error("the re-run rewrote the config, the Caddyfile, the credentials, the sysctl file or the drop-in")
			}
			if _, u, reloads := caddyState(); u.Restarts != 1 || u.Starts != 0 || reloads != 1 {
				t.Errorf("the re-run restarted Caddy or reloaded systemd: unit %+v, %d daemon-reloads", u, reloads)
			}

			// An apt upgrade replaced Caddy's binary: the module is gone. A
			// failing add-package stops setup with the fix and changes nothing;
			// once it works, setup puts the module back and restarts Caddy.
			if err := f.host.Store.Update(func(st *pve.State) error { st.Nodes["pve1"].CaddyPackages = nil; return nil }); err != nil {
				t.Fatal(err)
			}
			f.host.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"caddy add-package"}, Action: "fail", Message: "Error: download failed: HTTP 502", Count: 1}}})
			upgraded := newUI("dc-test")
			upgraded.gateway = again.gateway
			err = NewFlow(o, upgraded).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), "add the acmedns module") || !strings.Contains(FixOf(err), "caddy add-package github.com/caddy-dns/acmedns") || !strings.Contains(FixOf(err), "caddyserver.com/download") {
				t.Fatalf("failing add-package: %v (fix %q)", err, FixOf(err))
			}
			if after := snapshot(t, o.Answers.ConfigPath, gw.Caddyfile, env, o.Answers.GatewaySysctlFile, dropIn); !slices.EqualFunc(before, after, bytes.Equal) {
				t.Error("a failed add-package changed the node's files or the config")
			}
			if _, u, _ := caddyState(); u.Restarts != 1 {
				t.Errorf("a failed add-package restarted Caddy: %+v", u)
			}
			fixed := newUI("dc-test")
			fixed.gateway = again.gateway
			if err := NewFlow(o, fixed).Run(context.Background()); err != nil {
				t.Fatalf("after the upgrade: %v", err)
			}
			if pkgs, u, _ := caddyState(); len(pkgs) != 1 || u.Restarts != 2 || !u.Active {
				t.Errorf("after the upgrade: packages %v, unit %+v", pkgs, u)
			}
			if done := strings.Join(fixed.texts(PhaseGateway, EventDone), "\n"); !strings.Contains(done, "added the acmedns module") || !strings.Contains(done, "restarted Caddy (new acmedns module)") {
				t.Errorf("after the upgrade, done: %q", done)
			}

			// Another upgrade, and this time the run stops after adding the
			// module, before Caddy's step: the next run, with nothing to
			// change, still restarts Caddy for it (noted on the node), once.
			if err := f.host.Store.Update(func(st *pve.State) error { st.Nodes["pve1"].CaddyPackages = nil; return nil }); err != nil {
				t.Fatal(err)
			}
			f.host.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"systemctl show"}, Action: "fail", Message: "Failed to connect to bus", Count: 1}}})
			if err := NewFlow(o, newUI("dc-test")).Run(context.Background()); err == nil {
				t.Fatal("the run with a failing systemctl succeeded")
			}
			if pkgs, u, _ := caddyState(); len(pkgs) != 1 || u.Restarts != 2 {
				t.Fatalf("after the interrupted run: packages %v, unit %+v", pkgs, u)
			}
			for i, want := range []int{3, 3} {
				resumed := newUI("dc-test")
				resumed.gateway = again.gateway
				if err := NewFlow(o, resumed).Run(context.Background()); err != nil {
					t.Fatalf("run %d after the interrupted one: %v", i+1, err)
				}
				if _, u, _ := caddyState(); u.Restarts != want {
					t.Errorf("run %d after the interrupted one: %d restarts, want %d", i+1, u.Restarts, want)
				}
			}

			// A dc_id of another provider: refused, with the fix.
			taken := newUI("taken")
			err = NewFlow(o, taken).Run(context.Background())
			if err == nil || !strings.Contains(err.Error(), `dc_id "taken" is registered to another provider`) || !strings.Contains(FixOf(err), "choose another dc_id") {
				t.Fatalf("taken dc_id: %v (fix %q)", err, FixOf(err))
			}
			if cfg, err := config.Load(o.Answers.ConfigPath); err != nil || cfg.Gateway.DCID != "dc-test" {
				t.Fatalf("the refused dc_id is in the config: %v %+v", err, cfg.Gateway)
			}
		})
	}
}

func snapshot(t *testing.T, paths ...string) [][]byte {
	t.Helper()
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestGatewayOwnCaddyfile: a provider's own Caddyfile is kept when it
// imports the sites directory and refused (not edited) when it does not;
// Debian's welcome-page Caddyfile is replaced.
func TestGatewayOwnCaddyfile(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "9.1.1")
	h := f.connect()
	dir := t.TempDir()
	gw := config.GatewayConfig{DCID: "dc-own", PublicIP: "203.0.113.10", CaddySitesDir: filepath.Join(dir, "sites"), Caddyfile: filepath.Join(dir, "Caddyfile")}
	gw.ApplyDefaults()
	fl := &Flow{host: h}
	run := func() (*collect, error) {
		c := &collect{}
		p := Plan{Steps: []Step{{ID: "caddyfile", Title: "Caddyfile", Run: func(ctx context.Context, r *Reporter) error { _, err := fl.writeCaddyfile(ctx, r, gw); return err }}}}
		_, err := p.Run(context.Background(), c.sink)
		return c, err
	}
	own := "example.org {\n\trespond \"hi\"\n}\n"
	if err := os.WriteFile(gw.Caddyfile, []byte(own), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := run(); err == nil || !strings.Contains(err.Error(), "does not import") || !strings.Contains(FixOf(err), "import "+gw.CaddySitesDir+"/*.caddy") {
		t.Fatalf("own Caddyfile without the import: %v (fix %q)", err, FixOf(err))
	}
	if b, _ := os.ReadFile(gw.Caddyfile); string(b) != own {
		t.Fatal("the provider's Caddyfile was changed")
	}
	own += "*.dc-own.gw.decent-cloud.org {\n\timport " + gw.CaddySitesDir + "/*.caddy\n}\n"
	_ = os.WriteFile(gw.Caddyfile, []byte(own), 0o644)
	if _, err := run(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(gw.Caddyfile); string(b) != own {
		t.Fatal("the provider's Caddyfile with the import was changed")
	}
	_ = os.WriteFile(gw.Caddyfile, []byte(debianCaddyfile+"\n:80 {\n\troot * /usr/share/caddy\n\tfile_server\n}\n"), 0o644)
	c, err := run()
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(gw.Caddyfile); !bytes.Equal(b, gateway.Caddyfile(gw, gateway.TLSAcmeDNS, caddyStorageDir)) {
		t.Fatalf("the package's Caddyfile was not replaced:\n%s", b)
	}
	if s := strings.Join(c.lines(EventDone), "\n"); !strings.Contains(s, "replaced the package's welcome-page") {
		t.Errorf("done: %q", s)
	}
}

// TestSameMachine: the agent runs on the node when setup reached it on a
// loopback or an own address, or when both have the same addresses — not
// when they only share one (cluster nodes' bridges often do).
func TestSameMachine(t *testing.T) {
	host := func(addrs ...string) gateway.Host {
		var h gateway.Host
		for _, a := range addrs {
			h.Ifaces = append(h.Ifaces, gateway.Iface{Name: "if" + a, Addrs: []netip.Prefix{netip.MustParsePrefix(a)}})
		}
		return h
	}
	ip := func(s string) []netip.Addr { return []netip.Addr{netip.MustParseAddr(s)} }
	local := host("127.0.0.1/8", "192.0.2.5/24")
	node := host("127.0.0.1/8", "203.0.113.10/24", "10.99.0.1/24")
	for _, c := range []struct {
		name  string
		addrs []netip.Addr
		local gateway.Host
		want  bool
	}{
		{"loopback", ip("127.0.0.1"), local, true},
		{"own address", ip("192.0.2.5"), local, true},
		{"another machine", ip("203.0.113.10"), local, false},
		{"the node's own address", ip("203.0.113.10"), host("127.0.0.1/8", "203.0.113.10/24"), true},
		{"through NAT, the node's addresses", ip("198.51.100.1"), host("127.0.0.1/8", "203.0.113.10/24", "10.99.0.1/24"), true},
		{"another cluster node, same bridge address", ip("198.51.100.1"), host("127.0.0.1/8", "203.0.113.11/24", "10.99.0.1/24"), false},
		{"unresolved", nil, local, false},
		{"unresolved, the node's addresses", nil, host("10.99.0.1/24", "127.0.0.1/8", "203.0.113.10/24"), true},
	} {
		if got := sameMachine(c.addrs, c.local, node); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestGatewayStopsWhenCaddyLacksTheModule: on a fresh node whose Caddy
// cannot get the acmedns module (add-package fails), the gateway plan
// stops at the caddy step with the fix: no Caddyfile, credentials or
// drop-in, Caddy untouched, and no dc_id registered.
func TestGatewayStopsWhenCaddyLacksTheModule(t *testing.T) {
	t.Parallel()
	f := newFixture(t, "9.1.1")
	srv := apitest.Start(t, apitest.WithPublicURL("https://api.example.org"))
	prov := srv.NewProvider("Acme")
	o := f.flowOptions(srv.URL, prov.Pubkey)
	gwDir := t.TempDir()
	gw := gatewayPaths(t, o.Answers.ConfigPath, gwDir)
	o.Answers.GatewaySysctlFile = filepath.Join(gwDir, "sysctl.d", "99-dc-gateway.conf")
	f.host.SetFaults(t, pvecli.Faults{Rules: []pvecli.FaultRule{{Match: []string{"caddy add-package"}, Action: "fail", Message: "Error: download failed: HTTP 502"}}})
	ui := &gatewayUI{scriptUI: &scriptUI{delegate: func(q DelegationQuestion) (string, error) {
		return srv.SignDelegation(prov, q.Request.AgentPubkey).Encode()
	}}, gateway: func(q GatewayQuestion) (GatewayAnswer, error) {
		return GatewayAnswer{Use: true, DCID: "dc-nomod", PublicIP: "203.0.113.10"}, nil
	}}
	err := NewFlow(o, ui).Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "HTTP 502") || !strings.Contains(FixOf(err), "caddy add-package github.com/caddy-dns/acmedns") {
		t.Fatalf("%v (fix %q)", err, FixOf(err))
	}
	if failed := ui.texts(PhaseGateway, EventFailed); len(failed) != 1 {
		t.Errorf("failed steps %q", failed)
	}
	for _, p := range []string{gw.Caddyfile, filepath.Join(filepath.Dir(gw.Caddyfile), "dc-gateway.env"), filepath.Join(f.host.StateDir, "systemd", "system", "caddy.service.d")} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s was written: %v", p, err)
		}
	}
	f.host.View(t, func(st *pve.State) {
		if n := st.Nodes["pve1"]; len(n.CaddyPackages) != 0 || len(n.Units) != 0 || n.DaemonReloads != 0 {
			t.Errorf("Caddy was changed: %v %v %d", n.CaddyPackages, n.Units, n.DaemonReloads)
		}
	})
	// dc-nomod was not registered: another provider can have it.
	other := srv.NewProvider("Other")
	if _, err := srv.Store.RegisterGateway(context.Background(), other.Pubkey, "dc-nomod", "https://api.example.org", time.Now().UnixNano()); err != nil {
		t.Errorf("dc-nomod was registered: %v", err)
	}
}
