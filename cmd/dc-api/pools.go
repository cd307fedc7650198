package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/identity"
)

// Agent pools and setup tokens (the live API's registration): a provider's
// pool groups its agents of one location; a one-time setup token registers
// an agent into it (POST /api/v1/agents/setup).

func newPoolCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "pool", Short: "Create, list and delete agent pools"}
	var provider, name, location, ptype string
	create := &cobra.Command{
		Use:   "create --provider HEX --name NAME --location REGION [--provisioner-type T]",
		Short: "Create an agent pool; prints its id",
		Long: `Create an agent pool for a provider (registering the provider if it is new,
as the live API does). --location is a region: ` + strings.Join(store.Regions, ", ") + `.
Contracts with --pool ID, or with no pool and a --country in the region, are
offered to the pool's agents. Prints the pool id alone on stdout.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := identity.NormalizePublicKeyHex(provider)
			if err != nil {
				return usagef("--provider: %v", err)
			}
			if !store.ValidRegion(location) {
				return usagef("--location %q: use one of %s", location, strings.Join(store.Regions, ", "))
			}
			if strings.TrimSpace(name) == "" {
				return usagef("--name is required")
			}
			return g.withStore(cmd, func(st *store.Store) error {
				p, err := st.CreatePool(cmd.Context(), pub, name, location, ptype, time.Now().UnixNano())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "pool %s (%s, %s, %s) created for provider %s\n", p.PoolID, p.Name, p.Location, p.ProvisionerType, short(pub))
				fmt.Fprintln(cmd.OutOrStdout(), p.PoolID)
				return nil
			})
		},
	}
	fl := create.Flags()
	fl.StringVar(&provider, "provider", "", "provider public key (hex)")
	fl.StringVar(&name, "name", "", "pool name, e.g. eu-proxmox")
	fl.StringVar(&location, "location", "", "region: "+strings.Join(store.Regions, ", "))
	fl.StringVar(&ptype, "provisioner-type", "proxmox", "the pool's provisioner type (told to agents that register)")
	_ = create.MarkFlagRequired("provider")
	_ = create.MarkFlagRequired("name")
	_ = create.MarkFlagRequired("location")

	var listProvider string
	var asJSON bool
	list := &cobra.Command{
		Use:   "list --provider HEX",
		Short: "List a provider's pools with their agents",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := identity.NormalizePublicKeyHex(listProvider)
			if err != nil {
				return usagef("--provider: %v", err)
			}
			return g.withStore(cmd, func(st *store.Store) error {
				ps, err := st.ListPools(cmd.Context(), pub, time.Now().UnixNano())
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), asJSON, ps, "POOL\tNAME\tLOCATION\tPROVISIONER\tAGENTS\tONLINE", func(p store.PoolStats) string {
					return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d", p.PoolID, p.Name, p.Location, p.ProvisionerType, p.AgentCount, p.OnlineCount)
				})
			})
		},
	}
	list.Flags().StringVar(&listProvider, "provider", "", "provider public key (hex)")
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	_ = list.MarkFlagRequired("provider")

	var delProvider string
	del := &cobra.Command{
		Use:   "delete POOL_ID --provider HEX",
		Short: "Delete a pool and its unused setup tokens (refused while agents are in it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := identity.NormalizePublicKeyHex(delProvider)
			if err != nil {
				return usagef("--provider: %v", err)
			}
			return g.withStore(cmd, func(st *store.Store) error {
				if err := st.DeletePool(cmd.Context(), pub, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "pool %s deleted\n", args[0])
				return nil
			})
		},
	}
	del.Flags().StringVar(&delProvider, "provider", "", "provider public key (hex)")
	_ = del.MarkFlagRequired("provider")
	cmd.AddCommand(create, list, del)
	return cmd
}

func newSetupTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "setup-token", Short: "Make one-time setup tokens that register agents into a pool"}
	var pool, label string
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create --pool ID [--ttl 24h] [--label L]",
		Short: "Make a one-time setup token; prints it (apt_<location>_<16 hex>)",
		Long: `Make a one-time setup token for a pool and print it on stdout. The server keeps
only its SHA-256: it is shown this once. An agent registers with it
(POST /api/v1/agents/setup, unsigned) before it expires; it then has every
permission in that pool. A token registers one agent.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if ttl <= 0 {
				return usagef("--ttl must be positive, e.g. 24h")
			}
			return g.withStore(cmd, func(st *store.Store) error {
				p, err := st.GetPool(cmd.Context(), pool)
				if err != nil {
					return err
				}
				var l *string
				if label != "" {
					l = &label
				}
				tok, err := st.CreateSetupToken(cmd.Context(), p.ProviderPubkey, p.PoolID, l, ttl, time.Now().UnixNano())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "setup token for pool %s, valid until %s (shown once)\n", p.PoolID, rfc3339(tok.ExpiresAtNs))
				fmt.Fprintln(cmd.OutOrStdout(), tok.Token)
				return nil
			})
		},
	}
	create.Flags().StringVar(&pool, "pool", "", "pool id (dc-api pool list)")
	create.Flags().DurationVar(&ttl, "ttl", store.DefaultSetupTokenTTL, "how long the token is valid")
	create.Flags().StringVar(&label, "label", "", "label for the agent that registers with it")
	_ = create.MarkFlagRequired("pool")
	cmd.AddCommand(create)
	return cmd
}

func short(k string) string {
	if len(k) > 16 {
		return k[:16] + "…"
	}
	return k
}
