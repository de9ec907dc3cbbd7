-- The tower-device-flow schema, for PostgreSQL and SQLite alike (the README documents it
-- table by table). Codes and tokens appear only as SHA-256 digests, client secrets likewise:
-- nothing here can be presented to the server. Times are Unix milliseconds. SQLite accepts
-- every type name used here: BYTEA gets NUMERIC affinity there, which keeps blobs as they are.

-- Clients the application registers in the database (next to those registered in-process).
CREATE TABLE clients (
    client_id     TEXT PRIMARY KEY,
    -- SHA-256 of the client secret; NULL for a public client.
    secret_sha256 BYTEA,
    -- Space-separated scope tokens the client may ask for.
    allowed_scope TEXT NOT NULL,
    -- The scope granted when a request names none; NULL: the allowed scope.
    default_scope TEXT,
    -- Shown to end users on the verification page.
    name          TEXT
);

-- Pending device authorizations (RFC 8628 3.1-3.5), until 10 minutes after they expire.
CREATE TABLE device_grants (
    device_code       BYTEA PRIMARY KEY,
    user_code         BYTEA NOT NULL UNIQUE,
    version           BIGINT NOT NULL,
    client_id         TEXT NOT NULL,
    scope             TEXT NOT NULL,
    audience          TEXT,
    created_at        BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    retain_until      BIGINT NOT NULL,
    interval_secs     BIGINT NOT NULL,
    last_poll         BIGINT,
    status            TEXT NOT NULL
        CHECK (status IN ('pending', 'approved', 'denied', 'redeemed')),
    subject           TEXT,
    approved_at       BIGINT,
    origin_address    TEXT,
    origin_user_agent TEXT,
    CHECK (status <> 'approved' OR (subject IS NOT NULL AND approved_at IS NOT NULL))
);
CREATE INDEX device_grants_retain_until ON device_grants (retain_until);
CREATE INDEX device_grants_pending ON device_grants (expires_at) WHERE status = 'pending';

-- Approved devices and their token family: the refresh token is a digest in its grant's row.
CREATE TABLE grants (
    id               BYTEA PRIMARY KEY,
    version          BIGINT NOT NULL,
    client_id        TEXT NOT NULL,
    subject          TEXT NOT NULL,
    scope            TEXT NOT NULL,
    audience         TEXT,
    approved_at      BIGINT NOT NULL,
    last_used_at     BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    access_token     BYTEA NOT NULL,
    refresh_token    BYTEA,
    superseded_token BYTEA,
    superseded_at    BIGINT,
    cnf              BYTEA,
    -- When the row may go: the later of expires_at and its access token's expiry (a token
    -- lives until its own expiry, and needs its grant's subject and client).
    keep_until       BIGINT NOT NULL
);
CREATE INDEX grants_subject ON grants (subject);
CREATE INDEX grants_keep_until ON grants (keep_until);

-- Access tokens. A token cannot outlive its grant: deleting the grant deletes its tokens.
CREATE TABLE access_tokens (
    digest     BYTEA PRIMARY KEY,
    grant_id   BYTEA NOT NULL REFERENCES grants (id) ON DELETE CASCADE,
    scope      TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    audience   TEXT,
    cnf        BYTEA
);
CREATE INDEX access_tokens_grant_id ON access_tokens (grant_id);
CREATE INDEX access_tokens_expires_at ON access_tokens (expires_at);

-- Fixed-window counters of the flood and guessing limits.
CREATE TABLE counters (
    key       TEXT PRIMARY KEY,
    value     BIGINT NOT NULL,
    resets_at BIGINT NOT NULL,
    -- 1 if the latest increment counted: what the upsert's RETURNING reports.
    counted   BIGINT NOT NULL
);
CREATE INDEX counters_resets_at ON counters (resets_at);

-- One-time values (DPoP proof `jti` digests), claimed until a time.
CREATE TABLE claims (
    digest BYTEA PRIMARY KEY,
    until  BIGINT NOT NULL
);
CREATE INDEX claims_until ON claims (until);
