package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
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
	var delegation string
	var timeout time.Duration
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "register [--delegation dcds1:CODE|file:PATH|-]",
		Short: "Register the signed delegation with the Decent Cloud API",
		Long: `Register the agent's signed delegation (dcds1:..., printed by 'dc-agent
delegation sign' on the machine with your provider key) with the Decent Cloud
API. The request is signed by the agent key the delegation names; the main key
is never needed here. The delegation is kept beside the agent key, so running
'dc-agent register' again without --delegation registers the kept one again.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
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
	cmd.Flags().StringVar(&delegation, "delegation", "", "the signed delegation: dcds1:CODE, file:PATH or - for stdin (default: the one kept beside the agent key)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	bindEnv(cmd.Flags())
	return cmd
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
