package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Provider is a registered provider.
type Provider struct {
	Pubkey      string `json:"pubkey"`
	Name        string `json:"name"`
	CreatedAtNs int64  `json:"created_at_ns"`
}

// MaxProviderName bounds a provider's display name.
const MaxProviderName = 100

// AddProvider registers a provider, or renames it if it exists (name "" keeps
// the old name). It returns whether the provider is new.
func (s *Store) AddProvider(ctx context.Context, pubkey, name string, nowNs int64) (created bool, err error) {
	if !isLowerHex64(pubkey) {
		return false, invalidf("provider public key must be 64 lowercase hex characters, got %q", clip(pubkey))
	}
	if err := validText("provider name", name, MaxProviderName); err != nil {
		return false, err
	}
	err = s.tx(ctx, func(tx *sql.Tx) error {
		var old string
		switch err := tx.QueryRowContext(ctx, s.q(`SELECT name FROM providers WHERE pubkey = ?`), pubkey).Scan(&old); {
		case errors.Is(err, sql.ErrNoRows):
			created = true
			_, err = tx.ExecContext(ctx, s.q(`INSERT INTO providers (pubkey, name, created_at_ns) VALUES (?, ?, ?)`), pubkey, name, nowNs)
			return err
		case err != nil:
			return err
		case name != "" && name != old:
			_, err = tx.ExecContext(ctx, s.q(`UPDATE providers SET name = ? WHERE pubkey = ?`), name, pubkey)
			return err
		}
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("add provider: %w", err)
	}
	return created, nil
}

// GetProvider returns a provider or a KindNotFound error.
func (s *Store) GetProvider(ctx context.Context, pubkey string) (Provider, error) {
	var p Provider
	err := s.r.QueryRowContext(ctx, s.q(`SELECT pubkey, name, created_at_ns FROM providers WHERE pubkey = ?`), pubkey).
		Scan(&p.Pubkey, &p.Name, &p.CreatedAtNs)
	if errors.Is(err, sql.ErrNoRows) {
		return p, errProviderUnknown(pubkey)
	}
	if err != nil {
		return p, fmt.Errorf("read provider: %w", err)
	}
	return p, nil
}

func errProviderUnknown(pubkey string) error {
	return notFoundf("provider %s is not registered on this server (operator: dc-api provider add %s)", clip(pubkey), clip(pubkey))
}

// ListProviders returns every provider, oldest first.
func (s *Store) ListProviders(ctx context.Context) ([]Provider, error) {
	rows, err := s.r.QueryContext(ctx, `SELECT pubkey, name, created_at_ns FROM providers ORDER BY created_at_ns, pubkey`)
	if err != nil {
		return nil, fmt.Errorf("list providers: %w", err)
	}
	defer rows.Close()
	var out []Provider
	for rows.Next() {
		var p Provider
		if err := rows.Scan(&p.Pubkey, &p.Name, &p.CreatedAtNs); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// providerExists checks inside a transaction.
func (s *Store) providerExists(ctx context.Context, q queryer, pubkey string) error {
	var one int
	err := q.QueryRowContext(ctx, s.q(`SELECT 1 FROM providers WHERE pubkey = ?`), pubkey).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return errProviderUnknown(pubkey)
	}
	return err
}

// queryer is what *sql.DB and *sql.Tx share.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// validText refuses invalid UTF-8, control characters and overlong values.
func validText(what, v string, max int) error {
	if !utf8.ValidString(v) {
		return invalidf("%s is not valid UTF-8", what)
	}
	if n := utf8.RuneCountInString(v); n > max {
		return invalidf("%s is %d characters; at most %d", what, n, max)
	}
	for _, r := range v {
		if unicode.IsControl(r) {
			return invalidf("%s must not contain control characters", what)
		}
	}
	return nil
}

// clip shortens a value quoted back in an error message.
func clip(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
