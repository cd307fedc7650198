-- provider_agent_status is rewritten by every heartbeat; its secondary index
-- on (provider_pubkey, last_heartbeat_ns) changed with every one of them (a
-- delete and an insert in a second b-tree, more pages per group commit) to
-- serve one query, the agents of one provider newest first, which the
-- primary key (provider_pubkey, agent_pubkey) already narrows to that
-- provider's few rows.

-- +goose Up
DROP INDEX IF EXISTS idx_agent_status_heartbeat;

-- +goose Down
CREATE INDEX idx_agent_status_heartbeat ON provider_agent_status (provider_pubkey, last_heartbeat_ns);
