//! What the two SQL stores share: the statements both dialects accept, records to columns and
//! rows to records, the classification of database errors, the time bound on every operation,
//! and the purge schedule.
//!
//! Both dialects take `$n` parameters (SQLite reads `$n` as the n-th argument), `INSERT ...
//! ON CONFLICT ... DO UPDATE ... RETURNING` and the same column types (see the migration), so
//! most statements are written once here. Where the dialects differ (PostgreSQL does a
//! multi-table change in one statement with data-modifying `WITH`, SQLite in an immediate
//! transaction), the statement lives with its store.

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;
use crate::codes::{Digest, Thumbprint};
use crate::family::{Grant, Superseded};
use crate::grant::{DeviceGrant, GrantStatus, RequestOrigin};
use crate::ids::{Audience, ClientId, GrantId, Subject};
use crate::scope::Scope;
use crate::store::records::{Client, Count, TokenInfo, Versioned};
use crate::store::traits::{StoreError, StoreResult};

/// The default bound on one store operation, connection wait included.
pub(crate) const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// The default wait for a pooled connection.
pub(crate) const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// The default period of the purge of expired rows.
pub(crate) const DEFAULT_PURGE_EVERY: Duration = Duration::from_secs(10);
/// The default number of rows one purge statement deletes from one table.
pub(crate) const DEFAULT_PURGE_BATCH: u32 = 1000;
/// How many batches one purge deletes from a table at most, so that a purge stays bounded
/// even behind a large backlog (which later purges then work through).
pub(crate) const PURGE_MAX_BATCHES: u32 = 20;

// ---- times and keys ----

/// A time as stored: Unix milliseconds, saturated at `i64::MAX` (the year 292 million).
pub(crate) fn db_time(t: Timestamp) -> i64 {
    i64::try_from(t.as_unix_millis()).unwrap_or(i64::MAX)
}

/// A count or version as stored.
pub(crate) fn db_u64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Backend(format!("a stored row is not valid: {what}"))
}

fn time(v: i64) -> StoreResult<Timestamp> {
    u64::try_from(v)
        .map(Timestamp::from_unix_millis)
        .map_err(|_| corrupt("negative time"))
}

fn u64_of(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| corrupt(what))
}

fn digest(v: &[u8]) -> StoreResult<Digest> {
    <[u8; 32]>::try_from(v)
        .map(Digest::from_bytes)
        .map_err(|_| corrupt("digest is not 32 bytes"))
}

fn grant_id(v: &[u8]) -> StoreResult<GrantId> {
    <[u8; 16]>::try_from(v)
        .map(GrantId::from_bytes)
        .map_err(|_| corrupt("grant id is not 16 bytes"))
}

fn thumbprint(v: Option<Vec<u8>>) -> StoreResult<Option<Thumbprint>> {
    v.map(|v| {
        <[u8; 32]>::try_from(v.as_slice())
            .map(Thumbprint::from_bytes)
            .map_err(|_| corrupt("thumbprint is not 32 bytes"))
    })
    .transpose()
}

pub(crate) fn scope(s: &str) -> StoreResult<Scope> {
    Scope::parse(s).map_err(|_| corrupt("scope"))
}

/// The union of `registered` (the process's clients) and the scopes of the `clients` table's
/// rows: [`ClientSource::known_scopes`](crate::store::ClientSource::known_scopes) of both
/// SQL stores.
pub(crate) fn union_with_rows(registered: Scope, rows: &[(String,)]) -> StoreResult<Scope> {
    rows.iter()
        .try_fold(registered, |all, (s,)| Ok(all.union(&scope(s)?)))
}

fn audience(s: Option<String>) -> StoreResult<Option<Audience>> {
    s.map(|s| Audience::from_resources(s.split(' ')).map_err(|_| corrupt("audience")))
        .transpose()
}

// ---- device grants ----

/// The columns a device grant is read from, in [`DeviceGrantRow`] order.
macro_rules! device_grant_columns {
    () => {
        "device_code, version, user_code, client_id, scope, audience, created_at, expires_at, \
         interval_secs, last_poll, status, subject, approved_at, origin_address, \
         origin_user_agent"
    };
}

/// `SET` of a device grant's compare-and-swap: [`DeviceGrantValues`] are `$2..$15`.
macro_rules! device_grant_set {
    () => {
        "version = version + 1, user_code = $2, client_id = $3, scope = $4, audience = $5, \
         created_at = $6, expires_at = $7, retain_until = $8, interval_secs = $9, \
         last_poll = $10, status = $11, subject = $12, approved_at = $13, \
         origin_address = $14, origin_user_agent = $15"
    };
}
pub(crate) use device_grant_set;

/// Compare-and-swap of a device grant: `$1` device code, `$2..$15` the new values, `$16` the
/// expected version, `$17` now. Changes one row, or none when the version moved or the row is
/// gone.
macro_rules! update_device_grant {
    () => {
        concat!(
            "UPDATE device_grants SET ",
            $crate::store::sql::shared::device_grant_set!(),
            " WHERE device_code = $1 AND version = $16 AND retain_until > $17"
        )
    };
}
pub(crate) use update_device_grant;

/// A device grant as read.
pub(crate) type DeviceGrantRow = (
    Vec<u8>,
    i64,
    Vec<u8>,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    Option<i64>,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<String>,
);

pub(crate) const SELECT_DEVICE_GRANT: &str = concat!(
    "SELECT ",
    device_grant_columns!(),
    " FROM device_grants WHERE device_code = $1 AND retain_until > $2"
);

pub(crate) const SELECT_DEVICE_GRANT_BY_USER_CODE: &str = concat!(
    "SELECT ",
    device_grant_columns!(),
    " FROM device_grants WHERE user_code = $1 AND retain_until > $2"
);

/// Insert-if-absent: `$1` device code, `$2..$15` [`DeviceGrantValues`]. Inserts nothing when
/// either code is taken (by a live row or by a dead one not yet purged).
pub(crate) const INSERT_DEVICE_GRANT: &str = "INSERT INTO device_grants (device_code, \
     user_code, client_id, scope, audience, created_at, expires_at, retain_until, interval_secs, \
     last_poll, status, subject, approved_at, origin_address, origin_user_agent, version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 0) \
     ON CONFLICT DO NOTHING";

/// Frees the codes of `$1` (device code) and `$2` (user code) held by dead rows (past
/// `retain_until` at `$3`), so that an insert can take them.
pub(crate) const DELETE_DEAD_DEVICE_GRANTS: &str = "DELETE FROM device_grants \
     WHERE (device_code = $1 OR user_code = $2) AND retain_until <= $3";

/// The update without tokens (a poll's bookkeeping, a decision).
pub(crate) const UPDATE_DEVICE_GRANT: &str = update_device_grant!();

pub(crate) const COUNT_PENDING: &str =
    "SELECT COUNT(*) FROM device_grants WHERE status = 'pending' AND expires_at > $1";

/// A device grant's columns, ready to bind (with [`bind_device_grant`]).
pub(crate) struct DeviceGrantValues<'a> {
    pub user_code: &'a [u8],
    pub client_id: &'a str,
    pub scope: &'a str,
    pub audience: Option<&'a str>,
    pub created_at: i64,
    pub expires_at: i64,
    pub retain_until: i64,
    pub interval_secs: i64,
    pub last_poll: Option<i64>,
    pub status: &'static str,
    pub subject: Option<&'a str>,
    pub approved_at: Option<i64>,
    pub origin_address: Option<String>,
    pub origin_user_agent: Option<&'a str>,
}

impl<'a> DeviceGrantValues<'a> {
    pub(crate) fn of(g: &'a DeviceGrant) -> Self {
        let (status, subject, approved_at) = match &g.status {
            GrantStatus::Pending => ("pending", None, None),
            GrantStatus::Approved {
                subject,
                approved_at,
            } => (
                "approved",
                Some(subject.as_str()),
                Some(db_time(*approved_at)),
            ),
            GrantStatus::Denied => ("denied", None, None),
            GrantStatus::Redeemed => ("redeemed", None, None),
        };
        let origin = g.origin.as_deref();
        DeviceGrantValues {
            user_code: g.user_code.as_bytes(),
            client_id: g.client_id.as_str(),
            scope: g.scope.as_str(),
            audience: g.audience.as_ref().map(Audience::as_str),
            created_at: db_time(g.created_at),
            expires_at: db_time(g.expires_at),
            retain_until: db_time(g.retain_until()),
            interval_secs: i64::from(g.interval),
            last_poll: g.last_poll.map(db_time),
            status,
            subject,
            approved_at,
            origin_address: origin.and_then(|o| o.address).map(|a| a.to_string()),
            origin_user_agent: origin.and_then(|o| o.user_agent.as_deref()),
        }
    }
}

/// Binds [`DeviceGrantValues`] as the next fourteen parameters of `$query`.
macro_rules! bind_device_grant {
    ($query:expr, $values:expr) => {{
        let v = $values;
        $query
            .bind(v.user_code)
            .bind(v.client_id)
            .bind(v.scope)
            .bind(v.audience)
            .bind(v.created_at)
            .bind(v.expires_at)
            .bind(v.retain_until)
            .bind(v.interval_secs)
            .bind(v.last_poll)
            .bind(v.status)
            .bind(v.subject)
            .bind(v.approved_at)
            .bind(v.origin_address)
            .bind(v.origin_user_agent)
    }};
}
pub(crate) use bind_device_grant;

pub(crate) fn device_grant_from(
    row: DeviceGrantRow,
) -> StoreResult<(Digest, Versioned<DeviceGrant>)> {
    let (
        device_code,
        version,
        user_code,
        client_id,
        scope_text,
        audience_text,
        created_at,
        expires_at,
        interval_secs,
        last_poll,
        status,
        subject,
        approved_at,
        origin_address,
        origin_user_agent,
    ) = row;
    let status = match (status.as_str(), subject, approved_at) {
        ("pending", _, _) => GrantStatus::Pending,
        ("approved", Some(subject), Some(at)) => GrantStatus::Approved {
            subject: Subject::new(subject),
            approved_at: time(at)?,
        },
        ("denied", _, _) => GrantStatus::Denied,
        ("redeemed", _, _) => GrantStatus::Redeemed,
        _ => return Err(corrupt("device grant status")),
    };
    let origin = if origin_address.is_some() || origin_user_agent.is_some() {
        let address = origin_address
            .map(|a| a.parse::<IpAddr>().map_err(|_| corrupt("origin address")))
            .transpose()?;
        Some(Box::new(RequestOrigin {
            address,
            user_agent: origin_user_agent.map(Box::from),
        }))
    } else {
        None
    };
    let grant = DeviceGrant {
        client_id: ClientId::new(client_id),
        scope: scope(&scope_text)?,
        audience: audience(audience_text)?,
        user_code: digest(&user_code)?,
        created_at: time(created_at)?,
        expires_at: time(expires_at)?,
        interval: u32::try_from(interval_secs).map_err(|_| corrupt("interval"))?,
        last_poll: last_poll.map(time).transpose()?,
        status,
        origin,
    };
    Ok((
        digest(&device_code)?,
        Versioned {
            version: u64_of(version, "version")?,
            record: grant,
        },
    ))
}

// ---- grants ----

/// The columns a grant is read from, in [`GrantRow`] order.
macro_rules! grant_columns {
    () => {
        "id, version, client_id, subject, scope, audience, approved_at, last_used_at, \
         expires_at, access_token, refresh_token, superseded_token, superseded_at, cnf"
    };
}
pub(crate) use grant_columns;

/// The columns a grant is written to: [`grant_columns`] and `keep_until`.
macro_rules! grant_write_columns {
    () => {
        concat!($crate::store::sql::shared::grant_columns!(), ", keep_until")
    };
}
pub(crate) use grant_write_columns;

/// Compare-and-swap of a grant: `$1` id, `$2` the expected version, `$3..$15`
/// [`GrantValues`], `$16` now.
macro_rules! update_grant {
    () => {
        "UPDATE grants SET version = version + 1, client_id = $3, subject = $4, scope = $5, \
         audience = $6, approved_at = $7, last_used_at = $8, expires_at = $9, \
         access_token = $10, refresh_token = $11, superseded_token = $12, superseded_at = $13, \
         cnf = $14, keep_until = $15 WHERE id = $1 AND version = $2 AND expires_at > $16"
    };
}
pub(crate) use update_grant;

/// A grant as read.
pub(crate) type GrantRow = (
    Vec<u8>,
    i64,
    String,
    String,
    String,
    Option<String>,
    i64,
    i64,
    i64,
    Vec<u8>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<i64>,
    Option<Vec<u8>>,
);

pub(crate) const SELECT_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE id = $1 AND expires_at > $2"
);

pub(crate) const SELECT_GRANTS_OF: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM grants WHERE subject = $1 AND expires_at > $2"
);

/// A new grant: `$1` id, `$2..$14` [`GrantValues`], version 0.
pub(crate) const INSERT_GRANT: &str = concat!(
    "INSERT INTO grants (",
    grant_write_columns!(),
    ") VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
);

/// The grant compare-and-swap alone (see [`update_grant`]).
pub(crate) const UPDATE_GRANT: &str = update_grant!();

/// Deletes a grant; `ON DELETE CASCADE` deletes its access tokens in the same statement.
pub(crate) const DELETE_GRANT: &str = concat!(
    "DELETE FROM grants WHERE id = $1 RETURNING ",
    grant_columns!()
);

/// Deletes every grant of a subject, with their access tokens.
pub(crate) const DELETE_GRANTS_OF: &str = concat!(
    "DELETE FROM grants WHERE subject = $1 RETURNING ",
    grant_columns!()
);

/// A grant's columns after `id` and `version`, ready to bind (with [`bind_grant`]).
pub(crate) struct GrantValues<'a> {
    pub keep_until: i64,
    pub client_id: &'a str,
    pub subject: &'a str,
    pub scope: &'a str,
    pub audience: Option<&'a str>,
    pub approved_at: i64,
    pub last_used_at: i64,
    pub expires_at: i64,
    pub access_token: &'a [u8],
    pub refresh_token: Option<&'a [u8]>,
    pub superseded_token: Option<&'a [u8]>,
    pub superseded_at: Option<i64>,
    pub cnf: Option<&'a [u8]>,
}

impl<'a> GrantValues<'a> {
    /// The grant's columns, kept (not live) until the later of its end and `access_expires_at`,
    /// the expiry of the access token stored with it.
    pub(crate) fn of(g: &'a Grant, access_expires_at: Timestamp) -> Self {
        GrantValues {
            keep_until: db_time(g.expires_at.max(access_expires_at)),
            client_id: g.client_id.as_str(),
            subject: g.subject.as_str(),
            scope: g.scope.as_str(),
            audience: g.audience.as_ref().map(Audience::as_str),
            approved_at: db_time(g.approved_at),
            last_used_at: db_time(g.last_used_at),
            expires_at: db_time(g.expires_at),
            access_token: g.access_token.as_bytes(),
            refresh_token: g.refresh_token.as_ref().map(|d| &d.as_bytes()[..]),
            superseded_token: g
                .superseded
                .as_ref()
                .map(|s| &s.refresh_token.as_bytes()[..]),
            superseded_at: g.superseded.map(|s| db_time(s.at)),
            cnf: g.cnf.as_ref().map(|c| &c.as_bytes()[..]),
        }
    }
}

/// Binds [`GrantValues`] as the next thirteen parameters of `$query`.
macro_rules! bind_grant {
    ($query:expr, $values:expr) => {{
        let v = $values;
        $query
            .bind(v.client_id)
            .bind(v.subject)
            .bind(v.scope)
            .bind(v.audience)
            .bind(v.approved_at)
            .bind(v.last_used_at)
            .bind(v.expires_at)
            .bind(v.access_token)
            .bind(v.refresh_token)
            .bind(v.superseded_token)
            .bind(v.superseded_at)
            .bind(v.cnf)
            .bind(v.keep_until)
    }};
}
pub(crate) use bind_grant;

pub(crate) fn grant_from(row: GrantRow) -> StoreResult<Versioned<Grant>> {
    let (
        id,
        version,
        client_id,
        subject,
        scope_text,
        audience_text,
        approved_at,
        last_used_at,
        expires_at,
        access_token,
        refresh_token,
        superseded_token,
        superseded_at,
        cnf,
    ) = row;
    let superseded = match (superseded_token, superseded_at) {
        (Some(token), Some(at)) => Some(Superseded {
            refresh_token: digest(&token)?,
            at: time(at)?,
        }),
        (None, None) => None,
        _ => return Err(corrupt("superseded token without its time")),
    };
    Ok(Versioned {
        version: u64_of(version, "version")?,
        record: Grant {
            id: grant_id(&id)?,
            client_id: ClientId::new(client_id),
            subject: Subject::new(subject),
            scope: scope(&scope_text)?,
            audience: audience(audience_text)?,
            approved_at: time(approved_at)?,
            last_used_at: time(last_used_at)?,
            expires_at: time(expires_at)?,
            access_token: digest(&access_token)?,
            refresh_token: refresh_token.as_deref().map(digest).transpose()?,
            superseded,
            cnf: thumbprint(cnf)?,
        },
    })
}

// ---- access tokens ----

/// An access token with what it takes from its grant; none when the grant is gone. Not the
/// grant's end: a token lives until its own expiry (which callers check), unless revoked.
pub(crate) const SELECT_ACCESS_TOKEN: &str = "SELECT a.scope, a.expires_at, a.audience, a.cnf, \
     g.id, g.subject, g.client_id FROM access_tokens a JOIN grants g ON g.id = a.grant_id \
     WHERE a.digest = $1 AND g.keep_until > $2";

pub(crate) type AccessTokenRow = (
    String,
    i64,
    Option<String>,
    Option<Vec<u8>>,
    Vec<u8>,
    String,
    String,
);

pub(crate) const INSERT_ACCESS_TOKEN: &str = "INSERT INTO access_tokens \
     (digest, grant_id, scope, expires_at, audience, cnf) VALUES ($1, $2, $3, $4, $5, $6)";

pub(crate) const DELETE_ACCESS_TOKEN: &str = "DELETE FROM access_tokens WHERE digest = $1";

/// Deletes the access token `$1` of grant `$2` (a rotation's replaced token).
pub(crate) const DELETE_GRANT_ACCESS_TOKEN: &str =
    "DELETE FROM access_tokens WHERE digest = $1 AND grant_id = $2";

/// An access token's own columns after `digest` and `grant_id`, ready to bind.
pub(crate) struct AccessValues<'a> {
    pub scope: &'a str,
    pub expires_at: i64,
    pub audience: Option<&'a str>,
    pub cnf: Option<&'a [u8]>,
}

impl<'a> AccessValues<'a> {
    pub(crate) fn of(t: &'a TokenInfo) -> Self {
        AccessValues {
            scope: t.scope.as_str(),
            expires_at: db_time(t.expires_at),
            audience: t.audience.as_ref().map(Audience::as_str),
            cnf: t.cnf.as_ref().map(|c| &c.as_bytes()[..]),
        }
    }
}

/// Binds [`AccessValues`] as the next four parameters of `$query`.
macro_rules! bind_access {
    ($query:expr, $values:expr) => {{
        let v = $values;
        $query
            .bind(v.scope)
            .bind(v.expires_at)
            .bind(v.audience)
            .bind(v.cnf)
    }};
}
pub(crate) use bind_access;

pub(crate) fn access_token_from(row: AccessTokenRow) -> StoreResult<TokenInfo> {
    let (scope_text, expires_at, audience_text, cnf, id, subject, client_id) = row;
    Ok(TokenInfo::new(
        Subject::new(subject),
        ClientId::new(client_id),
        scope(&scope_text)?,
        time(expires_at)?,
    )
    .with_grant_id(Some(grant_id(&id)?))
    .with_audience(audience(audience_text)?)
    .with_cnf(thumbprint(cnf)?))
}

// ---- counters and claims ----

/// Fixed-window counter with a ceiling, in one upsert: `$1` key, `$2` the first value of a
/// new window (1, or 0 when the ceiling is 0), `$3` the end of a new window, `$4` now, `$5`
/// the ceiling. Every right-hand side reads the row as it was, so one statement decides and
/// writes; the row lock of the upsert makes concurrent calls take turns.
pub(crate) const TRY_INCREMENT: &str = "INSERT INTO counters (key, value, resets_at, counted) \
     VALUES ($1, $2, $3, $2) ON CONFLICT (key) DO UPDATE SET \
     value = CASE WHEN counters.resets_at <= $4 THEN $2 \
                  WHEN counters.value < $5 THEN counters.value + 1 \
                  ELSE counters.value END, \
     counted = CASE WHEN counters.resets_at <= $4 THEN $2 \
                    WHEN counters.value < $5 THEN 1 ELSE 0 END, \
     resets_at = CASE WHEN counters.resets_at <= $4 THEN $3 ELSE counters.resets_at END \
     RETURNING value, resets_at, counted";

/// The answer of [`TRY_INCREMENT`].
pub(crate) fn count_from(value: i64, resets_at: i64, counted: i64) -> StoreResult<Count> {
    Ok(Count {
        counted: counted == 1,
        value: u64_of(value, "counter value")?,
        resets_at: time(resets_at)?,
    })
}

pub(crate) const DECREMENT: &str = "UPDATE counters SET value = value - 1 \
     WHERE key = $1 AND resets_at > $2 AND value > 0";

/// Claims `$1` until `$2` unless a claim of it is live at `$3`; one row changed iff claimed.
pub(crate) const CLAIM_ONCE: &str = "INSERT INTO claims (digest, until) VALUES ($1, $2) \
     ON CONFLICT (digest) DO UPDATE SET until = excluded.until WHERE claims.until <= $3";

// ---- clients ----

pub(crate) const SELECT_CLIENT: &str = "SELECT client_id, secret_sha256, allowed_scope, \
     default_scope, name FROM clients WHERE client_id = $1";

pub(crate) const UPSERT_CLIENT: &str = "INSERT INTO clients \
     (client_id, secret_sha256, allowed_scope, default_scope, name) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (client_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, \
     allowed_scope = excluded.allowed_scope, default_scope = excluded.default_scope, \
     name = excluded.name";

pub(crate) const SELECT_CLIENT_SCOPES: &str = "SELECT DISTINCT allowed_scope FROM clients";

pub(crate) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE client_id = $1";

pub(crate) type ClientRow = (
    String,
    Option<Vec<u8>>,
    String,
    Option<String>,
    Option<String>,
);

pub(crate) fn client_from(row: ClientRow) -> StoreResult<Client> {
    let (id, secret, allowed, default, name) = row;
    let mut client = Client::public(id, scope(&allowed)?);
    if let Some(default) = default {
        client = client.with_default_scope(scope(&default)?);
    }
    if let Some(secret) = secret {
        client = client.with_secret_digest(digest(&secret)?);
    }
    if let Some(name) = name {
        client = client.with_name(name);
    }
    Ok(client)
}

// ---- errors and time bounds ----

/// A database error as the store reports it: `Unavailable` (503) for what retrying later can
/// cure (no connection, a pool timeout, a server shutting down, lock and serialization
/// conflicts, a busy SQLite file), `Backend` (500) otherwise.
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    use sqlx::Error as E;
    let transient = match &e {
        E::Io(_) | E::Tls(_) | E::Protocol(_) | E::PoolTimedOut | E::PoolClosed => true,
        E::WorkerCrashed => true,
        E::Database(d) => d.code().is_some_and(|c| transient_code(&c)),
        _ => false,
    };
    if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Backend(e.to_string())
    }
}

/// PostgreSQL SQLSTATEs (five characters) and SQLite result codes (decimal, extended codes
/// carry the primary code in their low byte) that a later retry may not meet.
fn transient_code(code: &str) -> bool {
    if code.len() == 5 {
        // 08 connection exception, 53 insufficient resources, 57 operator intervention
        // (statement timeout, shutdown), 40 rollback (serialization failure, deadlock),
        // 55P03 lock not available, 25006 read-only transaction (a standby after failover).
        return matches!(&code[..2], "08" | "53" | "57" | "40")
            || code == "55P03"
            || code == "25006";
    }
    // 5 BUSY, 6 LOCKED, 10 IOERR, 13 FULL, 14 CANTOPEN.
    code.parse::<u32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

/// Runs one store operation within `limit` (a database that is paused or unreachable must
/// not hold a request forever). Dropping the operation rolls back what it had not committed.
pub(crate) async fn bounded<T>(
    limit: Duration,
    op: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(limit, op).await {
        Ok(result) => result,
        Err(_) => Err(StoreError::Unavailable(format!(
            "no answer from the database within {} ms",
            limit.as_millis()
        ))),
    }
}

// ---- purge ----

/// A table purged of expired rows: its key, and the column that says until when a row lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Purged {
    pub table: &'static str,
    pub key: &'static str,
    pub until: &'static str,
}

/// Every table with rows that end, in purge order (a grant's access tokens go with it).
pub(crate) const PURGED: [Purged; 5] = [
    Purged {
        table: "device_grants",
        key: "device_code",
        until: "retain_until",
    },
    Purged {
        table: "access_tokens",
        key: "digest",
        until: "expires_at",
    },
    Purged {
        table: "grants",
        key: "id",
        until: "keep_until",
    },
    Purged {
        table: "counters",
        key: "key",
        until: "resets_at",
    },
    Purged {
        table: "claims",
        key: "digest",
        until: "until",
    },
];

impl Purged {
    /// One batch: up to `$2` rows whose end is at or before `$1`, found through the index on
    /// the end column (so a batch costs O(batch x log rows), never a scan). `suffix` is the
    /// dialect's row-locking clause.
    pub(crate) fn statement(&self, suffix: &str) -> String {
        format!(
            "DELETE FROM {t} WHERE {k} IN (SELECT {k} FROM {t} WHERE {u} <= $1 ORDER BY {u} \
             LIMIT $2{suffix})",
            t = self.table,
            k = self.key,
            u = self.until
        )
    }
}

/// When the next purge is due, and whether one is running: writes call [`PurgeSchedule::claim`]
/// with their `now`, and the one that finds a purge due runs it in the background.
#[derive(Debug)]
pub(crate) struct PurgeSchedule {
    every: Option<Duration>,
    pub batch: u32,
    next: AtomicU64,
    running: AtomicBool,
}

impl PurgeSchedule {
    pub(crate) fn new(every: Option<Duration>, batch: u32) -> Self {
        PurgeSchedule {
            every,
            batch: batch.max(1),
            next: AtomicU64::new(0),
            running: AtomicBool::new(false),
        }
    }

    /// True for the one caller that should purge now (then it must call [`done`](Self::done)).
    /// While a purge runs, none is due: the next one starts with the first write after it.
    pub(crate) fn claim(&self, now: Timestamp) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        let due = self.next.load(Ordering::Relaxed);
        if now.as_unix_millis() < due || self.running.swap(true, Ordering::Acquire) {
            return false;
        }
        let next = now.saturating_add(every).as_unix_millis();
        if self
            .next
            .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.done();
            return false;
        }
        true
    }

    pub(crate) fn done(&self) {
        self.running.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_that_a_retry_may_cure_are_unavailable() {
        for code in [
            "08006", "57014", "57P01", "53300", "40001", "40P01", "55P03", "25006",
        ] {
            assert!(transient_code(code), "{code}");
        }
        for code in ["5", "517", "6", "10", "3338", "13", "14"] {
            assert!(transient_code(code), "sqlite {code}");
        }
        for code in ["23505", "42P01", "22P02", "19", "2067", "1", "x"] {
            assert!(!transient_code(code), "{code}");
        }
        assert!(matches!(
            db_error(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            db_error(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }

    #[test]
    fn times_saturate_instead_of_wrapping() {
        assert_eq!(db_time(Timestamp::from_unix_millis(u64::MAX)), i64::MAX);
        assert_eq!(db_time(Timestamp::from_unix_millis(42)), 42);
        assert!(time(-1).is_err());
    }

    #[test]
    fn the_purge_runs_once_per_period_and_never_twice_at_once() {
        let s = PurgeSchedule::new(Some(Duration::from_secs(10)), 100);
        let t = Timestamp::from_unix_millis(1_000_000);
        assert!(s.claim(t));
        // Due again only a period later, and not while the first runs.
        assert!(!s.claim(t.saturating_add(Duration::from_secs(9))));
        assert!(!s.claim(t.saturating_add(Duration::from_secs(10))));
        s.done();
        assert!(s.claim(t.saturating_add(Duration::from_secs(10))));
        assert!(!s.claim(t.saturating_add(Duration::from_secs(11))));
        s.done();
        assert!(!PurgeSchedule::new(None, 100).claim(t));
    }

    #[test]
    fn purge_statements_go_through_the_end_column() {
        let sql = PURGED[0].statement(" FOR UPDATE SKIP LOCKED");
        assert_eq!(
            sql,
            "DELETE FROM device_grants WHERE device_code IN (SELECT device_code FROM \
             device_grants WHERE retain_until <= $1 ORDER BY retain_until LIMIT $2 FOR UPDATE \
             SKIP LOCKED)"
        );
    }
}
