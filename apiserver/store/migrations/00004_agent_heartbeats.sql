-- A heartbeat changes one thing: the agent's last heartbeat time. It now
-- lives in a narrow table of its own, agent_heartbeats (agent id, time):
-- a thousand agents' times fit in a few pages, so a group commit of many
-- heartbeats writes those few pages, not one page of the wide status row
-- (two 64-character keys, version, capabilities, resources…) per agent.
-- The status row gets an integer id for that, and is rewritten only when
-- what the agent reports changes (and every ten minutes).

-- +goose Up
CREATE TABLE provider_agent_status_v4 (
    id                {{.AutoID}},
    provider_pubkey   TEXT NOT NULL REFERENCES providers (pubkey),
    agent_pubkey      TEXT NOT NULL,
    version           TEXT NOT NULL,
    provisioner_type  TEXT NOT NULL,
    capabilities      TEXT,          -- JSON array or NULL
    active_contracts  BIGINT NOT NULL,
    resources         TEXT,          -- JSON object or NULL
    updated_at_ns     BIGINT NOT NULL,
    UNIQUE (provider_pubkey, agent_pubkey)
);
INSERT INTO provider_agent_status_v4
    (provider_pubkey, agent_pubkey, version, provisioner_type, capabilities, active_contracts, resources, updated_at_ns)
    SELECT provider_pubkey, agent_pubkey, version, provisioner_type, capabilities, active_contracts, resources, updated_at_ns
    FROM provider_agent_status ORDER BY provider_pubkey, agent_pubkey;

-- agent_id is provider_agent_status.id.
CREATE TABLE agent_heartbeats (
    agent_id          {{.IntKey}},
    last_heartbeat_ns BIGINT NOT NULL
);
INSERT INTO agent_heartbeats (agent_id, last_heartbeat_ns)
    SELECT n.id, o.last_heartbeat_ns
    FROM provider_agent_status o
    JOIN provider_agent_status_v4 n ON n.provider_pubkey = o.provider_pubkey AND n.agent_pubkey = o.agent_pubkey;

DROP TABLE provider_agent_status;
ALTER TABLE provider_agent_status_v4 RENAME TO provider_agent_status;

-- +goose Down
CREATE TABLE provider_agent_status_v3 (
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
INSERT INTO provider_agent_status_v3
    (provider_pubkey, agent_pubkey, last_heartbeat_ns, version, provisioner_type, capabilities, active_contracts, resources, updated_at_ns)
    SELECT a.provider_pubkey, a.agent_pubkey, COALESCE(h.last_heartbeat_ns, a.updated_at_ns), a.version, a.provisioner_type,
        a.capabilities, a.active_contracts, a.resources, a.updated_at_ns
    FROM provider_agent_status a LEFT JOIN agent_heartbeats h ON h.agent_id = a.id;
DROP TABLE agent_heartbeats;
DROP TABLE provider_agent_status;
ALTER TABLE provider_agent_status_v3 RENAME TO provider_agent_status;
