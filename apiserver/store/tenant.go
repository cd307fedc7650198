package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Tenant request kinds (tenant_requests.kind).
const (
	RequestPasswordReset = "password_reset"
	RequestKeyRotation   = "ssh_key_rotation"
)

// maxRequestError bounds an agent's failure report.
const maxRequestError = 500

// TenantRequest is a contract's latest request of one kind, with the
// contract fields the pending lists answer.
type TenantRequest struct {
	ContractID    string  `json:"contract_id"`
	Kind          string  `json:"kind"`
	RequestedAtNs int64   `json:"requested_at_ns"`
	SSHPubkey     *string `json:"ssh_pubkey,omitempty"`
	DoneAtNs      *int64  `json:"done_at_ns,omitempty"`
	Error         *string `json:"error,omitempty"`

	ProviderPubkey     string `json:"-"`
	Status             string `json:"-"`
	OfferingID         string `json:"-"`
	RequesterPubkey    string `json:"-"`
	RequesterSSHPubkey string `json:"-"`
	CreatedAtNs        int64  `json:"-"`
	StatusUpdatedAtNs  int64  `json:"-"`
	EndsAtNs           *int64 `json:"-"`
}

// liveSSHKeyRe is the live API's check of a new key
// (is_valid_ssh_pubkey_format, api/src/validation.rs).
var liveSSHKeyRe = regexp.MustCompile(`^ssh-(rsa|ed25519|ecdsa|dss)\s+[A-Za-z0-9+/]+={0,3}(\s+.*)?$`)

// RequestPasswordReset queues a password reset for contract id, as the
// tenant asks for it (request_password_reset, api/src/openapi/contracts.rs
// and provisioning.rs): only for a provisioned or active contract. Asking
// again replaces an earlier request.
func (s *Store) RequestPasswordReset(ctx context.Context, id string, nowNs int64) (*TenantRequest, error) {
	return s.request(ctx, id, RequestPasswordReset, nil, nowNs)
}

// RequestKeyRotation queues the addition of key to contract id's
// instance (rotate_ssh_key, contracts.rs): the key is trimmed and must
// look like an OpenSSH public key, as live checks it; the agent checks it
// properly before it uses it.
func (s *Store) RequestKeyRotation(ctx context.Context, id, key string, nowNs int64) (*TenantRequest, error) {
	key = strings.TrimSpace(key)
	if key == "" {
		return nil, invalidf("new_ssh_pubkey cannot be empty")
	}
	if len(key) > maxFieldBytes || !liveSSHKeyRe.MatchString(key) {
		return nil, invalidf("Invalid SSH public key format. Expected: ssh-(rsa|ed25519|ecdsa|dss) <base64> [comment]")
	}
	return s.request(ctx, id, RequestKeyRotation, &key, nowNs)
}

func (s *Store) request(ctx context.Context, id, kind string, key *string, nowNs int64) (*TenantRequest, error) {
	what := map[string]string{RequestPasswordReset: "Password reset", RequestKeyRotation: "SSH key rotation"}[kind]
	var provider string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.getContract(ctx, tx, id, true)
		if err != nil {
			return err
		}
		if !c.hasLiveInstance() {
			return conflictf("%s can only be requested for provisioned or active contracts (contract %s is %s)", what, id, c.Status)
		}
		provider = c.ProviderPubkey
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM tenant_requests WHERE contract_id = ? AND kind = ?`), id, kind); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO tenant_requests (contract_id, kind, requested_at_ns, ssh_pubkey) VALUES (?, ?, ?, ?)`),
			id, kind, nowNs, nullStr(key)); err != nil {
			return err
		}
		// Wakes the provider's event streams and long-polls, here and in a
		// server sharing the database.
		return s.signal(ctx, tx, kindContracts, provider, nowNs)
	})
	if err != nil {
		return nil, wrapErr(err, "request %s for contract %s", kind, id)
	}
	return &TenantRequest{ContractID: id, Kind: kind, RequestedAtNs: nowNs, SSHPubkey: key, ProviderPubkey: provider}, nil
}

const tenantCols = `r.contract_id, r.kind, r.requested_at_ns, r.ssh_pubkey, r.done_at_ns, r.error,
	c.provider_pubkey, c.status, c.offering_id, c.requester_pubkey, c.requester_ssh_pubkey, c.created_at_ns, c.status_updated_at_ns, c.ends_at_ns`

func scanTenantRequest(sc rowScanner) (TenantRequest, error) {
	var r TenantRequest
	var key, errMsg, reqPub sql.NullString
	var done, ends sql.NullInt64
	err := sc.Scan(&r.ContractID, &r.Kind, &r.RequestedAtNs, &key, &done, &errMsg,
		&r.ProviderPubkey, &r.Status, &r.OfferingID, &reqPub, &r.RequesterSSHPubkey, &r.CreatedAtNs, &r.StatusUpdatedAtNs, &ends)
	r.SSHPubkey, r.DoneAtNs, r.Error, r.EndsAtNs = strPtr(key), int64Ptr(done), strPtr(errMsg), int64Ptr(ends)
	r.RequesterPubkey = reqPub.String
	return r, err
}

func (s *Store) tenantRequests(ctx context.Context, where string, args ...any) ([]TenantRequest, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT `+tenantCols+` FROM tenant_requests r JOIN contracts c ON c.contract_id = r.contract_id WHERE `+where+
		` ORDER BY r.requested_at_ns, r.contract_id`), args...)
	if err != nil {
		return nil, fmt.Errorf("read tenant requests: %w", err)
	}
	return collect(rows, scanTenantRequest)
}

// PendingTenantRequests lists provider's pending requests of kind, oldest
// first: those of provisioned and active contracts, as live lists them
// (get_pending_password_resets, get_pending_ssh_key_rotations).
func (s *Store) PendingTenantRequests(ctx context.Context, provider, kind string) ([]TenantRequest, error) {
	return s.tenantRequests(ctx, `c.provider_pubkey = ? AND r.kind = ? AND r.done_at_ns IS NULL AND c.status IN (?, ?)`,
		provider, kind, dcapi.StatusProvisioned, dcapi.StatusActive)
}

// TenantRequests returns contract id's latest requests (each kind at most once).
func (s *Store) TenantRequests(ctx context.Context, id string) ([]TenantRequest, error) {
	return s.tenantRequests(ctx, `r.contract_id = ?`, id)
}

// ProviderTenantRequests returns every latest request of provider's contracts.
func (s *Store) ProviderTenantRequests(ctx context.Context, provider string) ([]TenantRequest, error) {
	return s.tenantRequests(ctx, `c.provider_pubkey = ?`, provider)
}

// agentContract reads contract id for a report of provider's agent, in
// live's words (update_contract_password, complete_ssh_key_rotation).
func (s *Store) agentContract(ctx context.Context, tx *sql.Tx, provider, id string) (*Contract, error) {
	c, err := s.getContract(ctx, tx, id, true)
	if KindOf(err) == KindNotFound || KindOf(err) == KindInvalid {
		return nil, notFoundf("Contract not found")
	}
	if err != nil {
		return nil, err
	}
	if c.ProviderPubkey != provider {
		return nil, forbiddenf("Unauthorized: you are not the provider for this contract")
	}
	return c, nil
}

// SetPassword stores a reset's new password for contract id of provider
// (update_contract_password, api/src/openapi/providers.rs) as the
// root_password of its instance details, and ends a pending reset. A sealed
// credential for this contract (PROTOCOL.md §7) is stored as given; any
// other value is a plaintext password, which only a server speaking the
// live API accepts (plainOK): it is sealed here to the requester's key,
// as live's update_encrypted_credentials does
// (api/src/database/contracts/provisioning.rs). Like live, it needs no
// pending request.
func (s *Store) SetPassword(ctx context.Context, provider, id, newPassword string, plainOK bool, nowNs int64) error {
	if len(newPassword) > maxFieldBytes {
		return invalidf("newPassword is longer than %d bytes", maxFieldBytes)
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		c, err := s.agentContract(ctx, tx, provider, id)
		if err != nil {
			return err
		}
		sealed := newPassword
		if err := checkSealed(newPassword, id); err != nil {
			if !plainOK {
				if strings.Contains(err.Error(), "another contract") {
					return invalidf("newPassword is sealed for another contract (aad is not this contract id)")
				}
				return invalidf("newPassword must be a sealed credential for this contract (PROTOCOL.md §7: a JSON object {version:2,ephemeral_pubkey,nonce,ciphertext,aad}, sealed to the requester's key the reset request names in seal_to), never a plaintext password")
			}
			pub, err := hex.DecodeString(c.RequesterPubkey)
			if err != nil || len(pub) != 32 {
				return notFoundf("Contract not found or has no requester pubkey")
			}
			sc, err := identity.Seal([]byte(newPassword), pub, id)
			if err != nil {
				return fmt.Errorf("seal the new password of contract %s: %w", id, err)
			}
			sealed = sc
		}
		if c.InstanceDetails == nil {
			return notFoundf("No provisioning details found for contract %s", id)
		}
		var obj map[string]json.RawMessage
		if json.Unmarshal([]byte(*c.InstanceDetails), &obj) != nil || obj == nil {
			obj = map[string]json.RawMessage{}
		}
		obj["root_password"], _ = json.Marshal(sealed)
		details, err := json.Marshal(obj)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET instance_details = ? WHERE contract_id = ?`), string(details), id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE tenant_requests SET done_at_ns = ?, error = NULL WHERE contract_id = ? AND kind = ? AND done_at_ns IS NULL`),
			nowNs, id, RequestPasswordReset)
		return err
	})
	return wrapErr(err, "store the new password of contract %s", id)
}

// CompleteKeyRotation makes a pending rotation's key the contract's
// requester SSH key and ends the request (complete_ssh_key_rotation,
// providers.rs and provisioning.rs); it returns that key.
func (s *Store) CompleteKeyRotation(ctx context.Context, provider, id string, nowNs int64) (string, error) {
	var key string
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.agentContract(ctx, tx, provider, id); err != nil {
			return err
		}
		var k sql.NullString
		err := tx.QueryRowContext(ctx, s.q(`SELECT ssh_pubkey FROM tenant_requests WHERE contract_id = ? AND kind = ? AND done_at_ns IS NULL`),
			id, RequestKeyRotation).Scan(&k)
		if errors.Is(err, sql.ErrNoRows) || err == nil && strings.TrimSpace(k.String) == "" {
			return conflictf("No pending SSH key rotation found")
		}
		if err != nil {
			return err
		}
		key = k.String
		if _, err := tx.ExecContext(ctx, s.q(`UPDATE contracts SET requester_ssh_pubkey = ? WHERE contract_id = ?`), key, id); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE tenant_requests SET done_at_ns = ?, error = NULL WHERE contract_id = ? AND kind = ?`),
			nowNs, id, RequestKeyRotation)
		return err
	})
	return key, wrapErr(err, "complete the key rotation of contract %s", id)
}

// FailTenantRequest ends provider's pending request of kind for contract
// id with the agent's failure message, which the tenant reads (PROTOCOL.md;
// the live API has no failure report).
func (s *Store) FailTenantRequest(ctx context.Context, provider, id, kind, msg string, nowNs int64) error {
	msg = strings.TrimSpace(msg)
	if msg == "" {
		return invalidf("error must say why the request failed")
	}
	if err := validText("error", msg, maxRequestError); err != nil {
		return err
	}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if _, err := s.agentContract(ctx, tx, provider, id); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`UPDATE tenant_requests SET done_at_ns = ?, error = ? WHERE contract_id = ? AND kind = ? AND done_at_ns IS NULL`),
			nowNs, msg, id, kind)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return conflictf("No pending %s found for contract %s", strings.ReplaceAll(kind, "_", " "), id)
		}
		return nil
	})
	return wrapErr(err, "record the failed request of contract %s", id)
}
