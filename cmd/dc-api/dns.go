package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/apiserver/store"
)

// newDNSCmd is `dc-api dns`: the fake DNS zone the gateway's A records go
// to (POST /api/v1/agents/dns), where the live server writes to Cloudflare.
func newDNSCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "dns", Short: "The gateway's DNS zone (records made by agents through /agents/dns)"}
	var asJSON bool
	var provider string
	list := &cobra.Command{
		Use:   "list",
		Short: "List the gateway's DNS records",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := g.open(cmd.Context(), store.Options{})
			if err != nil {
				return err
			}
			defer st.Close()
			recs, err := st.DNSRecords(cmd.Context(), provider)
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), recs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tTYPE\tADDRESS\tDC_ID\tPROVIDER\tCREATED")
			for _, r := range recs {
				fmt.Fprintf(tw, "%s\tA\t%s\t%s\t%s\t%s\n", r.FQDN, r.PublicIP, r.DCID, r.ProviderPubkey[:16]+"…", time.Unix(0, r.CreatedAtNs).UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().StringVar(&provider, "provider", "", "only this provider's records")
	cmd.AddCommand(list)
	return cmd
}
