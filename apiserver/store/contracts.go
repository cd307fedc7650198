package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// Contract is a contract with everything the server tracks about it. The
// JSON form (dc-api contract show --json) is snake_case like the wire.
type Contract struct {
	dcapi.PendingContract
	ProviderPubkey     string  `json:"provider_pubkey"`
	Status             string  `json:"status"`
	CreatedAtNs        int64   `json:"created_at_ns"`
	StatusUpdatedAtNs  int64   `json:"status_updated_at_ns"`
	EndsAtNs           *int64  `json:"ends_at_ns"`
	OfferAfterNs       *int64  `json:"offer_after_ns"`
	LockAgent          *string `json:"lock_agent"`
	LockExpiresAtNs    *int64  `json:"lock_expires_at_ns"`
	ProvisioningAgent  *string `json:"provisioning_agent"`
	FailureCount       int     `json:"failure_count"`
	LastError          *string `json:"last_error"`
	InstanceDetails    *string `json:"instance_details"`
	ExternalInstanceID *string `json:"external_instance_id"`
	ProvisionedAtNs    *int64  `json:"provisioned_at_ns"`
	CancelledAtNs      *int64  `json:"cancelled_at_ns"`
	TerminatedAtNs     *int64  `json:"terminated_at_ns"`
	LastHealthCheckNs  *int64  `json:"last_health_check_ns"`
	LastHealthStatus   *string `json:"last_health_status"`
	// AgentPoolID is the pool of the contract's offering (nil: none; then
	// DatacenterCountry decides which pool's agents see it).
	AgentPoolID       *string `json:"agent_pool_id"`
	DatacenterCountry *string `json:"datacenter_country"`
	PausedAtNs        *int64  `json:"paused_at_ns"`
	PauseReason       *string `json:"pause_reason"`
}

// hasLiveInstance reports whether the contract's instance should be running.
func (c *Contract) hasLiveInstance() bool {
	return c.Status == dcapi.StatusProvisioned || c.Status == dcapi.StatusActive
}

const contractCols = `contract_id, offering_id, requester_ssh_pubkey, requester_pubkey, instance_config, cpu_cores,
	memory_amount, storage_capacity, provisioner_type, provisioner_config, post_provision_script, product_type,
	datacenter_city, payment_confirmed_at_ns, provider_pubkey, status, created_at_ns, status_updated_at_ns, ends_at_ns,
	offer_after_ns, lock_agent, lock_expires_at_ns, provisioning_agent, failure_count, last_error, instance_details,
	external_instance_id, provisioned_at_ns, cancelled_at_ns, terminated_at_ns, last_health_check_ns, last_health_status,
	agent_pool_id, datacenter_country, paused_at_ns, pause_reason`

func scanContract(sc rowScanner) (*Contract, error) {
	var c Contract
	var reqPub, instCfg, mem, stor, ptype, pcfg, script, product, city sql.NullString
	var cpu, paid, ends, offer, lockExp, prov, canc, term, lastHC sql.NullInt64
	var lockAgent, provAgent, lastErr, details, ext, lastHS, pool, country, pauseReason sql.NullString
	var failures int64
	var paused sql.NullInt64
	err := sc.Scan(&c.ContractID, &c.OfferingID, &c.RequesterSSHPubkey, &reqPub, &instCfg, &cpu,
		&mem, &stor, &ptype, &pcfg, &script, &product,
		&city, &paid, &c.ProviderPubkey, &c.Status, &c.CreatedAtNs, &c.StatusUpdatedAtNs, &ends,
		&offer, &lockAgent, &lockExp, &provAgent, &failures, &lastErr, &details,
		&ext, &prov, &canc, &term, &lastHC, &lastHS,
		&pool, &country, &paused, &pauseReason)
	if err != nil {
		return nil, err
	}
	if reqPub.Valid {
		c.RequesterPubkey = reqPub.String
	}
	c.InstanceConfig, c.CPUCores, c.MemoryAmount, c.StorageCapacity = strPtr(instCfg), intPtr(cpu), strPtr(mem), strPtr(stor)
	c.ProvisionerType, c.ProvisionerConfig, c.PostProvisionScript = strPtr(ptype), strPtr(pcfg), strPtr(script)
	c.ProductType, c.DatacenterCity, c.PaymentConfirmedAtNs = strPtr(product), strPtr(city), int64Ptr(paid)
	c.EndsAtNs, c.OfferAfterNs, c.LockAgent, c.LockExpiresAtNs = int64Ptr(ends), int64Ptr(offer), strPtr(lockAgent), int64Ptr(lockExp)
	c.ProvisioningAgent, c.FailureCount, c.LastError = strPtr(provAgent), int(failures), strPtr(lastErr)
	c.InstanceDetails, c.ExternalInstanceID, c.ProvisionedAtNs = strPtr(details), strPtr(ext), int64Ptr(prov)
	c.CancelledAtNs, c.TerminatedAtNs, c.LastHealthCheckNs, c.LastHealthStatus = int64Ptr(canc), int64Ptr(term), int64Ptr(lastHC), strPtr(lastHS)
	c.AgentPoolID, c.DatacenterCountry, c.PausedAtNs, c.PauseReason = strPtr(pool), strPtr(country), int64Ptr(paused), strPtr(pauseReason)
	return &c, nil
}

// NewContract is what the marketplace (here: dc-api contract create, or a
// test) hands over when a contract is accepted and paid. The store checks
// structure only (ids, lengths): contract contents are the agent's to
// validate, and agent tests need to create odd contracts.
type NewContract struct {
	ContractID          string // 64 hex; random when empty
	ProviderPubkey      string
	OfferingID          string // "offering-1" when empty
	RequesterSSHPubkey  string
	RequesterPubkey     *string
	InstanceConfig      *string
	CPUCores            *int
	MemoryAmount        *string
	StorageCapacity     *string
	ProvisionerType     *string
	ProvisionerConfig   *string
	PostProvisionScript *string
	ProductType         *string
	DatacenterCity      *string
	// DatacenterCountry is an ISO 3166-1 alpha-2 code; AgentPoolID the
	// pool of the contract's offering. pending-provision offers a contract
	// to a pooled agent when it is in the agent's pool, or in none and its
	// country lies in the pool's region.
	DatacenterCountry    *string
	AgentPoolID          *string
	PaymentConfirmedAtNs *int64 // now when nil
	// Status: accepted (default; offered to agents at once), or requested /
	// pending (not offered until something accepts them).
	Status string
	// Duration until ends_at_ns; 30 days when zero.
	Duration time.Duration
}

// DefaultContractDuration is a new contract's lifetime unless given.
const DefaultContractDuration = 30 * 24 * time.Hour

// maxFieldBytes bounds every free-form contract field.
const maxFieldBytes = 64 << 10

// NewContractID returns a random 64-hex contract id.
func NewContractID() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// CreateContract inserts a contract and wakes the provider's long-polling
// agents (in this process and, through contract_events / NOTIFY, in a
// server running elsewhere).
func (s *Store) CreateContract(ctx context.Context, nc NewContract, nowNs int64) (*Contract, error) {
	if nc.ContractID == "" {
		nc.ContractID = NewContractID()
	}
	if !isLowerHex64(nc.ContractID) {
		return nil, invalidf("contract id must be 64 lowercase hex characters, got %q", clip(nc.ContractID))
	}
	if !isLowerHex64(nc.ProviderPubkey) {
		return nil, invalidf("provider public key must be 64 lowercase hex characters, got %q", clip(nc.ProviderPubkey))
	}
	if nc.OfferingID == "" {
		nc.OfferingID = "offering-1"
	}
	if strings.TrimSpace(nc.RequesterSSHPubkey) == "" {
		return nil, invalidf("requester SSH public key is required")
	}
	if nc.RequesterPubkey != nil && !isLowerHex64(*nc.RequesterPubkey) {
		return nil, invalidf("requester public key must be 64 lowercase hex characters, got %q", clip(*nc.RequesterPubkey))
	}
	for name, v := range map[string]*string{
		"offering id": &nc.OfferingID, "requester ssh pubkey": &nc.RequesterSSHPubkey, "instance config": nc.InstanceConfig,
		"memory amount": nc.MemoryAmount, "storage capacity": nc.StorageCapacity, "provisioner type": nc.ProvisionerType,
		"provisioner config": nc.ProvisionerConfig, "post provision script": nc.PostProvisionScript,
		"product type": nc.ProductType, "datacenter city": nc.DatacenterCity,
	} {
		if v != nil && len(*v) > maxFieldBytes {
			return nil, invalidf("%s is %d bytes; at most %d", name, len(*v), maxFieldBytes)
		}
	}
	if nc.DatacenterCountry != nil && !validCountry(*nc.DatacenterCountry) {
		return nil, invalidf("datacenter country must be an ISO 3166-1 alpha-2 code (two capital letters), got %q", clip(*nc.DatacenterCountry))
	}
	if nc.CPUCores != nil && (*nc.CPUCores < 0 || *nc.CPUCores > 1<<16) {
		return nil, invalidf("cpu cores %d out of range", *nc.CPUCores)
	}
	switch nc.Status {
	case "":
		nc.Status = dcapi.StatusAccepted
	case dcapi.StatusAccepted, dcapi.StatusRequested, dcapi.StatusPending:
	default:
		return nil, invalidf("a new contract's status must be accepted, requested or pending, not %q", clip(nc.Status))
	}
	if nc.Duration <= 0 {
		nc.Duration = DefaultContractDuration
	}
	paid := nc.PaymentConfirmedAtNs
	var offer *int64
	if nc.Status == dcapi.StatusAccepted {
		if paid == nil {
			paid = &nowNs
		}
		offer = &nowNs
	}
	ends := nowNs + int64(nc.Duration)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.providerExists(ctx, tx, nc.ProviderPubkey); err != nil {
			return err
		}
		if nc.AgentPoolID != nil {
			var owner string
			err := tx.QueryRowContext(ctx, s.q(`SELECT provider_pubkey FROM agent_pools WHERE pool_id = ?`), *nc.AgentPoolID).Scan(&owner)
			if errors.Is(err, sql.ErrNoRows) || err == nil && owner != nc.ProviderPubkey {
				return notFoundf("pool %q is not a pool of provider %s (dc-api pool list --provider %s)", clip(*nc.AgentPoolID), nc.ProviderPubkey, nc.ProviderPubkey)
			} else if err != nil {
				return err
			}
		}
		var one int
		if err := tx.QueryRowContext(ctx, s.q(`SELECT 1 FROM contracts WHERE contract_id = ?`), nc.ContractID).Scan(&one); err == nil {
			return conflictf("contract %s already exists", nc.ContractID)
		} else if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO contracts (contract_id, provider_pubkey, offering_id, requester_ssh_pubkey,
			requester_pubkey, instance_config, cpu_cores, memory_amount, storage_capacity, provisioner_type, provisioner_config,
			post_provision_script, product_type, datacenter_city, payment_confirmed_at_ns, status, created_at_ns,
			status_updated_at_ns, ends_at_ns, offer_after_ns, agent_pool_id, datacenter_country)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`),
			nc.ContractID, nc.ProviderPubkey, nc.OfferingID, nc.RequesterSSHPubkey,
			nullStr(nc.RequesterPubkey), nullStr(nc.InstanceConfig), nullInt(nc.CPUCores), nullStr(nc.MemoryAmount),
			nullStr(nc.StorageCapacity), nullStr(nc.ProvisionerType), nullStr(nc.ProvisionerConfig),
			nullStr(nc.PostProvisionScript), nullStr(nc.ProductType), nullStr(nc.DatacenterCity), nullInt64(paid),
			nc.Status, nowNs, nowNs, ends, nullInt64(offer), nullStr(nc.AgentPoolID), nullStr(nc.DatacenterCountry))
		if err != nil {
			return err
		}
		if offer != nil {
			return s.signalOffer(ctx, tx, nc.ProviderPubkey, nowNs)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr(err, "create contract")
	}
	return s.GetContract(ctx, nc.ContractID)
}

// GetContract returns a contract or a KindNotFound error.
func (s *Store) GetContract(ctx context.Context, id string) (*Contract, error) {
	return s.getContract(ctx, s.r, id, false)
}

func (s *Store) getContract(ctx context.Context, q queryer, id string, lock bool) (*Contract, error) {
	if !isLowerHex64(id) {
		return nil, invalidf("contract id must be 64 lowercase hex characters, got %q", clip(id))
	}
	suffix := ""
	if lock {
		suffix = s.forUpdate()
	}
	c, err := scanContract(q.QueryRowContext(ctx, s.q(`SELECT `+contractCols+` FROM contracts WHERE contract_id = ?`+suffix), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFoundf("contract %s not found", id)
	}
	if err != nil {
		return nil, fmt.Errorf("read contract %s: %w", id, err)
	}
	return c, nil
}

// providerContract reads a contract inside tx and checks it is provider's.
func (s *Store) providerContract(ctx context.Context, tx *sql.Tx, provider, id string) (*Contract, error) {
	c, err := s.getContract(ctx, tx, id, true)
	if err != nil {
		return nil, err
	}
	if c.ProviderPubkey != provider {
		return nil, notFoundf("contract %s not found for provider %s", id, clip(provider))
	}
	return c, nil
}

// ContractFilter selects contracts for ListContracts.
type ContractFilter struct {
	Provider string
	Status   string
	Limit    int // default 100
}

// ListContracts returns contracts, newest first.
func (s *Store) ListContracts(ctx context.Context, f ContractFilter) ([]*Contract, error) {
	where, args := []string{"1 = 1"}, []any{}
	if f.Provider != "" {
		where, args = append(where, "provider_pubkey = ?"), append(args, f.Provider)
	}
	if f.Status != "" {
		where, args = append(where, "status = ?"), append(args, f.Status)
	}
	if f.Limit <= 0 {
		f.Limit = 100
	}
	args = append(args, f.Limit)
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+contractCols+` FROM contracts WHERE `+strings.Join(where, " AND ")+
		` ORDER BY created_at_ns DESC, contract_id LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("list contracts: %w", err)
	}
	return collect(rows, scanContract)
}

// PendingContracts returns the contracts provider's agent may provision now,
// oldest first: accepted ones, failed ones whose retry cool-down has passed,
// and ones stuck in provisioning whose lock expired; never one locked by
// another agent. nextNs is the earliest future time at which the answer may
// change by the clock alone (a cool-down or lock expiring), 0 if none; a
// long-poll sleeps at most until then.
func (s *Store) PendingContracts(ctx context.Context, provider, agent string, nowNs int64) (out []dcapi.PendingContract, nextNs int64, err error) {
	return s.PendingContractsForPool(ctx, provider, agent, nil, nowNs)
}

// PendingContractsForPool is PendingContracts for an agent of pool (nil:
// an agent in no pool, which is offered every contract): only contracts the
// pool serves (poolServes) are offered.
func (s *Store) PendingContractsForPool(ctx context.Context, provider, agent string, pool *Pool, nowNs int64) (out []dcapi.PendingContract, nextNs int64, err error) {
	where, args := `provider_pubkey = ? AND offer_after_ns IS NOT NULL AND offer_after_ns <= ?`, []any{provider, nowNs}
	if pool != nil {
		where, args = where+` AND (agent_pool_id = ? OR agent_pool_id IS NULL)`, append(args, pool.PoolID)
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+contractCols+` FROM contracts WHERE `+where+`
		ORDER BY created_at_ns, contract_id LIMIT 200`), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("pending contracts: %w", err)
	}
	defer rows.Close()
	out = []dcapi.PendingContract{}
	for rows.Next() {
		c, err := scanContract(rows)
		if err != nil {
			return nil, 0, err
		}
		if pool != nil && !poolServes(pool, c.AgentPoolID, c.DatacenterCountry) {
			continue
		}
		if c.LockAgent != nil && *c.LockAgent != agent && c.LockExpiresAtNs != nil && *c.LockExpiresAtNs > nowNs {
			if nextNs == 0 || *c.LockExpiresAtNs < nextNs {
				nextNs = *c.LockExpiresAtNs
			}
			continue
		}
		if len(out) < 100 {
			out = append(out, c.PendingContract)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	var next sql.NullInt64
	if err := s.r.QueryRowContext(ctx, s.q(`SELECT MIN(offer_after_ns) FROM contracts
		WHERE provider_pubkey = ? AND offer_after_ns IS NOT NULL AND offer_after_ns > ?`), provider, nowNs).Scan(&next); err != nil {
		return nil, 0, fmt.Errorf("pending contracts: %w", err)
	}
	if next.Valid && (nextNs == 0 || next.Int64 < nextNs) {
		nextNs = next.Int64
	}
	return out, nextNs, nil
}

// offered reports whether pending-provision offers c at nowNs.
func offered(c *Contract, nowNs int64) bool {
	return c.OfferAfterNs != nil && *c.OfferAfterNs <= nowNs
}

func lockedByOther(c *Contract, agent string, nowNs int64) bool {
	return c.LockAgent != nil && *c.LockAgent != agent && c.LockExpiresAtNs != nil && *c.LockExpiresAtNs > nowNs
}

// LockContract acquires or renews agent's provisioning lock on a contract.
// A lock held by another agent that has not expired is reported as
// acquired=false with its expiry.
func (s *Store) LockContract(ctx context.Context, provider, id, agent string, nowNs int64) (dcapi.LockResult, error) {
	var res dcapi.LockResult
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.providerContract(ctx, tx, provider, id)
		if err != nil {
			return err
		}
		switch c.Status {
		case dcapi.StatusAccepted, dcapi.StatusProvisioning:
		case dcapi.StatusProvisioningFailed:
			if !offered(c, nowNs) {
				return conflictf("contract %s failed provisioning (%s); %s", id, strOr(c.LastError, "no details"), retryNote(c, s.policy.MaxAttempts))
			}
		default:
			return conflictf("contract %s is %s; only accepted contracts (or ones being provisioned) can be locked", id, c.Status)
		}
		if lockedByOther(c, agent, nowNs) {
			res = dcapi.LockResult{Acquired: false, ExpiresAtNs: *c.LockExpiresAtNs}
			return nil
		}
		exp := nowNs + int64(s.policy.LockTTL)
		offer := c.OfferAfterNs
		if c.Status == dcapi.StatusProvisioning {
			// A contract in provisioning is offered again only once its
			// holder stops renewing the lock (crashed agent).
			offer = &exp
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET lock_agent = ?, lock_expires_at_ns = ?, offer_after_ns = ? WHERE contract_id = ?`),
			agent, exp, nullInt64(offer), id); err != nil {
			return err
		}
		res = dcapi.LockResult{Acquired: true, ExpiresAtNs: exp}
		return nil
	})
	return res, wrapErr(err, "lock contract %s", id)
}

// UnlockContract releases agent's lock. Releasing a lock the agent does not
// hold is a no-op; releasing another agent's live lock is refused. A
// contract the agent leaves in provisioning by releasing its lock is handed
// off, not abandoned (the manual provisioner tells a person and lets go):
// it is not offered again, and the agent may still report on it. Only a
// lock that expires — its agent died — puts a provisioning contract back
// on offer.
func (s *Store) UnlockContract(ctx context.Context, provider, id, agent string, nowNs int64) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.providerContract(ctx, tx, provider, id)
		if err != nil {
			return err
		}
		if lockedByOther(c, agent, nowNs) {
			return conflictf("contract %s is locked by agent %s until %s; only that agent can release it", id, clip(*c.LockAgent), fmtNs(*c.LockExpiresAtNs))
		}
		if c.LockAgent == nil || *c.LockAgent != agent {
			return nil
		}
		offer := c.OfferAfterNs
		if c.Status == dcapi.StatusProvisioning {
			offer = nil
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = ? WHERE contract_id = ?`),
			nullInt64(offer), id)
		return err
	})
	return wrapErr(err, "unlock contract %s", id)
}

// UpdateResult says what UpdateProvisioning did.
type UpdateResult struct {
	Status    string
	Unchanged bool // an idempotent repeat: nothing was written
}

// UpdateProvisioning applies an agent's PUT .../provisioning (PROTOCOL.md §6)
// to a contract of provider, enforcing the state machine:
//
//   - provisioning: from accepted, or from provisioning_failed once offered
//     again; repeated by the same agent it is idempotent (and renews the
//     lock); another agent may take over only after the lock expired.
//   - provisioned: from provisioning, by the agent doing it; details must be
//     a JSON object with external_id and a sealed root_password if any.
//     Repeating it with the same external_id is idempotent.
//   - provisioning_failed: from provisioning; details {"error","retry_possible"}.
//     With retry_possible the contract is offered again after the cool-down,
//     up to MaxAttempts attempts in all.
func (s *Store) UpdateProvisioning(ctx context.Context, provider, id, agent string, u dcapi.ProvisioningUpdate, nowNs int64) (UpdateResult, error) {
	var res UpdateResult
	var parsed *instanceInfo
	var failure *dcapi.FailureDetails
	switch u.Status {
	case dcapi.StatusProvisioning:
	case dcapi.StatusProvisioned:
		info, err := parseInstanceDetails(u.InstanceDetails, id)
		if err != nil {
			return res, err
		}
		parsed = info
	case dcapi.StatusProvisioningFailed:
		f, err := parseFailureDetails(u.InstanceDetails)
		if err != nil {
			return res, err
		}
		failure = f
	default:
		return res, invalidf("status must be %q, %q or %q, not %q", dcapi.StatusProvisioning, dcapi.StatusProvisioned, dcapi.StatusProvisioningFailed, clip(u.Status))
	}
	res.Status = u.Status
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.providerContract(ctx, tx, provider, id)
		if err != nil {
			return err
		}
		switch u.Status {
		case dcapi.StatusProvisioning:
			return s.startProvisioning(ctx, tx, c, agent, nowNs, &res)
		case dcapi.StatusProvisioned:
			return s.finishProvisioning(ctx, tx, c, agent, u.InstanceDetails, parsed, nowNs, &res)
		default:
			return s.failProvisioning(ctx, tx, c, agent, u.InstanceDetails, failure, nowNs, &res)
		}
	})
	return res, wrapErr(err, "update contract %s", id)
}

func (s *Store) startProvisioning(ctx context.Context, tx *sql.Tx, c *Contract, agent string, nowNs int64, res *UpdateResult) error {
	switch {
	case c.Status == dcapi.StatusAccepted:
	case c.Status == dcapi.StatusProvisioningFailed && offered(c, nowNs):
	case c.Status == dcapi.StatusProvisioning:
	case c.Status == dcapi.StatusProvisioningFailed:
		return conflictf("contract %s failed provisioning: %s; %s", c.ContractID, strOr(c.LastError, "no details"), retryNote(c, s.policy.MaxAttempts))
	default:
		return illegal(c, dcapi.StatusProvisioning)
	}
	if lockedByOther(c, agent, nowNs) {
		return conflictf("contract %s is locked by agent %s until %s", c.ContractID, clip(*c.LockAgent), fmtNs(*c.LockExpiresAtNs))
	}
	exp := nowNs + int64(s.policy.LockTTL)
	if c.Status == dcapi.StatusProvisioning && c.ProvisioningAgent != nil && *c.ProvisioningAgent == agent {
		// Idempotent repeat: only the lock is renewed.
		_, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET lock_agent = ?, lock_expires_at_ns = ?, offer_after_ns = ? WHERE contract_id = ?`),
			agent, exp, exp, c.ContractID)
		res.Unchanged = true
		return err
	}
	_, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, provisioning_agent = ?,
		instance_details = NULL, lock_agent = ?, lock_expires_at_ns = ?, offer_after_ns = ? WHERE contract_id = ?`),
		dcapi.StatusProvisioning, nowNs, agent, agent, exp, exp, c.ContractID)
	return err
}

// mayReport reports whether agent is the one provisioning c: it PUT
// provisioning, or holds the lock.
func mayReport(c *Contract, agent string, nowNs int64) bool {
	if c.ProvisioningAgent != nil && *c.ProvisioningAgent == agent {
		return !lockedByOther(c, agent, nowNs)
	}
	return c.LockAgent != nil && *c.LockAgent == agent && !lockedByOther(c, agent, nowNs)
}

func (s *Store) finishProvisioning(ctx context.Context, tx *sql.Tx, c *Contract, agent, details string, info *instanceInfo, nowNs int64, res *UpdateResult) error {
	switch c.Status {
	case dcapi.StatusProvisioning:
	case dcapi.StatusProvisioned, dcapi.StatusActive:
		if c.ExternalInstanceID != nil && *c.ExternalInstanceID == info.ExternalID {
			res.Unchanged = true
			return nil
		}
		return conflictf("contract %s is already %s with instance %q; terminate the duplicate instance %q", c.ContractID, c.Status, strOr(c.ExternalInstanceID, ""), clip(info.ExternalID))
	case dcapi.StatusCancelled:
		return conflictf("contract %s was cancelled while it was being provisioned; terminate instance %q", c.ContractID, clip(info.ExternalID))
	default:
		return illegal(c, dcapi.StatusProvisioned)
	}
	if !mayReport(c, agent, nowNs) {
		return conflictf("contract %s is being provisioned by agent %s; PUT status provisioning first", c.ContractID, clip(strOr(c.ProvisioningAgent, "(none)")))
	}
	_, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, provisioning_agent = ?,
		instance_details = ?, external_instance_id = ?, provisioned_at_ns = ?, last_error = NULL,
		lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = NULL WHERE contract_id = ?`),
		dcapi.StatusProvisioned, nowNs, agent, details, info.ExternalID, nowNs, c.ContractID)
	return err
}

func (s *Store) failProvisioning(ctx context.Context, tx *sql.Tx, c *Contract, agent, details string, f *dcapi.FailureDetails, nowNs int64, res *UpdateResult) error {
	switch c.Status {
	case dcapi.StatusProvisioning:
	case dcapi.StatusProvisioningFailed:
		if c.ProvisioningAgent != nil && *c.ProvisioningAgent == agent {
			res.Unchanged = true
			return nil
		}
		return illegal(c, dcapi.StatusProvisioningFailed)
	default:
		return illegal(c, dcapi.StatusProvisioningFailed)
	}
	if !mayReport(c, agent, nowNs) {
		return conflictf("contract %s is being provisioned by agent %s; PUT status provisioning first", c.ContractID, clip(strOr(c.ProvisioningAgent, "(none)")))
	}
	failures := c.FailureCount + 1
	var offer *int64
	if f.RetryPossible && failures < s.policy.MaxAttempts {
		t := nowNs + int64(s.policy.RetryCooldown)
		offer = &t
	}
	_, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, provisioning_agent = ?,
		instance_details = ?, failure_count = ?, last_error = ?,
		lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = ? WHERE contract_id = ?`),
		dcapi.StatusProvisioningFailed, nowNs, agent, details, failures, f.Error, nullInt64(offer), c.ContractID)
	if err == nil && offer != nil {
		err = s.signalOffer(ctx, tx, c.ProviderPubkey, nowNs)
	}
	return err
}

func illegal(c *Contract, to string) error {
	return conflictf("illegal status transition for contract %s: %s → %s", c.ContractID, c.Status, to)
}

func retryNote(c *Contract, max int) string {
	switch {
	case c.OfferAfterNs != nil:
		return fmt.Sprintf("attempt %d of %d failed; it is offered again at %s", c.FailureCount, max, fmtNs(*c.OfferAfterNs))
	case c.FailureCount >= max:
		return fmt.Sprintf("all %d attempts failed; it is not offered again", max)
	default:
		return "the agent reported the failure as permanent; it is not offered again"
	}
}

// CancelContract cancels a live contract. Its instance, if any, is then
// reported by contracts/active (status cancelled) and by reconcile
// (terminate) until the agent PUTs terminated.
func (s *Store) CancelContract(ctx context.Context, id string, nowNs int64) (*Contract, error) {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if err != nil {
			return err
		}
		switch c.Status {
		case dcapi.StatusCancelled:
			return nil
		case dcapi.StatusCompleted, dcapi.StatusExpired:
			return conflictf("contract %s already %s; nothing to cancel", id, c.Status)
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?, cancelled_at_ns = ?,
			lock_agent = NULL, lock_expires_at_ns = NULL, offer_after_ns = NULL, paused_at_ns = NULL, pause_reason = NULL WHERE contract_id = ?`),
			dcapi.StatusCancelled, nowNs, nowNs, id)
		return err
	})
	return s.afterStateChange(ctx, id, "cancel", err)
}

// completeEnded moves provider's provisioned/active/paused contracts whose
// end time has passed to completed. Run before answering what should be
// running.
func (s *Store) completeEnded(ctx context.Context, provider string, nowNs int64) error {
	_, err := s.w.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, status_updated_at_ns = ?
		WHERE provider_pubkey = ? AND status IN (?, ?, ?) AND ends_at_ns IS NOT NULL AND ends_at_ns <= ?`),
		dcapi.StatusCompleted, nowNs, provider, dcapi.StatusProvisioned, dcapi.StatusActive, dcapi.StatusPaused, nowNs)
	if err != nil {
		return fmt.Errorf("complete ended contracts: %w", err)
	}
	return nil
}

// ActiveContracts lists provider's contracts that have (or had) an instance
// the agent must look after: provisioned, active and paused ones, plus
// cancelled, completed or expired ones whose instance the agent has not yet
// reported terminated.
func (s *Store) ActiveContracts(ctx context.Context, provider string, nowNs int64) ([]dcapi.ActiveContract, error) {
	if err := s.completeEnded(ctx, provider, nowNs); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+contractCols+` FROM contracts
		WHERE provider_pubkey = ? AND (status IN (?, ?, ?)
			OR (status IN (?, ?, ?) AND external_instance_id IS NOT NULL AND terminated_at_ns IS NULL))
		ORDER BY created_at_ns, contract_id`),
		provider, dcapi.StatusProvisioned, dcapi.StatusActive, dcapi.StatusPaused,
		dcapi.StatusCancelled, dcapi.StatusCompleted, dcapi.StatusExpired)
	if err != nil {
		return nil, fmt.Errorf("active contracts: %w", err)
	}
	return collect(rows, func(sc rowScanner) (dcapi.ActiveContract, error) {
		c, err := scanContract(sc)
		if err != nil {
			return dcapi.ActiveContract{}, err
		}
		return dcapi.ActiveContract{PendingContract: c.PendingContract, Status: c.Status, EndsAtNs: c.EndsAtNs, ExternalInstanceID: c.ExternalInstanceID}, nil
	})
}

// MaxReconcileInstances bounds a reconcile request.
const MaxReconcileInstances = 10000

// Reconcile tells the agent what to do with each instance it runs:
//
//   - keep: the contract is provisioned/active and the instance is the one
//     recorded for it (or none was recorded yet), or the contract is still
//     being provisioned (accepted/provisioning: the agent's own report may
//     be in flight);
//   - pause (with the pause reason): the contract is paused (a payment
//     dispute): stop the instance, do not destroy it;
//   - terminate (with a reason): the contract was cancelled, has ended or
//     expired, failed provisioning, or is served by a different instance
//     (duplicate);
//   - unknown: no contract id, or no such contract for this provider. The
//     server never asks to delete what it does not know; that is the
//     provider's call.
func (s *Store) Reconcile(ctx context.Context, provider string, running []dcapi.ReconcileInstance, nowNs int64) (dcapi.ReconcileResponse, error) {
	resp := newReconcileResponse()
	if len(running) > MaxReconcileInstances {
		return resp, invalidf("runningInstances has %d entries; at most %d", len(running), MaxReconcileInstances)
	}
	for i, in := range running {
		if in.ExternalID == "" || len(in.ExternalID) > 256 {
			return resp, invalidf("runningInstances[%d].externalId must be 1..256 characters", i)
		}
		if in.ContractID != "" && !isLowerHex64(in.ContractID) {
			return resp, invalidf("runningInstances[%d].contractId must be empty or 64 lowercase hex characters, got %q", i, clip(in.ContractID))
		}
	}
	if err := s.completeEnded(ctx, provider, nowNs); err != nil {
		return resp, err
	}
	for _, in := range running {
		if in.ContractID == "" {
			resp.Unknown = append(resp.Unknown, dcapi.ReconcileUnknown{ExternalID: in.ExternalID, Message: "instance names no contract; not managed by Decent Cloud"})
			continue
		}
		c, err := s.getContract(ctx, s.r, in.ContractID, false)
		if err != nil && !IsNotFound(err) {
			return resp, err
		}
		if err != nil || c.ProviderPubkey != provider {
			resp.Unknown = append(resp.Unknown, dcapi.ReconcileUnknown{ExternalID: in.ExternalID, Message: "no contract " + in.ContractID + " for this provider"})
			continue
		}
		term := func(reason string) {
			resp.Terminate = append(resp.Terminate, dcapi.ReconcileTerminate{ExternalID: in.ExternalID, ContractID: in.ContractID, Reason: reason})
		}
		keep := dcapi.ReconcileInstance{ExternalID: in.ExternalID, ContractID: in.ContractID, EndsAt: derefOr(c.EndsAtNs, 0)}
		switch c.Status {
		case dcapi.StatusProvisioned, dcapi.StatusActive:
			if c.ExternalInstanceID != nil && *c.ExternalInstanceID != in.ExternalID {
				term("duplicate instance: contract is served by instance " + *c.ExternalInstanceID)
			} else {
				resp.Keep = append(resp.Keep, keep)
			}
		case dcapi.StatusAccepted, dcapi.StatusProvisioning:
			resp.Keep = append(resp.Keep, keep)
		case dcapi.StatusPaused:
			resp.Pause = append(resp.Pause, dcapi.ReconcilePause{ExternalID: in.ExternalID, ContractID: in.ContractID, Reason: strOr(c.PauseReason, "paused")})
		case dcapi.StatusExpired:
			term("contract expired at " + fmtNs(derefOr(c.EndsAtNs, c.StatusUpdatedAtNs)))
		case dcapi.StatusCancelled:
			term("contract cancelled at " + fmtNs(derefOr(c.CancelledAtNs, c.StatusUpdatedAtNs)))
		case dcapi.StatusCompleted:
			term("contract ended at " + fmtNs(derefOr(c.EndsAtNs, c.StatusUpdatedAtNs)))
		case dcapi.StatusProvisioningFailed:
			term("provisioning failed: " + strOr(c.LastError, "no details"))
		default:
			term("contract is " + c.Status + ", not accepted")
		}
	}
	return resp, nil
}

func newReconcileResponse() dcapi.ReconcileResponse {
	return dcapi.ReconcileResponse{Keep: []dcapi.ReconcileInstance{}, Terminate: []dcapi.ReconcileTerminate{},
		Unknown: []dcapi.ReconcileUnknown{}, Pause: []dcapi.ReconcilePause{}}
}

// MarkTerminated records that the instance of a cancelled or ended contract
// is gone. A provisioned/active contract past its end is completed by it.
// Repeating it is harmless.
func (s *Store) MarkTerminated(ctx context.Context, provider, id string, nowNs int64) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.providerContract(ctx, tx, provider, id)
		if err != nil {
			return err
		}
		status := c.Status
		switch {
		case c.Status == dcapi.StatusCancelled || c.Status == dcapi.StatusCompleted || c.Status == dcapi.StatusExpired:
			if c.TerminatedAtNs != nil {
				return nil
			}
		case c.hasLiveInstance() && c.EndsAtNs != nil && *c.EndsAtNs <= nowNs:
			status = dcapi.StatusCompleted
		default:
			return conflictf("contract %s is %s; only cancelled or ended contracts can be terminated", id, c.Status)
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE contracts SET status = ?, terminated_at_ns = ?, status_updated_at_ns = ? WHERE contract_id = ?`),
			status, nowNs, nowNs, id)
		return err
	})
	return wrapErr(err, "terminate contract %s", id)
}

func strOr(p *string, def string) string {
	if p == nil {
		return def
	}
	return *p
}

func derefOr(p *int64, def int64) int64 {
	if p == nil {
		return def
	}
	return *p
}

func timeFromNs(ns int64) time.Time { return time.Unix(0, ns) }

// fmtNs renders a nanosecond time for messages.
func fmtNs(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339) }
