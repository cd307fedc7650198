package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/setup/service"
	"github.com/decent-stuff/dc-agent/tui/wizard"
)

func newSetupCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "setup",
		Short: "Prepare a provisioner backend and write the complete config",
	}
	cmd.AddCommand(newSetupProxmoxCmd(g))
	for _, typ := range setup.CloudTypes {
		cmd.AddCommand(newSetupCloudCmd(g, typ))
	}
	return cmd
}

// setupProxmoxFlags are the answers of `setup proxmox`; every one is also
// a DC_AGENT_* environment variable.
type setupProxmoxFlags struct {
	host, user, identityFile, passwordFile, hostKeyFP string
	port                                              int
	node, storage, bridge, templates                  string
	apiEndpoint, providerPubkey, proxmoxAPIURL        string
	imageMirror, imageDir                             string
	vmidBase                                          int
	stateDir, keyPath, tokenFile                      string
	rotateToken                                       bool
	delegation, expires, label, permissions           string
	setupToken                                        string
	gatewayDCID, gatewayPublicIP, gatewaySysctlFile   string
	noGateway                                         bool
	verbose, yes, asJSON                              bool
	timeout                                           time.Duration
}

func newSetupProxmoxCmd(g *globals) *cobra.Command {
	f := &setupProxmoxFlags{}
	cmd := &cobra.Command{
		Use:   "proxmox --host HOST [flags]",
		Short: "Set up a Proxmox VE node over SSH: templates, least-privilege API token, config",
		Long: `Connect to a Proxmox VE 8 or 9 node over SSH and prepare it for dc-agent:

  - pin the node's SSH host key (confirmed on a terminal, or --host-key-fingerprint)
  - discover the node, its API certificate, storages and bridges
  - build cloud-init templates (download + checksum, guest agent installed,
    machine-id emptied, virtio-scsi, serial console), or reuse good ones
  - create the user dc-agent@pve, the role DCAgent with exactly the privileges
    the provisioner needs on this PVE version, a privilege-separated API token,
    and ACLs on the pool, templates, storage and bridge; then check them
  - create the agent key if there is none; register it with --setup-token
    (from ` + setup.TokenSource + `) right after,
    or with --delegation at the end; write the complete config (0600) and the
    token secret file

Every step checks first and changes only what differs: running it again is
safe and changes nothing that is already right. Every remote command is
quoted, has a timeout, and is shown with --verbose.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSetupProxmox(cmd, g, f, nil) },
	}
	f.bind(cmd.Flags())
	return cmd
}

// bind defines the answers as flags of fl (setup proxmox, and the bare
// dc-agent whose wizard they prefill), each also a DC_AGENT_* variable.
func (f *setupProxmoxFlags) bind(fl *pflag.FlagSet) {
	fl.StringVar(&f.host, "host", "", "the Proxmox VE node's SSH host name or address (required)")
	fl.IntVar(&f.port, "port", 22, "SSH port")
	fl.StringVar(&f.user, "user", "root", "SSH user (root, or a user allowed to run qm and pveum)")
	fl.StringVar(&f.identityFile, "identity-file", "", "SSH private key (default: ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
	fl.StringVar(&f.passwordFile, "password-file", "", "file holding the SSH password (0600; instead of a key)")
	fl.StringVar(&f.hostKeyFP, "host-key-fingerprint", "", "expected SSH host key, SHA256:... as ssh-keygen -lf prints it (required without a terminal on first contact)")
	fl.StringVar(&f.node, "node", "", "node name in a cluster (default: the only node, or the one matching the host name)")
	fl.StringVar(&f.storage, "storage", "", "storage for templates and VM disks (default: from the config, else local-lvm, else the only one)")
	fl.StringVar(&f.bridge, "bridge", "", "network bridge for VMs (default: from the config, else vmbr0, else the only one)")
	fl.StringVar(&f.templates, "templates", strings.Join(setup.DefaultTemplates, ","), "templates to build, comma-separated: "+strings.Join(setup.ImageNames(), ", "))
	fl.StringVar(&f.apiEndpoint, "api-endpoint", "", "Decent Cloud API (default: from the config, else "+config.DefaultEndpoint+")")
	fl.StringVar(&f.providerPubkey, "provider-pubkey", "", "your provider public key, 64 hex (default: from the config)")
	fl.StringVar(&f.proxmoxAPIURL, "proxmox-api-url", "", "the node's API URL as the agent reaches it (default https://HOST:8006)")
	fl.StringVar(&f.imageMirror, "image-mirror", "", "download cloud images from this mirror root instead of the publishers")
	fl.StringVar(&f.imageDir, "image-dir", setup.DefaultImageDir, "where the node keeps downloaded cloud images")
	fl.IntVar(&f.vmidBase, "template-vmid-base", setup.DefaultVMIDBase, "lowest VMID for new templates")
	fl.StringVar(&f.stateDir, "state-dir", "", "agent state dir, where SSH host keys are pinned (default: from the config, else "+config.DefaultStateDir+")")
	fl.StringVar(&f.keyPath, "key", "", "agent key file (default: from the config, else agent.key beside it)")
	fl.StringVar(&f.tokenFile, "token-file", "", "where to write the Proxmox token secret (default: proxmox-token beside the config)")
	fl.BoolVar(&f.rotateToken, "rotate-token", false, "replace the Proxmox API token even if its secret is still here")
	fl.StringVar(&f.setupToken, "setup-token", "", "register with this setup token from "+setup.TokenSource+": file:PATH (0600) or - (stdin); the token itself shows in the process list")
	fl.StringVar(&f.delegation, "delegation", "", "the signed delegation to register: dcds1:CODE, file:PATH or - (stdin)")
	fl.StringVar(&f.expires, "expires", "never", "expiry of the delegation request: never, a duration (8760h, 365d) or an RFC 3339 time")
	host, _ := os.Hostname()
	fl.StringVar(&f.label, "label", host, "label of the delegation request, shown on the dashboard")
	fl.StringVar(&f.permissions, "permissions", strings.Join(identity.AllPermissions, ","), "permissions the delegation request asks for")
	fl.StringVar(&f.gatewayDCID, "gateway-dc-id", "", "set up the gateway (a private bridge) with this dc_id: 2-20 of a-z 0-9 -, the VMs' names <slug>.<dc_id>.gw.decent-cloud.org")
	fl.StringVar(&f.gatewayPublicIP, "gateway-public-ip", "", "the gateway's public IPv4, what tenants connect to (default: the node's public address; behind 1:1 NAT the NAT's)")
	fl.BoolVar(&f.noGateway, "no-gateway", false, "do not set up the gateway, and do not offer it, on a private bridge")
	fl.StringVar(&f.gatewaySysctlFile, "gateway-sysctl-file", setup.DefaultGatewaySysctlFile, "the file on the node that keeps IPv4 forwarding on for the gateway")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "show every remote command and its output")
	fl.BoolVarP(&f.yes, "yes", "y", false, "do not ask before changing the node")
	fl.BoolVar(&f.asJSON, "json", false, "print progress as JSON lines (one event each)")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Hour, "give up after this long")
	bindEnv(fl)
}

// flowOptions are the flags as the setup flow's prefill: --no-tui, the
// wizard and its accessible mode start from exactly these, so the same
// answers write the same config.
func (f *setupProxmoxFlags) flowOptions(g *globals, stdin io.Reader) (setup.FlowOptions, error) {
	ans := setup.ProxmoxAnswers{ConfigPath: g.configPath, StateDir: f.stateDir, KeyPath: f.keyPath, TokenFile: f.tokenFile,
		APIEndpoint: f.apiEndpoint, ProviderPubkey: f.providerPubkey, ProxmoxAPIURL: f.proxmoxAPIURL,
		ImageMirror: f.imageMirror, ImageDir: f.imageDir, VMIDBase: f.vmidBase, RotateToken: f.rotateToken,
		Storage: f.storage, Bridge: f.bridge, UserAgent: userAgent(), GatewaySysctlFile: f.gatewaySysctlFile}
	if f.templates != "" {
		ts, err := setup.ParseTemplateList(f.templates)
		if err != nil {
			return setup.FlowOptions{}, usagef("--templates: %v", err)
		}
		ans.Templates = ts
	}
	o := setup.FlowOptions{Answers: ans, HostKeyFingerprint: f.hostKeyFP, Node: f.node,
		SSH:     setup.SSHAnswer{Host: f.host, Port: f.port, User: f.user, IdentityFile: f.identityFile, PasswordFile: f.passwordFile},
		Request: setup.DelegationAnswers{Permissions: f.permissions, Expires: f.expires, Label: f.label}}
	switch {
	case f.noGateway && (f.gatewayDCID != "" || f.gatewayPublicIP != ""):
		return o, usagef("--no-gateway and --gateway-dc-id/--gateway-public-ip contradict each other; pass one")
	case f.noGateway:
		o.Gateway = &setup.GatewayAnswer{}
	case f.gatewayDCID != "" || f.gatewayPublicIP != "":
		o.Gateway = &setup.GatewayAnswer{Use: true, DCID: f.gatewayDCID, PublicIP: f.gatewayPublicIP}
	}
	if f.setupToken != "" {
		if f.delegation != "" {
			return o, usagef("--setup-token and --delegation are two ways to register; pass one")
		}
		tok, err := setup.ReadSetupToken(f.setupToken, stdin)
		if err != nil {
			return o, withFix(exitUsage, fmt.Errorf("--setup-token: %w", err))
		}
		o.SetupToken = tok
	}
	return o, nil
}

// runSetupProxmox runs the setup flow from flags (and, on a terminal
// without --no-tui, prompts for what they lack); svc installs the service
// at the end (bare dc-agent --no-tui).
func runSetupProxmox(cmd *cobra.Command, g *globals, f *setupProxmoxFlags, svc *service.Options) error {
	out := cmd.OutOrStdout()
	ui := &cliUI{f: f, out: out, config: g.configPath, sink: eventSink(out, f.asJSON, f.verbose)}
	if !g.noTUI && stdinIsTerminal() {
		ui.prompts = wizard.NewPrompts(os.Stdin, cmd.ErrOrStderr())
	}
	// A script with a missing answer fails at once, the host first.
	if f.host == "" && ui.prompts == nil {
		return usagef("--host is required (env %s)", envName("host"))
	}
	if cmd.Flags().Changed("setup-token") {
		warnTokenInArgv(cmd, f.setupToken)
	}
	o, err := f.flowOptions(g, cmd.InOrStdin())
	if err != nil {
		return err
	}
	if f.delegation != "" {
		if o.Answers.Delegation, err = readValue(f.delegation, cmd.InOrStdin()); err != nil {
			return usagef("--delegation: %v", err)
		}
	}
	o.Service = svc
	ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, f.timeout)
	defer cancelT()
	flow := setup.NewFlow(o, ui)
	if err := flow.Run(ctx); err != nil {
		return setupError(err)
	}
	if f.asJSON {
		return nil
	}
	switch flow.Stage() {
	case setup.StageInstalled:
		fmt.Fprintf(out, "Service installed: %s\nWatch it with: dc-agent --config %s\n", flow.Summary().Service.UnitPath, g.configPath)
	case setup.StageRegistered:
		fmt.Fprintln(out, "The agent is registered. Next: dc-agent doctor --verify-api, then dc-agent service install")
	}
	return nil
}

// setupError maps a flow error to its exit code: a refused answer is a
// usage error naming the flag.
func setupError(err error) error {
	var ae *setup.AnswerError
	var ce *setup.CheckError
	var unk *setup.HostKeyUnknownError
	var te *setup.TokenError
	switch {
	case isUsageError(err):
		return err
	case errors.As(err, &ae):
		return withFix(exitUsage, fmt.Errorf("--%w", ae))
	case errors.As(err, &ce) && ce.Err != nil:
		return withFix(exitConfig, ce.Err)
	case errors.As(err, &ce):
		return withExit(exitUsage, fmt.Errorf("%w\nfix: %s", ce, ce.Fix()))
	case errors.As(err, &unk):
		return withFix(exitUsage, err)
	case dcapi.IsAuth(err) || errors.As(err, &te):
		return withFix(exitAuth, err)
	}
	return withFix(exitFailure, err)
}

// cliUI answers the flow from the flags. On a terminal (without
// --no-tui) what they lack is asked by the wizard's line prompts, on
// stderr; without one the missing flag is named.
type cliUI struct {
	f       *setupProxmoxFlags
	out     io.Writer
	config  string
	prompts *wizard.Prompts // nil: no terminal
	sink    setup.Sink
}

func (u *cliUI) Prerequisites(context.Context, []setup.Check) (bool, error) { return false, nil }

func (u *cliUI) API(ctx context.Context, q setup.APIQuestion) (setup.APIAnswer, error) {
	a := q.Answer
	switch {
	case q.Err != nil:
		return a, q.Err
	case a.Method == setup.MethodSetupToken && (a.SetupToken != "" || q.Kept != nil),
		a.Method == setup.MethodDelegation && a.Provider != "":
		return a, nil
	case u.prompts == nil:
		return a, usagef("--setup-token is required: the setup token from %s, as file:PATH or in %s (or, with an API that takes offline-signed delegations, --provider-pubkey and --delegation)",
			setup.TokenSource, envName("setup-token"))
	}
	return u.prompts.API(ctx, q)
}

func (u *cliUI) SSH(ctx context.Context, q setup.SSHQuestion) (setup.SSHAnswer, error) {
	if q.Err != nil || q.Answer.Host != "" || u.prompts == nil {
		return q.Answer, q.Err // the host was checked before the flow started
	}
	return u.prompts.SSH(ctx, q)
}

func (u *cliUI) Password(ctx context.Context, user, host string) (string, error) {
	if u.prompts == nil {
		return "", usagef("--identity-file or --password-file is required without a terminal")
	}
	return u.prompts.Password(ctx, user, host)
}

func (u *cliUI) ConfirmHostKey(ctx context.Context, q setup.HostKeyQuestion) (bool, error) {
	if u.prompts == nil {
		return false, setup.UnknownHostKey(q.Info.Addr, q.Info.Fingerprint)
	}
	return u.prompts.ConfirmHostKey(ctx, q)
}

func (u *cliUI) Choose(ctx context.Context, q setup.ChoiceQuestion) (setup.Choices, error) {
	c := q.Choices
	if q.Err == nil && u.prompts != nil && (!u.f.yes || c.Storage == "" || c.Bridge == "") {
		// On a terminal: the choices and "go ahead?" before the node changes.
		return u.prompts.Choose(ctx, q)
	}
	return c, q.Err // the flow names what is missing
}

// Gateway: on a terminal the prompts ask; without one a configured
// gateway is kept (and checked again), else the offer is printed and setup
// goes on without the gateway (--gateway-dc-id sets it up, --no-gateway
// declines without the offer).
func (u *cliUI) Gateway(ctx context.Context, q setup.GatewayQuestion) (setup.GatewayAnswer, error) {
	switch {
	case u.prompts != nil:
		return u.prompts.Gateway(ctx, q)
	case q.Err != nil:
		return q.Answer, q.Err
	case q.Answer.Use:
		return q.Answer, nil
	}
	if !u.f.asJSON {
		fmt.Fprintf(u.out, "\n%s\nOr re-run with --gateway-dc-id ID (and --gateway-public-ip, if not %s) to set it up; --no-gateway stops this note.\n",
			q.Offer.Text(q.ConfigPath), cmp.Or(q.Answer.PublicIP, "the node's own address"))
		if q.Elsewhere != "" {
			fmt.Fprintf(u.out, "Note: %s.\n", q.Elsewhere)
		}
	}
	return setup.GatewayAnswer{}, nil
}

func (u *cliUI) Delegate(_ context.Context, q setup.DelegationQuestion) (string, error) {
	if u.f.asJSON {
		return "", nil
	}
	if q.Err != nil {
		return "", q.Err
	}
	fmt.Fprintf(u.out, "\nNext, delegate this agent key. The delegation request:\n%s\n  %s\n\n", q.Request.Summary(), q.Code)
	fmt.Fprintf(u.out, "On the machine that holds your provider key, run:\n  %s\n", setup.SignCommand(q.Code))
	fmt.Fprintln(u.out, "then here: dc-agent register --delegation 'dcds1:...'")
	if u.prompts == nil {
		return "", nil
	}
	// On a terminal the signed code can be pasted right away.
	return u.prompts.Paste(q)
}

func (u *cliUI) Started(setup.Phase, []setup.Step) {}

func (u *cliUI) Event(e setup.Event) { u.sink(e) }

func (u *cliUI) Ended(_ context.Context, phase setup.Phase, err error) (bool, error) {
	if err == nil && phase == setup.PhaseNode && !u.f.asJSON {
		fmt.Fprintf(u.out, "\nThe node is ready; config written to %s.\n", u.config)
	}
	return false, err
}

// eventSink prints plan events as plain lines or JSON lines.
func eventSink(w io.Writer, asJSON, verbose bool) setup.Sink {
	if !asJSON {
		return setup.NewPrinter(w, verbose).Sink()
	}
	enc := json.NewEncoder(w)
	return func(e setup.Event) {
		if e.Kind == setup.EventOutput && !verbose {
			return
		}
		_ = enc.Encode(e)
	}
}
