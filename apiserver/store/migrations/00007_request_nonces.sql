-- The replay cache shared by the dc-api instances on one database
-- (dc-api serve --replay-cache database): each signed request's nonce, by
-- the key that signed it, kept while the request could still pass the
-- ±5 minute window (ts_ns is its X-Timestamp). nonce_hash is the first 16
-- bytes of the nonce's SHA-256, hex.

-- +goose Up
CREATE TABLE request_nonces (
    signer_pubkey TEXT NOT NULL,
    nonce_hash    TEXT NOT NULL,
    ts_ns         BIGINT NOT NULL,
    PRIMARY KEY (signer_pubkey, nonce_hash)
){{.WithoutRowID}};
CREATE INDEX idx_request_nonces_ts ON request_nonces (ts_ns);

-- +goose Down
DROP TABLE request_nonces;
