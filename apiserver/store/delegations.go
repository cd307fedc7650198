package store

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
	"github.com/decent-stuff/dc-agent/identity"
)

// Delegation is a stored agent delegation.
type Delegation struct {
	ProviderPubkey string
	AgentPubkey    string
	Permissions    []string
	ExpiresAtNs    *int64
	Label          *string
	Signature      string
	CreatedAtNs    int64
	RevokedAtNs    *int64
	// PoolID is the agent's pool when a setup token registered it; nil
	// for an offline-signed delegation.
	PoolID *string
	// IssuedAtNs is the delegation's issued_at_ns (when a setup token
	// registered the agent: that time); nil for a code of the older form.
	IssuedAtNs *int64
}

// Expired reports whether the delegation has expired at nowNs.
func (d *Delegation) Expired(nowNs int64) bool {
	return d.ExpiresAtNs != nil && nowNs >= *d.ExpiresAtNs
}

// Active reports whether the delegation is neither revoked nor expired.
func (d *Delegation) Active(nowNs int64) bool { return d.RevokedAtNs == nil && !d.Expired(nowNs) }

// Has reports whether the delegation grants perm.
func (d *Delegation) Has(perm string) bool { return slices.Contains(d.Permissions, perm) }

const delegationCols = `provider_pubkey, agent_pubkey, permissions, expires_at_ns, label, signature, created_at_ns, revoked_at_ns, pool_id, issued_at_ns`

func scanDelegation(sc rowScanner) (*Delegation, error) {
	var d Delegation
	var perms string
	var exp, rev, issued sql.NullInt64
	var label, pool sql.NullString
	if err := sc.Scan(&d.ProviderPubkey, &d.AgentPubkey, &perms, &exp, &label, &d.Signature, &d.CreatedAtNs, &rev, &pool, &issued); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(perms), &d.Permissions); err != nil {
		return nil, fmt.Errorf("stored permissions of agent %s: %w", d.AgentPubkey, err)
	}
	d.ExpiresAtNs, d.RevokedAtNs, d.Label, d.PoolID, d.IssuedAtNs = int64Ptr(exp), int64Ptr(rev), strPtr(label), strPtr(pool), int64Ptr(issued)
	return &d, nil
}

// PutDelegation stores a signed delegation whose signature the caller has
// verified, replacing the provider's earlier delegation of the same agent
// key. byAgent says the request was signed by the agent key itself (not the
// provider's main key): the agent keeps every code it was ever given, so
// such a request may create a delegation but never roll one back — it may
// not bring back a delegation the provider revoked, nor replace one issued
// later than its own (issued_at_ns; a code of the older form counts as
// issued before any stamped one); re-posting the very delegation stored is
// accepted and changes nothing. It returns the stored delegation and
// whether it is new.
func (s *Store) PutDelegation(ctx context.Context, sd identity.SignedDelegation, byAgent bool, nowNs int64) (*Delegation, bool, error) {
	if err := sd.Validate(); err != nil {
		return nil, false, invalidf("delegation: %v", err)
	}
	if sd.Expired(timeFromNs(nowNs)) {
		return nil, false, invalidf("delegation expired at %s; sign a new one with a later expiry", fmtNs(*sd.ExpiresAtNs))
	}
	if sd.Issued() > nowNs+maxIssuedAheadNs {
		// A stamp from the future would outrank every later delegation.
		return nil, false, invalidf("delegation issued_at_ns %s is in the future; check the clock of the machine that signed it and sign again", fmtNs(sd.Issued()))
	}
	perms, _ := json.Marshal(sd.Permissions)
	var label *string
	if sd.Label != "" {
		l := sd.Label
		label = &l
	}
	var created bool
	var stored *Delegation // set when nothing changed
	err := s.tx(ctx, func(tx *sql.Tx) error {
		stored = nil
		if err := s.providerExists(ctx, tx, sd.ProviderPubkey); err != nil {
			return err
		}
		old, err := scanDelegation(tx.QueryRowContext(ctx, s.q(`SELECT `+delegationCols+` FROM provider_agent_delegations WHERE provider_pubkey = ? AND agent_pubkey = ?`+s.forUpdate()),
			sd.ProviderPubkey, sd.AgentPubkey))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO provider_agent_delegations
				(provider_pubkey, agent_pubkey, permissions, expires_at_ns, label, signature, created_at_ns, revoked_at_ns, issued_at_ns)
				VALUES (?, ?, ?, ?, ?, ?, ?, NULL, ?)`),
				sd.ProviderPubkey, sd.AgentPubkey, string(perms), nullInt64(sd.ExpiresAtNs), nullStr(label), sd.SignatureHex(), nowNs, nullInt64(sd.IssuedAtNs))
			return err
		case err != nil:
			return err
		case byAgent && old.RevokedAtNs != nil:
			return forbiddenf("the provider revoked this agent key's delegation at %s; only the provider's main key can re-enable it (or delegate a new agent key)", fmtNs(*old.RevokedAtNs))
		case byAgent && old.Signature == sd.SignatureHex():
			stored = old // the same signed delegation again: nothing to do
			return nil
		case byAgent && sd.Issued() <= derefOr(old.IssuedAtNs, 0):
			return forbiddenf("the stored delegation of this agent key was issued %s, this one %s: an agent key may only register a delegation issued later than the stored one (ask the provider to sign a new one, or to post it with the main key)",
				issuedWhen(old.IssuedAtNs), issuedWhen(sd.IssuedAtNs))
		}
		_, err = tx.ExecContext(ctx, s.q(`UPDATE provider_agent_delegations
			SET permissions = ?, expires_at_ns = ?, label = ?, signature = ?, created_at_ns = ?, revoked_at_ns = NULL, pool_id = NULL, issued_at_ns = ?
			WHERE provider_pubkey = ? AND agent_pubkey = ?`),
			string(perms), nullInt64(sd.ExpiresAtNs), nullStr(label), sd.SignatureHex(), nowNs, nullInt64(sd.IssuedAtNs), sd.ProviderPubkey, sd.AgentPubkey)
		if err != nil {
			return err
		}
		return s.signal(ctx, tx, kindDelegations, sd.ProviderPubkey, nowNs)
	})
	s.deleg.dropProvider(sd.ProviderPubkey)
	if err != nil {
		return nil, false, wrapErr(err, "store delegation")
	}
	if stored != nil {
		return stored, false, nil
	}
	d := &Delegation{
		ProviderPubkey: sd.ProviderPubkey, AgentPubkey: sd.AgentPubkey, Permissions: sd.Permissions,
		ExpiresAtNs: sd.ExpiresAtNs, Label: label, Signature: hex.EncodeToString(sd.Signature), CreatedAtNs: nowNs,
		IssuedAtNs: sd.IssuedAtNs,
	}
	return d, created, nil
}

// issuedWhen renders an issued_at_ns for a refusal.
func issuedWhen(ns *int64) string {
	if ns == nil {
		return "without an issued_at_ns line (an older code)"
	}
	return "at " + time.Unix(0, *ns).UTC().Format(time.RFC3339Nano)
}

// maxIssuedAheadNs tolerates the signing machine's clock running ahead, as
// the request window does (±5 minutes).
const maxIssuedAheadNs = int64(5 * time.Minute)

// GetDelegation returns the provider's delegation of agent (revoked or not),
// or a KindNotFound error. Every signed agent request asks, so answers are
// cached: this store drops an entry the moment it changes one, and a server
// running Watch drops a provider's entries when another process changes
// them; delegCacheTTL bounds staleness for anything else.
func (s *Store) GetDelegation(ctx context.Context, provider, agent string) (*Delegation, error) {
	d, ok := s.deleg.get(provider, agent, time.Now())
	if !ok {
		gen := s.deleg.generation()
		st, err := s.stmt(ctx, s.r, `SELECT `+delegationCols+` FROM provider_agent_delegations WHERE provider_pubkey = ? AND agent_pubkey = ?`)
		if err != nil {
			return nil, fmt.Errorf("read delegation: %w", err)
		}
		d, err = scanDelegation(st.QueryRowContext(ctx, provider, agent))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			d = nil
		case err != nil:
			return nil, fmt.Errorf("read delegation: %w", err)
		}
		s.deleg.put(provider, agent, d, gen, time.Now())
	}
	if d == nil {
		return nil, notFoundf("no delegation for agent key %s from provider %s", clip(agent), clip(provider))
	}
	c := *d
	c.Permissions = slices.Clone(d.Permissions)
	return &c, nil
}

// delegCacheTTL bounds how long a cached delegation may be stale when it was
// changed by a process whose change this store's Watch did not see.
const delegCacheTTL = 30 * time.Second

// maxDelegCache bounds the cache (entries); past it the cache starts over.
const maxDelegCache = 200_000

type delegEntry struct {
	d  *Delegation // nil: known not to exist
	at time.Time
}

// delegCache holds looked-up delegations by provider and agent. A
// generation counter, bumped by every invalidation, keeps a lookup that
// raced with a change from caching the old row.
type delegCache struct {
	mu  sync.RWMutex
	ttl time.Duration
	m   map[string]map[string]delegEntry
	n   int
	gen uint64
}

func (c *delegCache) get(provider, agent string, now time.Time) (*Delegation, bool) {
	c.mu.RLock()
	e, ok := c.m[provider][agent]
	c.mu.RUnlock()
	if !ok || now.Sub(e.at) > c.ttl {
		return nil, false
	}
	return e.d, true
}

func (c *delegCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *delegCache) put(provider, agent string, d *Delegation, gen uint64, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // invalidated while we read: do not cache what may be old
	}
	if c.n >= maxDelegCache {
		c.m, c.n = map[string]map[string]delegEntry{}, 0
	}
	pm := c.m[provider]
	if pm == nil {
		pm = map[string]delegEntry{}
		c.m[provider] = pm
	}
	if _, ok := pm[agent]; !ok {
		c.n++
	}
	pm[agent] = delegEntry{d: d, at: now}
}

func (c *delegCache) dropProvider(provider string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.n -= len(c.m[provider])
	delete(c.m, provider)
}

func (c *delegCache) dropAll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.m, c.n = map[string]map[string]delegEntry{}, 0
}

// AgentHasActiveDelegation reports whether any provider currently delegates
// to agent.
func (s *Store) AgentHasActiveDelegation(ctx context.Context, agent string, nowNs int64) (bool, error) {
	var n int64
	err := s.r.QueryRowContext(ctx, s.q(`SELECT COUNT(*) FROM provider_agent_delegations
		WHERE agent_pubkey = ? AND revoked_at_ns IS NULL AND (expires_at_ns IS NULL OR expires_at_ns > ?)`), agent, nowNs).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("read delegations: %w", err)
	}
	return n > 0, nil
}

// ActiveDelegation returns the newest active delegation of agent from any
// provider (live keeps one delegation per agent key: get_active_delegation
// in api/src/database/agent_delegations.rs), or a KindNotFound error.
func (s *Store) ActiveDelegation(ctx context.Context, agent string, nowNs int64) (*Delegation, error) {
	d, err := scanDelegation(s.r.QueryRowContext(ctx, s.q(`SELECT `+delegationCols+` FROM provider_agent_delegations
		WHERE agent_pubkey = ? AND revoked_at_ns IS NULL AND (expires_at_ns IS NULL OR expires_at_ns > ?)
		ORDER BY created_at_ns DESC, provider_pubkey LIMIT 1`), agent, nowNs))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, notFoundf("no active delegation for agent key %s", clip(agent))
	}
	if err != nil {
		return nil, fmt.Errorf("read delegation: %w", err)
	}
	return d, nil
}

// ListDelegations returns the provider's delegations with their agents'
// heartbeat state, newest first.
func (s *Store) ListDelegations(ctx context.Context, provider string, nowNs int64) ([]dcapi.DelegationInfo, error) {
	if _, err := s.GetProvider(ctx, provider); err != nil {
		return nil, err
	}
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT d.provider_pubkey, d.agent_pubkey, d.permissions, d.expires_at_ns, d.label, d.signature, d.created_at_ns, d.revoked_at_ns,
			d.pool_id, d.issued_at_ns, a.version, COALESCE(h.last_heartbeat_ns, a.updated_at_ns)
		FROM provider_agent_delegations d
		LEFT JOIN provider_agent_status a ON a.provider_pubkey = d.provider_pubkey AND a.agent_pubkey = d.agent_pubkey
		LEFT JOIN agent_heartbeats h ON h.agent_id = a.id
		WHERE d.provider_pubkey = ?
		ORDER BY d.created_at_ns DESC, d.agent_pubkey`), provider)
	if err != nil {
		return nil, fmt.Errorf("list delegations: %w", err)
	}
	defer rows.Close()
	out := []dcapi.DelegationInfo{}
	for rows.Next() {
		var version sql.NullString
		var hb sql.NullInt64
		var d Delegation
		var perms string
		var exp, rev, issued sql.NullInt64
		var label, pool sql.NullString
		if err := rows.Scan(&d.ProviderPubkey, &d.AgentPubkey, &perms, &exp, &label, &d.Signature, &d.CreatedAtNs, &rev, &pool, &issued, &version, &hb); err != nil {
			return nil, err
		}
		if err := json.Unmarshal([]byte(perms), &d.Permissions); err != nil {
			return nil, fmt.Errorf("stored permissions of agent %s: %w", d.AgentPubkey, err)
		}
		d.ExpiresAtNs, d.RevokedAtNs, d.Label = int64Ptr(exp), int64Ptr(rev), strPtr(label)
		out = append(out, dcapi.DelegationInfo{
			AgentPubkey:     d.AgentPubkey,
			ProviderPubkey:  d.ProviderPubkey,
			Permissions:     d.Permissions,
			ExpiresAtNs:     d.ExpiresAtNs,
			Label:           d.Label,
			CreatedAtNs:     d.CreatedAtNs,
			Active:          d.Active(nowNs),
			Online:          hb.Valid && nowNs-hb.Int64 < dcapi.OnlineWindowNs,
			Version:         strPtr(version),
			LastHeartbeatNs: int64Ptr(hb),
			RevokedAtNs:     d.RevokedAtNs,
			IssuedAtNs:      int64Ptr(issued),
			PoolID:          strPtr(pool),
		})
	}
	return out, rows.Err()
}

// RevokeDelegation marks the delegation revoked (keeping the first revocation
// time when repeated). It takes effect for the next request at once.
func (s *Store) RevokeDelegation(ctx context.Context, provider, agent string, nowNs int64) error {
	err := s.tx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, s.q(`UPDATE provider_agent_delegations SET revoked_at_ns = COALESCE(revoked_at_ns, ?)
			WHERE provider_pubkey = ? AND agent_pubkey = ?`), nowNs, provider, agent)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return notFoundf("no delegation for agent key %s from provider %s", clip(agent), clip(provider))
		}
		return s.signal(ctx, tx, kindDelegations, provider, nowNs)
	})
	// Dropped after the commit: a lookup racing with it cannot cache the old
	// row (see delegCache).
	s.deleg.dropProvider(provider)
	return wrapErr(err, "revoke delegation")
}
