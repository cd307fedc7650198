package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/config"
)

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Work with dc-agent.toml",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newConfigMigrateCmd(g))
	return cmd
}

func newConfigMigrateCmd(g *globals) *cobra.Command {
	var write bool
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Print the config in the current form (old key names mapped); --write replaces the file with it",
		Long: `Load the config (a file written by the earlier Rust dc-agent loads too: its
old key names are mapped, each with a warning) and print it in the current form:
dc-agent's key names, every setting explicit, comments not kept.

--write replaces the file with that form: atomically, mode 0600, keeping the
file's owner. Nothing is written when the file does not load, when the result
would not load, or when the file has no old keys. See docs/config.md for what
happens to each key of the old format.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := config.Read(g.configPath)
			if err != nil {
				return withExit(exitConfig, err)
			}
			stderr := cmd.ErrOrStderr()
			if err := cfg.CheckInlineSecretsMode(); err != nil {
				// The agent refuses this file; migrating is how it gets fixed.
				fmt.Fprintf(stderr, "warning: %v (dc-agent run refuses it as it is; --write makes it 0600)\n", err)
			}
			m, err := config.MigrateFile(cfg, write)
			if err != nil {
				return err
			}
			for _, w := range m.Loaded.Warnings {
				fmt.Fprintln(stderr, "warning:", w)
			}
			switch {
			case !write:
				if _, err := cmd.OutOrStdout().Write(m.Text); err != nil {
					return err
				}
				if m.Loaded.NeedsMigration() {
					fmt.Fprintf(stderr, "Not written; `dc-agent config migrate --config %s --write` replaces the file with the text above.\n", g.configPath)
				}
				return nil
			case !m.Wrote:
				fmt.Fprintf(stderr, "%s has no old keys; left as it is.\n", g.configPath)
			default:
				fmt.Fprintf(stderr, "Wrote %s in the current form (mode 0600).\n", g.configPath)
			}
			if m.Wrote && len(m.Migrated.Warnings) > 0 {
				fmt.Fprintln(stderr, "Warnings left:")
				for _, w := range m.Migrated.Warnings {
					fmt.Fprintln(stderr, "  -", w)
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&write, "write", false, "replace the config file with the current form (atomic, mode 0600)")
	return cmd
}
