package store

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// Pools and setup tokens, as the live API has them
// (api/src/database/agent_pools.rs, api/src/openapi/pools.rs,
// api/src/openapi/agents.rs setup_agent).

// Pool is an agent pool: a provider's agents of one location and
// provisioner type.
type Pool struct {
	PoolID          string `json:"poolId"`
	ProviderPubkey  string `json:"providerPubkey"`
	Name            string `json:"name"`
	Location        string `json:"location"`
	ProvisionerType string `json:"provisionerType"`
	CreatedAtNs     int64  `json:"createdAtNs"`
}

// PoolStats is a pool with its agents and contracts counted.
type PoolStats struct {
	Pool
	AgentCount      int64 `json:"agentCount"`
	OnlineCount     int64 `json:"onlineCount"`
	ActiveContracts int64 `json:"activeContracts"`
	OfferingsCount  int64 `json:"offeringsCount"`
}

// SetupPermissions are what an agent registered by setup token is granted
// (AgentPermission::all() of api/src/database/agent_delegations.rs, in its
// order): every permission, dns_manage included.
var SetupPermissions = []string{"provision", "health_check", "heartbeat", "fetch_contracts", "dns_manage"}

// DefaultSetupTokenTTL is a setup token's lifetime unless given (live: 24 h).
const DefaultSetupTokenTTL = 24 * time.Hour

// ZeroSignature is the signature stored with a delegation made by a setup
// token (the token, not a signature, proves the provider's consent): 64
// zero bytes, as live's placeholder_signature.
var ZeroSignature = strings.Repeat("00", 64)

// Limits of pool fields (live has none; these keep a row sane).
const (
	maxPoolName  = 100
	maxPoolPType = 64
	maxLabel     = 200
)

const poolCols = `pool_id, provider_pubkey, name, location, provisioner_type, created_at_ns`

func scanPool(sc rowScanner) (*Pool, error) {
	var p Pool
	if err := sc.Scan(&p.PoolID, &p.ProviderPubkey, &p.Name, &p.Location, &p.ProvisionerType, &p.CreatedAtNs); err != nil {
		return nil, err
	}
	return &p, nil
}

// errPoolNotFound is live's answer for a pool that does not exist or is
// another provider's.
func errPoolNotFound() error { return notFoundf("Pool not found") }

// CreatePool makes a pool for provider. Its id is the name's letters,
// digits and dashes, lowercased, and eight random hex digits (as live). The
// location must be a region (Regions). Like live, a provider that is not
// registered yet is registered by it.
func (s *Store) CreatePool(ctx context.Context, provider, name, location, ptype string, nowNs int64) (*Pool, error) {
	if !isLowerHex64(provider) {
		return nil, invalidf("provider public key must be 64 lowercase hex characters, got %q", clip(provider))
	}
	if !ValidRegion(location) {
		return nil, invalidf("Invalid location '%s': must be one of: %s", clip(location), strings.Join(Regions, ", "))
	}
	if err := validText("pool name", name, maxPoolName); err != nil {
		return nil, err
	}
	if strings.TrimSpace(name) == "" {
		return nil, invalidf("pool name is required")
	}
	if err := validText("provisioner type", ptype, maxPoolPType); err != nil {
		return nil, err
	}
	var id strings.Builder
	for _, r := range name {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' {
			id.WriteString(strings.ToLower(string(r)))
		}
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id.WriteString("-" + hex.EncodeToString(rnd[:]))
	p := &Pool{PoolID: id.String(), ProviderPubkey: provider, Name: name, Location: location, ProvisionerType: ptype, CreatedAtNs: nowNs}
	err := s.tx(ctx, func(tx *sql.Tx) error {
		if err := s.providerExists(ctx, tx, provider); IsNotFound(err) {
			if _, err := tx.ExecContext(ctx, s.q(`INSERT INTO providers (pubkey, name, created_at_ns) VALUES (?, '', ?)`), provider, nowNs); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, s.q(`INSERT INTO agent_pools (`+poolCols+`) VALUES (?, ?, ?, ?, ?, ?)`),
			p.PoolID, p.ProviderPubkey, p.Name, p.Location, p.ProvisionerType, p.CreatedAtNs)
		return err
	})
	if err != nil {
		return nil, wrapErr(err, "create pool")
	}
	return p, nil
}

// GetPool returns a pool, or a KindNotFound error.
func (s *Store) GetPool(ctx context.Context, id string) (*Pool, error) {
	p, err := scanPool(s.r.QueryRowContext(ctx, s.q(`SELECT `+poolCols+` FROM agent_pools WHERE pool_id = ?`), id))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, errPoolNotFound()
	}
	if err != nil {
		return nil, fmt.Errorf("read pool: %w", err)
	}
	return p, nil
}

// ProviderPool returns the pool id of provider, or "Pool not found" when there
// is no such pool or it is another provider's.
func (s *Store) ProviderPool(ctx context.Context, provider, id string) (*Pool, error) {
	p, err := s.GetPool(ctx, id)
	if err != nil {
		return nil, err
	}
	if p.ProviderPubkey != provider {
		return nil, errPoolNotFound()
	}
	return p, nil
}

// ListPools returns provider's pools, newest first, with their agents
// (active delegations), the agents online now, the contracts those agents
// report, and the distinct offerings of the provider's contracts the pool
// serves (explicitly, or by country in its region).
func (s *Store) ListPools(ctx context.Context, provider string, nowNs int64) ([]PoolStats, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT p.pool_id, p.provider_pubkey, p.name, p.location, p.provisioner_type, p.created_at_ns,
			COUNT(d.agent_pubkey),
			COUNT(CASE WHEN h.last_heartbeat_ns > ? THEN 1 END),
			COALESCE(SUM(a.active_contracts), 0)
		FROM agent_pools p
		LEFT JOIN provider_agent_delegations d ON d.pool_id = p.pool_id AND d.revoked_at_ns IS NULL
		LEFT JOIN provider_agent_status a ON a.provider_pubkey = d.provider_pubkey AND a.agent_pubkey = d.agent_pubkey
		LEFT JOIN agent_heartbeats h ON h.agent_id = a.id
		WHERE p.provider_pubkey = ?
		GROUP BY p.pool_id, p.provider_pubkey, p.name, p.location, p.provisioner_type, p.created_at_ns
		ORDER BY p.created_at_ns DESC, p.pool_id`), nowNs-dcapi.OnlineWindowNs, provider)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	out, err := collect(rows, func(sc rowScanner) (p PoolStats, err error) {
		err = sc.Scan(&p.PoolID, &p.ProviderPubkey, &p.Name, &p.Location, &p.ProvisionerType, &p.CreatedAtNs,
			&p.AgentCount, &p.OnlineCount, &p.ActiveContracts)
		return p, err
	})
	if err != nil {
		return nil, err
	}
	offerings, err := s.r.QueryContext(ctx, s.q(`SELECT DISTINCT offering_id, agent_pool_id, datacenter_country FROM contracts WHERE provider_pubkey = ?`), provider)
	if err != nil {
		return nil, fmt.Errorf("list pools: %w", err)
	}
	defer offerings.Close()
	for offerings.Next() {
		var off string
		var pool, country sql.NullString
		if err := offerings.Scan(&off, &pool, &country); err != nil {
			return nil, err
		}
		for i := range out {
			if poolServes(&out[i].Pool, strPtr(pool), strPtr(country)) {
				out[i].OfferingsCount++
			}
		}
	}
	return out, offerings.Err()
}

// poolServes is live's pool match (get_pending_provision_contracts_for_pool
// in api/src/database/contracts/provisioning.rs): the contract's offering is
// in the pool, or in no pool and its datacenter country lies in the pool's
// region.
func poolServes(p *Pool, contractPool, country *string) bool {
	if contractPool != nil {
		return *contractPool == p.PoolID
	}
	return country != nil && CountryRegion(*country) == p.Location
}

// DeletePool deletes provider's pool and its setup tokens; a pool with
// active agents is refused (revoke them first), as live.
func (s *Store) DeletePool(ctx context.Context, provider, id string) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var n int64
		if err := tx.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM provider_agent_delegations WHERE pool_id = ? AND revoked_at_ns IS NULL`), id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return conflictf("Cannot delete pool with %d active agents. Revoke agents first.", n)
		}
		if _, err := tx.ExecContext(ctx, s.q(`DELETE FROM agent_setup_tokens WHERE pool_id IN (SELECT pool_id FROM agent_pools WHERE pool_id = ? AND provider_pubkey = ?)`), id, provider); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, s.q(`DELETE FROM agent_pools WHERE pool_id = ? AND provider_pubkey = ?`), id, provider)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errPoolNotFound()
		}
		return nil
	})
	return wrapErr(err, "delete pool")
}

// SetupToken is a one-time registration token for a pool. Token is set only
// when the token is made: the store keeps its SHA-256, and Hint names it.
type SetupToken struct {
	Token       string  `json:"token,omitempty"`
	Hint        string  `json:"tokenHint"`
	PoolID      string  `json:"poolId"`
	Label       *string `json:"label"`
	CreatedAtNs int64   `json:"createdAtNs"`
	ExpiresAtNs int64   `json:"expiresAtNs"`
	UsedAtNs    *int64  `json:"usedAtNs"`
	UsedByAgent *string `json:"usedByAgent"`
}

// SetupTokenPrefix starts every setup token: apt_<location>_<16 hex>.
const SetupTokenPrefix = "apt_"

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// tokenHint is what listings show of a token: its prefix and location and
// the first four of its sixteen random hex digits.
func tokenHint(token string) string {
	if i := strings.LastIndexByte(token, '_'); i >= 0 && len(token) >= i+5 {
		return token[:i+5] + "…"
	}
	return SetupTokenPrefix + "…"
}

// CreateSetupToken makes a one-time token for provider's pool, valid for
// ttl: apt_<location>_<16 hex digits> (64 random bits).
func (s *Store) CreateSetupToken(ctx context.Context, provider, poolID string, label *string, ttl time.Duration, nowNs int64) (*SetupToken, error) {
	if ttl < 0 {
		return nil, invalidf("a setup token's lifetime must not be negative")
	}
	if label != nil {
		if err := validText("label", *label, maxLabel); err != nil {
			return nil, err
		}
	}
	p, err := s.ProviderPool(ctx, provider, poolID)
	if err != nil {
		return nil, err
	}
	var rnd [8]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return nil, err
	}
	tok := &SetupToken{PoolID: p.PoolID, Label: label, CreatedAtNs: nowNs, ExpiresAtNs: nowNs + int64(ttl)}
	tok.Token = SetupTokenPrefix + p.Location + "_" + hex.EncodeToString(rnd[:])
	tok.Hint = tokenHint(tok.Token)
	_, err = s.w.ExecContext(ctx, s.q(`INSERT INTO agent_setup_tokens (token_hash, token_hint, pool_id, label, created_at_ns, expires_at_ns)
		VALUES (?, ?, ?, ?, ?, ?)`), tokenHash(tok.Token), tok.Hint, tok.PoolID, nullStr(label), tok.CreatedAtNs, tok.ExpiresAtNs)
	if err != nil {
		return nil, fmt.Errorf("create setup token: %w", err)
	}
	return tok, nil
}

// ListSetupTokens returns the pool's tokens still usable at nowNs (neither
// used nor expired), newest first.
func (s *Store) ListSetupTokens(ctx context.Context, provider, poolID string, nowNs int64) ([]SetupToken, error) {
	if _, err := s.ProviderPool(ctx, provider, poolID); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT token_hint, pool_id, label, created_at_ns, expires_at_ns, used_at_ns, used_by_agent
		FROM agent_setup_tokens WHERE pool_id = ? AND used_at_ns IS NULL AND expires_at_ns > ?
		ORDER BY created_at_ns DESC, token_hash`), poolID, nowNs)
	if err != nil {
		return nil, fmt.Errorf("list setup tokens: %w", err)
	}
	return collect(rows, func(sc rowScanner) (SetupToken, error) {
		var t SetupToken
		var label, by sql.NullString
		var used sql.NullInt64
		err := sc.Scan(&t.Hint, &t.PoolID, &label, &t.CreatedAtNs, &t.ExpiresAtNs, &used, &by)
		t.Label, t.UsedAtNs, t.UsedByAgent = strPtr(label), int64Ptr(used), strPtr(by)
		return t, err
	})
}

// DeleteSetupToken deletes a token of provider's pool (to revoke it before
// it is used); KindNotFound "Token not found" when there is none.
func (s *Store) DeleteSetupToken(ctx context.Context, provider, poolID, token string) error {
	if _, err := s.ProviderPool(ctx, provider, poolID); err != nil {
		return err
	}
	res, err := s.w.ExecContext(ctx, s.q(`DELETE FROM agent_setup_tokens WHERE token_hash = ? AND pool_id = ?`), tokenHash(token), poolID)
	if err != nil {
		return fmt.Errorf("delete setup token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return notFoundf("Token not found")
	}
	return nil
}

// SetupResult is what registering an agent by setup token did.
type SetupResult struct {
	Pool        Pool
	Permissions []string // SetupPermissions
	Label       *string
}

// Setup-token refusals, worded as live's (validate_and_use_setup_token).
const (
	msgTokenInvalid = "Invalid setup token"
	msgTokenUsed    = "Setup token already used"
	msgTokenExpired = "Setup token expired"
)

// UseSetupToken registers agent with the token's pool: in one transaction
// it marks the token used (only if unused and unexpired: of two agents
// racing one token exactly one wins) and stores the agent's delegation from
// the pool's provider with every permission (SetupPermissions), no expiry, a
// zero signature and the pool, replacing (and un-revoking) an earlier one.
// Refusals: KindNotFound (no such token), KindConflict (used), KindGone
// (expired).
func (s *Store) UseSetupToken(ctx context.Context, token, agent string, nowNs int64) (*SetupResult, error) {
	if !isLowerHex64(agent) {
		return nil, invalidf("agent public key must be 64 lowercase hex characters, got %q", clip(agent))
	}
	hash := tokenHash(token)
	res := &SetupResult{Permissions: SetupPermissions}
	stored := slices.Sorted(slices.Values(SetupPermissions))
	perms, _ := json.Marshal(stored)
	err := s.tx(ctx, func(tx *sql.Tx) error {
		var poolID string
		var label sql.NullString
		err := tx.QueryRowContext(ctx, s.q(`UPDATE agent_setup_tokens SET used_at_ns = ?, used_by_agent = ?
			WHERE token_hash = ? AND used_at_ns IS NULL AND expires_at_ns > ?
			RETURNING pool_id, label`), nowNs, agent, hash, nowNs).Scan(&poolID, &label)
		if errors.Is(err, sql.ErrNoRows) {
			return s.tokenRefusal(ctx, tx, hash, nowNs)
		}
		if err != nil {
			return err
		}
		p, err := scanPool(tx.QueryRowContext(ctx, s.q(`SELECT `+poolCols+` FROM agent_pools WHERE pool_id = ?`), poolID))
		if err != nil {
			return fmt.Errorf("read the token's pool: %w", err)
		}
		res.Pool, res.Label = *p, strPtr(label)
		_, err = tx.ExecContext(ctx, s.q(`INSERT INTO provider_agent_delegations
			(provider_pubkey, agent_pubkey, permissions, expires_at_ns, label, signature, created_at_ns, revoked_at_ns, pool_id, issued_at_ns)
			VALUES (?, ?, ?, NULL, ?, ?, ?, NULL, ?, ?)
			ON CONFLICT (provider_pubkey, agent_pubkey) DO UPDATE SET
				permissions = excluded.permissions, expires_at_ns = NULL, label = excluded.label,
				signature = excluded.signature, created_at_ns = excluded.created_at_ns, revoked_at_ns = NULL,
				pool_id = excluded.pool_id, issued_at_ns = excluded.issued_at_ns`),
			p.ProviderPubkey, agent, string(perms), nullStr(res.Label), ZeroSignature, nowNs, p.PoolID, nowNs)
		if err != nil {
			return err
		}
		return s.signal(ctx, tx, kindDelegations, p.ProviderPubkey, nowNs)
	})
	if res.Pool.ProviderPubkey != "" {
		s.deleg.dropProvider(res.Pool.ProviderPubkey)
	}
	if err != nil {
		return nil, wrapErr(err, "register agent by setup token")
	}
	return res, nil
}

// tokenRefusal says why a token could not be used.
func (s *Store) tokenRefusal(ctx context.Context, tx *sql.Tx, hash string, nowNs int64) error {
	var used sql.NullInt64
	var expires int64
	err := tx.QueryRowContext(ctx, s.q(`SELECT used_at_ns, expires_at_ns FROM agent_setup_tokens WHERE token_hash = ?`), hash).Scan(&used, &expires)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return notFoundf(msgTokenInvalid)
	case err != nil:
		return err
	case used.Valid:
		return conflictf(msgTokenUsed)
	case expires <= nowNs:
		return gonef(msgTokenExpired)
	}
	return invalidf("Setup token validation failed")
}
