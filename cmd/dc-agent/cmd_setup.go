package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/setup"
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
  - create the agent key if there is none, write the complete config (0600)
    and the token secret file; with --delegation, register the agent

Every step checks first and changes only what differs: running it again is
safe and changes nothing that is already right. Every remote command is
quoted, has a timeout, and is shown with --verbose.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSetupProxmox(cmd, g, f) },
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
	fl.StringVar(&f.delegation, "delegation", "", "the signed delegation to register: dcds1:CODE, file:PATH or - (stdin)")
	fl.StringVar(&f.expires, "expires", "never", "expiry of the delegation request: never, a duration (8760h, 365d) or an RFC 3339 time")
	host, _ := os.Hostname()
	fl.StringVar(&f.label, "label", host, "label of the delegation request, shown on the dashboard")
	fl.StringVar(&f.permissions, "permissions", strings.Join(identity.AllPermissions, ","), "permissions the delegation request asks for")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "show every remote command and its output")
	fl.BoolVarP(&f.yes, "yes", "y", false, "do not ask before changing the node")
	fl.BoolVar(&f.asJSON, "json", false, "print progress as JSON lines (one event each)")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Hour, "give up after this long")
	bindEnv(fl)
}

// baseAnswers are the flags as setup answers, before FillDefaults: the
// wizard starts from exactly these, so both write the same config.
func (f *setupProxmoxFlags) baseAnswers(g *globals) setup.ProxmoxAnswers {
	return setup.ProxmoxAnswers{ConfigPath: g.configPath, StateDir: f.stateDir, KeyPath: f.keyPath, TokenFile: f.tokenFile,
		APIEndpoint: f.apiEndpoint, ProviderPubkey: f.providerPubkey, ProxmoxAPIURL: f.proxmoxAPIURL,
		ImageMirror: f.imageMirror, ImageDir: f.imageDir, VMIDBase: f.vmidBase, RotateToken: f.rotateToken, UserAgent: userAgent()}
}

// prompter asks questions on the terminal, and only there.
type prompter struct {
	interactive bool
	in          *bufio.Reader
	out         io.Writer
}

func (p *prompter) ask(question, flag string) (string, error) {
	if !p.interactive {
		return "", usagef("--%s is required (env %s)", flag, envName(flag))
	}
	fmt.Fprintf(p.out, "%s: ", question)
	line, err := p.in.ReadString('\n')
	line = strings.TrimSpace(line)
	if line == "" {
		if err != nil {
			return "", fmt.Errorf("no answer for --%s", flag)
		}
		return "", usagef("--%s is required", flag)
	}
	return line, nil
}

func (p *prompter) confirm(question string) (bool, error) {
	if !p.interactive {
		return false, usagef("cannot ask %q without a terminal", question)
	}
	fmt.Fprintf(p.out, "%s [y/N] ", question)
	line, _ := p.in.ReadString('\n')
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

func (p *prompter) password(prompt string) (string, error) {
	if !p.interactive {
		return "", usagef("--identity-file or --password-file is required without a terminal")
	}
	fmt.Fprint(p.out, prompt)
	b, err := term.ReadPassword(int(os.Stdin.Fd()))
	fmt.Fprintln(p.out)
	return string(b), err
}

func runSetupProxmox(cmd *cobra.Command, g *globals, f *setupProxmoxFlags) error {
	out := cmd.OutOrStdout()
	ew := cmd.ErrOrStderr()
	pr := &prompter{interactive: !g.noTUI && stdinIsTerminal(), in: bufio.NewReader(os.Stdin), out: ew}

	// Everything that can be checked without the node, first: a script
	// with a missing answer fails at once.
	existing, _, err := setup.LoadForUpdate(g.configPath)
	if err != nil {
		return withFix(exitConfig, err)
	}
	var oldPx *config.ProxmoxConfig
	for _, p := range existing.AllProvisioners() {
		if p.Type == config.TypeProxmox && p.Proxmox != nil {
			oldPx = p.Proxmox
		}
	}
	if f.host == "" {
		if f.host, err = pr.ask("Proxmox VE host (name or address)", "host"); err != nil {
			return err
		}
	}
	ans := f.baseAnswers(g)
	ans.FillDefaults(existing, f.host)
	if ans.ProviderPubkey == "" {
		if ans.ProviderPubkey, err = pr.ask("Your provider public key (64 hex, from the Decent Cloud dashboard)", "provider-pubkey"); err != nil {
			return err
		}
	}
	if ans.ProviderPubkey, err = identity.NormalizePublicKeyHex(ans.ProviderPubkey); err != nil {
		return usagef("--provider-pubkey: %v", err)
	}
	if _, err := dcapi.ParseEndpoint(ans.APIEndpoint); err != nil {
		return usagef("--api-endpoint: %v", err)
	}
	if ans.Templates, err = setup.ParseTemplateList(f.templates); err != nil {
		return usagef("--templates: %v", err)
	}
	if f.hostKeyFP != "" {
		if _, err := setup.NormalizeSSHFingerprint(f.hostKeyFP); err != nil {
			return usagef("--host-key-fingerprint: %v", err)
		}
	}
	if _, err := setup.ParseExpiry(f.expires, time.Now()); err != nil {
		return usagef("--expires: %v", err)
	}
	if err := identity.ValidateLabel(f.label); err != nil {
		return usagef("--label: %v", err)
	}
	if _, err := identity.ParsePermissions(f.permissions); err != nil {
		return usagef("--permissions: %v", err)
	}
	if f.delegation != "" {
		if ans.Delegation, err = readValue(f.delegation, cmd.InOrStdin()); err != nil {
			return usagef("--delegation: %v", err)
		}
	}
	sshOpts := setup.SSHOptions{Host: f.host, Port: f.port, User: f.user, HostKeyFingerprint: f.hostKeyFP,
		Pins: setup.HostKeyStore{Path: ans.PinsPath()}}
	switch {
	case f.identityFile != "":
		sshOpts.IdentityFile = f.identityFile
	case f.passwordFile != "":
		pw, err := identity.ReadSecretFile(f.passwordFile)
		if err != nil {
			return usagef("--password-file: %v", err)
		}
		sshOpts.Password = pw
	case os.Getenv("SSH_AUTH_SOCK") != "":
		sshOpts.UseAgent = true
	default:
		if keys := setup.DefaultIdentityFiles(); len(keys) > 0 {
			sshOpts.IdentityFile = keys[0]
		} else {
			pw, err := pr.password(fmt.Sprintf("SSH password for %s@%s: ", f.user, f.host))
			if err != nil {
				return err
			}
			sshOpts.Password = pw
		}
	}
	if pr.interactive {
		sshOpts.ConfirmHostKey = func(addr, fp, typ string) (bool, error) {
			fmt.Fprintf(ew, "The host %s presents %s key %s.\nCheck it on the host with: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub\n", addr, typ, fp)
			return pr.confirm("Is this the right key? It will be pinned")
		}
	}

	ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, f.timeout)
	defer cancelT()

	sink, finish := eventSink(out, f.asJSON, f.verbose)
	host, err := setup.Connect(ctx, sshOpts)
	if err != nil {
		var unk *setup.HostKeyUnknownError
		if errors.As(err, &unk) {
			return withFix(exitUsage, err)
		}
		return withFix(exitFailure, err)
	}
	defer host.Close()
	if host.NewlyPinned {
		fmt.Fprintf(ew, "Pinned the SSH host key %s of %s in %s\n", host.Fingerprint, host.Addr, sshOpts.Pins.Path)
	}

	// Discovery changes nothing; its answers shape the plan.
	var disc *setup.Discovery
	discover := setup.Plan{Steps: []setup.Step{{ID: "discover", Title: "Discover " + f.host, Run: func(ctx context.Context, r *setup.Reporter) error {
		var err error
		disc, err = setup.Discover(ctx, host, r, f.node)
		return err
	}}}}
	if _, err := discover.Run(ctx, sink); err != nil {
		finish()
		return withFix(exitFailure, err)
	}
	if ans.Storage, err = chooseStorage(pr, disc, f.storage, oldPx); err != nil {
		return err
	}
	if ans.Bridge, err = chooseBridge(pr, disc, f.bridge, oldPx); err != nil {
		return err
	}
	if !f.yes && pr.interactive {
		fmt.Fprintf(ew, "\nOn node %s (Proxmox VE %s): templates %s on storage %s, bridge %s; user %s with token %s.\n",
			disc.Node, disc.Version.Version, strings.Join(ans.Templates, ", "), ans.Storage, ans.Bridge, setup.PVEUser, setup.PVETokenID)
		ok, err := pr.confirm("Go ahead?")
		if err != nil {
			return err
		}
		if !ok {
			return withExit(exitFailure, errors.New("stopped; nothing was changed on the node"))
		}
	}
	run, err := setup.NewProxmoxPlan(ans, host, disc)
	if err != nil {
		return withFix(exitUsage, err)
	}
	_, err = run.Plan.Run(ctx, sink)
	finish()
	if err != nil {
		code := exitFailure
		if dcapi.IsAuth(err) {
			code = exitAuth
		}
		return withFix(code, err)
	}
	key := run.Key
	if f.asJSON {
		return nil
	}
	fmt.Fprintf(out, "\nThe node is ready; config written to %s.\n", g.configPath)
	if ans.Delegation == "" {
		d, code, err := setup.DelegationRequest(key.Pubkey, setup.DelegationAnswers{Provider: ans.ProviderPubkey, Permissions: f.permissions, Expires: f.expires, Label: f.label}, time.Now())
		if err != nil {
			return withFix(exitUsage, err)
		}
		fmt.Fprintf(out, "\nNext, delegate this agent key. The delegation request:\n%s\n  %s\n\n", d.Summary(), code)
		fmt.Fprintln(out, "On the machine that holds your provider key, run:")
		fmt.Fprintf(out, "  dc-agent delegation sign --identity ~/.dcc/identity/<name>/private.pem '%s'\n", code)
		fmt.Fprintln(out, "then here: dc-agent register --delegation 'dcds1:...'")
		if !pr.interactive {
			return nil
		}
		// On a terminal the signed code can be pasted right away.
		for {
			fmt.Fprint(ew, "\nPaste the signed delegation (dcds1:...), or press Enter to register later: ")
			line, _ := pr.in.ReadString('\n')
			pasted := strings.TrimSpace(line)
			if pasted == "" {
				return nil
			}
			if _, _, err := setup.AcceptDelegation(pasted, key.Pubkey, ans.ProviderPubkey, time.Now()); err != nil {
				fmt.Fprintf(ew, "%v\nfix: %s\n", err, setup.FixOf(err))
				continue
			}
			reg := setup.Plan{Steps: []setup.Step{setup.RegisterStep(pasted, key, ans.ProviderPubkey, func(k ed25519.PrivateKey) (*dcapi.Client, error) {
				return dcapi.New(ans.APIEndpoint, ans.ProviderPubkey, k, dcapi.WithUserAgent(userAgent()))
			}, time.Now)}}
			if _, err := reg.Run(ctx, sink); err != nil {
				return withFix(exitFailure, err)
			}
			break
		}
		fmt.Fprintln(out, "The agent is registered. Next: dc-agent doctor --verify-api, then dc-agent service install")
	} else {
		fmt.Fprintln(out, "The agent is registered. Next: dc-agent doctor --verify-api, then dc-agent service install")
	}
	return nil
}

// eventSink prints plan events as plain lines or JSON lines.
func eventSink(w io.Writer, asJSON, verbose bool) (setup.Sink, func()) {
	if asJSON {
		enc := json.NewEncoder(w)
		return func(e setup.Event) {
			if e.Kind == setup.EventOutput && !verbose {
				return
			}
			_ = enc.Encode(e)
		}, func() {}
	}
	p := setup.NewPrinter(w, verbose)
	return p.Sink(), func() {}
}

func chooseStorage(pr *prompter, d *setup.Discovery, want string, old *config.ProxmoxConfig) (string, error) {
	var ids []string
	for _, s := range d.Storages {
		ids = append(ids, s.ID)
	}
	if want != "" {
		if _, ok := d.Storage(want); !ok {
			return "", usagef("--storage %q: node %s has no such storage for VM disks (it has: %s)", want, d.Node, strings.Join(ids, ", "))
		}
		return want, nil
	}
	if id, ok := d.PreferredStorage(old); ok {
		return id, nil
	}
	if len(ids) == 0 {
		return "", withExit(exitFailure, fmt.Errorf("node %s has no storage that can hold VM disks; add one (content: images) and re-run", d.Node))
	}
	return pick(pr, "storage", ids, func(i int) string {
		s := d.Storages[i]
		return fmt.Sprintf("%s (%s, %d GiB free)", s.ID, s.Type, s.Avail>>30)
	})
}

func chooseBridge(pr *prompter, d *setup.Discovery, want string, old *config.ProxmoxConfig) (string, error) {
	var names []string
	for _, b := range d.Bridges {
		names = append(names, b.Name)
	}
	if want != "" {
		if _, ok := d.Bridge(want); !ok {
			return "", usagef("--bridge %q: node %s has no such bridge (it has: %s)", want, d.Node, strings.Join(names, ", "))
		}
		return want, nil
	}
	if name, ok := d.PreferredBridge(old); ok {
		return name, nil
	}
	if len(names) == 0 {
		return "", withExit(exitFailure, fmt.Errorf("node %s has no network bridge; create one (e.g. vmbr0) and re-run", d.Node))
	}
	return pick(pr, "bridge", names, func(i int) string { return names[i] + " " + d.Bridges[i].CIDR })
}

// pick asks to choose one of several (or names the flag without a terminal).
func pick(pr *prompter, flag string, ids []string, label func(int) string) (string, error) {
	if !pr.interactive {
		return "", usagef("--%s is required: the node has several (%s)", flag, strings.Join(ids, ", "))
	}
	for i := range ids {
		fmt.Fprintf(pr.out, "  %d) %s\n", i+1, label(i))
	}
	a, err := pr.ask("Choose the "+flag+" (number)", flag)
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(a)
	if err != nil || n < 1 || n > len(ids) {
		return "", usagef("%q is not one of 1..%d", a, len(ids))
	}
	return ids[n-1], nil
}
