package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/crypto/ssh"

	"github.com/decent-stuff/dc-agent/apiserver/store"
	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

func newProviderCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "provider", Short: "Register and list providers"}
	var name string
	add := &cobra.Command{
		Use:   "add PUBKEY_HEX",
		Short: "Register a provider by its main public key (re-running renames it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pub, err := identity.NormalizePublicKeyHex(args[0])
			if err != nil {
				return usagef("provider key: %v", err)
			}
			return g.withStore(cmd, func(st *store.Store) error {
				created, err := st.AddProvider(cmd.Context(), pub, name, time.Now().UnixNano())
				if err != nil {
					return err
				}
				verb := "registered"
				if !created {
					verb = "already registered"
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "provider %s %s\n", pub, verb)
				fmt.Fprintln(cmd.OutOrStdout(), pub)
				return nil
			})
		},
	}
	add.Flags().StringVar(&name, "name", "", "display name (shown on the dashboard)")
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List providers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, func(st *store.Store) error {
				ps, err := st.ListProviders(cmd.Context())
				if err != nil {
					return err
				}
				if ps == nil {
					ps = []store.Provider{}
				}
				return printList(cmd.OutOrStdout(), asJSON, ps, "PUBKEY\tNAME\tREGISTERED", func(p store.Provider) string {
					return p.Pubkey + "\t" + p.Name + "\t" + rfc3339(p.CreatedAtNs)
				})
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(add, list)
	return cmd
}

type createFlags struct {
	id, provider, sshKey, requester, memory, storage, ptype, pconfig, city, offering, instanceConfig,
	script, product, pool, country string
	cpu   int
	hours int
}

func newContractCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "contract", Short: "Create, list, show, cancel, pause, resume and expire contracts; tenant requests"}
	cmd.AddCommand(newContractCreateCmd(g), newContractListCmd(g), newContractShowCmd(g), newContractCancelCmd(g))
	cmd.AddCommand(newContractStateCmds(g)...)
	cmd.AddCommand(newTenantRequestCmds(g)...)
	return cmd
}

func newContractCreateCmd(g *globals) *cobra.Command {
	f := &createFlags{}
	cmd := &cobra.Command{
		Use:   "create --provider HEX --ssh-pubkey KEY [flags]",
		Short: "Create an accepted, paid contract (simulates the marketplace); prints its id",
		Long: `Create a contract as the marketplace would after the user paid: status
"accepted", payment confirmed now. It is offered to the provider's agents at
once (a running server wakes its long-polls). Prints the contract id alone on
stdout.

--ssh-pubkey takes the key line itself or file:PATH.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nc, err := f.contract()
			if err != nil {
				return err
			}
			return g.withStore(cmd, func(st *store.Store) error {
				c, err := st.CreateContract(cmd.Context(), nc, time.Now().UnixNano())
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), c.ContractID)
				return nil
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.provider, "provider", "", "provider public key (hex), registered with dc-api provider add")
	fl.StringVar(&f.sshKey, "ssh-pubkey", "", "the requester's SSH public key line, or file:PATH")
	fl.StringVar(&f.requester, "requester-pubkey", "", "the requester's Ed25519 public key (hex); root passwords are sealed for it")
	fl.IntVar(&f.cpu, "cpu", 0, "CPU cores")
	fl.StringVar(&f.memory, "memory", "", `memory, e.g. "4 GB"`)
	fl.StringVar(&f.storage, "storage", "", `storage, e.g. "40 GB"`)
	fl.StringVar(&f.ptype, "provisioner-type", "", "provisioner to use (default: the agent's)")
	fl.StringVar(&f.pconfig, "provisioner-config", "", "provisioner config (JSON)")
	fl.StringVar(&f.instanceConfig, "instance-config", "", "instance config (JSON)")
	fl.StringVar(&f.city, "city", "", "datacenter city")
	fl.StringVar(&f.country, "country", "", "datacenter country (ISO 3166-1 alpha-2, e.g. DE): a contract in no pool goes to the pools of its region")
	fl.StringVar(&f.pool, "pool", "", "the offering's agent pool (dc-api pool list): only that pool's agents get it")
	fl.StringVar(&f.offering, "offering-id", "", "offering id (default offering-1)")
	fl.StringVar(&f.script, "post-provision-script", "", "script to run after provisioning (or file:PATH)")
	fl.StringVar(&f.product, "product-type", "", "compute, dedicated or gpu")
	fl.IntVar(&f.hours, "hours", 720, "contract duration in hours")
	fl.StringVar(&f.id, "id", "", "contract id (64 hex; random by default)")
	_ = cmd.MarkFlagRequired("provider")
	_ = cmd.MarkFlagRequired("ssh-pubkey")
	return cmd
}

// contract validates the flags strictly: the marketplace never hands an
// agent a malformed contract, so neither does this command.
func (f *createFlags) contract() (store.NewContract, error) {
	var nc store.NewContract
	prov, err := identity.NormalizePublicKeyHex(f.provider)
	if err != nil {
		return nc, usagef("--provider: %v", err)
	}
	nc.ProviderPubkey = prov
	key, err := fileOrValue(f.sshKey)
	if err != nil {
		return nc, usagef("--ssh-pubkey: %v", err)
	}
	key = strings.TrimSpace(key)
	if _, _, _, _, err := ssh.ParseAuthorizedKey([]byte(key)); err != nil || strings.ContainsAny(key, "\n\r") {
		return nc, usagef("--ssh-pubkey: not an SSH public key line (e.g. \"ssh-ed25519 AAAA… user@host\")")
	}
	nc.RequesterSSHPubkey = key
	if f.requester != "" {
		r, err := identity.NormalizePublicKeyHex(f.requester)
		if err != nil {
			return nc, usagef("--requester-pubkey: %v", err)
		}
		nc.RequesterPubkey = &r
	}
	if f.cpu < 0 || f.cpu > 1024 {
		return nc, usagef("--cpu must be 1..1024")
	}
	if f.cpu > 0 {
		nc.CPUCores = &f.cpu
	}
	for flag, v := range map[string]string{"--memory": f.memory, "--storage": f.storage} {
		if v != "" {
			if _, err := dcapi.ParseSizeMB(v); err != nil {
				return nc, usagef("%s: %v", flag, err)
			}
		}
	}
	for flag, v := range map[string]string{"--provisioner-config": f.pconfig, "--instance-config": f.instanceConfig} {
		if v != "" && !json.Valid([]byte(v)) {
			return nc, usagef("%s is not valid JSON", flag)
		}
	}
	switch f.product {
	case "", "compute", "dedicated", "gpu":
	default:
		return nc, usagef("--product-type must be compute, dedicated or gpu")
	}
	if f.hours < 1 {
		return nc, usagef("--hours must be at least 1")
	}
	script, err := fileOrValue(f.script)
	if err != nil {
		return nc, usagef("--post-provision-script: %v", err)
	}
	opt := func(v string) *string {
		if v == "" {
			return nil
		}
		return &v
	}
	nc.ContractID = f.id
	nc.OfferingID = f.offering
	nc.MemoryAmount, nc.StorageCapacity = opt(f.memory), opt(f.storage)
	nc.ProvisionerType, nc.ProvisionerConfig, nc.InstanceConfig = opt(f.ptype), opt(f.pconfig), opt(f.instanceConfig)
	nc.DatacenterCity, nc.PostProvisionScript, nc.ProductType = opt(f.city), opt(script), opt(f.product)
	if f.country != "" {
		c := strings.ToUpper(f.country)
		if store.CountryRegion(c) == "" {
			return nc, usagef("--country %q is not a country code dc-api knows (two letters, e.g. DE, US)", f.country)
		}
		nc.DatacenterCountry = &c
	}
	nc.AgentPoolID = opt(f.pool)
	nc.Duration = time.Duration(f.hours) * time.Hour
	return nc, nil
}

// fileOrValue reads "file:PATH" values.
func fileOrValue(v string) (string, error) {
	if p, ok := strings.CutPrefix(v, "file:"); ok {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", err
		}
		return string(b), nil
	}
	return v, nil
}

func newContractListCmd(g *globals) *cobra.Command {
	var asJSON bool
	var provider, status string
	var limit int
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List contracts, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, func(st *store.Store) error {
				cs, err := st.ListContracts(cmd.Context(), store.ContractFilter{Provider: provider, Status: status, Limit: limit})
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), asJSON, cs, "CONTRACT\tPROVIDER\tSTATUS\tINSTANCE\tCREATED", func(c *store.Contract) string {
					inst := "-"
					if c.ExternalInstanceID != nil {
						inst = *c.ExternalInstanceID
					}
					return fmt.Sprintf("%s\t%s…\t%s\t%s\t%s", c.ContractID, c.ProviderPubkey[:12], c.Status, inst, rfc3339(c.CreatedAtNs))
				})
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&provider, "provider", "", "only this provider's contracts")
	cmd.Flags().StringVar(&status, "status", "", "only contracts with this status")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many")
	return cmd
}

func newContractShowCmd(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "show CONTRACT_ID",
		Short: "Show a contract (status, instance details, lock, failures)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, func(st *store.Store) error {
				c, err := st.GetContract(cmd.Context(), idArg(args))
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), c)
				}
				return printContract(cmd.OutOrStdout(), c)
			})
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (contract_id, status, instance_details, …)")
	return cmd
}

func newContractCancelCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cancel CONTRACT_ID",
		Short: "Cancel a contract; its agent is told to terminate the instance",
		Args:  cobra.ExactArgs(1),
	}
	cmd.RunE = g.contractStateRun(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.Contract, error) {
		return st.CancelContract(cmd.Context(), id, nowNs)
	})
	return cmd
}

// contractStateRun is the RunE of a command that moves the contract named
// by its argument to another state (op) and prints the new state.
func (g *globals) contractStateRun(op func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.Contract, error)) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		return g.withStore(cmd, func(st *store.Store) error {
			c, err := op(st, cmd, idArg(args), time.Now().UnixNano())
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "contract %s is %s\n", c.ContractID, c.Status)
			return nil
		})
	}
}

// newContractStateCmds are pause, resume and expire: the live API's
// dispute pause and expiry (common/src/contract_status.rs).
func newContractStateCmds(g *globals) []*cobra.Command {
	var reason string
	pause := &cobra.Command{
		Use:   "pause CONTRACT_ID [--reason R]",
		Short: "Pause a provisioned or active contract (a payment dispute): its agent stops the VM, keeps it",
		Args:  cobra.ExactArgs(1),
	}
	pause.Flags().StringVar(&reason, "reason", "paused", `reason the agent is told, e.g. "stripe_dispute:du_123"`)
	resume := &cobra.Command{
		Use:   "resume CONTRACT_ID",
		Short: "Resume a paused contract: it is active again and its agent starts the VM",
		Args:  cobra.ExactArgs(1),
	}
	expire := &cobra.Command{
		Use:   "expire CONTRACT_ID",
		Short: "End a contract now (expired): its agent terminates the instance",
		Args:  cobra.ExactArgs(1),
	}
	pause.RunE = g.contractStateRun(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.Contract, error) {
		return st.PauseContract(cmd.Context(), id, reason, nowNs)
	})
	resume.RunE = g.contractStateRun(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.Contract, error) {
		return st.ResumeContract(cmd.Context(), id, nowNs)
	})
	expire.RunE = g.contractStateRun(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.Contract, error) {
		return st.ExpireContract(cmd.Context(), id, nowNs)
	})
	return []*cobra.Command{pause, resume, expire}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func printContract(w io.Writer, c *store.Contract) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	t := func(ns *int64) string {
		if ns == nil {
			return "-"
		}
		return rfc3339(*ns)
	}
	s := func(p *string) string {
		if p == nil || *p == "" {
			return "-"
		}
		return *p
	}
	fmt.Fprintf(tw, "contract\t%s\n", c.ContractID)
	fmt.Fprintf(tw, "provider\t%s\n", c.ProviderPubkey)
	fmt.Fprintf(tw, "status\t%s (since %s)\n", c.Status, t(&c.StatusUpdatedAtNs))
	fmt.Fprintf(tw, "offering\t%s\n", c.OfferingID)
	fmt.Fprintf(tw, "created\t%s\n", t(&c.CreatedAtNs))
	fmt.Fprintf(tw, "ends\t%s\n", t(c.EndsAtNs))
	fmt.Fprintf(tw, "ssh key\t%s\n", c.RequesterSSHPubkey)
	if c.CPUCores != nil {
		fmt.Fprintf(tw, "cpu\t%d\n", *c.CPUCores)
	}
	fmt.Fprintf(tw, "memory / storage\t%s / %s\n", s(c.MemoryAmount), s(c.StorageCapacity))
	fmt.Fprintf(tw, "provisioner\t%s\n", s(c.ProvisionerType))
	if c.AgentPoolID != nil || c.DatacenterCountry != nil {
		fmt.Fprintf(tw, "pool / country\t%s / %s\n", s(c.AgentPoolID), s(c.DatacenterCountry))
	}
	if c.PauseReason != nil {
		fmt.Fprintf(tw, "paused\t%s since %s\n", *c.PauseReason, t(c.PausedAtNs))
	}
	fmt.Fprintf(tw, "instance\t%s\n", s(c.ExternalInstanceID))
	fmt.Fprintf(tw, "instance details\t%s\n", s(c.InstanceDetails))
	if c.LockAgent != nil {
		fmt.Fprintf(tw, "lock\t%s until %s\n", *c.LockAgent, t(c.LockExpiresAtNs))
	}
	if c.FailureCount > 0 {
		fmt.Fprintf(tw, "failures\t%d (last: %s)\n", c.FailureCount, s(c.LastError))
	}
	if c.OfferAfterNs != nil {
		fmt.Fprintf(tw, "offered from\t%s\n", t(c.OfferAfterNs))
	}
	if c.LastHealthStatus != nil {
		fmt.Fprintf(tw, "last health\t%s at %s\n", *c.LastHealthStatus, t(c.LastHealthCheckNs))
	}
	if c.TerminatedAtNs != nil {
		fmt.Fprintf(tw, "terminated\t%s\n", t(c.TerminatedAtNs))
	}
	return tw.Flush()
}
