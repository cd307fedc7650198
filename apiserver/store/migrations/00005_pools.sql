-- Agent pools and setup tokens (the live API's registration,
-- api/src/database/agent_pools.rs), pools on delegations and contracts, and
-- the contract states paused and expired (common/src/contract_status.rs).
--
-- A setup token is stored as its SHA-256 (token_hash): the token itself is
-- shown once, when it is made. token_hint (apt_<location>_ and the first
-- four hex digits) names it in listings.

-- +goose Up
CREATE TABLE agent_pools (
    pool_id          TEXT PRIMARY KEY,
    provider_pubkey  TEXT NOT NULL REFERENCES providers (pubkey),
    name             TEXT NOT NULL,
    location         TEXT NOT NULL,
    provisioner_type TEXT NOT NULL,
    created_at_ns    BIGINT NOT NULL
);
CREATE INDEX idx_agent_pools_provider ON agent_pools (provider_pubkey);

CREATE TABLE agent_setup_tokens (
    token_hash    TEXT PRIMARY KEY,
    token_hint    TEXT NOT NULL,
    pool_id       TEXT NOT NULL REFERENCES agent_pools (pool_id) ON DELETE CASCADE,
    label         TEXT,
    created_at_ns BIGINT NOT NULL,
    expires_at_ns BIGINT NOT NULL,
    used_at_ns    BIGINT,
    used_by_agent TEXT
);
CREATE INDEX idx_setup_tokens_pool ON agent_setup_tokens (pool_id);

-- NULL: registered by an offline-signed delegation, in no pool.
ALTER TABLE provider_agent_delegations ADD COLUMN pool_id TEXT;

-- The offering's pool (NULL: none, matched by datacenter country) and
-- country, as pending-provision filters them.
ALTER TABLE contracts ADD COLUMN agent_pool_id TEXT;
ALTER TABLE contracts ADD COLUMN datacenter_country TEXT;
ALTER TABLE contracts ADD COLUMN paused_at_ns BIGINT;
ALTER TABLE contracts ADD COLUMN pause_reason TEXT;

-- +goose Down
ALTER TABLE contracts DROP COLUMN pause_reason;
ALTER TABLE contracts DROP COLUMN paused_at_ns;
ALTER TABLE contracts DROP COLUMN datacenter_country;
ALTER TABLE contracts DROP COLUMN agent_pool_id;
ALTER TABLE provider_agent_delegations DROP COLUMN pool_id;
DROP TABLE agent_setup_tokens;
DROP TABLE agent_pools;
