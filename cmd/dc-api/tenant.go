package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/decent-stuff/dc-agent/apiserver/store"
)

// newTenantRequestCmds are the tenant's side of password resets and SSH
// key rotations (dc-api has no tenant accounts; on the live API the tenant
// asks on the website: api/src/openapi/contracts.rs request_password_reset
// and rotate_ssh_key), and `contract requests`, which shows what became of
// them.
func newTenantRequestCmds(g *globals) []*cobra.Command {
	reset := &cobra.Command{
		Use:   "reset-password CONTRACT_ID",
		Short: "Ask the provider's agent for a new root password (provisioned or active contracts)",
		Long: `Queue a password reset, as a tenant does on the website. The provider's agent
sets a new password through the backend (never by logging in to the VM) and
reports it: it then is the contract's instance details' root_password, sealed to
the requester's key. A failure the agent reports shows in "contract requests".`,
		Args: cobra.ExactArgs(1),
	}
	var key string
	rotate := &cobra.Command{
		Use:   "rotate-ssh-key CONTRACT_ID --ssh-pubkey KEY",
		Short: "Ask the provider's agent to add a new SSH key to the contract's instance",
		Long: `Queue an SSH key rotation, as a tenant does on the website. The agent adds the
key to the login user's authorized_keys (the old key stays); once it reports
success the key is the contract's requester SSH key. --ssh-pubkey takes the key
line or file:PATH.`,
		Args: cobra.ExactArgs(1),
	}
	rotate.Flags().StringVar(&key, "ssh-pubkey", "", "the new SSH public key line, or file:PATH")
	_ = rotate.MarkFlagRequired("ssh-pubkey")
	run := func(op func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.TenantRequest, error), what string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, func(st *store.Store) error {
				r, err := op(st, cmd, idArg(args), time.Now().UnixNano())
				if err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s requested for contract %s; its agent picks it up next\n", what, r.ContractID)
				return nil
			})
		}
	}
	reset.RunE = run(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.TenantRequest, error) {
		return st.RequestPasswordReset(cmd.Context(), id, nowNs)
	}, "password reset")
	rotate.RunE = run(func(st *store.Store, cmd *cobra.Command, id string, nowNs int64) (*store.TenantRequest, error) {
		k, err := fileOrValue(key)
		if err != nil {
			return nil, usagef("--ssh-pubkey: %v", err)
		}
		return st.RequestKeyRotation(cmd.Context(), id, k, nowNs)
	}, "SSH key rotation")

	var asJSON bool
	show := &cobra.Command{
		Use:   "requests CONTRACT_ID",
		Short: "Show the contract's latest password reset and SSH key rotation: pending, done, or why it failed",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withStore(cmd, func(st *store.Store) error {
				id := idArg(args)
				if _, err := st.GetContract(cmd.Context(), id); err != nil {
					return err
				}
				list, err := st.TenantRequests(cmd.Context(), id)
				if err != nil {
					return err
				}
				return printList(cmd.OutOrStdout(), asJSON, list, "REQUEST\tASKED\tSTATE", func(r store.TenantRequest) string {
					state := "pending"
					switch {
					case r.DoneAtNs != nil && r.Error != nil:
						state = "failed: " + *r.Error
					case r.DoneAtNs != nil:
						state = "done " + rfc3339(*r.DoneAtNs)
					}
					return strings.ReplaceAll(r.Kind, "_", " ") + "\t" + rfc3339(r.RequestedAtNs) + "\t" + state
				})
			})
		},
	}
	show.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return []*cobra.Command{reset, rotate, show}
}
