-- 1. contract_events also carries delegation changes, so that a server
--    caching delegations drops a revoked one at once even when another
--    process made the change. kind: 'contracts' (a contract became
--    offerable) or 'delegations' (a delegation was stored or revoked).
-- 2. provider_health_hourly is clustered on its key (a WITHOUT ROWID table
--    on SQLite), so a summary reads one provider's hours as one range of
--    the table itself, however many providers there are.

-- +goose Up
ALTER TABLE contract_events ADD COLUMN kind TEXT NOT NULL DEFAULT 'contracts';

CREATE TABLE provider_health_hourly_v2 (
    provider_pubkey TEXT NOT NULL,
    hour_start_ns   BIGINT NOT NULL,
    total           BIGINT NOT NULL,
    healthy         BIGINT NOT NULL,
    unhealthy       BIGINT NOT NULL,
    unknown         BIGINT NOT NULL,
    latency_sum     BIGINT NOT NULL,
    latency_count   BIGINT NOT NULL,
    PRIMARY KEY (provider_pubkey, hour_start_ns)
){{.WithoutRowID}};
INSERT INTO provider_health_hourly_v2 SELECT provider_pubkey, hour_start_ns, total, healthy, unhealthy, unknown, latency_sum, latency_count FROM provider_health_hourly;
DROP TABLE provider_health_hourly;
ALTER TABLE provider_health_hourly_v2 RENAME TO provider_health_hourly;

-- +goose Down
ALTER TABLE contract_events DROP COLUMN kind;
