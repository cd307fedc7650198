-- The schema of SPEC.md (provider_agent_delegations, provider_agent_status,
-- contract_health_checks) plus what the reference server needs around it:
-- providers, contracts with their provisioning state, an hourly health
-- roll-up for the uptime summary, and a change log that wakes long-polls.
--
-- This one file serves SQLite and PostgreSQL. {{.AutoID}} is the only
-- dialect-specific piece (store/migrate.go renders it). Keys and ids are
-- lowercase hex TEXT, times BIGINT nanoseconds, JSON is TEXT.

-- +goose Up
CREATE TABLE providers (
    pubkey        TEXT PRIMARY KEY,
    name          TEXT NOT NULL DEFAULT '',
    created_at_ns BIGINT NOT NULL
);

-- One delegation per (provider, agent key); SPEC.md makes agent_pubkey
-- unique on its own, but that would let any provider overwrite (and so
-- disable) another provider's agent by posting a delegation for its key.
CREATE TABLE provider_agent_delegations (
    id              {{.AutoID}},
    provider_pubkey TEXT NOT NULL REFERENCES providers (pubkey),
    agent_pubkey    TEXT NOT NULL,
    permissions     TEXT NOT NULL, -- JSON array, sorted
    expires_at_ns   BIGINT,        -- NULL = never
    label           TEXT,
    signature       TEXT NOT NULL, -- hex Ed25519ph over the canonical text
    created_at_ns   BIGINT NOT NULL,
    revoked_at_ns   BIGINT,        -- NULL = active
    UNIQUE (provider_pubkey, agent_pubkey)
);
CREATE INDEX idx_agent_delegations_agent ON provider_agent_delegations (agent_pubkey);

-- One row per agent. "online" is not stored: it is a heartbeat within the
-- last 5 minutes, evaluated when read.
CREATE TABLE provider_agent_status (
    provider_pubkey   TEXT NOT NULL REFERENCES providers (pubkey),
    agent_pubkey      TEXT NOT NULL,
    last_heartbeat_ns BIGINT NOT NULL,
    version           TEXT NOT NULL,
    provisioner_type  TEXT NOT NULL,
    capabilities      TEXT,          -- JSON array or NULL
    active_contracts  BIGINT NOT NULL,
    resources         TEXT,          -- JSON object or NULL
    updated_at_ns     BIGINT NOT NULL,
    PRIMARY KEY (provider_pubkey, agent_pubkey)
);
CREATE INDEX idx_agent_status_heartbeat ON provider_agent_status (provider_pubkey, last_heartbeat_ns);

CREATE TABLE contracts (
    contract_id             TEXT PRIMARY KEY,
    provider_pubkey         TEXT NOT NULL REFERENCES providers (pubkey),
    offering_id             TEXT NOT NULL,
    requester_ssh_pubkey    TEXT NOT NULL,
    requester_pubkey        TEXT,
    instance_config         TEXT,
    cpu_cores               BIGINT,
    memory_amount           TEXT,
    storage_capacity        TEXT,
    provisioner_type        TEXT,
    provisioner_config      TEXT,
    post_provision_script   TEXT,
    product_type            TEXT,
    datacenter_city         TEXT,
    payment_confirmed_at_ns BIGINT,
    status                  TEXT NOT NULL,
    created_at_ns           BIGINT NOT NULL,
    status_updated_at_ns    BIGINT NOT NULL,
    ends_at_ns              BIGINT,
    -- offer_after_ns: when pending-provision next offers the contract to
    -- agents; NULL = not offered (provisioned, failed for good, cancelled…).
    offer_after_ns          BIGINT,
    lock_agent              TEXT,
    lock_expires_at_ns      BIGINT,
    provisioning_agent      TEXT,
    failure_count           BIGINT NOT NULL DEFAULT 0,
    last_error              TEXT,
    instance_details        TEXT,
    external_instance_id    TEXT,
    provisioned_at_ns       BIGINT,
    cancelled_at_ns         BIGINT,
    terminated_at_ns        BIGINT,
    last_health_check_ns    BIGINT,
    last_health_status      TEXT
);
CREATE INDEX idx_contracts_offer ON contracts (provider_pubkey, offer_after_ns) WHERE offer_after_ns IS NOT NULL;
CREATE INDEX idx_contracts_provider_status ON contracts (provider_pubkey, status);
CREATE INDEX idx_contracts_health ON contracts (provider_pubkey, last_health_check_ns);

CREATE TABLE contract_health_checks (
    id              {{.AutoID}},
    contract_id     TEXT NOT NULL REFERENCES contracts (contract_id),
    provider_pubkey TEXT NOT NULL,
    agent_pubkey    TEXT,
    status          TEXT NOT NULL,
    checked_at_ns   BIGINT NOT NULL,
    latency_ms      BIGINT,
    details         TEXT,
    received_at_ns  BIGINT NOT NULL,
    -- An agent's outbox may resend a check whose answer it lost: the same
    -- (contract, time) is stored once, so uptime is not double-counted.
    UNIQUE (contract_id, checked_at_ns)
);
CREATE INDEX idx_health_provider_time ON contract_health_checks (provider_pubkey, checked_at_ns);

-- Per provider and hour, maintained in the transaction that inserts the
-- checks: health-summary reads at most 24 rows per day asked for, however
-- many checks are stored.
CREATE TABLE provider_health_hourly (
    provider_pubkey TEXT NOT NULL,
    hour_start_ns   BIGINT NOT NULL,
    total           BIGINT NOT NULL,
    healthy         BIGINT NOT NULL,
    unhealthy       BIGINT NOT NULL,
    unknown         BIGINT NOT NULL,
    latency_sum     BIGINT NOT NULL,
    latency_count   BIGINT NOT NULL,
    PRIMARY KEY (provider_pubkey, hour_start_ns)
);

-- Appended when a contract becomes offerable, so that a server wakes its
-- long-polling agents even when another process (dc-api contract create)
-- made the change. PostgreSQL also gets a NOTIFY; SQLite servers poll this
-- table when PRAGMA data_version says another connection wrote.
CREATE TABLE contract_events (
    id              {{.AutoID}},
    provider_pubkey TEXT NOT NULL,
    created_at_ns   BIGINT NOT NULL
);

-- +goose Down
DROP TABLE contract_events;
DROP TABLE provider_health_hourly;
DROP TABLE contract_health_checks;
DROP TABLE contracts;
DROP TABLE provider_agent_status;
DROP TABLE provider_agent_delegations;
DROP TABLE providers;
