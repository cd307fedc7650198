package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Contract states and the agent-facing contract operations as the live
// Decent Cloud API has them (dc-api serve --profile live). Each function
// names the live source it follows; docs/dc-api.md lists where dc-api
// departs from it.

// statusRejected is a live status dc-api never sets itself.
const statusRejected = "rejected"

// liveTransitions is ContractStatus::can_transition_to of
// common/src/contract_status.rs; rejected, cancelled, expired and
// provisioning_failed are terminal.
var liveTransitions = map[string][]string{
	dcapi.StatusRequested:    {dcapi.StatusPending, dcapi.StatusAccepted, statusRejected, dcapi.StatusCancelled, dcapi.StatusExpired},
	dcapi.StatusPending:      {dcapi.StatusAccepted, statusRejected, dcapi.StatusCancelled, dcapi.StatusExpired},
	dcapi.StatusAccepted:     {dcapi.StatusProvisioning, dcapi.StatusProvisioningFailed, statusRejected, dcapi.StatusCancelled},
	dcapi.StatusProvisioning: {dcapi.StatusProvisioned, dcapi.StatusProvisioningFailed, dcapi.StatusCancelled},
	dcapi.StatusProvisioned:  {dcapi.StatusActive, dcapi.StatusPaused, dcapi.StatusCancelled},
	dcapi.StatusActive:       {dcapi.StatusPaused, dcapi.StatusCancelled, dcapi.StatusExpired},
	dcapi.StatusPaused:       {dcapi.StatusActive, dcapi.StatusProvisioned, dcapi.StatusCancelled, dcapi.StatusExpired},
}

// CanTransition reports whether a contract may go from one status to
// another (common/src/contract_status.rs).
func CanTransition(from, to string) bool { return slices.Contains(liveTransitions[from], to) }

// parseLiveStatus is ContractStatus::from_str: case-insensitive, with the
// aliases canceled and provisioningfailed.
func parseLiveStatus(s string) (string, bool) {
	switch v := strings.ToLower(s); v {
	case "canceled":
		return dcapi.StatusCancelled, true
	case "provisioningfailed":
		return dcapi.StatusProvisioningFailed, true
	case dcapi.StatusRequested, dcapi.StatusPending, dcapi.StatusAccepted, dcapi.StatusProvisioning, dcapi.StatusProvisioned,
		dcapi.StatusActive, dcapi.StatusPaused, statusRejected, dcapi.StatusCancelled, dcapi.StatusExpired, dcapi.StatusProvisioningFailed:
		return v, true
	}
	return "", false
}

// liveDebug is how live's messages print a status list ({:?} of the enum).
func liveDebug(statuses []string) string {
	names := make([]string, len(statuses))
	for i, s := range statuses {
		var b strings.Builder
		for _, part := range strings.Split(s, "_") {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
		names[i] = b.String()
	}
	return "[" + strings.Join(names, ", ") + "]"
}

// liveName is a status as live's Display prints it.
func liveName(s string) string { return strings.ReplaceAll(s, "_", "") }

func errInvalidTransition(from, to string) error {
	return conflictf("Invalid status transition: %s -> %s. Valid transitions from '%s': %s", liveName(from), liveName(to), liveName(from), liveDebug(liveTransitions[from]))
}

// PauseContract stops a provisioned or active contract's instance for a
// payment dispute (pause_contract, api/src/database/contracts/dispute.rs):
// the agent is told to stop the VM, not destroy it. Pausing again with the
// same reason is a no-op; with another reason it is refused.
func (s *Store) PauseContract(ctx context.Context, id, reason string, nowNs int64) (*Contract, error) {
	if reason == "" {
		reason = "paused"
	}
	if err := validText("pause reason", reason, maxLabel); err != nil {
		return nil, err
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if c.Status == dcapi.StatusPaused {
			if strOr(c.PauseReason, "") == reason {
				return nil
			}
			return conflictf("Contract %s is already paused with reason '%s'; refusing to overwrite with '%s'", id, strOr(c.PauseReason, ""), reason)
		}
		if !CanTransition(c.Status, dcapi.StatusPaused) {
			return conflictf("Contract %s status %s cannot transition to paused", id, c.Status)
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, paused_at_ns = ?, pause_reason = ? WHERE contract_id = ?`),
			dcapi.StatusPaused, nowNs, nowNs, reason, id)
		return err
	})
	return s.afterStateChange(ctx, id, "pause", err)
}

// ResumeContract makes a paused contract active again (resume_contract,
// dispute.rs); the agent starts its VM. A contract that is not paused is
// left as it is.
func (s *Store) ResumeContract(ctx context.Context, id string, nowNs int64) (*Contract, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if err != nil || c.Status != dcapi.StatusPaused {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, paused_at_ns = NULL, pause_reason = NULL WHERE contract_id = ?`),
			dcapi.StatusActive, nowNs, id)
		return err
	})
	return s.afterStateChange(ctx, id, "resume", err)
}

// ExpireContract ends a contract now (status expired, its end time now if
// later): from requested, pending, active or paused, as
// common/src/contract_status.rs allows. The agent is told to terminate
// its instance.
func (s *Store) ExpireContract(ctx context.Context, id string, nowNs int64) (*Contract, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if err != nil || c.Status == dcapi.StatusExpired {
			return err
		}
		if !CanTransition(c.Status, dcapi.StatusExpired) {
			return errInvalidTransition(c.Status, dcapi.StatusExpired)
		}
		ends := nowNs
		if c.EndsAtNs != nil && *c.EndsAtNs < nowNs {
			ends = *c.EndsAtNs
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, ends_at_ns = ?,
			lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = NULL WHERE contract_id = ?`),
			dcapi.StatusExpired, nowNs, ends, id)
		return err
	})
	return s.afterStateChange(ctx, id, "expire", err)
}

func (s *Store) afterStateChange(ctx context.Context, id, what string, err error) (*Contract, error) {
	if err != nil {
		return nil, wrapErr(err, "%s contract %s", what, id)
	}
	return s.GetContract(ctx, id)
}

// FailTimedOut fails provider's contracts that have been accepted or
// provisioning for longer than the policy's ProvisioningTimeout, as live's
// timeout cleanup does (find_failed_provisioning and
// mark_provisioning_failed, api/src/database/contracts/timeouts.rs). Live
// runs it periodically; dc-api before answering an agent.
func (s *Store) FailTimedOut(ctx context.Context, provider string, nowNs int64) error {
	t := s.policy.ProvisioningTimeout
	_, err := s.w.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, last_error = ?,
		failure_count = failure_count + 1, lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = NULL
		WHERE provider_pubkey = ? AND status IN (?, ?) AND status_updated_at_ns < ?`),
		dcapi.StatusProvisioningFailed, nowNs, fmt.Sprintf("Provisioning timed out after %d s", int64(t.Seconds())),
		provider, dcapi.StatusAccepted, dcapi.StatusProvisioning, nowNs-int64(t))
	if err != nil {
		return fmt.Errorf("fail timed-out contracts: %w", err)
	}
	return nil
}

// PendingLive is live's pending-provision for an agent of pool
// (get_pending_provision_contracts_for_pool,
// api/src/database/contracts/provisioning.rs): accepted and provisioning
// contracts, oldest first, that nobody holds a live lock on (the asking
// agent included), which the pool serves.
func (s *Store) PendingLive(ctx context.Context, provider string, pool *Pool, nowNs int64) ([]dcapi.PendingContract, error) {
	if err := s.FailTimedOut(ctx, provider, nowNs); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+contractCols+` FROM contracts
		WHERE provider_pubkey = ? AND status IN (?, ?) AND (lock_agent IS NULL OR lock_expires_at_ns < ?)
		AND (agent_pool_id = ? OR agent_pool_id IS NULL)
		ORDER BY created_at_ns, contract_id`), provider, dcapi.StatusAccepted, dcapi.StatusProvisioning, nowNs, pool.PoolID)
	if err != nil {
		return nil, fmt.Errorf("pending contracts: %w", err)
	}
	defer rows.Close()
	out := []dcapi.PendingContract{}
	for rows.Next() {
		c, err := scanContract(rows)
		if err != nil {
			return nil, err
		}
		if poolServes(pool, c.AgentPoolID, c.DatacenterCountry) {
			out = append(out, c.PendingContract)
		}
	}
	return out, rows.Err()
}

// LockLive is live's acquire_provisioning_lock (provisioning.rs): accepted
// or provisioning contracts only; a lock held by another agent and not
// expired is acquired=false. Either way the answer's expiry is now plus the
// lock's life, as live computes it before trying.
func (s *Store) LockLive(ctx context.Context, provider, id, agent string, nowNs int64) (dcapi.LockResult, error) {
	exp := nowNs + int64(s.policy.LockTTL)
	res := dcapi.LockResult{ExpiresAtNs: exp}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if IsNotFound(err) || err == nil && c.ProviderPubkey != provider {
			return notFoundf("Contract not found: %s", id)
		}
		if err != nil {
			return err
		}
		if c.Status != dcapi.StatusAccepted && c.Status != dcapi.StatusProvisioning {
			return conflictf("Contract %s is not in lockable status (status: %s)", id, liveName(c.Status))
		}
		if lockedByOther(c, agent, nowNs) {
			return nil
		}
		res.Acquired = true
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET lock_agent = ?, lock_expires_at_ns = ? WHERE contract_id = ?`), agent, exp, id)
		return err
	})
	return res, wrapErr(err, "lock contract %s", id)
}

// ReleaseLive is live's release_provisioning_lock: it clears the lock if
// agent holds it and reports whether it did.
func (s *Store) ReleaseLive(ctx context.Context, provider, id, agent string) (bool, error) {
	res, err := s.w.ExecContext(ctx, s.q(`UPDATE contracts SET lock_agent = NULL, lock_expires_at_ns = NULL
		WHERE contract_id = ? AND provider_pubkey = ? AND lock_agent = ?`), id, provider, agent)
	if err != nil {
		return false, fmt.Errorf("release lock of contract %s: %w", id, err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// Answers of UpdateStatusLive, worded as live's.
const (
	MsgStatusUpdated      = "Provisioning status updated"
	MsgProvisioningFailed = "Provisioning failed — contract closed and refund initiated"
)

// UpdateStatusLive is live's PUT /provider/rental-requests/{id}/provisioning
// (update_provisioning_status, api/src/openapi/providers.rs) for provider's
// agent:
//
//   - instanceDetails is trimmed; "provisioned" needs it non-empty;
//   - provisioning_failed (any spelling) fails an accepted or provisioning
//     contract for good (live refunds the tenant); in another state it
//     changes nothing and still succeeds;
//   - any other status must be a transition of common/src/contract_status.rs:
//     a second "provisioning" is refused;
//   - with "provisioned" a plaintext root_password in the details is sealed
//     (PROTOCOL.md §7, v2) to the contract's requester key, as
//     add_provisioning_details does; a sealed one is stored as given, and a
//     plaintext one with no requester key to seal it to is dropped (live
//     keeps it in the raw details; dc-api never stores a plaintext
//     password).
//
// It returns live's success message.
func (s *Store) UpdateStatusLive(ctx context.Context, provider, id, agent, status, details string, nowNs int64) (string, error) {
	details = strings.TrimSpace(details)
	if status == dcapi.StatusProvisioned && details == "" {
		return "", invalidf("Instance details are required when marking a contract as provisioned")
	}
	if len(details) > maxDetailsBytes {
		return "", invalidf("instanceDetails is %d bytes; at most %d", len(details), maxDetailsBytes)
	}
	target, ok := parseLiveStatus(status)
	if ok && target == dcapi.StatusProvisioningFailed {
		return MsgProvisioningFailed, s.markFailedLive(ctx, provider, id, agent, details, nowNs)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if IsNotFound(err) {
			return notFoundf("Contract not found")
		}
		if err != nil {
			return err
		}
		if c.ProviderPubkey != provider {
			return forbiddenf("Unauthorized: only provider can update contract status")
		}
		if !ok {
			return invalidf("Invalid contract status '%s'. Valid statuses: requested, pending, accepted, provisioning, provisioned, active, paused, rejected, cancelled, expired, provisioningfailed", clip(status))
		}
		if _, known := parseLiveStatus(c.Status); !known {
			return invalidf("Contract %s has invalid status '%s' in database", id, c.Status)
		}
		if !CanTransition(c.Status, target) {
			return errInvalidTransition(c.Status, target)
		}
		set, args := []string{"status = ?", "status_updated_at_ns = ?"}, []any{target, nowNs}
		switch target {
		case dcapi.StatusProvisioning:
			set, args = append(set, "provisioning_agent = ?"), append(args, agent)
		case dcapi.StatusCancelled:
			set, args = append(set, "cancelled_at_ns = ?", "lock_agent = NULL", "lock_expires_at_ns = NULL", "offer_after_ns = NULL"), append(args, nowNs)
		case dcapi.StatusPaused:
			set, args = append(set, "paused_at_ns = ?"), append(args, nowNs)
		case dcapi.StatusActive:
			set = append(set, "paused_at_ns = NULL", "pause_reason = NULL")
		case dcapi.StatusProvisioned:
			stored, ext, err := sealDetails(details, c)
			if err != nil {
				return err
			}
			set = append(set, "instance_details = ?", "provisioned_at_ns = ?", "external_instance_id = ?", "offer_after_ns = NULL")
			args = append(args, stored, nowNs, nullStr(ext))
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET `+strings.Join(set, ", ")+` WHERE contract_id = ?`), append(args, id)...)
		return err
	})
	return MsgStatusUpdated, wrapErr(err, "update contract %s", id)
}

// markFailedLive is mark_provisioning_failed (timeouts.rs): only an
// accepted or provisioning contract changes; a repeat is a no-op.
func (s *Store) markFailedLive(ctx context.Context, provider, id, agent, reason string, nowNs int64) error {
	if reason == "" {
		reason = "Provider reported provisioning failure"
	}
	if len(reason) > 4096 {
		reason = strings.ToValidUTF8(reason[:4096], "")
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if IsNotFound(err) {
			return nil // live: no row in an eligible state, no change, success
		}
		if err != nil {
			return err
		}
		if c.ProviderPubkey != provider {
			return forbiddenf("Unauthorized: only provider can update contract status")
		}
		if c.Status != dcapi.StatusAccepted && c.Status != dcapi.StatusProvisioning {
			return nil
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, provisioning_agent = ?,
			failure_count = failure_count + 1, last_error = ?, lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = NULL
			WHERE contract_id = ?`), dcapi.StatusProvisioningFailed, nowNs, agent, reason, id)
		return err
	})
	return wrapErr(err, "update contract %s", id)
}

// sealDetails returns the details to store for a provisioned contract and
// the instance id in them (external_id), if any. Details that are not a
// JSON object are stored as given, as live does.
func sealDetails(details string, c *Contract) (string, *string, error) {
	var obj map[string]json.RawMessage
	if json.Unmarshal([]byte(details), &obj) != nil || obj == nil {
		return details, nil, nil
	}
	var ext *string
	var e string
	if json.Unmarshal(obj["external_id"], &e) == nil && e != "" && len(e) <= 256 {
		ext = &e
	}
	raw, ok := obj["root_password"]
	var pw string
	if !ok || json.Unmarshal(raw, &pw) != nil || pw == "" || checkSealed(pw, c.ContractID) == nil {
		return details, ext, nil
	}
	delete(obj, "root_password")
	if c.RequesterPubkey != "" {
		pub, err := hex.DecodeString(c.RequesterPubkey)
		if err != nil {
			return "", nil, fmt.Errorf("requester key of contract %s: %w", c.ContractID, err)
		}
		sealed, err := identity.Seal([]byte(pw), pub, c.ContractID)
		if err != nil {
			return "", nil, fmt.Errorf("seal the root password of contract %s: %w", c.ContractID, err)
		}
		obj["root_password"], _ = json.Marshal(sealed)
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return "", nil, err
	}
	return string(b), ext, nil
}

// LiveInstance is one running instance of a live reconcile request: the
// contract id is optional.
type LiveInstance struct {
	ExternalID string
	ContractID *string
}

// ReconcileLive is live's reconcile (reconcile_instances,
// api/src/openapi/providers.rs): cancelled → terminate "cancelled"; past
// its end → terminate "expired"; paused → pause with its reason; any other
// contract of the provider → keep with endsAt; no, a malformed or an
// unknown contract id, or another provider's → unknown.
func (s *Store) ReconcileLive(ctx context.Context, provider string, running []LiveInstance, nowNs int64) (dcapi.ReconcileResponse, error) {
	resp := newReconcileResponse()
	if len(running) > MaxReconcileInstances {
		return resp, invalidf("runningInstances has %d entries; at most %d", len(running), MaxReconcileInstances)
	}
	unknown := func(ext, msg string) {
		resp.Unknown = append(resp.Unknown, dcapi.ReconcileUnknown{ExternalID: ext, Message: msg})
	}
	for _, in := range running {
		if in.ContractID == nil {
			unknown(in.ExternalID, "No contract ID associated with this instance")
			continue
		}
		cid := *in.ContractID
		if _, err := hex.DecodeString(cid); err != nil {
			unknown(in.ExternalID, fmt.Sprintf("Invalid contract id hex: %s (value: %s)", RustHexError(err), clip(cid)))
			continue
		}
		c, err := s.getContract(ctx, s.r, strings.ToLower(cid), false)
		if err != nil && !IsNotFound(err) && KindOf(err) != KindInvalid {
			return resp, err
		}
		if err != nil {
			unknown(in.ExternalID, "No contract found with ID: "+clip(cid))
			continue
		}
		if c.ProviderPubkey != provider {
			unknown(in.ExternalID, "Contract belongs to different provider")
			continue
		}
		end := derefOr(c.EndsAtNs, 0)
		switch {
		case c.Status == dcapi.StatusCancelled:
			resp.Terminate = append(resp.Terminate, dcapi.ReconcileTerminate{ExternalID: in.ExternalID, ContractID: cid, Reason: "cancelled"})
		case end > 0 && end < nowNs:
			resp.Terminate = append(resp.Terminate, dcapi.ReconcileTerminate{ExternalID: in.ExternalID, ContractID: cid, Reason: "expired"})
		case c.Status == dcapi.StatusPaused:
			resp.Pause = append(resp.Pause, dcapi.ReconcilePause{ExternalID: in.ExternalID, ContractID: cid, Reason: strOr(c.PauseReason, "paused")})
		default:
			resp.Keep = append(resp.Keep, dcapi.ReconcileInstance{ExternalID: in.ExternalID, ContractID: cid, EndsAt: end})
		}
	}
	return resp, nil
}

// RustHexError words a hex decoding error as Rust's hex crate does.
func RustHexError(err error) string {
	var ie hex.InvalidByteError
	switch {
	case errors.As(err, &ie):
		return fmt.Sprintf("Invalid character %q", rune(ie))
	case errors.Is(err, hex.ErrLength):
		return "Odd number of digits"
	}
	return err.Error()
}

// MarkTerminatedLive is live's mark_contract_terminated
// (api/src/database/contracts/mod.rs): only a cancelled contract (here: of
// this provider) takes it.
func (s *Store) MarkTerminatedLive(ctx context.Context, provider, id string, nowNs int64) error {
	res, err := s.w.ExecContext(ctx, s.q(`UPDATE contracts SET terminated_at_ns = ? WHERE contract_id = ? AND provider_pubkey = ? AND status = ?`),
		nowNs, id, provider, dcapi.StatusCancelled)
	if err != nil {
		return fmt.Errorf("terminate contract %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFoundf("Contract not found or not in cancelled status (ID: %s)", id)
	}
	return nil
}
