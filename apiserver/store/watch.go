package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Change kinds, as stored in contract_events.kind and as PostgreSQL NOTIFY
// channels (dc_<kind>); the payload is the provider's public key.
const (
	kindContracts   = "contracts"
	kindDelegations = "delegations"
)

func pgChannel(kind string) string { return "dc_" + kind }

// eventRetention is how long contract_events rows are kept (SQLite).
const eventRetention = time.Hour

// signal records a change of kind for provider inside tx, for servers in
// other processes (and this one's watcher). In-process wake-ups are the
// caller's.
func (s *Store) signal(ctx context.Context, tx *sql.Tx, kind, provider string, nowNs int64) error {
	if s.dialect == Postgres {
		_, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, pgChannel(kind), provider)
		return err
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO contract_events (provider_pubkey, created_at_ns, kind) VALUES (?, ?, ?)`, provider, nowNs, kind)
	return err
}

// signalOffer records that provider has a newly offerable contract.
func (s *Store) signalOffer(ctx context.Context, tx *sql.Tx, provider string, nowNs int64) error {
	return s.signal(ctx, tx, kindContracts, provider, nowNs)
}

// Watch reports changes made through any process sharing the database —
// dc-api contract create while the server runs — until ctx is done:
// wake(provider) when a contract became offerable. Delegation changes made
// elsewhere drop this store's delegation cache for that provider. On SQLite
// one goroutine polls PRAGMA data_version — which changes only when another
// connection commits — every interval and then reads the new contract_events
// rows; on PostgreSQL it LISTENs. After a lost connection it calls wakeAll
// and drops the whole cache, since notifications may have been missed.
func (s *Store) Watch(ctx context.Context, interval time.Duration, wake func(provider string), wakeAll func()) error {
	if interval <= 0 {
		interval = 150 * time.Millisecond
	}
	on := func(kind, provider string) {
		switch kind {
		case kindDelegations:
			s.deleg.dropProvider(provider)
		default:
			wake(provider)
		}
	}
	all := func() {
		s.deleg.dropAll()
		wakeAll()
	}
	if s.dialect == Postgres {
		return s.watchPostgres(ctx, on, all)
	}
	return s.watchSQLite(ctx, interval, on, all)
}

func (s *Store) watchSQLite(ctx context.Context, interval time.Duration, on func(kind, provider string), all func()) error {
	var conn *sql.Conn
	var lastVersion, lastID int64
	lastPrune := time.Now()
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if conn == nil {
			c, err := s.r.Conn(ctx)
			if err == nil {
				err = c.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) FROM contract_events`).Scan(&lastID)
				if err == nil {
					err = c.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&lastVersion)
				}
				if err != nil {
					c.Close()
				} else {
					conn = c
					all()
				}
			}
		}
		if conn != nil {
			if err := pollSQLite(ctx, conn, &lastVersion, &lastID, on); err != nil {
				conn.Close()
				conn = nil
			}
		}
		if time.Since(lastPrune) > eventRetention/4 {
			lastPrune = time.Now()
			_, _ = s.w.ExecContext(ctx, `DELETE FROM contract_events WHERE created_at_ns < ?`, time.Now().Add(-eventRetention).UnixNano())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func pollSQLite(ctx context.Context, conn *sql.Conn, lastVersion, lastID *int64, on func(kind, provider string)) error {
	var v int64
	if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return err
	}
	if v == *lastVersion {
		return nil
	}
	*lastVersion = v
	rows, err := conn.QueryContext(ctx, `SELECT id, kind, provider_pubkey FROM contract_events WHERE id > ? ORDER BY id`, *lastID)
	if err != nil {
		return err
	}
	defer rows.Close()
	seen := map[[2]string]bool{}
	for rows.Next() {
		var id int64
		var k, p string
		if err := rows.Scan(&id, &k, &p); err != nil {
			return err
		}
		*lastID = id
		if key := [2]string{k, p}; !seen[key] {
			seen[key] = true
			on(k, p)
		}
	}
	return rows.Err()
}

func (s *Store) watchPostgres(ctx context.Context, on func(kind, provider string), all func()) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		_ = s.listenOnce(ctx, on, all, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, on func(kind, provider string), all func(), connected func()) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, k := range []string{kindContracts, kindDelegations} {
		if _, err := conn.Exec(ctx, "LISTEN "+pgChannel(k)); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
	}
	connected()
	all()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		switch n.Channel {
		case pgChannel(kindDelegations):
			on(kindDelegations, n.Payload)
		default:
			on(kindContracts, n.Payload)
		}
	}
}
