package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/doctor"
)

func newDoctorCmd(g *globals) *cobra.Command {
	var verifyAPI, asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor [--verify-api] [--json]",
		Short: "Check the configuration, keys, delegation, backend and API, with a fix for each problem",
		Long: `Check everything the agent depends on, piece by piece: the config file, the
agent key's file permissions, the signed delegation (present, not expired,
enough permissions), the provisioner's backend (for Proxmox: reachable with the
pinned certificate, the token valid with the privileges it needs, templates and
storage present), and with --verify-api the Decent Cloud API (a signed,
read-only request; the delegation registered; the clock within a minute of
the API's). Every problem comes with the one line that fixes it.

Exit code: 0 all checks passed, 1 warnings, 2 failures.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			rep := doctor.Run(cmd.Context(), doctor.Options{ConfigPath: g.configPath, VerifyAPI: verifyAPI})
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), map[string]any{
					"findings": rep.Findings, "exit_code": rep.ExitCode(),
					"summary": map[string]int{"ok": rep.Count(doctor.OK), "warn": rep.Count(doctor.Warn), "fail": rep.Count(doctor.Fail), "skip": rep.Count(doctor.Skip)},
				}); err != nil {
					return err
				}
			} else {
				printReport(cmd, rep)
			}
			if code := rep.ExitCode(); code != 0 {
				return withExit(code, nil)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&verifyAPI, "verify-api", false, "also send a signed read-only request to the Decent Cloud API")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the findings as JSON")
	bindEnv(cmd.Flags())
	return cmd
}

func printReport(cmd *cobra.Command, rep doctor.Report) {
	w := cmd.OutOrStdout()
	for _, f := range rep.Findings {
		fmt.Fprintf(w, "%-4s  %-12s %s\n", strings.ToUpper(string(f.Status)), f.Check, f.Message)
		if f.Fix != "" && (f.Status == doctor.Fail || f.Status == doctor.Warn) {
			fmt.Fprintf(w, "      %-12s fix: %s\n", "", f.Fix)
		}
	}
	fails, warns := rep.Count(doctor.Fail), rep.Count(doctor.Warn)
	switch {
	case fails > 0:
		fmt.Fprintf(w, "\n%d failed, %d warning(s): fix the failures above and run dc-agent doctor again\n", fails, warns)
	case warns > 0:
		fmt.Fprintf(w, "\nall checks passed with %d warning(s)\n", warns)
	default:
		fmt.Fprintln(w, "\nall checks passed")
	}
}
