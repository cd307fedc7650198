-- The gateway (issue 17): dc_ids registered to providers with their
-- acme-dns account (api/src/database/acme_dns.rs acme_dns_accounts), the
-- fake DNS zone the gateway's A records go to (the live server writes them
-- to Cloudflare, api/src/cloudflare_dns.rs), and the per-VM traffic
-- snapshots of heartbeats (api/src/database/bandwidth.rs bandwidth_history).

-- +goose Up
CREATE TABLE gateway_dc_ids (
    dc_id              TEXT PRIMARY KEY,
    provider_pubkey    TEXT NOT NULL,
    acme_username      TEXT NOT NULL,
    acme_password_hash TEXT NOT NULL,
    registered_at_ns   BIGINT NOT NULL
);
CREATE TABLE gateway_dns_records (
    fqdn            TEXT PRIMARY KEY,
    dc_id           TEXT NOT NULL,
    slug            TEXT NOT NULL,
    provider_pubkey TEXT NOT NULL,
    public_ip       TEXT NOT NULL,
    created_at_ns   BIGINT NOT NULL
);
CREATE TABLE bandwidth_history (
    id              {{.AutoID}},
    contract_id     TEXT NOT NULL,
    gateway_slug    TEXT NOT NULL,
    provider_pubkey TEXT NOT NULL,
    bytes_in        BIGINT NOT NULL,
    bytes_out       BIGINT NOT NULL,
    recorded_at_ns  BIGINT NOT NULL
);
CREATE INDEX idx_bandwidth_history_contract ON bandwidth_history (contract_id, recorded_at_ns);

-- +goose Down
DROP TABLE bandwidth_history;
DROP TABLE gateway_dns_records;
DROP TABLE gateway_dc_ids;
