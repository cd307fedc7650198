package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/decent-stuff/dc-agent/dcapi"
)

// Heartbeat limits.
const (
	maxVersionLen      = 64
	maxProvisionerLen  = 64
	maxCapabilities    = 64
	maxResourcesBytes  = 16 << 10
	maxActiveContracts = 1 << 24
)

// ValidateHeartbeat checks a heartbeat body's values.
func ValidateHeartbeat(hb *dcapi.Heartbeat) error { return validateHeartbeat(hb, true) }

func validateHeartbeat(hb *dcapi.Heartbeat, requireVersion bool) error {
	if requireVersion && hb.Version == "" {
		return invalidf("version is required (the agent's version string)")
	}
	if err := validText("version", hb.Version, maxVersionLen); err != nil {
		return err
	}
	if err := validText("provisionerType", hb.ProvisionerType, maxProvisionerLen); err != nil {
		return err
	}
	if len(hb.Capabilities) > maxCapabilities {
		return invalidf("capabilities has %d entries; at most %d", len(hb.Capabilities), maxCapabilities)
	}
	for i, c := range hb.Capabilities {
		if validText("", c, 64) != nil { // name it only when refusing
			return validText(fmt.Sprintf("capabilities[%d]", i), c, 64)
		}
	}
	if hb.ActiveContracts < 0 || hb.ActiveContracts > maxActiveContracts {
		return invalidf("activeContracts %d out of range", hb.ActiveContracts)
	}
	return nil
}

// RecordHeartbeat stores an agent's heartbeat (one row per agent).
// Concurrent heartbeats are written together, in one transaction per batch
// (group commit): a heartbeat is one small upsert, and committing each on
// its own would cost more than the upsert.
func (s *Store) RecordHeartbeat(ctx context.Context, provider, agent string, hb dcapi.Heartbeat, nowNs int64) error {
	if err := ValidateHeartbeat(&hb); err != nil {
		return err
	}
	var res []byte
	if hb.Resources != nil {
		res, _ = json.Marshal(hb.Resources)
	}
	return s.recordHeartbeat(ctx, provider, agent, hb, res, nowNs)
}

// RecordLiveHeartbeat stores a heartbeat of the live API's shape
// (HeartbeatRequest, api/src/openapi/agents.rs): version and provisioner
// type may be empty, and resources (the ResourceInventory of
// common/src/api_types.rs, checked by the caller) is stored as received;
// hb.Resources is ignored.
func (s *Store) RecordLiveHeartbeat(ctx context.Context, provider, agent string, hb dcapi.Heartbeat, resources json.RawMessage, nowNs int64) error {
	if err := validateHeartbeat(&hb, false); err != nil {
		return err
	}
	return s.recordHeartbeat(ctx, provider, agent, hb, resources, nowNs)
}

func (s *Store) recordHeartbeat(ctx context.Context, provider, agent string, hb dcapi.Heartbeat, resources []byte, nowNs int64) error {
	it := hbItems.Get().(*hbItem)
	*it = hbItem{provider: provider, agent: agent, version: hb.Version, ptype: hb.ProvisionerType,
		active: int64(hb.ActiveContracts), nowNs: nowNs, done: it.done}
	if hb.Capabilities != nil {
		b, _ := json.Marshal(hb.Capabilities)
		it.caps = string(b)
	}
	if resources != nil {
		if len(resources) > maxResourcesBytes {
			return invalidf("resources is %d bytes encoded; at most %d", len(resources), maxResourcesBytes)
		}
		it.res = string(resources)
	}
	s.hbOnce.Do(func() {
		s.hbStarted = true
		go s.heartbeatWriter()
	})
	select {
	case s.hbCh <- it:
	case <-s.quit:
		return errors.New("record heartbeat: store closed")
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-it.done:
		// The writer is done with it (it answers once): reuse it. An
		// item abandoned on ctx.Done is left to the garbage collector.
		*it = hbItem{done: it.done}
		hbItems.Put(it)
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// hbItems recycles queued heartbeats and their answer channels.
var hbItems = sync.Pool{New: func() any { return &hbItem{done: make(chan error, 1)} }}

type hbItem struct {
	provider, agent, version, ptype string
	caps, res                       any
	active, nowNs                   int64
	done                            chan error
	id                              int64 // the status row's id, when known
}

// hbKnown is a status row as the writer last wrote it.
type hbKnown struct {
	id              int64
	version, ptype  string
	caps, res       any
	active, wroteNs int64
}

// sameAs reports whether it reports what k holds.
func (k *hbKnown) sameAs(it *hbItem) bool {
	return k.version == it.version && k.ptype == it.ptype && k.caps == it.caps && k.res == it.res && k.active == it.active
}

// hbRewriteEvery bounds how long the writer trusts its memory of a status
// row: a heartbeat that reports nothing new only updates agent_heartbeats,
// but every ten minutes the whole row is written again (another dc-api on
// the same PostgreSQL may have written it meanwhile). Agents send one
// heartbeat a minute: nine in ten are then a time only.
const hbRewriteEvery = int64(10 * time.Minute)

// maxHBKnown bounds the writer's memory (one entry per agent).
const maxHBKnown = 1 << 17

// upsertStatus is the statement writing n agents' status rows: one
// multi-row upsert that returns the rows' ids.
func upsertStatus(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO provider_agent_status
	(provider_pubkey, agent_pubkey, version, provisioner_type, capabilities, active_contracts, resources, updated_at_ns)
	VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?)")
	}
	b.WriteString(`
	ON CONFLICT (provider_pubkey, agent_pubkey) DO UPDATE SET
		version = excluded.version, provisioner_type = excluded.provisioner_type,
		capabilities = excluded.capabilities, active_contracts = excluded.active_contracts,
		resources = excluded.resources, updated_at_ns = excluded.updated_at_ns
	RETURNING id, provider_pubkey, agent_pubkey`)
	return b.String()
}

// upsertTimes is the statement writing n agents' heartbeat times.
func upsertTimes(n int) string {
	var b strings.Builder
	b.WriteString(`INSERT INTO agent_heartbeats (agent_id, last_heartbeat_ns) VALUES `)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?)")
	}
	b.WriteString(` ON CONFLICT (agent_id) DO UPDATE SET last_heartbeat_ns = excluded.last_heartbeat_ns`)
	return b.String()
}

// The heartbeat writer's two statements, for hbSQL.
const (
	hbStatusSQL = iota // upsertStatus
	hbTimesSQL         // upsertTimes
)

// hbTexts memoises upsertStatus and upsertTimes by row count.
var hbTexts [2][maxHeartbeatBatch + 1]atomic.Pointer[string]

func hbSQL(kind int, n int) string {
	build := upsertStatus
	if kind == hbTimesSQL {
		build = upsertTimes
	}
	if n > maxHeartbeatBatch {
		return build(n)
	}
	if p := hbTexts[kind][n].Load(); p != nil {
		return *p
	}
	q := build(n)
	hbTexts[kind][n].Store(&q)
	return q
}

// maxHeartbeatBatch bounds one group commit. 24 rows already spread a
// commit's fixed cost thin (a few µs per row); a larger batch would only
// make more requests wait on the same commit while the cores that should
// verify the next ones run out of work (measured: 24 beats 256 by about a
// tenth in heartbeats per second with 64 requests in flight).
const maxHeartbeatBatch = 24

// hbFillWait is how long a busy writer waits for more heartbeats to join a
// batch (the added latency, under load only).
const hbFillWait = time.Millisecond

// maxFillRounds bounds how often the writer yields to let more heartbeats
// join a batch before committing it.
const maxFillRounds = 4

// heartbeatWriter writes queued heartbeats: whatever is queued when it gets
// to it goes into one transaction. An idle server commits each heartbeat at
// once; a busy one commits many per transaction.
func (s *Store) heartbeatWriter() {
	defer close(s.hbDone)
	ctx := context.Background()
	batch := make([]*hbItem, 0, maxHeartbeatBatch)
	fillTimer := time.NewTimer(time.Hour)
	fillTimer.Stop()
	busy := false
	for {
		select {
		case it := <-s.hbCh:
			batch = append(batch[:0], it)
		case <-s.quit:
			for {
				select {
				case it := <-s.hbCh:
					it.done <- errors.New("record heartbeat: store closed")
				default:
					return
				}
			}
		}
		// Let handlers that are about to enqueue do so: under load this
		// turns many one-row commits into one. Keep yielding while more
		// arrive (a few rounds at most, no timer: an idle server still
		// commits a lone heartbeat at once).
		for round := 0; round < maxFillRounds && len(batch) < maxHeartbeatBatch; round++ {
			runtime.Gosched()
			before := len(batch)
		fill:
			for len(batch) < maxHeartbeatBatch {
				select {
				case it := <-s.hbCh:
					batch = append(batch, it)
				default:
					break fill
				}
			}
			if len(batch) == before {
				break
			}
		}
		// A busy server (the last batch had company) waits a moment longer
		// for more: a commit costs as much as a dozen rows, so bigger
		// batches leave more CPU to the requests. A lone heartbeat on an
		// idle server is still committed at once.
		if busy && len(batch) < maxHeartbeatBatch {
			fillTimer.Reset(hbFillWait)
		wait:
			for len(batch) < maxHeartbeatBatch {
				select {
				case it := <-s.hbCh:
					batch = append(batch, it)
				case <-fillTimer.C:
					break wait
				}
			}
			if !fillTimer.Stop() {
				select {
				case <-fillTimer.C:
				default:
				}
			}
		}
		busy = len(batch) > 1
		err := s.writeHeartbeats(ctx, batch)
		if err != nil && len(batch) > 1 {
			// One bad row must not fail the others: retry one by one.
			for _, it := range batch {
				it.done <- s.writeHeartbeats(ctx, []*hbItem{it})
			}
			continue
		}
		for _, it := range batch {
			it.done <- err
		}
	}
}

// writeHeartbeats writes a batch in one transaction: the heartbeat time of
// every agent into agent_heartbeats, and the status rows of the agents that
// report something new (or are due a rewrite, or unknown to the writer).
func (s *Store) writeHeartbeats(ctx context.Context, batch []*hbItem) (err error) {
	// PostgreSQL refuses to update one row twice in a statement: keep each
	// agent's latest heartbeat of the batch.
	latest := make(map[[2]string]*hbItem, len(batch))
	rows := make([]*hbItem, 0, len(batch))
	for _, it := range batch {
		k := [2]string{it.provider, it.agent}
		if prev, ok := latest[k]; ok {
			if it.nowNs >= prev.nowNs {
				*prev = hbItem{provider: it.provider, agent: it.agent, version: it.version, ptype: it.ptype,
					caps: it.caps, res: it.res, active: it.active, nowNs: it.nowNs}
			}
			continue
		}
		c := *it
		c.done = nil
		latest[k] = &c
		rows = append(rows, &c)
	}
	if s.hbKnown == nil {
		s.hbKnown = make(map[[2]string]hbKnown)
	}
	var status []*hbItem
	for _, it := range rows {
		k, ok := s.hbKnown[[2]string{it.provider, it.agent}]
		if ok && k.sameAs(it) && it.nowNs >= k.wroteNs && it.nowNs-k.wroteNs < hbRewriteEvery {
			it.id = k.id
			continue
		}
		status = append(status, it)
	}
	defer func() {
		if err != nil {
			// Trust nothing about these rows: write them whole next time.
			for _, it := range rows {
				delete(s.hbKnown, [2]string{it.provider, it.agent})
			}
			err = fmt.Errorf("record heartbeat: %w", err)
		}
	}()

	// SQLite parses every statement it is not handed prepared: keep one
	// prepared statement per batch size (at most maxHeartbeatBatch of each,
	// all on the one write connection), prepared before the transaction
	// takes that connection. PostgreSQL's driver caches prepared statements
	// by text itself.
	var timesSt, statusSt *sql.Stmt
	if s.dialect == SQLite {
		if timesSt, err = s.stmt(ctx, s.w, hbSQL(hbTimesSQL, len(rows))); err != nil {
			return err
		}
		if len(status) > 0 {
			if statusSt, err = s.stmt(ctx, s.w, hbSQL(hbStatusSQL, len(status))); err != nil {
				return err
			}
		}
	}
	if len(status) == 0 {
		// Nothing new: one statement, its own transaction.
		return s.execTimes(ctx, nil, timesSt, rows)
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := s.upsertStatusRows(ctx, tx, statusSt, status); err != nil {
		return err
	}
	if err := s.execTimes(ctx, tx, timesSt, rows); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	if len(s.hbKnown) >= maxHBKnown {
		clear(s.hbKnown)
	}
	for _, it := range status {
		s.hbKnown[[2]string{it.provider, it.agent}] = hbKnown{id: it.id, version: it.version, ptype: it.ptype,
			caps: it.caps, res: it.res, active: it.active, wroteNs: it.nowNs}
	}
	return nil
}

// upsertStatusRows writes the status rows (with st, prepared, on SQLite)
// and sets each item's id.
func (s *Store) upsertStatusRows(ctx context.Context, tx *sql.Tx, st *sql.Stmt, items []*hbItem) error {
	args := make([]any, 0, 8*len(items))
	for _, it := range items {
		args = append(args, it.provider, it.agent, it.version, it.ptype, it.caps, it.active, it.res, it.nowNs)
	}
	var rs *sql.Rows
	var err error
	if st != nil {
		rs, err = tx.StmtContext(ctx, st).QueryContext(ctx, args...)
	} else {
		rs, err = tx.QueryContext(ctx, s.q(hbSQL(hbStatusSQL, len(items))), args...)
	}
	if err != nil {
		return err
	}
	defer rs.Close()
	byKey := make(map[[2]string]*hbItem, len(items))
	for _, it := range items {
		byKey[[2]string{it.provider, it.agent}] = it
	}
	n := 0
	for rs.Next() {
		var id int64
		var k [2]string
		if err := rs.Scan(&id, &k[0], &k[1]); err != nil {
			return err
		}
		if it := byKey[k]; it != nil {
			it.id = id
			n++
		}
	}
	if err := rs.Err(); err != nil {
		return err
	}
	if n != len(items) {
		return fmt.Errorf("status upsert returned %d of %d rows", n, len(items))
	}
	return nil
}

// execTimes writes the rows' heartbeat times (with st, prepared, on
// SQLite), in tx if given.
func (s *Store) execTimes(ctx context.Context, tx *sql.Tx, st *sql.Stmt, rows []*hbItem) error {
	args := make([]any, 0, 2*len(rows))
	for _, it := range rows {
		args = append(args, it.id, it.nowNs)
	}
	var err error
	switch {
	case st != nil && tx != nil:
		_, err = tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	case st != nil:
		_, err = st.ExecContext(ctx, args...)
	case tx != nil:
		_, err = tx.ExecContext(ctx, s.q(hbSQL(hbTimesSQL, len(rows))), args...)
	default:
		_, err = s.w.ExecContext(ctx, s.q(hbSQL(hbTimesSQL, len(rows))), args...)
	}
	return err
}

// AgentRow is one agent's last heartbeat.
type AgentRow struct {
	AgentPubkey     string
	LastHeartbeatNs int64
	Version         string
	ProvisionerType string
	Capabilities    []string
	ActiveContracts int
	Resources       *dcapi.Resources
	// RawResources is the resources JSON as stored (a live agent's
	// ResourceInventory does not fit dcapi.Resources).
	RawResources json.RawMessage
}

// Online reports whether the agent sent a heartbeat within the window.
func (a *AgentRow) Online(nowNs int64) bool { return nowNs-a.LastHeartbeatNs < dcapi.OnlineWindowNs }

// Agents returns provider's agents, most recent heartbeat first.
func (s *Store) Agents(ctx context.Context, provider string) ([]AgentRow, error) {
	rows, err := s.r.QueryContext(ctx, s.q(`SELECT a.agent_pubkey, COALESCE(h.last_heartbeat_ns, a.updated_at_ns), a.version, a.provisioner_type,
			a.capabilities, a.active_contracts, a.resources
		FROM provider_agent_status a LEFT JOIN agent_heartbeats h ON h.agent_id = a.id
		WHERE a.provider_pubkey = ? ORDER BY 2 DESC, a.agent_pubkey`), provider)
	if err != nil {
		return nil, fmt.Errorf("read agent status: %w", err)
	}
	defer rows.Close()
	var out []AgentRow
	for rows.Next() {
		var a AgentRow
		var caps, res sql.NullString
		var active int64
		if err := rows.Scan(&a.AgentPubkey, &a.LastHeartbeatNs, &a.Version, &a.ProvisionerType, &caps, &active, &res); err != nil {
			return nil, err
		}
		a.ActiveContracts = int(active)
		if caps.Valid {
			_ = json.Unmarshal([]byte(caps.String), &a.Capabilities)
		}
		if res.Valid {
			a.RawResources = json.RawMessage(res.String)
			a.Resources = &dcapi.Resources{}
			if json.Unmarshal([]byte(res.String), a.Resources) != nil {
				a.Resources = nil
			}
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// AgentStatus answers GET .../agent-status: the provider is online when any
// of its agents sent a heartbeat within the last 5 minutes (evaluated now);
// the other fields are those of the most recent heartbeat; Agents lists
// every agent, most recent heartbeat first.
func (s *Store) AgentStatus(ctx context.Context, provider string, nowNs int64) (dcapi.AgentStatus, error) {
	st := dcapi.AgentStatus{ProviderPubkey: provider, Capabilities: []string{}}
	if _, err := s.GetProvider(ctx, provider); err != nil {
		return st, err
	}
	agents, err := s.Agents(ctx, provider)
	if err != nil {
		return st, err
	}
	if len(agents) == 0 {
		return st, nil
	}
	a := agents[0]
	st.Online = a.Online(nowNs)
	st.LastHeartbeatNs = &a.LastHeartbeatNs
	st.Version = &a.Version
	st.ProvisionerType = &a.ProvisionerType
	if a.Capabilities != nil {
		st.Capabilities = a.Capabilities
	}
	st.ActiveContracts = a.ActiveContracts
	st.Resources = a.Resources
	// dc-api's extension: every agent of the provider, so that each of its
	// agents can show the others (the live API has one status per
	// provider). Public, so a key prefix and no version.
	for _, g := range agents {
		pa := dcapi.ProviderAgent{KeyPrefix: g.AgentPubkey[:min(len(g.AgentPubkey), dcapi.AgentKeyPrefixLen)], Online: g.Online(nowNs),
			LastHeartbeatNs: g.LastHeartbeatNs, ActiveContracts: g.ActiveContracts}
		if g.ProvisionerType != "" {
			pa.ProvisionerType = &g.ProvisionerType
		}
		st.Agents = append(st.Agents, pa)
	}
	return st, nil
}
