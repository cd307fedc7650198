package store

import (
	"context"
	"fmt"
)

// RecordNonce records that key signed a request with the nonce whose hash
// is nonceHash at tsNs, in the replay cache shared by every dc-api on this
// database. It reports false when the pair was recorded before: a replay.
func (s *Store) RecordNonce(ctx context.Context, key, nonceHash string, tsNs int64) (bool, error) {
	st, err := s.stmt(ctx, s.w, `INSERT INTO request_nonces (signer_pubkey, nonce_hash, ts_ns) VALUES (?, ?, ?)
		ON CONFLICT (signer_pubkey, nonce_hash) DO NOTHING`)
	if err != nil {
		return false, fmt.Errorf("record nonce: %w", err)
	}
	res, err := st.ExecContext(ctx, key, nonceHash, tsNs)
	if err != nil {
		return false, fmt.Errorf("record nonce: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("record nonce: %w", err)
	}
	return n == 1, nil
}

// ExpireNonces forgets the shared replay cache's nonces of requests signed
// before beforeNs (the time window refuses them anyway) and returns how
// many.
func (s *Store) ExpireNonces(ctx context.Context, beforeNs int64) (int64, error) {
	res, err := s.w.ExecContext(ctx, s.q(`DELETE FROM request_nonces WHERE ts_ns < ?`), beforeNs)
	if err != nil {
		return 0, fmt.Errorf("expire nonces: %w", err)
	}
	return res.RowsAffected()
}
