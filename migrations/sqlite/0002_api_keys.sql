-- API keys of backends calling the publish API (`/api/hubs/{hub}/...`): created and revoked by an
-- administrator, shown once at creation; only the SHA-256 of the key's secret part is kept.

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,        -- random, 16 hex digits; part of the key, shown in lists
    name        TEXT NOT NULL,                    -- what the key is for, for people
    secret_hash BLOB NOT NULL,                    -- SHA-256 of the 256-bit secret after the id
    scopes      TEXT NOT NULL,                    -- JSON array: "hub:<hub|*>:<action|*>"
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER                           -- set once: the key is refused from then on
);
