package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
	"github.com/decent-stuff/dc-agent/provisioners"
	"github.com/decent-stuff/dc-agent/setup"
	"github.com/decent-stuff/dc-agent/tui/wizard"
)

// setupCloudFlags are the answers of `setup digitalocean|vultr`; every one
// is also a DC_AGENT_* environment variable.
type setupCloudFlags struct {
	tokenFile, region, endpoint      string
	apiEndpoint, providerPubkey      string
	stateDir, keyPath, keepTokenFile string
	delegation                       string
	listOnly, verbose, asJSON        bool
	timeout                          time.Duration
}

var cloudNames = setup.CloudNames

func newSetupCloudCmd(g *globals, typ string) *cobra.Command {
	f := &setupCloudFlags{}
	name := cloudNames[typ]
	cmd := &cobra.Command{
		Use:   typ + " --token-file FILE [flags]",
		Short: "Set up the " + name + " backend from an API token: check it, list regions and sizes, write the config",
		Long: `Check a ` + name + ` API token, show the account's regions and sizes, and write the
complete config for the ` + typ + ` backend:

  - the token is read from a private (0600) file and checked against the API
  - the regions and sizes (plans) the account can order are listed
  - the agent key is created if there is none, the token is kept in a 0600
    file beside the config, and the config is written (0600): an existing
    one is updated in place, with only the keys setup owns changed; an
    earlier agent's inline api_token is moved to the file
  - with --delegation, the agent is registered

Running it again is safe: what is already right stays unchanged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runSetupCloud(cmd, g, typ, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.tokenFile, "token-file", "", "file holding the "+name+" API token (mode 0600; required)")
	fl.StringVar(&f.region, "region", "", "default region (default: from the config, else "+map[string]string{config.TypeDigitalOcean: config.DefaultDORegion, config.TypeVultr: config.DefaultVultrRegion}[typ]+")")
	fl.StringVar(&f.endpoint, "endpoint", "", "the "+name+" API URL (default: the real one)")
	fl.StringVar(&f.apiEndpoint, "api-endpoint", "", "Decent Cloud API (default: from the config, else "+config.DefaultEndpoint+")")
	fl.StringVar(&f.providerPubkey, "provider-pubkey", "", "your provider public key, 64 hex (default: from the config)")
	fl.StringVar(&f.stateDir, "state-dir", "", "agent state dir (default: from the config, else "+config.DefaultStateDir+")")
	fl.StringVar(&f.keyPath, "key", "", "agent key file (default: from the config, else agent.key beside it)")
	fl.StringVar(&f.keepTokenFile, "keep-token-file", "", "where the agent keeps the token (default: "+typ+"-token beside the config)")
	fl.StringVar(&f.delegation, "delegation", "", "the signed delegation to register: dcds1:CODE, file:PATH or - (stdin)")
	fl.BoolVar(&f.listOnly, "list", false, "only check the token and list regions and sizes; change nothing")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "show every step's details")
	fl.BoolVar(&f.asJSON, "json", false, "print the catalogue and progress as JSON lines")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "give up after this long")
	bindEnv(fl)
	return cmd
}

func runSetupCloud(cmd *cobra.Command, g *globals, typ string, f *setupCloudFlags) error {
	out := cmd.OutOrStdout()
	if f.tokenFile == "" {
		return usagef("--token-file is required (env %s): a file (chmod 600) holding the %s API token", envName("token-file"), cloudNames[typ])
	}
	token, err := setup.ReadCloudToken(f.tokenFile)
	if err != nil {
		return withFix(exitUsage, fmt.Errorf("--token-file: %w", err))
	}
	existing, _, err := setup.LoadForUpdate(g.configPath)
	if err != nil {
		return withFix(exitConfig, err)
	}
	a := setup.CloudAnswers{Type: typ, ConfigPath: g.configPath, StateDir: f.stateDir, KeyPath: f.keyPath, APIEndpoint: f.apiEndpoint,
		ProviderPubkey: f.providerPubkey, Token: token, TokenFile: f.keepTokenFile, Endpoint: f.endpoint, Region: f.region, UserAgent: userAgent()}
	a.FillDefaults(existing)

	ctx, cancel := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, f.timeout)
	defer cancelT()
	cat, err := setup.DiscoverCloud(ctx, a)
	if err != nil {
		return withFix(exitAuth, err)
	}
	printCatalog(out, typ, cat, f.asJSON)
	if f.listOnly {
		return nil
	}
	if err := setup.CheckRegion(cat, a.Region); err != nil {
		return withFix(exitUsage, fmt.Errorf("--region: %w", err))
	}
	if a.ProviderPubkey == "" {
		if g.noTUI || !stdinIsTerminal() {
			return usagef("--provider-pubkey is required (env %s)", envName("provider-pubkey"))
		}
		// On a terminal: the setup flow's line prompt for the API answers.
		api, err := wizard.NewPrompts(os.Stdin, cmd.ErrOrStderr()).API(ctx, setup.APIQuestion{Answer: setup.APIAnswer{Endpoint: a.APIEndpoint}})
		if err != nil {
			return err
		}
		a.APIEndpoint, a.ProviderPubkey = api.Endpoint, api.Provider
	}
	if a.ProviderPubkey, err = identity.NormalizePublicKeyHex(a.ProviderPubkey); err != nil {
		return usagef("--provider-pubkey: %v", err)
	}
	if _, err := dcapi.ParseEndpoint(a.APIEndpoint); err != nil {
		return usagef("--api-endpoint: %v", err)
	}
	if f.delegation != "" {
		if a.Delegation, err = readValue(f.delegation, cmd.InOrStdin()); err != nil {
			return usagef("--delegation: %v", err)
		}
	}
	plan, _, err := setup.NewCloudPlan(a, cat)
	if err != nil {
		return withFix(exitUsage, err)
	}
	_, err = plan.Run(ctx, eventSink(out, f.asJSON, f.verbose))
	if err != nil {
		code := exitFailure
		if dcapi.IsAuth(err) {
			code = exitAuth
		}
		return withFix(code, err)
	}
	if !f.asJSON {
		fmt.Fprintf(out, "\nThe %s backend is set up (default region %s); config written to %s.\n", cloudNames[typ], a.Region, g.configPath)
		if a.Delegation == "" {
			fmt.Fprintln(out, "Next: delegate the agent key (dc-agent delegation request), then dc-agent doctor --verify-api and dc-agent service install")
		} else {
			fmt.Fprintln(out, "The agent is registered. Next: dc-agent doctor --verify-api, then dc-agent service install")
		}
	}
	return nil
}

// printCatalog shows what the account offers: regions, then sizes (a JSON
// line with --json).
func printCatalog(w io.Writer, typ string, cat provisioners.Catalog, asJSON bool) {
	if asJSON {
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "catalog", "type": typ, "account": cat.Account, "regions": cat.Regions, "sizes": cat.Sizes})
		return
	}
	fmt.Fprintf(w, "%s account %s: %d regions, %d sizes\n\nRegions:\n", cloudNames[typ], cat.Account, len(cat.Regions), len(cat.Sizes))
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	for _, r := range cat.Regions {
		fmt.Fprintf(tw, "  %s\t%s\n", r.ID, r.Name)
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nSizes (an offering gets the cheapest that fits, unless mapped in the config):")
	fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", "SIZE", "vCPU", "MEMORY", "DISK", "PER MONTH")
	for _, s := range cat.Sizes {
		fmt.Fprintf(tw, "  %s\t%d\t%d MB\t%d GB\t$%.2f\n", s.ID, s.VCPUs, s.MemoryMB, s.DiskGB, s.MonthlyPrice)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
}
