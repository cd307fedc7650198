// Package store is the persistence of the reference API server: providers,
// agent delegations, agent status (heartbeats), contracts with their
// provisioning state machine, and health checks with the hourly roll-up the
// uptime summary reads.
//
// The same code and the same migrations run on SQLite (modernc.org/sqlite,
// pure Go, the default) and PostgreSQL (pgx). Queries are written once with
// '?' placeholders and rebound for PostgreSQL. Every state change that reads
// before it writes runs in one transaction, so a rejected request never leaves
// a partial write.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decent-stuff/dc-agent/identity"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
)

// Dialect names the database behind a Store.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// Policy holds the contract state machine's tunables.
type Policy struct {
	// LockTTL is how long a provisioning lock lives unless renewed.
	LockTTL time.Duration
	// RetryCooldown is how long a contract whose provisioning failed with
	// retry_possible waits before it is offered again.
	RetryCooldown time.Duration
	// MaxAttempts is how many provisioning attempts a contract gets.
	MaxAttempts int
	// ProvisioningTimeout (live rules, live.go): a contract accepted or provisioning
	// for longer than this is failed (live: PROVISIONING_TIMEOUT_SECONDS,
	// 3600 s, api/src/database/contracts/timeouts.rs).
	ProvisioningTimeout time.Duration
}

// DefaultPolicy is what dc-api uses unless told otherwise.
var DefaultPolicy = Policy{LockTTL: 5 * time.Minute, RetryCooldown: time.Minute, MaxAttempts: 3, ProvisioningTimeout: time.Hour}

// Options configure Open.
type Options struct {
	Policy Policy
	// NoMigrate skips applying migrations on open (dc-api migrate applies them).
	NoMigrate bool
	// MaxReadConns bounds the SQLite read pool (default 8).
	MaxReadConns int
}

// Store is a handle on the database. It is safe for concurrent use.
type Store struct {
	dialect Dialect
	dsn     string // as given to Open, without the scheme for SQLite
	// w runs every write. On SQLite it has exactly one connection: writers
	// queue in Go instead of spinning in SQLite's busy handler; other
	// processes (the CLI) are serialised by busy_timeout.
	w *sql.DB
	// r runs reads. On PostgreSQL it is the same pool as w.
	r      *sql.DB
	policy Policy
	qcache sync.Map // query text -> rebound text (PostgreSQL)
	stmts  sync.Map // stmtKey -> *sql.Stmt, for the hot statements
	deleg  delegCache

	hbOnce    sync.Once
	hbStarted bool
	hbCh      chan *hbItem
	quit      chan struct{}
	closed    sync.Once
	hbDone    chan struct{}
	// hbKnown is the heartbeat writer's memory of the status rows it
	// wrote (only that goroutine touches it).
	hbKnown map[[2]string]hbKnown
}

type stmtKey struct {
	db    *sql.DB
	query string
}

// stmt returns a prepared statement for query on db, prepared once. SQLite
// parses a statement on every unprepared call, which costs as much as
// running a small one.
func (s *Store) stmt(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	key := stmtKey{db, query}
	if v, ok := s.stmts.Load(key); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := db.PrepareContext(ctx, s.q(query))
	if err != nil {
		return nil, err
	}
	if v, loaded := s.stmts.LoadOrStore(key, st); loaded {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// Open connects to dsn: "sqlite:PATH" or "postgres://…" / "postgresql://…",
// and applies pending migrations unless opts.NoMigrate.
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	s := &Store{policy: opts.Policy, quit: make(chan struct{}), hbCh: make(chan *hbItem, 1024), hbDone: make(chan struct{}),
		deleg: delegCache{ttl: delegCacheTTL, m: map[string]map[string]delegEntry{}}}
	if s.policy.LockTTL <= 0 {
		s.policy.LockTTL = DefaultPolicy.LockTTL
	}
	if s.policy.RetryCooldown < 0 {
		s.policy.RetryCooldown = 0
	}
	if s.policy.MaxAttempts <= 0 {
		s.policy.MaxAttempts = DefaultPolicy.MaxAttempts
	}
	if s.policy.ProvisioningTimeout <= 0 {
		s.policy.ProvisioningTimeout = DefaultPolicy.ProvisioningTimeout
	}
	switch {
	case strings.HasPrefix(dsn, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite:"), "//")
		if path == "" {
			return nil, errors.New("database: sqlite: needs a file path, e.g. --db sqlite:/var/lib/dc-api/dc-api.db")
		}
		if strings.ContainsAny(path, "?#") {
			return nil, fmt.Errorf("database: sqlite path %q must not contain '?' or '#'", path)
		}
		s.dialect, s.dsn = SQLite, path
		var err error
		if s.w, err = sql.Open("sqlite", sqliteDSN(path, false)); err != nil {
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		s.w.SetMaxOpenConns(1)
		s.w.SetMaxIdleConns(1)
		s.w.SetConnMaxLifetime(0)
		s.w.SetConnMaxIdleTime(0)
		if s.r, err = sql.Open("sqlite", sqliteDSN(path, true)); err != nil {
			s.w.Close()
			return nil, fmt.Errorf("open sqlite %s: %w", path, err)
		}
		n := opts.MaxReadConns
		if n <= 0 {
			n = 8
		}
		s.r.SetMaxOpenConns(n)
		s.r.SetMaxIdleConns(n)
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		s.dialect, s.dsn = Postgres, dsn
		db, err := sql.Open("pgx", dsn)
		if err != nil {
			return nil, fmt.Errorf("open postgres: %w", err)
		}
		db.SetMaxOpenConns(32)
		db.SetMaxIdleConns(32)
		db.SetConnMaxIdleTime(5 * time.Minute)
		s.w, s.r = db, db
	default:
		return nil, fmt.Errorf("database %q: use sqlite:PATH or postgres://USER@HOST:PORT/DB", redactDSN(dsn))
	}
	if err := s.w.PingContext(ctx); err != nil {
		s.Close()
		return nil, fmt.Errorf("connect to %s database %s: %w", s.dialect, redactDSN(dsn), err)
	}
	if !opts.NoMigrate {
		if _, err := s.Migrate(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// sqliteDSN builds the modernc DSN: WAL (readers never block the writer),
// busy_timeout so that a CLI writing while the server runs waits instead of
// failing, foreign keys on, and BEGIN IMMEDIATE for write transactions so
// two writers never deadlock on a read-to-write upgrade.
func sqliteDSN(path string, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "foreign_keys(1)")
	if readOnly {
		q.Add("_pragma", "query_only(1)")
	} else {
		q.Set("_txlock", "immediate")
	}
	return "file:" + path + "?" + q.Encode()
}

// redactDSN hides a password in a PostgreSQL URL for messages and logs.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.User == nil {
		return dsn
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Dialect reports the database kind.
func (s *Store) Dialect() Dialect { return s.dialect }

// Policy reports the state machine's tunables.
func (s *Store) Policy() Policy { return s.policy }

// Describe names the database for logs (password redacted).
func (s *Store) Describe() string {
	if s.dialect == SQLite {
		return "sqlite:" + s.dsn
	}
	return redactDSN(s.dsn)
}

// Close stops the heartbeat writer and closes the pools.
func (s *Store) Close() error {
	s.closed.Do(func() { close(s.quit) })
	// A writer that never started will not start now; one that did is
	// waited for, so no batch is cut off half-way.
	s.hbOnce.Do(func() {})
	if s.hbStarted {
		<-s.hbDone
	}
	s.stmts.Range(func(k, v any) bool {
		v.(*sql.Stmt).Close()
		return true
	})
	var errs []error
	if s.w != nil {
		errs = append(errs, s.w.Close())
	}
	if s.r != nil && s.r != s.w {
		errs = append(errs, s.r.Close())
	}
	return errors.Join(errs...)
}

// DB exposes the write pool for tests and benchmarks (EXPLAIN, bulk seeding).
func (s *Store) DB() *sql.DB { return s.w }

// q rebinds '?' placeholders to $1, $2… for PostgreSQL. Queries in this
// package never contain '?' inside string literals.
func (s *Store) q(query string) string {
	if s.dialect != Postgres {
		return query
	}
	if v, ok := s.qcache.Load(query); ok {
		return v.(string)
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	out := b.String()
	s.qcache.Store(query, out)
	return out
}

// forUpdate is the row-lock suffix of a SELECT inside a write transaction.
// SQLite needs none: BEGIN IMMEDIATE already serialises writers.
func (s *Store) forUpdate() string {
	if s.dialect == Postgres {
		return " FOR UPDATE"
	}
	return ""
}

// tx runs fn in a write transaction, committing if it returns nil.
func (s *Store) tx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// ErrorKind classifies a Store error by what the caller did wrong.
type ErrorKind int

const (
	// KindInvalid: the input is malformed or out of range (HTTP 422/400).
	KindInvalid ErrorKind = iota + 1
	// KindNotFound: the named object does not exist (HTTP 404).
	KindNotFound
	// KindConflict: the object exists but its state forbids the change (HTTP 409).
	KindConflict
	// KindForbidden: the caller may not do this to this object (HTTP 403).
	KindForbidden
	// KindGone: the object existed but has expired (HTTP 410).
	KindGone
)

// Error is a refusal with a message for the API client. Database failures
// are returned as plain wrapped errors instead.
type Error struct {
	Kind ErrorKind
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

func invalidf(format string, a ...any) error {
	return &Error{Kind: KindInvalid, Msg: fmt.Sprintf(format, a...)}
}
func notFoundf(format string, a ...any) error {
	return &Error{Kind: KindNotFound, Msg: fmt.Sprintf(format, a...)}
}
func conflictf(format string, a ...any) error {
	return &Error{Kind: KindConflict, Msg: fmt.Sprintf(format, a...)}
}
func gonef(format string, a ...any) error {
	return &Error{Kind: KindGone, Msg: fmt.Sprintf(format, a...)}
}
func forbiddenf(format string, a ...any) error {
	return &Error{Kind: KindForbidden, Msg: fmt.Sprintf(format, a...)}
}

// KindOf returns the kind of a refusal, or 0 for other errors.
func KindOf(err error) ErrorKind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// wrapErr adds what failed (format, args) to an unclassified error; nil and
// a classified error (KindOf, worded for the caller) stay as they are.
func wrapErr(err error, format string, args ...any) error {
	if err == nil || KindOf(err) != 0 {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}

// IsNotFound reports whether err says the object does not exist.
func IsNotFound(err error) bool { return KindOf(err) == KindNotFound }

// Helpers for nullable columns.

func nullStr(p *string) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullInt64(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

func nullInt(p *int) any {
	if p == nil {
		return nil
	}
	return int64(*p)
}

func strPtr(ns sql.NullString) *string {
	if !ns.Valid {
		return nil
	}
	v := ns.String
	return &v
}

func int64Ptr(ni sql.NullInt64) *int64 {
	if !ni.Valid {
		return nil
	}
	v := ni.Int64
	return &v
}

func intPtr(ni sql.NullInt64) *int {
	if !ni.Valid {
		return nil
	}
	v := int(ni.Int64)
	return &v
}

// isLowerHex64 reports whether s is 64 lowercase hex characters (a key or a
// contract id on the wire).
func isLowerHex64(s string) bool { return identity.IsLowerHex64(s) }
