package main

import (
	"bufio"
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
	"github.com/decent-stuff/dc-agent/setup"
)

func newRegisterCmd(g *globals) *cobra.Command {
	var delegation, setupToken, endpoint string
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "register --setup-token file:PATH | --delegation dcds1:CODE|file:PATH|-",
		Short: "Register the agent key with the Decent Cloud API (setup token, or an offline-signed delegation)",
		Long: `Register this host's agent key with the Decent Cloud API, one of two ways.

With a setup token (the live Decent Cloud API's way): make one on
` + setup.TokenSource + `, keep it in a
file only you can read, and run
    dc-agent register --setup-token file:/root/dc-setup-token
(or set DC_AGENT_SETUP_TOKEN; - reads it from stdin). The agent key is created
if there is none, the token is sent with its public key, and the provider and
the pool the token belongs to are written into the config's [api]. A token
works once, within 24 hours. A token given as itself on the command line is
visible to every user of this machine until it is used: prefer file:PATH.

With an offline-signed delegation (dcds1:..., printed by 'dc-agent delegation
sign' on the machine with your provider key), for servers that take them: the
request is signed by the agent key the delegation names; the main key is never
needed here. The delegation is kept beside the agent key, so running
'dc-agent register' again without --delegation registers the kept one again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if setupToken != "" {
				if delegation != "" {
					return usagef("--setup-token and --delegation are two ways to register; pass one")
				}
				if cmd.Flags().Changed("setup-token") {
					warnTokenInArgv(cmd, setupToken)
				}
				tok, err := setup.ReadSetupToken(setupToken, cmd.InOrStdin())
				if err != nil {
					return withFix(exitUsage, fmt.Errorf("--setup-token: %w", err))
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				defer cancel()
				return registerSetupToken(ctx, cmd, g, endpoint, tok, asJSON)
			}
			cfg, err := g.loadConfig()
			if err != nil {
				return err
			}
			key, err := cfg.LoadAgentKey()
			if err != nil {
				return withExit(exitConfig, err)
			}
			keyPath := cfg.AgentKeyPath()
			if keyPath == "" {
				keyPath = g.defaultKeyPath()
			}
			code, err := delegationCode(cmd, g, delegation, identity.DelegationPath(keyPath))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			return registerDelegation(ctx, cmd, cfg, key, keyPath, code, asJSON)
		},
	}
	cmd.Flags().StringVar(&setupToken, "setup-token", "", "the setup token from "+setup.TokenSource+": file:PATH (0600), - for stdin, or the token itself (visible in the process list)")
	cmd.Flags().StringVar(&endpoint, "api-endpoint", "", "Decent Cloud API, with --setup-token (default: from the config, else "+config.DefaultEndpoint+")")
	cmd.Flags().StringVar(&delegation, "delegation", "", "the signed delegation: dcds1:CODE, file:PATH or - for stdin (default: the one kept beside the agent key)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	bindEnv(cmd.Flags())
	return cmd
}

// warnTokenInArgv says once that a token typed on the command line is
// readable by every user of the machine (ps) while the command runs.
func warnTokenInArgv(cmd *cobra.Command, v string) {
	if v == "-" || strings.HasPrefix(v, "file:") {
		return
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "warning: a setup token on the command line is visible to every user of this machine until it is used; next time keep it in a 0600 file (--setup-token file:PATH) or in %s\n", envName("setup-token"))
}

// registerSetupToken registers the agent key (created if missing) with a
// setup token and writes the provider and pool into the config: the same
// two steps the setup flow runs.
func registerSetupToken(ctx context.Context, cmd *cobra.Command, g *globals, endpoint, token string, asJSON bool) error {
	cfg, _, err := setup.LoadForUpdate(g.configPath)
	if err != nil {
		return withFix(exitConfig, err)
	}
	cfg.Path = g.configPath
	keyPath := cfg.AgentKeyPath()
	if keyPath == "" {
		keyPath = g.defaultKeyPath()
	}
	if abs, err := filepath.Abs(keyPath); err == nil {
		keyPath = abs
	}
	endpoint = cmp.Or(endpoint, cfg.API.Endpoint, config.DefaultEndpoint)
	if err := setup.CheckEndpoint(endpoint); err != nil {
		return usagef("--api-endpoint: %v", err)
	}
	key := &setup.KeyStatus{}
	var reg setup.TokenRegistration
	plan := setup.Plan{Steps: []setup.Step{setup.KeyStep(keyPath, key),
		setup.TokenStep(setup.TokenStepOptions{ConfigPath: g.configPath, KeyPath: keyPath, Endpoint: endpoint, Token: token,
			UserAgent: userAgent(), Key: key, Result: &reg})}}
	var sink setup.Sink
	if !asJSON {
		sink = setup.NewPrinter(cmd.ErrOrStderr(), false).Sink()
	}
	if _, err := plan.Run(ctx, sink); err != nil {
		var te *setup.TokenError
		switch {
		case errors.As(err, &te) && te.Reason == "malformed":
			return withFix(exitUsage, err)
		case errors.As(err, &te):
			return withFix(exitAuth, err)
		}
		return withFix(exitFailure, err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{"registered": true, "agent_pubkey": key.Pubkey, "provider_pubkey": reg.ProviderPubkey,
			"pool_id": reg.Pool.ID, "pool_name": reg.Pool.Name, "pool_location": reg.Pool.Location, "endpoint": reg.Endpoint, "config": g.configPath})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "Registered with %s: agent %s in pool %s of provider %s\n", reg.Endpoint, key.Pubkey, reg.Pool, reg.ProviderPubkey)
	if cfg.Provisioner.Type == "" {
		next := "dc-agent setup proxmox"
		if t := reg.ProvisionerType; t != "" && t != config.TypeProxmox && slices.Contains(setup.CloudTypes, t) {
			next = "dc-agent setup " + t
		}
		fmt.Fprintf(cmd.ErrOrStderr(), "Next: set up the backend (%s; see dc-agent setup --help), then dc-agent service install\n", next)
	} else {
		fmt.Fprintln(cmd.ErrOrStderr(), "Next: dc-agent doctor --verify-api, then start the agent (dc-agent service install)")
	}
	return nil
}

// delegationCode finds the signed delegation: the flag, the kept file, or
// (on a terminal only) a paste.
func delegationCode(cmd *cobra.Command, g *globals, flag, kept string) (string, error) {
	if flag != "" {
		return readValue(flag, cmd.InOrStdin())
	}
	if b, err := os.ReadFile(kept); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if g.noTUI || !stdinIsTerminal() {
		return "", usagef("--delegation is required: the dcds1: code from 'dc-agent delegation sign' (or file:PATH, or - for stdin; env %s)", envName("delegation"))
	}
	fmt.Fprintln(cmd.ErrOrStderr(), "Paste the signed delegation (dcds1:...) and press Enter:")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", errors.New("no signed delegation given")
	}
	return strings.TrimSpace(line), nil
}

// registerDelegation checks, keeps and registers a signed delegation.
func registerDelegation(ctx context.Context, cmd *cobra.Command, cfg *config.Config, key []byte, keyPath, code string, asJSON bool) error {
	ew := cmd.ErrOrStderr()
	sd, warns, err := setup.AcceptDelegation(code, identity.PublicHex(key), cfg.API.ProviderPubkey, time.Now())
	if err != nil {
		return withFix(exitConfig, err)
	}
	fmt.Fprintln(ew, "Signed delegation (signature verified):")
	fmt.Fprint(ew, sd.Summary())
	for _, w := range warns {
		fmt.Fprintln(ew, "warning:", w)
	}
	path := identity.DelegationPath(keyPath)
	if err := setup.SaveDelegation(path, sd); err != nil {
		return withExit(exitConfig, fmt.Errorf("keep the delegation at %s: %w", path, err))
	}
	c, err := dcapi.New(cfg.API.Endpoint, cfg.API.ProviderPubkey, key, dcapi.WithUserAgent(userAgent()))
	if err != nil {
		return withExit(exitConfig, err)
	}
	res, err := setup.Register(ctx, c, sd)
	if err != nil {
		code := exitFailure
		if dcapi.IsAuth(err) {
			code = exitAuth
		}
		return withFix(code, err)
	}
	if asJSON {
		return printJSON(cmd.OutOrStdout(), map[string]any{"registered": true, "already": res.Already,
			"agent_pubkey": sd.AgentPubkey, "provider_pubkey": sd.ProviderPubkey, "endpoint": c.Endpoint(), "delegation_file": path})
	}
	if res.Already {
		fmt.Fprintf(cmd.OutOrStdout(), "Already registered with %s: agent %s for provider %s\n", c.Endpoint(), sd.AgentPubkey, sd.ProviderPubkey)
	} else {
		fmt.Fprintf(cmd.OutOrStdout(), "Registered with %s: agent %s for provider %s\n", c.Endpoint(), sd.AgentPubkey, sd.ProviderPubkey)
	}
	fmt.Fprintln(ew, "Next: dc-agent doctor --verify-api, then start the agent (dc-agent service install)")
	return nil
}

// withFix maps an error to an exit code and prints its fix on a second line.
func withFix(code int, err error) error {
	if fix := setup.FixOf(err); fix != "" {
		return withExit(code, fmt.Errorf("%w\nfix: %s", err, fix))
	}
	return withExit(code, err)
}

func userAgent() string { return "dc-agent/" + buildinfo.Version }
