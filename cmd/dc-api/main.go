// Command dc-api is the reference Decent Cloud API server (the agent-facing
// part of PROTOCOL.md) and its operator commands: serve, migrate, provider
// and contract administration. Every command takes --db (SQLite file or
// PostgreSQL URL) and works while a server runs on the same database.
//
// This package parses flags and calls into apiserver and its store.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/internal/buildinfo"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError marks flag and argument mistakes (exit 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	fmt.Fprintln(stderr, "error:", err)
	var ue usageError
	msg := err.Error()
	if errors.As(err, &ue) || strings.HasPrefix(msg, "unknown flag") || strings.HasPrefix(msg, "unknown command") ||
		strings.HasPrefix(msg, "unknown shorthand flag") || strings.Contains(msg, "flag needs an argument") ||
		strings.HasPrefix(msg, "invalid argument") || strings.Contains(msg, "accepts ") || strings.HasPrefix(msg, "required flag") {
		return exitUsage
	}
	return exitFailure
}

type globals struct {
	db string
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "dc-api",
		Short: "Reference Decent Cloud API server for dc-agent (PROTOCOL.md)",
		Long: `dc-api serves the agent-facing Decent Cloud API: delegated agent keys,
contracts to provision (with long-poll), heartbeats, health checks, reconcile,
and a status dashboard at /. SQLite is the default database and needs no setup;
PostgreSQL serves deployments that outgrow one machine. Both use the same
migrations, applied on start or by "dc-api migrate".

Operator commands (provider, pool, setup-token, contract) work while the
server runs: a created contract wakes long-polling agents at once.

"serve --profile live" makes the server behave as the live Decent Cloud API
(setup-token registration, its error style, schemas and state rules); the
default profile is PROTOCOL.md with dc-api's extensions (docs/dc-api.md).

Exit codes: 0 success, 1 failure, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       buildinfo.Version,
	}
	root.SetVersionTemplate(buildinfo.String("dc-api") + "\n")
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error { return usageError{err.Error()} })
	def := os.Getenv("DC_API_DB")
	if def == "" {
		def = "sqlite:dc-api.db"
	}
	root.PersistentFlags().StringVar(&g.db, "db", def, "database: sqlite:PATH or postgres://USER@HOST:PORT/DB (env DC_API_DB)")
	root.AddCommand(newServeCmd(g), newMigrateCmd(g), newProviderCmd(g), newPoolCmd(g), newSetupTokenCmd(g), newContractCmd(g), newDNSCmd(g), newVersionCmd())
	return root
}

func newVersionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, args []string) {
			fmt.Fprintln(cmd.OutOrStdout(), buildinfo.String("dc-api"))
		},
	}
}

// open opens the store named by --db.
func (g *globals) open(ctx context.Context, opts store.Options) (*store.Store, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	return store.Open(ctx, g.db, opts)
}

// withStore runs fn on the store named by --db and closes it after.
func (g *globals) withStore(cmd *cobra.Command, fn func(st *store.Store) error) error {
	st, err := g.open(cmd.Context(), store.Options{})
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// printList prints items as JSON (asJSON) or as a table: the header line,
// then row's tab-separated line for each item.
func printList[T any](w io.Writer, asJSON bool, items []T, header string, row func(T) string) error {
	if asJSON {
		return printJSON(w, items)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// rfc3339 formats a Unix nanosecond time for the tables.
func rfc3339(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }

// idArg is a command's first argument as an id: trimmed, lower case.
func idArg(args []string) string { return strings.ToLower(strings.TrimSpace(args[0])) }

func newMigrateCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "migrate",
		Short: "Apply pending database migrations (serve also does this on start)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.open(cmd.Context(), store.Options{NoMigrate: true})
			if err != nil {
				return err
			}
			defer st.Close()
			res, err := st.Migrate(cmd.Context())
			if err != nil {
				return err
			}
			for _, r := range res {
				fmt.Fprintf(cmd.OutOrStdout(), "applied %s\n", r.Name)
			}
			cur, latest, err := st.SchemaVersion(cmd.Context())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "schema version %d (latest %d) on %s\n", cur, latest, st.Describe())
			return nil
		},
	}
}
