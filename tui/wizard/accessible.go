package wizard

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"

	"github.com/charmbracelet/huh"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup"
)

// RunAccessible is the wizard for terminals that cannot place the cursor
// (TERM=dumb) and for screen readers: the same flow, its questions as plain
// line prompts (huh's accessible mode), its plans as progress lines. It
// returns what to tell the provider at the end, also on failure.
func RunAccessible(ctx context.Context, o Options, in io.Reader, out io.Writer) (hint string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := NewPrompts(in, out)
	a.cancel, a.config = cancel, o.Flow.Answers.ConfigPath
	f := setup.NewFlow(o.Flow, a)
	err = f.Run(ctx)
	if err == nil && f.Stage() == setup.StageInstalled {
		s := f.Summary()
		on := "node "
		if s.Cloud != nil {
			on = setup.CloudNames[s.Cloud.Type] + ", region " + s.Cloud.Region
		} else if s.Discovery != nil {
			on += s.Discovery.Node
		}
		a.printf("\ndc-agent is set up: config %s, agent key %s, %s.\n", s.Answers.ConfigPath, s.Key.Pubkey, on)
	}
	return f.Hint(), err
}

// Prompts is the flow's UI as plain line prompts (huh's accessible mode):
// the wizard for TERM=dumb and screen readers, and what `setup proxmox`
// asks on a terminal for the answers its flags lack.
type Prompts struct {
	in      *eofReader
	out     io.Writer
	config  string
	printer *setup.Printer
	// cancel stops the flow on Ctrl-C while a plan runs (at a prompt,
	// Ctrl-C ends the program as usual).
	cancel      context.CancelFunc
	stopSignals func()
}

// NewPrompts asks on out and reads the answers from in.
func NewPrompts(in io.Reader, out io.Writer) *Prompts {
	return &Prompts{in: &eofReader{r: in}, out: out, printer: setup.NewPrinter(out, false), cancel: func() {}}
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

func (a *Prompts) ask(f huh.Field, what string) error {
	if err := f.RunAccessible(a.out, a.in); err != nil {
		return err
	}
	if a.in.eof {
		return fmt.Errorf("no answer for %s: the input ended", what)
	}
	return nil
}

func (a *Prompts) input(title, def string, check func(string) error) (string, error) {
	v := def
	f := huh.NewInput().Title(title).Value(&v).Validate(func(s string) error {
		if err := check(cmp.Or(strings.TrimSpace(s), def)); err != nil {
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

func (a *Prompts) confirm(title string) (bool, error) {
	var ok bool
	if err := a.ask(huh.NewConfirm().Title(title).Value(&ok), title); err != nil {
		return false, err
	}
	return ok, nil
}

func (a *Prompts) printf(format string, args ...any) { fmt.Fprintf(a.out, format, args...) }

func noCheck(string) error { return nil }

func (a *Prompts) Prerequisites(_ context.Context, checks []setup.Check) (bool, error) {
	a.printf("dc-agent setup: this makes this machine the Decent Cloud agent of a Proxmox VE node.\n")
	a.printf("Each step checks first and changes only what differs: stop (Ctrl-C) and re-run any time.\n\nPrerequisites:\n")
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
	}
	a.printf("\n")
	return false, nil
}

// The questions: a refusal (Err) the prompts' own checks did not catch
// ends the run with it, as --no-tui does.

func (a *Prompts) API(_ context.Context, q setup.APIQuestion) (setup.APIAnswer, error) {
	ans := q.Answer
	if q.Err != nil {
		return ans, q.Err
	}
	var err error
	if ans.Endpoint, err = a.input("Decent Cloud API endpoint", ans.Endpoint, setup.CheckEndpoint); err != nil {
		return ans, err
	}
	ans.Method = cmp.Or(ans.Method, q.Methods[0])
	if len(q.Methods) > 1 {
		var opts []huh.Option[setup.RegistrationMethod]
		for _, m := range q.Methods {
			opts = append(opts, huh.NewOption(methodTitle(m), m))
		}
		if err := a.ask(huh.NewSelect[setup.RegistrationMethod]().Title("Register the agent with").Options(opts...).Value(&ans.Method), "the registration"); err != nil {
			return ans, err
		}
	}
	if ans.Method == setup.MethodDelegation {
		ans.Provider, err = a.input("Your provider public key (64 hex, from the Decent Cloud dashboard)", ans.Provider, func(s string) error {
			_, err := identity.NormalizePublicKeyHex(s)
			return err
		})
		return ans, err
	}
	title := "Setup token (from " + setup.TokenSource + ")"
	if q.Kept != nil {
		title = "Setup token (empty: keep the registration in pool " + q.Kept.String() + ")"
	}
	if ans.SetupToken != "" {
		title += " [the one given]"
	}
	tok := ""
	f := huh.NewInput().Title(title).Value(&tok).Validate(func(s string) error {
		if strings.TrimSpace(s) == "" && (q.Kept != nil || ans.SetupToken != "") {
			return nil
		}
		if err := setup.CheckSetupToken(s); err != nil {
			return fmt.Errorf("  %v\n  fix: %s", err, setup.FixOf(err))
		}
		return nil
	})
	if err := a.ask(f, "the setup token"); err != nil {
		return ans, err
	}
	ans.SetupToken = cmp.Or(strings.TrimSpace(tok), ans.SetupToken)
	return ans, nil
}

// methodTitle is how a registration method is offered.
func methodTitle(m setup.RegistrationMethod) string {
	if m == setup.MethodSetupToken {
		return "a setup token from the Decent Cloud dashboard"
	}
	return "an offline-signed delegation (your provider key signs on another machine)"
}

func (a *Prompts) SSH(_ context.Context, q setup.SSHQuestion) (setup.SSHAnswer, error) {
	ans := q.Answer
	if q.Err != nil {
		return ans, q.Err
	}
	var err error
	if ans.Host, err = a.input("Proxmox VE node (SSH name or address)", ans.Host, setup.CheckHost); err != nil {
		return ans, err
	}
	port, err := a.input("SSH port", strconv.Itoa(cmp.Or(ans.Port, 22)), func(s string) error { _, err := setup.ParsePort(s); return err })
	if err != nil {
		return ans, err
	}
	ans.Port, _ = setup.ParsePort(port)
	if ans.User, err = a.input("SSH user", cmp.Or(ans.User, "root"), noCheck); err != nil {
		return ans, err
	}
	ans.IdentityFile, err = a.input("SSH key file (empty: ssh-agent or a password)", ans.IdentityFile, setup.CheckKeyFile)
	return ans, err
}

func (a *Prompts) Password(_ context.Context, user, host string) (string, error) {
	if _, ok := a.in.r.(interface{ Fd() uintptr }); !ok {
		return "", setup.Fixf("pass --identity-file or --password-file", "no SSH key, no ssh-agent, and no terminal to type a password on")
	}
	var pw string
	err := a.ask(huh.NewInput().Title(fmt.Sprintf("SSH password for %s@%s:", user, host)).EchoMode(huh.EchoModePassword).Value(&pw), "the SSH password")
	return pw, err
}

func (a *Prompts) ConfirmHostKey(_ context.Context, q setup.HostKeyQuestion) (bool, error) {
	i := q.Info
	a.printf("\n%s presents this %s host key:\n    %s\nCheck it on the node: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n", i.Addr, i.Type, i.Fingerprint)
	return a.confirm("Is this the right key? It will be pinned")
}

// Backend asks what the agent provisions on.
func (a *Prompts) Backend(_ context.Context, q setup.BackendQuestion) (string, error) {
	v := q.Answer
	var opts []huh.Option[string]
	for _, b := range q.Backends {
		opts = append(opts, huh.NewOption(strings.Join(strings.Fields(backendTitles[b]), " "), b))
	}
	err := a.ask(huh.NewSelect[string]().Title("What does this agent provision machines on?").Options(opts...).Value(&v), "the backend")
	return v, err
}

// Cloud asks for the token file, then (the token accepted) the region.
func (a *Prompts) Cloud(_ context.Context, q setup.CloudQuestion) (setup.CloudChoice, error) {
	c := q.Answer
	name := setup.CloudNames[q.Type]
	if q.Err != nil {
		return c, q.Err
	}
	if q.Catalog == nil {
		var err error
		c.TokenFile, err = a.input(name+" API token file (chmod 600, the token only)", c.TokenFile, func(s string) error {
			if s == "" {
				return errors.New("enter the token file")
			}
			return nil
		})
		return c, err
	}
	a.printf("%s account %s: %d regions, %d sizes.\n", name, q.Catalog.Account, len(q.Catalog.Regions), len(q.Catalog.Sizes))
	var opts []huh.Option[string]
	for _, r := range q.Catalog.Regions {
		opts = append(opts, huh.NewOption(r.ID+" "+r.Name, r.ID))
	}
	if !slices.ContainsFunc(q.Catalog.Regions, func(r provisioners.CatalogRegion) bool { return r.ID == c.Region }) && len(opts) > 0 {
		c.Region = q.Catalog.Regions[0].ID
	}
	err := a.ask(huh.NewSelect[string]().Title("Default region for new servers").Options(opts...).Value(&c.Region), "the region")
	return c, err
}

func (a *Prompts) Choose(_ context.Context, q setup.ChoiceQuestion) (setup.Choices, error) {
	c, d := q.Choices, q.Discovery
	if q.Err != nil {
		return c, q.Err
	}
	if len(d.AgentTokens) > 0 {
		a.printf("%s\n", strings.ReplaceAll(agentsBefore(d), "\n", " "))
	}
	c.Storage = cmp.Or(c.Storage, d.Storages[0].ID)
	var sopts []huh.Option[string]
	for _, s := range d.Storages {
		sopts = append(sopts, huh.NewOption(fmt.Sprintf("%s (%s, %d GiB free)", s.ID, s.Type, s.Avail>>30), s.ID))
	}
	if err := a.ask(huh.NewSelect[string]().Title("Storage for templates and VM disks").Options(sopts...).Value(&c.Storage), "the storage"); err != nil {
		return c, err
	}
	c.Bridge = cmp.Or(c.Bridge, d.Bridges[0].Name)
	var bopts []huh.Option[string]
	for _, b := range d.Bridges {
		bopts = append(bopts, huh.NewOption(b.Name+" "+b.CIDR, b.Name))
	}
	if err := a.ask(huh.NewSelect[string]().Title("Bridge for VM networks").Options(bopts...).Value(&c.Bridge), "the bridge"); err != nil {
		return c, err
	}
	var topts []huh.Option[string]
	for _, img := range setup.Images {
		topts = append(topts, huh.NewOption(fmt.Sprintf("%s (%s, ~%d MB)", img.Name, img.Title, img.SizeMB), img.Name).Selected(slices.Contains(c.Templates, img.Name)))
	}
	if err := a.ask(huh.NewMultiSelect[string]().Title("Templates to build (a number toggles one; 0 when done)").Options(topts...).Value(&c.Templates), "the templates"); err != nil {
		return c, err
	}
	if len(c.Templates) == 0 {
		return c, nil // the flow refuses it, with the fix
	}
	ok, err := a.confirm(fmt.Sprintf("Set up node %s now (templates %s on %s, bridge %s, user %s, role %s, API token)?",
		d.Node, strings.Join(c.Templates, ", "), c.Storage, c.Bridge, setup.PVEUser, setup.PVERole))
	if err == nil && !ok {
		err = errors.New("stopped; nothing was changed on the node")
	}
	return c, err
}

// Gateway offers the gateway for a private bridge: use it, its dc_id and
// public_ip (prefilled).
func (a *Prompts) Gateway(_ context.Context, q setup.GatewayQuestion) (setup.GatewayAnswer, error) {
	ans, o := q.Answer, q.Offer
	if q.Err != nil {
		return ans, q.Err
	}
	a.printf("\nThe VMs' bridge %s has a private subnet (%s, the node is %s): tenants cannot reach those addresses.\n", o.Bridge, o.Subnet, o.HostIP)
	a.printf("A gateway forwards the node's public address to each VM (an SSH port, HTTPS by name; docs/gateway.md).\n")
	if q.Elsewhere != "" {
		a.printf("Note: %s.\n", q.Elsewhere)
	}
	use := ans.Use
	if err := a.ask(huh.NewConfirm().Title("Use the gateway? (Caddy, IPv4 forwarding on the node; a name per VM)").Value(&use), "the gateway"); err != nil {
		return ans, err
	}
	if ans.Use = use; !use {
		return ans, nil
	}
	var err error
	if ans.DCID, err = a.input("Gateway dc_id (2-20 of a-z 0-9 -; VM names <slug>.<dc_id>.gw.decent-cloud.org)", ans.DCID, setup.CheckGatewayDCID); err != nil {
		return ans, err
	}
	ans.PublicIP, err = a.input("Gateway public IPv4 (what tenants connect to; behind 1:1 NAT the NAT's)", ans.PublicIP, setup.CheckGatewayPublicIP)
	return ans, err
}

func (a *Prompts) Delegate(_ context.Context, q setup.DelegationQuestion) (string, error) {
	if q.Err != nil {
		return "", q.Err
	}
	a.printf("\nDelegate the agent key with your provider key. The request:\n%s\n  %s\n\n", q.Request.Summary(), q.Code)
	a.printf("On the machine that holds your provider key, run:\n  %s\n\n", setup.SignCommand(q.Code))
	return a.Paste(q)
}

// Paste asks for the signed delegation, checked as it is given; empty
// registers later.
func (a *Prompts) Paste(q setup.DelegationQuestion) (string, error) {
	var pasted string
	paste := huh.NewInput().Title("Paste the signed delegation (dcds1:...), or press Enter to register later:").Value(&pasted).Validate(func(s string) error {
		if strings.TrimSpace(s) == "" {
			return nil
		}
		if _, _, err := q.Check(s); err != nil {
			return fmt.Errorf("  %v\n  fix: %s", err, setup.FixOf(err))
		}
		return nil
	})
	err := a.ask(paste, "the signed delegation")
	return strings.TrimSpace(pasted), err
}

// Started catches Ctrl-C while a plan runs, so the plan stops between
// steps (or inside the remote command) and says so.
func (a *Prompts) Started(setup.Phase, []setup.Step) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt)
	done := make(chan struct{})
	go func() {
		select {
		case <-ch:
			a.cancel()
		case <-done:
		}
	}()
	a.stopSignals = func() { signal.Stop(ch); close(done) }
}

func (a *Prompts) Event(e setup.Event) { a.printer.Print(e) }

func (a *Prompts) Ended(_ context.Context, phase setup.Phase, err error) (bool, error) {
	if a.stopSignals != nil {
		a.stopSignals()
		a.stopSignals = nil
	}
	if err == nil && phase == setup.PhaseNode {
		a.printf("\nThe node is ready; the config is in %s.\n", a.config)
	}
	return false, err
}
