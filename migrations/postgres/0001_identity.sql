-- Identity: users, devices, refresh-token sessions and revocations; the tables of
-- migrations/sqlite/0001_identity.sql in PostgreSQL's types, so `signet store copy` maps them
-- one to one. Times are Unix seconds. Secrets (passwords, refresh tokens, device keys) are
-- stored only as hashes.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,               -- random; the `sub` of the user's tokens
    username      TEXT NOT NULL UNIQUE,           -- lower case, validated by the service
    password_hash TEXT NOT NULL,                  -- argon2id PHC string
    roles         TEXT NOT NULL,                  -- JSON array of role names
    created_at    BIGINT NOT NULL
);

CREATE TABLE devices (
    id             TEXT PRIMARY KEY,              -- random; tokens carry `device:<id>`
    owner_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    name           TEXT NOT NULL,
    key_hash       BYTEA NOT NULL,                -- SHA-256 of the 256-bit device key
    created_at     BIGINT NOT NULL,
    key_rotated_at BIGINT NOT NULL,
    last_token_at  BIGINT
);
CREATE INDEX devices_owner ON devices(owner_id);

-- A login session: the refresh tokens descended from one login.
CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,              -- the `sid` claim
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,               -- absolute: rotation does not extend it
    revoked_at     BIGINT,
    revoked_reason TEXT,
    seq            BIGINT GENERATED ALWAYS AS IDENTITY -- insertion order (SQLite's rowid)
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash BYTEA PRIMARY KEY,                 -- SHA-256 of the token
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    issued_at  BIGINT NOT NULL,
    used_at    BIGINT                             -- set once: presenting it again is reuse
);
CREATE INDEX refresh_tokens_session ON refresh_tokens(session_id);

-- Access tokens denied before their expiry (logout). Forgotten once expired.
CREATE TABLE denied_tokens (
    jti        TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

-- Sessions whose access tokens are refused. Forgotten once every such token has expired.
CREATE TABLE revoked_sessions (
    sid          TEXT PRIMARY KEY,
    forget_after BIGINT NOT NULL
);

-- Per-subject cut-offs: tokens of `sub` (or owned by `sub`) issued before `not_before` are refused.
CREATE TABLE subject_cutoffs (
    sub          TEXT PRIMARY KEY,
    not_before   BIGINT NOT NULL,
    forget_after BIGINT                           -- NULL: kept for good
);
