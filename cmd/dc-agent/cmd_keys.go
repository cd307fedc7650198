package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/setup"
)

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print version, commit and Go version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{
					"version": buildinfo.Version, "commit": buildinfo.CommitOrVCS(), "go": goVersion(),
				})
			}
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.String("dc-agent"))
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newInitCmd(g *globals) *cobra.Command {
	var keyPath string
	var force, asJSON bool
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create the agent key (keeps an existing one unless --force)",
		Long: `Create the agent's Ed25519 key: a 0600 file of 64 hex characters, with the
public half beside it as agent.pub. Re-running keeps the existing key and prints
its public key; --force replaces it (the old key's delegation stops working).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := g.agentKeyPath(keyPath)
			if err != nil {
				return err
			}
			key, created, err := identity.EnsureAgentKey(path, force)
			if err != nil {
				return withExit(exitConfig, err)
			}
			pub := identity.PublicHex(key)
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]any{"agent_pubkey": pub, "key_file": path, "created": created})
			}
			w := cmd.OutOrStdout()
			if created {
				fmt.Fprintf(cmd.ErrOrStderr(), "Created agent key %s (mode 0600)\n", path)
			} else {
				fmt.Fprintf(cmd.ErrOrStderr(), "Agent key %s already exists; keeping it (use --force to replace)\n", path)
			}
			fmt.Fprintln(w, pub)
			fmt.Fprintln(cmd.ErrOrStderr(), "Next: dc-agent delegation request  (then sign it offline with your provider key)")
			return nil
		},
	}
	cmd.Flags().StringVar(&keyPath, "key", "", "agent key file (default: api.agent_secret_key from the config, else agent.key beside it)")
	cmd.Flags().BoolVar(&force, "force", false, "replace an existing key")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDelegationCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "delegation",
		Short: "Create, sign and inspect agent delegations (offline signing)",
		Long: `A delegation lets the agent key act for your provider with limited permissions.
The agent host prints a request (dcdr1:...); you sign it on the machine that
holds your provider main key with 'dc-agent delegation sign' (which prints
dcds1:...); the agent host registers the signed code with 'dc-agent register'.
The main key never touches the agent host.`,
	}
	cmd.AddCommand(newDelegationRequestCmd(g), newDelegationSignCmd(), newDelegationShowCmd(g))
	return cmd
}

// delegationOptions are the answers that shape a delegation request.
type delegationOptions struct {
	provider    string
	permissions string
	expires     string
	label       string
}

func (o *delegationOptions) bind(cmd *cobra.Command) {
	host, _ := os.Hostname()
	cmd.Flags().StringVar(&o.provider, "provider", envDefault("PROVIDER_PUBKEY", ""), "provider public key, hex (default: api.provider_pubkey from the config; env DC_AGENT_PROVIDER_PUBKEY)")
	cmd.Flags().StringVar(&o.permissions, "permissions", strings.Join(identity.AllPermissions, ","), "comma-separated permissions")
	cmd.Flags().StringVar(&o.expires, "expires", envDefault("DELEGATION_EXPIRES", "never"), "expiry: never, a duration (8760h, 365d) or an RFC 3339 time")
	cmd.Flags().StringVar(&o.label, "label", envDefault("DELEGATION_LABEL", host), "label shown on the dashboard (≤ 64 characters)")
}

// build turns the options into a Delegation for agentPub.
func (o *delegationOptions) build(agentPub string, g *globals, now time.Time) (identity.Delegation, error) {
	provider := o.provider
	if provider == "" {
		cfg, err := g.optionalConfig()
		if err != nil {
			return identity.Delegation{}, err
		}
		if cfg != nil {
			provider = cfg.API.ProviderPubkey
		}
	}
	if provider == "" {
		return identity.Delegation{}, usagef("--provider is required: your provider public key, 64 hex characters (or set api.provider_pubkey in %s; env DC_AGENT_PROVIDER_PUBKEY)", g.configPath)
	}
	p, err := identity.NormalizePublicKeyHex(provider)
	if err != nil {
		return identity.Delegation{}, usagef("--provider: %v", err)
	}
	perms, err := identity.ParsePermissions(o.permissions)
	if err != nil {
		return identity.Delegation{}, usagef("--permissions: %v", err)
	}
	exp, err := setup.ParseExpiry(o.expires, now)
	if err != nil {
		return identity.Delegation{}, usagef("--expires: %v", err)
	}
	d := identity.Delegation{AgentPubkey: agentPub, ProviderPubkey: p, Permissions: perms, ExpiresAtNs: exp, Label: o.label}
	if err := d.Validate(); err != nil {
		return identity.Delegation{}, usagef("%v", err)
	}
	return d, nil
}

func newDelegationRequestCmd(g *globals) *cobra.Command {
	var o delegationOptions
	var keyPath string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "request",
		Short: "Print the delegation request (dcdr1:...) for the provider to sign offline",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := g.agentKeyPath(keyPath)
			if err != nil {
				return err
			}
			key, err := identity.LoadAgentKey(path)
			if err != nil {
				return withExit(exitConfig, err)
			}
			d, err := o.build(identity.PublicHex(key), g, time.Now())
			if err != nil {
				return err
			}
			code, err := d.EncodeRequest()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), delegationJSON(d, code, nil))
			}
			ew := cmd.ErrOrStderr()
			fmt.Fprintln(ew, "Delegation request:")
			fmt.Fprint(ew, d.Summary())
			fmt.Fprintln(ew, "\nOn the machine that holds your provider key, run:")
			fmt.Fprintln(ew, "  dc-agent delegation sign --identity ~/.dcc/identity/<name>/private.pem '"+code+"'")
			fmt.Fprintln(ew, "then, here: dc-agent register --delegation 'dcds1:...'")
			fmt.Fprintln(ew)
			fmt.Fprintln(cmd.OutOrStdout(), code)
			return nil
		},
	}
	o.bind(cmd)
	cmd.Flags().StringVar(&keyPath, "key", "", "agent key file (default: from the config)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDelegationSignCmd() *cobra.Command {
	var identityFile, requestArg string
	var yes, asJSON bool
	cmd := &cobra.Command{
		Use:   "sign [dcdr1:CODE | file:PATH | -]",
		Short: "Sign a delegation request with the provider main key (run on the offline machine)",
		Long: `Sign a delegation request with your provider main key. Run this on the machine
that holds the key, not on the agent host. The key is read from --identity: a
PKCS#8 PEM file (~/.dcc/identity/<name>/private.pem), a BIP-39 mnemonic file, or
a 64-hex seed file; never from the command line. The request's fields are shown
and must be confirmed unless --yes. The signed delegation is stamped with the
signing time (issued_at_ns): an agent cannot use an older delegation to replace
one you sign later.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if identityFile == "" {
				return usagef("--identity is required: the file with your provider main key (PEM, mnemonic or hex seed)")
			}
			src := requestArg
			if len(args) == 1 {
				src = args[0]
			}
			if src == "" {
				return usagef("give the dcdr1: request as an argument, as file:PATH, or - for stdin")
			}
			code, err := readValue(src, cmd.InOrStdin())
			if err != nil {
				return err
			}
			d, err := identity.DecodeRequest(code)
			if err != nil {
				return err
			}
			// Stamped with the signing time, whatever the request says: the
			// server orders delegations by it, and a request's stamp would be
			// the agent host's word (PROTOCOL.md §3).
			issued := time.Now().UnixNano()
			d.IssuedAtNs = &issued
			main, form, err := identity.LoadMainKey(identityFile)
			if err != nil {
				return withExit(exitConfig, err)
			}
			ew := cmd.ErrOrStderr()
			fmt.Fprintf(ew, "Signing with the %s key %s\n", form, identity.PublicHex(main))
			fmt.Fprint(ew, d.Summary())
			if d.ExpiresAtNs != nil && d.Expired(time.Now()) {
				return fmt.Errorf("this request expired at %s; create a new one on the agent host", d.ExpiresAt().UTC().Format(time.RFC3339))
			}
			if !yes {
				ok, err := confirm(cmd, "Grant these permissions to this agent key?")
				if err != nil {
					return err
				}
				if !ok {
					return withExit(exitFailure, errors.New("not signed"))
				}
			}
			sd, err := d.Sign(main)
			if err != nil {
				return err
			}
			out, err := sd.Encode()
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), delegationJSON(d, out, &sd))
			}
			fmt.Fprintln(ew, "Signed. Paste this on the agent host (dc-agent register --delegation ...):")
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&identityFile, "identity", "", "provider main key file: PEM, BIP-39 mnemonic or hex seed (required)")
	cmd.Flags().StringVar(&requestArg, "request", "", "the dcdr1: request, file:PATH, or - for stdin")
	cmd.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newDelegationShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show dcdr1:CODE|dcds1:CODE|file:PATH|-",
		Short: "Decode a delegation request or signed delegation and verify its signature",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := readValue(args[0], cmd.InOrStdin())
			if err != nil {
				return err
			}
			d, sd, err := identity.DecodeAny(code)
			if err != nil {
				return err
			}
			expired := d.Expired(time.Now())
			if asJSON {
				m := delegationJSON(d, code, sd)
				m["expired"] = expired
				if err := printJSON(cmd.OutOrStdout(), m); err != nil {
					return err
				}
			} else {
				w := cmd.OutOrStdout()
				if sd != nil {
					fmt.Fprintln(w, "Signed delegation (signature verified against the provider key):")
				} else {
					fmt.Fprintln(w, "Delegation request (not signed yet):")
				}
				fmt.Fprint(w, d.Summary())
			}
			if expired {
				return fmt.Errorf("this delegation expired at %s; create a new one: dc-agent delegation request", d.ExpiresAt().UTC().Format(time.RFC3339))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func delegationJSON(d identity.Delegation, code string, sd *identity.SignedDelegation) map[string]any {
	m := map[string]any{
		"code":            code,
		"agent_pubkey":    d.AgentPubkey,
		"provider_pubkey": d.ProviderPubkey,
		"permissions":     d.Permissions,
		"expires_at_ns":   d.ExpiresAtNs,
		"issued_at_ns":    d.IssuedAtNs,
		"label":           d.Label,
		"signed":          sd != nil,
	}
	if sd != nil {
		m["signature"] = sd.SignatureHex()
		m["verified"] = true
	}
	return m
}

func newCredentialsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "credentials",
		Short: "Work with sealed instance credentials",
	}
	var identityFile string
	var asJSON bool
	decrypt := &cobra.Command{
		Use:   "decrypt [SEALED-JSON | file:PATH | -]",
		Short: "Decrypt a sealed root password with the requester's key",
		Long: `Decrypt the root_password of a provisioned contract. Accepts the sealed JSON
({"version":2,...}) or the whole instance_details JSON that contains it. The
key (--identity) is the requester's Ed25519 key as PEM, mnemonic or hex seed,
or an OpenSSH ed25519 private key file if the credential was sealed to the SSH key.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if identityFile == "" {
				return usagef("--identity is required: the requester's key file")
			}
			src := "-"
			if len(args) == 1 {
				src = args[0]
			}
			sealed, err := readValue(src, cmd.InOrStdin())
			if err != nil {
				return err
			}
			sealed = extractSealed(sealed)
			key, err := loadRequesterKey(identityFile)
			if err != nil {
				return withExit(exitConfig, err)
			}
			pt, err := identity.Open(sealed, key)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), map[string]string{"root_password": string(pt)})
			}
			fmt.Fprintln(cmd.OutOrStdout(), string(pt))
			return nil
		},
	}
	decrypt.Flags().StringVar(&identityFile, "identity", "", "requester key file (required)")
	decrypt.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(decrypt)
	return cmd
}

// extractSealed accepts either the sealed JSON or instance details holding it
// in root_password.
func extractSealed(s string) string {
	var details struct {
		RootPassword *string `json:"root_password"`
	}
	if json.Unmarshal([]byte(s), &details) == nil && details.RootPassword != nil {
		return *details.RootPassword
	}
	return s
}

// readValue resolves "file:PATH", "-" (stdin) or a literal value.
func readValue(src string, stdin io.Reader) (string, error) {
	switch {
	case src == "-":
		b, err := io.ReadAll(io.LimitReader(stdin, 1<<20))
		if err != nil {
			return "", fmt.Errorf("read stdin: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	case strings.HasPrefix(src, "file:"):
		b, err := os.ReadFile(strings.TrimPrefix(src, "file:"))
		if err != nil {
			return "", err
		}
		return strings.TrimSpace(string(b)), nil
	default:
		return strings.TrimSpace(src), nil
	}
}

// confirm asks a yes/no question on the terminal. Without a terminal it
// refuses instead of waiting on stdin.
func confirm(cmd *cobra.Command, question string) (bool, error) {
	f, ok := cmd.InOrStdin().(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false, usagef("cannot ask for confirmation without a terminal; pass --yes")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, err := bufio.NewReader(f).ReadString('\n')
	if err != nil && line == "" {
		return false, nil
	}
	a := strings.ToLower(strings.TrimSpace(line))
	return a == "y" || a == "yes", nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
