-- API keys of backends calling the publish API (`/api/hubs/{hub}/...`): the table of
-- migrations/sqlite/0002_api_keys.sql in PostgreSQL's types. Only the SHA-256 of the key's
-- secret part is kept. Every node reads the key on every call, so a revocation holds at once.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,                 -- random, 16 hex digits; part of the key, shown in lists
    name        TEXT NOT NULL,                    -- what the key is for, for people
    secret_hash BYTEA NOT NULL,                   -- SHA-256 of the 256-bit secret after the id
    scopes      TEXT NOT NULL,                    -- JSON array: "hub:<hub|*>:<action|*>"
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT                            -- set once: the key is refused from then on
);
