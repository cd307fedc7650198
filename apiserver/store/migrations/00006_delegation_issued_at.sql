-- When the provider signed a delegation: the issued_at_ns line of its
-- canonical text (PROTOCOL.md §3), or when a setup token registered the
-- agent. NULL for a code of the older form, which orders before any
-- stamped one: an agent-signed registration may not replace a delegation
-- issued later than its own (a rollback to a wider or longer grant).

-- +goose Up
ALTER TABLE provider_agent_delegations ADD COLUMN issued_at_ns BIGINT;

-- +goose Down
ALTER TABLE provider_agent_delegations DROP COLUMN issued_at_ns;
