package main

import (
	"strings"

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
			return g.withStore(cmd, func(st *store.Store) error {
				recs, err := st.DNSRecords(cmd.Context(), provider)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), asJSON, recs, "NAME\tTYPE\tADDRESS\tDC_ID\tPROVIDER\tCREATED", func(r store.DNSRecord) string {
					return strings.Join([]string{r.FQDN, "A", r.PublicIP, r.DCID, r.ProviderPubkey[:16] + "…", rfc3339(r.CreatedAtNs)}, "\t")
				})
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	list.Flags().StringVar(&provider, "provider", "", "only this provider's records")
	cmd.AddCommand(list)
	return cmd
}
