-- Tenant requests: a new root password (password reset) or a new SSH key
-- (key rotation) for a running contract, queued for the provider's agent.
-- The live API keeps them as columns of contract_provisioning_details
-- (password_reset_requested_at_ns, pending_requester_ssh_pubkey,
-- ssh_key_rotation_requested_at_ns: api/src/database/contracts/provisioning.rs);
-- here one row per contract and kind holds the latest request, and what
-- became of it: done_at_ns when the agent reported it, error when the
-- agent reported that it failed (what the tenant reads).

-- +goose Up
CREATE TABLE tenant_requests (
    contract_id     TEXT NOT NULL REFERENCES contracts (contract_id),
    kind            TEXT NOT NULL, -- password_reset | ssh_key_rotation
    requested_at_ns BIGINT NOT NULL,
    ssh_pubkey      TEXT,          -- the key a rotation adds
    done_at_ns      BIGINT,        -- NULL while pending
    error           TEXT,          -- the agent's failure report, if it failed
    PRIMARY KEY (contract_id, kind)
);
CREATE INDEX idx_tenant_requests_pending ON tenant_requests (kind, done_at_ns);

-- +goose Down
DROP TABLE tenant_requests;
