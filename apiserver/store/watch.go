package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// pgChannel is the NOTIFY channel of newly offerable contracts; the payload
// is the provider's public key.
const pgChannel = "dc_contracts"

// eventRetention is how long contract_events rows are kept (SQLite).
const eventRetention = time.Hour

// Watch reports contracts that became offerable through any process sharing
// the database (dc-api contract create while the server runs) by calling
// wake(provider). On SQLite one goroutine polls PRAGMA data_version — which
// changes only when another connection commits — every interval and then
// reads the new contract_events rows; on PostgreSQL it LISTENs. After a
// lost connection it calls wakeAll, since notifications may have been
// missed. It returns when ctx is done.
func (s *Store) Watch(ctx context.Context, interval time.Duration, wake func(provider string), wakeAll func()) error {
	if interval <= 0 {
		interval = 150 * time.Millisecond
	}
	if s.dialect == Postgres {
		return s.watchPostgres(ctx, wake, wakeAll)
	}
	return s.watchSQLite(ctx, interval, wake, wakeAll)
}

func (s *Store) watchSQLite(ctx context.Context, interval time.Duration, wake func(string), wakeAll func()) error {
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
					wakeAll()
				}
			}
		}
		if conn != nil {
			if err := s.pollSQLite(ctx, conn, &lastVersion, &lastID, wake); err != nil {
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

func (s *Store) pollSQLite(ctx context.Context, conn *sql.Conn, lastVersion, lastID *int64, wake func(string)) error {
	var v int64
	if err := conn.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return err
	}
	if v == *lastVersion {
		return nil
	}
	*lastVersion = v
	rows, err := conn.QueryContext(ctx, `SELECT id, provider_pubkey FROM contract_events WHERE id > ? ORDER BY id`, *lastID)
	if err != nil {
		return err
	}
	defer rows.Close()
	seen := map[string]bool{}
	for rows.Next() {
		var id int64
		var p string
		if err := rows.Scan(&id, &p); err != nil {
			return err
		}
		*lastID = id
		if !seen[p] {
			seen[p] = true
			wake(p)
		}
	}
	return rows.Err()
}

func (s *Store) watchPostgres(ctx context.Context, wake func(string), wakeAll func()) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, wake, wakeAll, func() { backoff = 100 * time.Millisecond })
		if ctx.Err() != nil {
			return nil
		}
		_ = err // reconnect below; the server logs nothing per retry
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
	return nil
}

func (s *Store) listenOnce(ctx context.Context, wake func(string), wakeAll func(), connected func()) error {
	conn, err := pgx.Connect(ctx, s.dsn)
	if err != nil {
		return fmt.Errorf("listen: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, "LISTEN "+pgChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	connected()
	wakeAll()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		wake(n.Payload)
	}
}
