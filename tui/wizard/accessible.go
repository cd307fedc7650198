package wizard

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"time"

	"github.com/charmbracelet/huh"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
)

// RunAccessible is the wizard for terminals that cannot place the cursor
// (TERM=dumb) and for screen readers: the same questions as plain line
// prompts (huh's accessible mode), the same answers (setup.ProxmoxAnswers
// through FillDefaults), the same plans, printed as progress lines. It
// returns what to tell the provider at the end, also on failure.
func RunAccessible(ctx context.Context, o Options, in io.Reader, out io.Writer) (hint string, err error) {
	a := &accessible{o: o, in: &eofReader{r: in}, out: out, now: o.Now}
	if a.now == nil {
		a.now = time.Now
	}
	err = a.run(ctx)
	return a.hint(), err
}

type accessible struct {
	o     Options
	in    *eofReader
	out   io.Writer
	now   func() time.Time
	stage stage
	ans   setup.ProxmoxAnswers
	code  string
	file  string
}

// eofReader notes the end of input: huh's prompts answer their default
// there, and the wizard must stop instead of taking that as an answer.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if errors.Is(err, io.EOF) {
		e.eof = true
	}
	return n, err
}

func (a *accessible) ask(f huh.Field, what string) error {
	if err := f.RunAccessible(a.out, a.in); err != nil {
		return err
	}
	if a.in.eof {
		return fmt.Errorf("no answer for %s: the input ended", what)
	}
	return nil
}

func (a *accessible) input(title, def string, check func(string) error) (string, error) {
	v := def
	f := huh.NewInput().Title(title).Value(&v).Validate(func(s string) error {
		if strings.TrimSpace(s) == "" {
			s = def
		}
		if check == nil {
			return nil
		}
		if err := check(strings.TrimSpace(s)); err != nil {
			return fmt.Errorf("  %v", err)
		}
		return nil
	})
	if def != "" {
		title += " [" + def + "]"
		f.Title(title)
	}
	if err := a.ask(f, title); err != nil {
		return "", err
	}
	return strings.TrimSpace(v), nil
}

func (a *accessible) confirm(title string) (bool, error) {
	var ok bool
	if err := a.ask(huh.NewConfirm().Title(title).Value(&ok), title); err != nil {
		return false, err
	}
	return ok, nil
}

func (a *accessible) printf(format string, args ...any) { fmt.Fprintf(a.out, format, args...) }

func (a *accessible) hint() string {
	m := &Model{o: a.o, stage: a.stage, answers: a.ans, reqCode: a.code, reqFile: a.file, finished: a.stage == stageInstalled}
	return m.resumeHint()
}

func (a *accessible) plan(ctx context.Context, steps ...setup.Step) error {
	p := setup.Plan{Steps: steps, Now: a.now}
	_, err := p.Run(ctx, setup.NewPrinter(a.out, false).Sink())
	return err
}

func (a *accessible) run(ctx context.Context) error {
	o := a.o
	existing, _, loadErr := setup.LoadForUpdate(o.Answers.ConfigPath)
	var oldPx *config.ProxmoxConfig
	if existing != nil {
		for _, p := range existing.AllProvisioners() {
			if p.Type == config.TypeProxmox && p.Proxmox != nil {
				oldPx = p.Proxmox
			}
		}
	}
	a.printf("dc-agent setup: this makes this machine the Decent Cloud agent of a Proxmox VE node.\n")
	a.printf("Each step checks first and changes only what differs: stop (Ctrl-C) and re-run any time.\n\nPrerequisites:\n")
	checks := Prereqs(o, existing, loadErr)
	if o.Prereqs != nil {
		checks = o.Prereqs()
	}
	for _, c := range checks {
		mark := markOK
		switch {
		case c.Warn:
			mark = markWarn
		case !c.OK:
			mark = markBad
		}
		a.printf("  %s %s\n", mark, c.Text)
		if c.Fix != "" && (!c.OK || c.Warn) {
			a.printf("      fix: %s\n", c.Fix)
		}
		if !c.OK && !c.Warn {
			return setup.WithFix(errors.New(c.Text), c.Fix)
		}
	}
	pre := o.Answers
	pre.FillDefaults(existing, "")
	a.printf("\n")
	endpoint, err := a.input("Decent Cloud API endpoint", pre.APIEndpoint, func(s string) error { _, err := dcapi.ParseEndpoint(s); return err })
	if err != nil {
		return err
	}
	provider, err := a.input("Your provider public key (64 hex, from the Decent Cloud dashboard)", pre.ProviderPubkey, func(s string) error {
		_, err := identity.NormalizePublicKeyHex(s)
		return err
	})
	if err != nil {
		return err
	}
	provider, _ = identity.NormalizePublicKeyHex(provider)
	host, err := a.input("Proxmox VE node (SSH name or address)", o.SSH.Host, func(s string) error {
		if s == "" || strings.ContainsAny(s, " \t\r\n'\"`$;&|<>\\") {
			return errors.New("a host name or address")
		}
		return nil
	})
	if err != nil {
		return err
	}
	portS, err := a.input("SSH port", strconv.Itoa(max(o.SSH.Port, 22)), func(s string) error {
		if n, err := strconv.Atoi(s); err != nil || n < 1 || n > 65535 {
			return errors.New("a port number, 1 to 65535")
		}
		return nil
	})
	if err != nil {
		return err
	}
	port, _ := strconv.Atoi(portS)
	user, err := a.input("SSH user", cmpOr(o.SSH.User, "root"), nil)
	if err != nil {
		return err
	}
	hs := newHostScreen(o.SSH)
	keyFile, err := a.input("SSH key file (empty: ssh-agent or a password)", hs.fields[3].value(), func(s string) error { return hs.fields[3].check(s) })
	if err != nil {
		return err
	}

	a.ans = o.Answers
	a.ans.APIEndpoint, a.ans.ProviderPubkey, a.ans.Now = endpoint, provider, a.now
	a.ans.FillDefaults(existing, host)
	sshOpts := setup.SSHOptions{Host: host, Port: port, User: user, Pins: setup.HostKeyStore{Path: a.ans.PinsPath()}}
	switch {
	case keyFile != "":
		sshOpts.IdentityFile = expandHome(keyFile)
	case o.SSH.PasswordFile != "":
		pw, err := identity.ReadSecretFile(o.SSH.PasswordFile)
		if err != nil {
			return setup.WithFix(err, "check --password-file (0600)")
		}
		sshOpts.Password = pw
	case os.Getenv("SSH_AUTH_SOCK") != "":
		sshOpts.UseAgent = true
	default:
		if _, ok := a.in.r.(interface{ Fd() uintptr }); !ok {
			return setup.Fixf("pass --identity-file or --password-file", "no SSH key, no ssh-agent, and no terminal to type a password on")
		}
		var pw string
		if err := a.ask(huh.NewInput().Title(fmt.Sprintf("SSH password for %s@%s:", user, host)).EchoMode(huh.EchoModePassword).Value(&pw), "the SSH password"); err != nil {
			return err
		}
		sshOpts.Password = pw
	}

	info, err := setup.ScanHostKey(ctx, host, port, sshOpts.Pins)
	if err != nil {
		return err
	}
	switch {
	case info.Changed:
		return setup.Fixf("check the key on the node (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); only if it matches, delete its line from "+a.ans.PinsPath()+" and re-run",
			"HOST KEY CHANGED for %s: it now presents %s, but another key is pinned", info.Addr, info.Fingerprint)
	case !info.Pinned:
		a.printf("\n%s presents this %s host key:\n    %s\nCheck it on the node: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n", info.Addr, info.Type, info.Fingerprint)
		ok, err := a.confirm("Is this the right key? It will be pinned")
		if err != nil {
			return err
		}
		if !ok {
			return errors.New("the host key was not confirmed; nothing was changed")
		}
	}
	sshOpts.HostKeyFingerprint = info.Fingerprint
	var h *setup.Host
	var disc *setup.Discovery
	if err := a.plan(ctx,
		setup.Step{ID: "connect", Title: fmt.Sprintf("Connect to %s@%s", user, host), Run: func(ctx context.Context, r *setup.Reporter) error {
			var err error
			h, err = setup.Connect(ctx, sshOpts)
			if err == nil {
				r.Summarize("logged in; host key %s", h.Fingerprint)
			}
			return err
		}},
		setup.Step{ID: "discover", Title: "Discover the node", Run: func(ctx context.Context, r *setup.Reporter) error {
			var err error
			disc, err = setup.Discover(ctx, h, r, o.Node)
			if err == nil {
				r.Summarize("node %s, Proxmox VE %s", disc.Node, disc.Version.Version)
			}
			return err
		}}); err != nil {
		if h != nil {
			h.Close()
		}
		return err
	}
	defer h.Close()
	a.stage = stagePinned

	ds := newDiscoveryScreen(disc, a.ans, o, oldPx)
	if len(disc.Storages) == 0 || len(disc.Bridges) == 0 {
		m := &Model{disc: disc, discScr: ds}
		return m.choose()
	}
	storage := disc.Storages[max(ds.storage, 0)].ID
	sel := huh.NewSelect[string]().Title("Storage for templates and VM disks")
	var sopts []huh.Option[string]
	for _, s := range disc.Storages {
		sopts = append(sopts, huh.NewOption(fmt.Sprintf("%s (%s, %d GiB free)", s.ID, s.Type, s.Avail>>30), s.ID))
	}
	if err := a.ask(sel.Options(sopts...).Value(&storage), "the storage"); err != nil {
		return err
	}
	bridge := disc.Bridges[max(ds.bridge, 0)].Name
	var bopts []huh.Option[string]
	for _, b := range disc.Bridges {
		bopts = append(bopts, huh.NewOption(b.Name+" "+b.CIDR, b.Name))
	}
	if err := a.ask(huh.NewSelect[string]().Title("Bridge for VM networks").Options(bopts...).Value(&bridge), "the bridge"); err != nil {
		return err
	}
	templates := ds.templates()
	var topts []huh.Option[string]
	for _, img := range setup.Images {
		topts = append(topts, huh.NewOption(fmt.Sprintf("%s (%s, ~%d MB)", img.Name, img.Title, img.SizeMB), img.Name).Selected(contains(templates, img.Name)))
	}
	if err := a.ask(huh.NewMultiSelect[string]().Title("Templates to build (a number toggles one; 0 when done)").Options(topts...).Value(&templates), "the templates"); err != nil {
		return err
	}
	if len(templates) == 0 {
		return setup.Fixf("choose at least one template", "no templates chosen; nothing was changed on the node")
	}
	a.ans.Storage, a.ans.Bridge, a.ans.Templates = storage, bridge, templates
	ok, err := a.confirm(fmt.Sprintf("Set up node %s now (templates %s on %s, bridge %s, user %s, role %s, API token)?",
		disc.Node, strings.Join(templates, ", "), storage, bridge, setup.PVEUser, setup.PVERole))
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("stopped; nothing was changed on the node")
	}
	run, err := setup.NewProxmoxPlan(a.ans, h, disc)
	if err != nil {
		return err
	}
	a.stage = stagePlan
	pctx, stop := interruptible(ctx)
	err = a.plan(pctx, run.Plan.Steps...)
	stop()
	if err != nil {
		return err
	}
	a.stage = stageNodeReady
	ra := o.Request
	ra.Provider = a.ans.ProviderPubkey
	d, code, err := setup.DelegationRequest(run.Key.Pubkey, ra, a.now())
	if err != nil {
		return err
	}
	a.code, a.file = code, reqFilePath(a.ans.ConfigPath)
	if writeRequestFile(a.file, code) != nil {
		a.file = ""
	}
	a.printf("\nThe node is ready; the config is in %s.\nDelegate the agent key with your provider key. The request:\n%s\n  %s\n\n", a.ans.ConfigPath, d.Summary(), code)
	a.printf("On the machine that holds your provider key, run:\n  %s\n\n", signCommand(code))
	var pasted string
	paste := huh.NewInput().Title("Paste the signed delegation (dcds1:...):").Value(&pasted).Validate(func(s string) error {
		_, _, err := setup.AcceptDelegation(s, run.Key.Pubkey, a.ans.ProviderPubkey, a.now())
		if err != nil {
			return fmt.Errorf("  %v\n  fix: %s", err, setup.FixOf(err))
		}
		return nil
	})
	if err := a.ask(paste, "the signed delegation"); err != nil {
		return err
	}
	pasted = strings.TrimSpace(pasted)
	a.ans.Delegation = pasted
	ua := cmpOr(a.ans.UserAgent, "dc-agent")
	ans := a.ans
	if err := a.plan(ctx, setup.RegisterStep(pasted, run.Key, ans.ProviderPubkey, func(k ed25519.PrivateKey) (*dcapi.Client, error) {
		return dcapi.New(ans.APIEndpoint, ans.ProviderPubkey, k, dcapi.WithUserAgent(ua))
	}, a.now)); err != nil {
		return err
	}
	a.stage = stageRegistered
	so := o.Service
	so.ConfigPath = a.ans.ConfigPath
	if err := a.plan(ctx, setup.Step{ID: "service", Title: "Install the dc-agent service", Run: func(ctx context.Context, r *setup.Reporter) error {
		so.Progress = func(e service.Event) { r.Notef("%s %s", e.Step, e.Detail) }
		res, err := service.Install(ctx, so)
		if err != nil {
			return setup.WithFix(err, "fix what it says, then: dc-agent service install")
		}
		r.Changed("%s", res.UnitPath)
		return nil
	}}); err != nil {
		return err
	}
	a.stage = stageInstalled
	a.printf("\ndc-agent is set up: config %s, agent key %s, node %s.\n", a.ans.ConfigPath, run.Key.Pubkey, disc.Node)
	return nil
}

// interruptible cancels ctx on Ctrl-C while a plan runs, so the plan
// stops between steps (or inside the remote command) and says so.
func interruptible(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
