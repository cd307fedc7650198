package setup

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/gateway"
)

// GatewayOffer is setup's proposal of a [gateway] (docs/gateway.md) when
// the VMs' bridge has a private subnet: tenants could not reach the VMs'
// addresses, so the node forwards its public address to them.
type GatewayOffer struct {
	Bridge string
	// Subnet is the bridge's, e.g. 10.10.0.0/24; HostIP the node's address
	// on it (the VMs' gateway).
	Subnet netip.Prefix
	HostIP netip.Addr
	// PublicIP is the node's address as setup reached it, when that is a
	// public IPv4, else (in the flow's question) the public address of the
	// node's default-route interface; invalid otherwise (behind NAT the
	// provider knows it).
	PublicIP netip.Addr
}

var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// GatewayOffer returns the offer for the chosen bridge: only when its
// subnet (as Proxmox reports it) is private. apiURL is the node's API as
// the agent reaches it (its host prefills public_ip when public).
func (d *Discovery) GatewayOffer(bridge, apiURL string) (GatewayOffer, bool) {
	b, ok := d.Bridge(bridge)
	if !ok || b.CIDR == "" {
		return GatewayOffer{}, false
	}
	p, err := netip.ParsePrefix(b.CIDR)
	if err != nil || !p.Addr().Is4() || !(p.Addr().IsPrivate() || cgnat.Contains(p.Addr())) {
		return GatewayOffer{}, false
	}
	o := GatewayOffer{Bridge: b.Name, Subnet: p.Masked(), HostIP: p.Addr()}
	if u, err := url.Parse(apiURL); err == nil {
		host := u.Hostname()
		if h, _, err := net.SplitHostPort(u.Host); err == nil {
			host = h
		}
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is4() && ip.IsGlobalUnicast() && !ip.IsPrivate() && !cgnat.Contains(ip) {
			o.PublicIP = ip
		}
	}
	return o, true
}

// Text explains the offer and gives the [gateway] section to add,
// prefilled from what setup discovered.
func (o GatewayOffer) Text(configPath string) string {
	pub := `"<the node's public IPv4>"`
	if o.PublicIP.IsValid() {
		pub = fmt.Sprintf("%q", o.PublicIP.String())
	}
	var b strings.Builder
	fmt.Fprintf(&b, "The VMs' bridge %s has a private subnet (%s, the node is %s): tenants cannot reach those addresses.\n", o.Bridge, o.Subnet, o.HostIP)
	fmt.Fprintf(&b, "A gateway forwards the node's public address to each VM (SSH port, HTTPS by name); to use it, add to %s:\n", configPath)
	fmt.Fprintf(&b, "  [gateway]\n  dc_id = \"<2-20 of a-z 0-9 ->\"\n  public_ip = %s\n", pub)
	b.WriteString("then install Caddy (apt install caddy), run dc-agent doctor and restart the service (docs/gateway.md).")
	return b.String()
}

// gatewayHint is the offer for the hint at the end of setup, or "" when
// the bridge is public, unknown, or a [gateway] is configured already.
func (f *Flow) gatewayHint() string {
	if f.disc == nil || f.o.Gateway != nil || f.gwAsked && f.gw.Use {
		return ""
	}
	o, ok := f.disc.GatewayOffer(f.ans.Bridge, f.ans.ProxmoxAPIURL)
	if !ok {
		return ""
	}
	if cfg, err := config.Load(f.ans.ConfigPath); err == nil && cfg.Gateway != nil {
		return ""
	}
	return "\n\n" + o.Text(f.ans.ConfigPath)
}

// The gateway step of the flow. When the chosen bridge is private (the
// offer above), a GatewayUI is asked whether to use the gateway (dc_id,
// public_ip); --no-tui answers from flags. Chosen, the gateway plan runs
// after the registration (the dc_id is registered with the agent's key):
// it checks the node's network over SSH, installs Caddy, the sites
// directory, the Caddyfile and persistent IPv4 forwarding on the node,
// registers the dc_id, and writes [gateway] into the config last, so the
// agent never opens a gateway whose host is not ready.

// PhaseGateway sets up the gateway on the node.
const PhaseGateway Phase = "gateway"

// GatewayUI is a front end that offers the gateway when the VMs' bridge
// is private. A UI without it is not asked: the end hint shows the offer.
type GatewayUI interface {
	Gateway(ctx context.Context, q GatewayQuestion) (GatewayAnswer, error)
}

// GatewayAnswer is whether to use the gateway, and its dc_id and public_ip.
type GatewayAnswer struct {
	Use      bool
	DCID     string
	PublicIP string
}

// GatewayQuestion offers the gateway: the bridge found private, the
// prefill, and (Elsewhere) why it cannot work from this machine.
type GatewayQuestion struct {
	Offer      GatewayOffer
	Answer     GatewayAnswer
	ConfigPath string
	// Elsewhere says that the agent will not run on the node, and what to
	// do ("" when it does, or when that is unknown).
	Elsewhere string
	Err       error
}

// DefaultGatewaySysctlFile keeps net.ipv4.ip_forward = 1 on the node.
const DefaultGatewaySysctlFile = "/etc/sysctl.d/99-dc-gateway.conf"

// caddyStorageDir is where the gateway's Caddy keeps its certificates
// (Debian's caddy user's home).
const caddyStorageDir = "/var/lib/caddy"

// CheckGatewayDCID checks a dc_id as the config does (2-20 of a-z 0-9 -).
func CheckGatewayDCID(id string) error {
	return checkGatewayKey(config.GatewayConfig{DCID: id, PublicIP: "192.0.2.1"}, "dc_id")
}

// CheckGatewayPublicIP checks public_ip as the config does (IPv4).
func CheckGatewayPublicIP(ip string) error {
	return checkGatewayKey(config.GatewayConfig{DCID: "dc", PublicIP: ip}, "public_ip")
}

func checkGatewayKey(g config.GatewayConfig, key string) error {
	g.ApplyDefaults()
	for _, m := range g.Validate(func(string, ...any) {}) {
		if strings.Contains(m, "gateway."+key) {
			return errors.New(strings.TrimPrefix(m, "gateway."))
		}
	}
	return nil
}

// CheckGatewayAnswer checks a chosen gateway's dc_id and public_ip.
func CheckGatewayAnswer(a GatewayAnswer) error {
	if !a.Use {
		return nil
	}
	if err := CheckGatewayDCID(a.DCID); err != nil {
		return &AnswerError{Field: "gateway-dc-id", Err: err}
	}
	if err := CheckGatewayPublicIP(a.PublicIP); err != nil {
		return &AnswerError{Field: "gateway-public-ip", Err: err}
	}
	return nil
}

// RegisterGateway claims dcID for the provider with the agent's client,
// as setup does; a dc_id of another provider is refused with the fix.
func RegisterGateway(ctx context.Context, c *dcapi.Client, dcID string) (dcapi.GatewayRegistration, error) {
	reg, err := c.RegisterGateway(ctx, dcID)
	switch {
	case err != nil && strings.Contains(err.Error(), "different provider"):
		return reg, Fixf("choose another dc_id (--gateway-dc-id, or go back to the gateway question)",
			"dc_id %q is registered to another provider", dcID)
	case err != nil && dcapi.IsAuth(err):
		return reg, WithFix(fmt.Errorf("register gateway dc_id %q: %w", dcID, err),
			"the agent needs the dns_manage permission: register it with a setup token, or a delegation that grants dns_manage")
	case err != nil:
		return reg, fmt.Errorf("register gateway dc_id %q: %w", dcID, err)
	}
	return reg, nil
}

// gatewayOffer is the offer for the chosen bridge (ok false: none).
func (f *Flow) gatewayOffer() (GatewayOffer, bool) {
	d, a := f.discovery(), f.answers()
	if d == nil {
		return GatewayOffer{}, false
	}
	return d.GatewayOffer(a.Bridge, a.ProxmoxAPIURL)
}

// asksGateway: a GatewayUI is asked when the bridge is private and no
// flag answered.
func (f *Flow) asksGateway() bool {
	_, ui := f.ui.(GatewayUI)
	_, ok := f.gatewayOffer()
	return f.backend == config.TypeProxmox && ui && f.o.Gateway == nil && ok
}

// gatewayAnswer is the gateway chosen: asked, or from the flags.
func (f *Flow) gatewayAnswer() GatewayAnswer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.gwAsked {
		return f.gw
	}
	if f.o.Gateway != nil {
		return *f.o.Gateway
	}
	return GatewayAnswer{}
}

func (f *Flow) wantsGateway() bool {
	return f.backend == config.TypeProxmox && f.gatewayAnswer().Use
}

// oldGateway is the existing config's [gateway] (defaults applied), or
// the defaults.
func (f *Flow) oldGateway() config.GatewayConfig {
	var g config.GatewayConfig
	if f.existing != nil && f.existing.Gateway != nil {
		g = *f.existing.Gateway
	}
	g.ApplyDefaults()
	return g
}

// nodeNetwork runs gateway.HostScript on the node (r nil: quietly).
func (f *Flow) nodeNetwork(ctx context.Context, r *Reporter) (gateway.Host, error) {
	res, err := f.host.Run(ctx, r, Cmd{Args: []string{"sh", "-c", gateway.HostScript}, Quiet: true})
	if err != nil {
		return gateway.Host{}, fmt.Errorf("read the node's network: %w", err)
	}
	return gateway.ParseHost(res.Stdout)
}

// gatewayPrefill is the question's prefill: the config's [gateway], the
// flags, the node's address as setup reached it when public, else the
// address of the node's default-route interface when public.
func (f *Flow) gatewayPrefill(o GatewayOffer, node *gateway.Host) GatewayAnswer {
	a := GatewayAnswer{}
	if f.existing != nil && f.existing.Gateway != nil {
		g := f.existing.Gateway
		a = GatewayAnswer{Use: g.DCID != "" && g.PublicIP != "", DCID: g.DCID, PublicIP: g.PublicIP}
	}
	if a.PublicIP == "" && o.PublicIP.IsValid() {
		a.PublicIP = o.PublicIP.String()
	}
	if a.PublicIP == "" && node != nil {
		if ip, ok := node.PublicIPv4(); ok {
			a.PublicIP = ip.String()
		}
	}
	return a
}

// askGateway offers the gateway for the private bridge.
func (f *Flow) askGateway(ctx context.Context) error {
	o, _ := f.gatewayOffer()
	var node *gateway.Host
	if h, err := f.nodeNetwork(ctx, nil); err == nil {
		node = &h
	}
	q := GatewayQuestion{Offer: o, Answer: f.gatewayPrefill(o, node), ConfigPath: f.answers().ConfigPath}
	if node != nil && !q.Offer.PublicIP.IsValid() {
		q.Offer.PublicIP, _ = node.PublicIPv4()
	}
	if f.gwAsked {
		q.Answer = f.gatewayAnswer()
	}
	if node != nil {
		if on, why := agentOnNode(ctx, f.ssh.Host, *node); !on {
			q.Elsewhere = why
		}
	}
	for {
		a, err := f.ui.(GatewayUI).Gateway(ctx, q)
		if err != nil {
			return err
		}
		a.DCID, a.PublicIP = strings.TrimSpace(a.DCID), strings.TrimSpace(a.PublicIP)
		q.Answer = a
		if q.Err = CheckGatewayAnswer(a); q.Err != nil {
			continue
		}
		f.mu.Lock()
		f.gw, f.gwAsked = a, true
		f.mu.Unlock()
		return nil
	}
}

// agentOnNode says whether the agent set up here runs on the node: setup
// installs it on this machine, so the node must be this machine (reached
// on a loopback or an own address, or sharing an address with it).
func agentOnNode(ctx context.Context, sshHost string, node gateway.Host) (bool, string) {
	local, err := gateway.LocalHost(ctx)
	if err != nil {
		return true, "" // unknown: the check on the node decides
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(sshHost); err == nil {
		addrs = append(addrs, ip)
	} else if ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", sshHost); err == nil {
		addrs = ips
	}
	return sameMachine(addrs, local, node), fmt.Sprintf("the agent will run on this machine, which is not the node %s: the gateway forwards from the host the agent runs on, so it must run on the node", sshHost)
}

// sameMachine: the node, reached at addrs, is the machine whose network is
// local: reached on a loopback or one of local's addresses, or (reached
// through NAT, or by a name that did not resolve) with exactly local's
// addresses. One shared address is not enough: the nodes of a cluster
// often give their VM bridges the same gateway address.
func sameMachine(addrs []netip.Addr, local, node gateway.Host) bool {
	own := func(h gateway.Host) map[netip.Addr]bool {
		m := map[netip.Addr]bool{}
		for _, ifc := range h.Ifaces {
			for _, a := range ifc.Addrs {
				if !a.Addr().IsLoopback() {
					m[a.Addr()] = true
				}
			}
		}
		return m
	}
	l := own(local)
	for _, ip := range addrs {
		if ip.Unmap().IsLoopback() || l[ip.Unmap()] {
			return true
		}
	}
	n := own(node)
	return len(n) > 0 && maps.Equal(n, l)
}

// elsewhereFix is what to do when the agent would not run on the node.
const elsewhereFix = "run dc-agent setup on the Proxmox node itself (dc-agent setup proxmox --host localhost), or set up without the gateway (--no-gateway) and give the VMs public addresses"

// resolveGateway is the chosen gateway, its public_ip filled in from the
// node when the flags gave none.
func (f *Flow) resolveGateway(ctx context.Context) (GatewayAnswer, error) {
	a := f.gatewayAnswer()
	if a.PublicIP == "" {
		o, _ := f.gatewayOffer()
		var node *gateway.Host
		if h, err := f.nodeNetwork(ctx, nil); err == nil {
			node = &h
		}
		if a.PublicIP = f.gatewayPrefill(o, node).PublicIP; a.PublicIP == "" {
			return a, &AnswerError{Field: "gateway-public-ip", Err: errors.New("required: the node has no public address of its own (behind 1:1 NAT, give the NAT's public IPv4)")}
		}
	}
	return a, CheckGatewayAnswer(a)
}

// setUpGateway runs the gateway plan (when chosen).
func (f *Flow) setUpGateway(ctx context.Context) error {
	return f.runPlan(ctx, PhaseGateway, func() (*Plan, error) {
		a, err := f.resolveGateway(ctx)
		if err != nil {
			return nil, err
		}
		return f.gatewayPlan(a), nil
	})
}

// gatewayPlan: check, Caddy, sites dir, Caddyfile, forwarding, dc_id,
// Caddy's service, config.
func (f *Flow) gatewayPlan(a GatewayAnswer) *Plan {
	ans := f.answers()
	gw := f.oldGateway()
	gw.DCID, gw.PublicIP = a.DCID, a.PublicIP
	sysctlFile := cmp.Or(ans.GatewaySysctlFile, DefaultGatewaySysctlFile)
	var node gateway.Host
	// restartFor is what changed for Caddy in this run (its module,
	// Caddyfile, credentials): the caddy-service step restarts it then.
	// Each change is also noted on the node (restartMarker), so a run that
	// stops before that step leaves the restart to the next one.
	var restartFor []string
	h := f.host
	pend := func(ctx context.Context, r *Reporter, what string) error {
		restartFor = append(restartFor, what)
		_, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", `mkdir -p "$(dirname "$1")" && printf '%s\n' "$2" >> "$1"`, "sh", restartMarker(gw), what}, Quiet: true})
		return err
	}
	steps := []Step{
		{ID: "gateway-check", Title: "Check the node's network for the gateway", Run: func(ctx context.Context, r *Reporter) error {
			var err error
			if node, err = f.nodeNetwork(ctx, r); err != nil {
				return WithFix(err, "the node needs iproute2 (ip -j); check it, then re-run")
			}
			for _, fd := range gateway.CheckHost(node, gw, ans.Bridge, nil) {
				switch {
				case fd.Check == "gateway forwarding" && fd.Level == gateway.Fail:
					r.Notef("IPv4 forwarding is off; it is turned on below")
				case fd.Level == gateway.Fail:
					return Fixf(fd.Fix, "%s", fd.Message)
				case fd.Level == gateway.Warn:
					r.Warn(fd.Message, fd.Fix)
				default:
					r.Notef("%s", fd.Message)
				}
			}
			if on, why := agentOnNode(ctx, f.ssh.Host, node); !on {
				return Fixf(elsewhereFix, "%s", why)
			}
			r.Skip("node routes %s; public_ip %s", ans.Bridge, gw.PublicIP)
			return nil
		}},
		{ID: "caddy", Title: "Install Caddy with the acmedns module", Run: func(ctx context.Context, r *Reporter) error {
			res, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", "command -v caddy"}, Quiet: true, OK: []int{1, 127}})
			if err != nil {
				return err
			}
			var did []string
			path := strings.TrimSpace(string(res.Stdout))
			if res.ExitCode != 0 || path == "" {
				if _, err := h.Run(ctx, r, Cmd{Args: []string{"env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "caddy"}, Timeout: 15 * time.Minute}); err != nil {
					return WithFix(err, "install Caddy on the node (apt-get install caddy, see caddyserver.com/docs/install), then re-run")
				}
				did = append(did, "installed Caddy (apt-get install caddy)")
			}
			added, err := addAcmeDNS(ctx, h, r)
			if err != nil {
				return err
			}
			if added {
				did = append(did, "added the acmedns module (caddy add-package "+acmeDNSPackage+")")
				if err := pend(ctx, r, "acmedns module"); err != nil {
					return err
				}
			}
			if len(did) == 0 {
				r.Skip("Caddy is installed (%s) and has the acmedns module", path)
			} else {
				r.Changed("%s", strings.Join(did, "; "))
			}
			return nil
		}},
		{ID: "caddy-sites", Title: "Create " + gw.CaddySitesDir, Run: func(ctx context.Context, r *Reporter) error {
			res, err := h.Run(ctx, r, Cmd{Args: []string{"test", "-d", gw.CaddySitesDir}, OK: []int{1}})
			if err != nil {
				return err
			}
			if res.ExitCode == 0 {
				r.Skip("%s exists", gw.CaddySitesDir)
				return nil
			}
			if _, err := h.Run(ctx, r, Cmd{Args: []string{"mkdir", "-p", "-m", "0755", gw.CaddySitesDir}}); err != nil {
				return err
			}
			r.Changed("created %s", gw.CaddySitesDir)
			return nil
		}},
		{ID: "caddyfile", Title: "Write " + gw.Caddyfile, Run: func(ctx context.Context, r *Reporter) error {
			changed, err := f.writeCaddyfile(ctx, r, gw)
			if changed {
				err = errors.Join(err, pend(ctx, r, "Caddyfile"))
			}
			return err
		}},
		{ID: "forwarding", Title: "Keep IPv4 forwarding on", Run: func(ctx context.Context, r *Reporter) error {
			changed, err := writeRemoteFile(ctx, h, r, sysctlFile, []byte("# Written by dc-agent setup: the gateway forwards the node's public ports to the VMs.\nnet.ipv4.ip_forward = 1\n"), "0644", false)
			if err != nil {
				return err
			}
			var did []string
			if changed {
				did = append(did, "wrote "+sysctlFile)
			}
			if !node.Forwarding {
				if _, err := h.Run(ctx, r, Cmd{Args: []string{"sysctl", "-w", "net.ipv4.ip_forward=1"}}); err != nil {
					return err
				}
				did = append(did, "turned forwarding on")
			}
			if len(did) == 0 {
				r.Skip("forwarding is on and kept in %s", sysctlFile)
			} else {
				r.Changed("%s", strings.Join(did, "; "))
			}
			return nil
		}},
		{ID: "gateway-register", Title: "Register gateway " + gw.DCID, Run: func(ctx context.Context, r *Reporter) error {
			changed, err := f.registerGateway(ctx, r, gw)
			if changed {
				err = errors.Join(err, pend(ctx, r, "credentials"))
			}
			return err
		}},
		{ID: "caddy-service", Title: "Run Caddy with the gateway's credentials", Run: func(ctx context.Context, r *Reporter) error {
			return caddyService(ctx, h, r, gatewayEnvFile(gw), restartMarker(gw), restartFor)
		}},
		gatewayConfigStep(ans.ConfigPath, a),
	}
	return &Plan{Steps: steps}
}

// restartMarker lists, on the node, what changed for Caddy since it was
// last restarted by setup (beside the Caddyfile).
func restartMarker(gw config.GatewayConfig) string {
	return filepath.Join(filepath.Dir(gw.Caddyfile), "dc-gateway.restart")
}

// gatewayEnvFile holds the acme-dns credentials for Caddy's unit
// (EnvironmentFile=), beside the Caddyfile.
func gatewayEnvFile(gw config.GatewayConfig) string {
	return filepath.Join(filepath.Dir(gw.Caddyfile), "dc-gateway.env")
}

// registerGateway registers dc_id (once: the credentials file names it)
// and keeps the acme-dns credentials for Caddy; true when it wrote them.
func (f *Flow) registerGateway(ctx context.Context, r *Reporter, gw config.GatewayConfig) (bool, error) {
	env := gatewayEnvFile(gw)
	head := "# acme-dns credentials of gateway " + gw.DCID + " (dc-agent setup; Caddy's EnvironmentFile)\n"
	res, err := f.host.Run(ctx, r, Cmd{Args: []string{"sh", "-c", `[ -e "$1" ] || exit 3; cat -- "$1"`, "sh", env}, Secret: true, OK: []int{3}})
	if err != nil {
		return false, err
	}
	if res.ExitCode == 0 && strings.HasPrefix(string(res.Stdout), head) {
		r.Skip("dc_id %s is registered; its acme-dns credentials are in %s", gw.DCID, env)
		return false, nil
	}
	key := f.Summary().Key
	if key == nil || key.Key == nil {
		return false, errors.New("no agent key: the node plan did not run")
	}
	c, err := f.answers().Client(key.Key)
	if err != nil {
		return false, err
	}
	reg, err := RegisterGateway(ctx, c, gw.DCID)
	if err != nil {
		return false, err
	}
	body, err := gateway.CaddyEnv(reg)
	if err != nil {
		return false, err
	}
	if _, err := writeRemoteFile(ctx, f.host, r, env, append([]byte(head), body...), "0600", true); err != nil {
		return false, err
	}
	r.Changed("registered dc_id %s (%s.%s.%s); acme-dns credentials in %s", gw.DCID, gw.DCID, gw.GWPrefix, gw.Domain, env)
	return true, nil
}

// caddyfileHeader starts the Caddyfile the gateway writes.
const caddyfileHeader = "# Caddy configuration of a Decent Cloud gateway, written by dc-agent."

// debianCaddyfile marks the Caddyfile Debian's caddy package installs (a
// welcome page on :80).
const debianCaddyfile = "# The Caddyfile is an easy way to configure your Caddy web server."

// writeCaddyfile writes the gateway's Caddyfile unless the node has one
// of its own. A provider's own Caddyfile is not edited: where the import
// belongs (which site, which global options) is theirs to decide, and a
// wrong edit would take their sites down; one that imports the sites
// directory is kept, one that does not is refused with the lines to add.
// It returns whether it wrote the file.
func (f *Flow) writeCaddyfile(ctx context.Context, r *Reporter, gw config.GatewayConfig) (bool, error) {
	want := gateway.Caddyfile(gw, gateway.TLSAcmeDNS, caddyStorageDir)
	res, err := f.host.Run(ctx, r, Cmd{Args: []string{"sh", "-c", `[ -e "$1" ] || exit 3; cat -- "$1"`, "sh", gw.Caddyfile}, Quiet: true, OK: []int{3}})
	if err != nil {
		return false, err
	}
	old := res.Stdout
	switch {
	case res.ExitCode == 0 && bytes.Equal(old, want):
		r.Skip("%s is up to date", gw.Caddyfile)
		return false, nil
	case res.ExitCode == 0 && !bytes.HasPrefix(old, []byte(caddyfileHeader)) && !bytes.HasPrefix(old, []byte(debianCaddyfile)):
		if gateway.ImportsSites(old, gw.CaddySitesDir) {
			r.Skip("%s is your own and imports %s/*.caddy: kept as it is", gw.Caddyfile, gw.CaddySitesDir)
			return false, nil
		}
		return false, Fixf(fmt.Sprintf("add `import %s/*.caddy` inside a site block for *.%s (with the acme-dns tls settings, docs/gateway.md), or move the file away so dc-agent writes its own, then re-run",
			gw.CaddySitesDir, gw.Zone()),
			"%s is your own Caddyfile and does not import %s/*.caddy; dc-agent does not edit it", gw.Caddyfile, gw.CaddySitesDir)
	}
	if _, err := writeRemoteFile(ctx, f.host, r, gw.Caddyfile, want, "0644", false); err != nil {
		return false, err
	}
	switch {
	case res.ExitCode != 0:
		r.Changed("wrote %s (site *.%s, imports %s/*.caddy)", gw.Caddyfile, gw.Zone(), gw.CaddySitesDir)
	case bytes.HasPrefix(old, []byte(debianCaddyfile)):
		r.Changed("replaced the package's welcome-page %s (site *.%s, imports %s/*.caddy)", gw.Caddyfile, gw.Zone(), gw.CaddySitesDir)
	default:
		r.Changed("updated %s (site *.%s)", gw.Caddyfile, gw.Zone())
	}
	return true, nil
}

// writeRemoteFile makes path on the node hold data with mode, unless it
// does already; secret content is read and written without showing it
// (through stdin, never argv).
func writeRemoteFile(ctx context.Context, h *Host, r *Reporter, path string, data []byte, mode string, secret bool) (bool, error) {
	res, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", `[ -e "$1" ] || exit 3; cat -- "$1"`, "sh", path}, Quiet: true, Secret: secret, OK: []int{3}})
	if err != nil {
		return false, err
	}
	if res.ExitCode == 0 && bytes.Equal(res.Stdout, data) {
		return false, nil
	}
	const script = `set -e; umask 077; mkdir -p "$(dirname "$1")"; cat > "$1.dc-new"; chmod "$2" "$1.dc-new"; mv -f "$1.dc-new" "$1"`
	if _, err := h.Run(ctx, r, Cmd{Args: []string{"sh", "-c", script, "sh", path, mode}, Stdin: data, Secret: secret}); err != nil {
		return false, WithFix(err, "the SSH user must be able to write "+path+" on the node (root)")
	}
	return true, nil
}

// applyGateway puts the chosen dc_id and public_ip into the config's
// [gateway], keeping its other keys. The node plan's config step
// (incomplete true) only completes a [gateway] that lacks them, so the
// config it writes is valid; the gateway plan writes them last, once the
// node is ready and the dc_id registered: a refused dc_id never lands in
// the config.
func applyGateway(cfg *config.Config, a *GatewayAnswer, incomplete bool) {
	if a == nil || !a.Use {
		return
	}
	g := cfg.Gateway
	switch {
	case g == nil && incomplete:
		return
	case g == nil:
		g = &config.GatewayConfig{}
		cfg.Gateway = g
	case incomplete && g.DCID != "" && g.PublicIP != "":
		return
	}
	g.DCID, g.PublicIP = a.DCID, a.PublicIP
}

// gatewayConfigStep writes the chosen [gateway] into the config.
func gatewayConfigStep(path string, a GatewayAnswer) Step {
	return Step{ID: "gateway-config", Title: "Write [gateway] into " + path, Run: func(ctx context.Context, r *Reporter) error {
		return updateConfig(r, path, func(cfg *config.Config) { applyGateway(cfg, &a, false) })
	}}
}

// withoutGatewayDefaults is cfg with [gateway]'s default values left out,
// so the file names only what differs (a copy: cfg is not changed).
func withoutGatewayDefaults(cfg *config.Config) *config.Config {
	if cfg.Gateway == nil {
		return cfg
	}
	c, g := *cfg, *cfg.Gateway
	var d config.GatewayConfig
	d.ApplyDefaults()
	clear := func(v *string, def string) {
		if *v == def {
			*v = ""
		}
	}
	clearInt := func(v *int, def int) {
		if *v == def {
			*v = 0
		}
	}
	clear(&g.Domain, d.Domain)
	clear(&g.GWPrefix, d.GWPrefix)
	clear(&g.CaddySitesDir, d.CaddySitesDir)
	clear(&g.PortAllocationsPath, d.PortAllocationsPath)
	clear(&g.Caddyfile, d.Caddyfile)
	clear(&g.CaddyAdmin, d.CaddyAdmin)
	clearInt(&g.PortRangeStart, d.PortRangeStart)
	clearInt(&g.PortRangeEnd, d.PortRangeEnd)
	clearInt(&g.PortsPerVM, d.PortsPerVM)
	c.Gateway = &g
	return &c
}
