//! The PostgreSQL backend: [`MetaStore`] and [`DocumentStore`] over a
//! PostgreSQL database that several gateways may share (reference:
//! `docs/metadata-postgres.md`).
//!
//! Every trait method is one SERIALIZABLE transaction, so the database
//! orders every operation of every gateway as if they ran one at a time:
//! what one gateway committed, any other reads afterwards, and of two
//! conditional writes of one key exactly one sees the other's absence. A
//! transaction the database aborts as a serialization failure (SQLSTATE
//! 40001), a deadlock (40P01) or a unique violation (23505: a concurrent
//! transaction inserted the row this one had found absent) is run again
//! from the start, at most [`TRANSACTION_ATTEMPTS_MAX`] times, after a
//! jittered exponential backoff; after the last attempt the error is
//! [`MetaError::Backend`]. Nothing else is retried: a connection lost
//! during COMMIT leaves the outcome unknown, and running a non-idempotent
//! operation again could apply it twice. (A pooled connection found closed
//! when its transaction is to begin, after a database restart, is not an
//! operation that ran: the attempt moves to another connection.)
//!
//! Portability: the SQL is the subset PostgreSQL, CockroachDB and
//! YugabyteDB share (no PL/pgSQL, no advisory locks, no LISTEN/NOTIFY, no
//! SERIAL or sequences, no arrays, no text collation): every id and
//! sequence number is computed inside the transaction, ordered columns are
//! `BYTEA`, upserts are `INSERT ... ON CONFLICT (...) DO UPDATE SET col =
//! excluded.col`. The schema and its migrations are in [`schema`].
//!
//! Records are the embedded backend's JSON, byte for byte, and its
//! semantics are the contract (sequence numbers, null versions, conditions,
//! blob reference counts, scan orders, freed blobs): the same conformance
//! tests run against both. This module never decides anything S3 does.
//!
//! Connections: TLS through rustls (`postgres/tls.rs`: `verify-full`
//! checks the chain and the host name; the default for any host that is not
//! loopback or a Unix socket), or plain TCP only when the configuration or
//! the URL's `sslmode` says `disable` or every host is on this machine. A
//! bounded pool ([`PostgresConfig::pool_size`]) of connections, each caching
//! its prepared statements.

mod schema;
mod tls;

pub use tls::{PostgresTls, TlsMode};

use crate::{
    BucketRecord, Document, DocumentStore, DocumentWrite, Expect, MetaError, MetaResult, MetaStore,
    PartRecord, PutVersion, PutVersionOutcome, UploadRecord, VersionRecord, rules,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use nuage_base::ids;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{IsolationLevel, NoTls, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

/// Connections in the pool when the configuration names no number.
pub const POOL_SIZE_DEFAULT: usize = 16;
/// The most connections one store opens (per gateway).
pub const POOL_SIZE_MAX: usize = 256;
/// Attempts of one operation's transaction (the first and the retries).
pub const TRANSACTION_ATTEMPTS_MAX: u32 = 10;
/// Backoff before retry n: a random time in [cap/2, cap], cap =
/// min(BASE * 2^n, CAP).
const RETRY_BACKOFF_BASE_MS: u64 = 2;
const RETRY_BACKOFF_CAP_MS: u64 = 500;
/// How long an operation waits for a free connection, and for a new one.
const POOL_WAIT_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Values in one `IN (...)` list (blob reference counts are read and
/// written in chunks of this many).
const IN_LIST_VALUES_MAX: usize = 500;

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresConfig {
    /// A URL (`postgres://user@host:5432/db`) or a key-value connection
    /// string (`host=... dbname=...`), as libpq takes them.
    pub url: String,
    /// Overrides any password in `url` (the binary reads it from a file, so
    /// the configuration file need not hold it).
    pub password: Option<String>,
    /// Connections at most, 1..=[`POOL_SIZE_MAX`].
    pub pool_size: usize,
    /// TLS mode and files; see [`Self::tls_mode`] for how they meet the URL.
    pub tls: PostgresTls,
}

impl PostgresConfig {
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            password: None,
            pool_size: POOL_SIZE_DEFAULT,
            tls: PostgresTls::default(),
        }
    }

    /// The TLS mode connections use: `tls.mode`, else the URL's `sslmode`,
    /// else `disable` when every host is loopback or a Unix socket and
    /// `verify-full` otherwise (see `postgres/tls.rs`). Checks the URL and
    /// the TLS settings against each other without reading any file.
    ///
    /// # Errors
    /// A malformed connection string, an `sslmode` Nuage refuses (`prefer`,
    /// `allow`, `verify-ca`), a `tls` that contradicts `sslmode`, or files
    /// that do not fit the mode. Never includes the URL.
    pub fn tls_mode(&self) -> MetaResult<TlsMode> {
        tls::resolve(&self.url, &self.tls).map(|(_, mode)| mode)
    }
}

/// Never prints the URL or the password: either may hold a secret.
impl std::fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &"<redacted>")
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .finish()
    }
}

/// Metadata in a PostgreSQL (or compatible) database.
#[derive(Clone)]
pub struct PostgresMetaStore {
    pool: Pool,
}

/// Why one attempt of a transaction failed.
enum TxError {
    /// The operation's own answer (no such bucket, precondition failed...).
    Meta(MetaError),
    Sql(tokio_postgres::Error),
    /// The pooled connection was found gone when the transaction was to
    /// begin (the database restarted or dropped it): nothing ran, so the
    /// attempt is made again on another connection.
    Closed(tokio_postgres::Error),
    Pool(PoolError),
}

impl From<MetaError> for TxError {
    fn from(e: MetaError) -> Self {
        Self::Meta(e)
    }
}

impl From<tokio_postgres::Error> for TxError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::Sql(e)
    }
}

impl From<PoolError> for TxError {
    fn from(e: PoolError) -> Self {
        Self::Pool(e)
    }
}

type Tx<'a> = deadpool_postgres::Transaction<'a>;
type Param<'a> = &'a (dyn ToSql + Sync);

fn backend(e: impl std::fmt::Display) -> MetaError {
    MetaError::Backend(e.to_string())
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, TxError> {
    serde_json::from_slice(bytes).map_err(|e| TxError::Meta(MetaError::Corrupt(e.to_string())))
}

fn encode<T: serde::Serialize>(value: &T) -> MetaResult<Vec<u8>> {
    serde_json::to_vec(value).map_err(backend)
}

/// A database error in words, with its SQLSTATE; never the connection string.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(source) => format!("{e}: {source}"),
            None => e.to_string(),
        },
    }
}

/// Whether running the whole transaction again may succeed.
fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// Whether an error says the connection itself is gone (closed, or the
/// server shutting it down: SQLSTATE class 08, 57P01, 57P02), rather than
/// anything about the statement.
fn connection_lost(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || matches!(
            e.code(),
            Some(c) if c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
        )
}

fn backoff(attempt: u32) -> Duration {
    use rand::Rng as _;
    let cap = RETRY_BACKOFF_BASE_MS
        .saturating_mul(1_u64 << attempt.min(20))
        .min(RETRY_BACKOFF_CAP_MS);
    Duration::from_millis(rand::thread_rng().gen_range(cap / 2..=cap))
}

fn seq_to_sql(seq: u64) -> MetaResult<i64> {
    i64::try_from(seq).map_err(|_| MetaError::Backend(format!("sequence number {seq} too large")))
}

fn limit_to_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// The smallest byte string greater than every string starting with
/// `prefix`; None when there is none (empty, or only 0xFF bytes).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The parameters of a query built from optional clauses.
#[derive(Default)]
struct Params {
    values: Vec<Box<dyn ToSql + Sync + Send>>,
}

impl Params {
    /// Adds a value; returns its placeholder (`$n`).
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.values.push(Box::new(value));
        format!("${}", self.values.len())
    }

    fn refs(&self) -> Vec<Param<'_>> {
        self.values
            .iter()
            .map(|v| v.as_ref() as Param<'_>)
            .collect()
    }
}

/// A listing's query: the rows of one scope (a bucket, a namespace) whose
/// key starts with a prefix, plus the listing's own conditions (where to
/// resume), in one order, at most a limit.
struct Scan {
    params: Params,
    conditions: Vec<String>,
}

impl Scan {
    /// `scope_column = scope` and `key_column` within the keys starting
    /// with `prefix`.
    fn new(scope_column: &str, scope: &[u8], key_column: &str, prefix: &[u8]) -> Self {
        let mut params = Params::default();
        let mut conditions = vec![format!("{scope_column} = {}", params.push(scope.to_vec()))];
        if !prefix.is_empty() {
            let p = params.push(prefix.to_vec());
            conditions.push(format!("{key_column} >= {p}"));
        }
        if let Some(end) = prefix_end(prefix) {
            let p = params.push(end);
            conditions.push(format!("{key_column} < {p}"));
        }
        Self { params, conditions }
    }

    /// Adds a value; returns its placeholder (`$n`).
    fn push(&mut self, value: impl ToSql + Sync + Send + 'static) -> String {
        self.params.push(value)
    }

    fn condition(&mut self, condition: String) {
        self.conditions.push(condition);
    }

    /// `select` (`SELECT ... FROM ...`) with the conditions, `ORDER BY
    /// order` and the limit; the SQL and its parameters.
    fn finish(mut self, select: &str, order: &str, limit: usize) -> (String, Params) {
        let limit = self.params.push(limit_to_sql(limit));
        let sql = format!(
            "{select} WHERE {} ORDER BY {order} LIMIT {limit}",
            self.conditions.join(" AND ")
        );
        (sql, self.params)
    }
}

fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn query(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, TxError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

async fn query_opt(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, TxError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

async fn execute(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<u64, TxError> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

fn bytes(row: &Row, column: usize) -> Result<Vec<u8>, TxError> {
    Ok(row.try_get::<_, Vec<u8>>(column)?)
}

fn record<T: serde::de::DeserializeOwned>(row: &Row) -> Result<T, TxError> {
    decode(&bytes(row, 0)?)
}

/// The record (first column) of the row `sql` finds, if any.
async fn query_record<T: serde::de::DeserializeOwned>(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<T>, TxError> {
    query_opt(tx, sql, params)
        .await?
        .as_ref()
        .map(record)
        .transpose()
}

/// The records (first column) of the rows `sql` finds, in order.
async fn query_records<T: serde::de::DeserializeOwned>(
    tx: &Tx<'_>,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<T>, TxError> {
    query(tx, sql, params).await?.iter().map(record).collect()
}

/// The integer (first column) of the row `sql` finds, if any.
async fn query_i64(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<Option<i64>, TxError> {
    match query_opt(tx, sql, params).await? {
        Some(row) => Ok(Some(row.try_get(0)?)),
        None => Ok(None),
    }
}

/// Whether `sql` finds a row.
async fn exists(tx: &Tx<'_>, sql: &str, params: &[Param<'_>]) -> Result<bool, TxError> {
    Ok(query_opt(tx, sql, params).await?.is_some())
}

/// The blob ids of a version's segments, in order.
fn segment_blobs(record: &VersionRecord) -> Vec<&str> {
    record.segments.iter().map(|s| s.blob_id.as_str()).collect()
}

/// The blob reference counts one transaction reads and changes: counts are
/// loaded, changed in memory in the embedded backend's order (so freed
/// blobs come out the same), and written back once.
#[derive(Default)]
struct BlobRefs {
    /// blob id -> (count stored, count now).
    counts: BTreeMap<String, (u64, u64)>,
    /// Blobs whose count reached zero (and stayed there) in this transaction.
    freed: Vec<String>,
}

impl BlobRefs {
    async fn load<'b>(
        &mut self,
        tx: &Tx<'_>,
        blobs: impl IntoIterator<Item = &'b str>,
    ) -> Result<(), TxError> {
        let mut missing: Vec<&str> = blobs
            .into_iter()
            .filter(|b| !self.counts.contains_key(*b))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for chunk in missing.chunks(IN_LIST_VALUES_MAX) {
            let sql = format!(
                "SELECT blob_id, refs FROM nuage_blob_refs WHERE blob_id IN ({})",
                placeholders(1, chunk.len())
            );
            let params: Vec<Param<'_>> = chunk.iter().map(|b| b as Param<'_>).collect();
            // Not prepared-and-cached: the list's length varies.
            let rows = tx.query(sql.as_str(), &params).await?;
            for blob in chunk {
                self.counts.insert((*blob).to_owned(), (0, 0));
            }
            for row in rows {
                let blob: String = row.try_get(0)?;
                let count: i64 = row.try_get(1)?;
                let count = u64::try_from(count)
                    .map_err(|_| MetaError::Corrupt(format!("blob reference count of {blob}")))?;
                self.counts.insert(blob, (count, count));
            }
        }
        Ok(())
    }

    fn count(&self, blob: &str) -> MetaResult<u64> {
        self.counts
            .get(blob)
            .map(|c| c.1)
            .ok_or_else(|| MetaError::Backend(format!("reference count of {blob} not loaded")))
    }

    fn set(&mut self, blob: &str, count: u64) {
        if let Some(c) = self.counts.get_mut(blob) {
            c.1 = count;
        }
    }

    /// Adds a reference; a blob this transaction was about to free is kept.
    fn add(&mut self, blob: &str) -> MetaResult<()> {
        let count = rules::add_reference(self.count(blob)?, blob, &mut self.freed);
        self.set(blob, count);
        Ok(())
    }

    /// Drops a reference; at zero the blob joins `freed`.
    fn drop_ref(&mut self, blob: &str) -> MetaResult<()> {
        let count = rules::drop_reference(self.count(blob)?, blob, &mut self.freed);
        self.set(blob, count);
        Ok(())
    }

    /// Loads, then adds a reference to each of `blobs`, in order.
    async fn add_all(&mut self, tx: &Tx<'_>, blobs: &[&str]) -> Result<(), TxError> {
        self.load(tx, blobs.iter().copied()).await?;
        for blob in blobs {
            self.add(blob)?;
        }
        Ok(())
    }

    /// Loads, then drops a reference to each of `blobs`, in order.
    async fn drop_all(&mut self, tx: &Tx<'_>, blobs: &[&str]) -> Result<(), TxError> {
        self.load(tx, blobs.iter().copied()).await?;
        for blob in blobs {
            self.drop_ref(blob)?;
        }
        Ok(())
    }

    /// Writes every changed count: zero deletes the row.
    async fn flush(&self, tx: &Tx<'_>) -> Result<(), TxError> {
        let mut gone: Vec<&str> = Vec::new();
        let mut kept: Vec<(&str, i64)> = Vec::new();
        for (blob, (stored, now)) in &self.counts {
            if stored == now {
                continue;
            }
            if *now == 0 {
                gone.push(blob);
            } else {
                let now = i64::try_from(*now).map_err(|_| {
                    MetaError::Backend(format!("reference count of {blob} overflows"))
                })?;
                kept.push((blob, now));
            }
        }
        for chunk in gone.chunks(IN_LIST_VALUES_MAX) {
            let sql = format!(
                "DELETE FROM nuage_blob_refs WHERE blob_id IN ({})",
                placeholders(1, chunk.len())
            );
            let params: Vec<Param<'_>> = chunk.iter().map(|b| b as Param<'_>).collect();
            tx.execute(sql.as_str(), &params).await?;
        }
        for chunk in kept.chunks(IN_LIST_VALUES_MAX / 2) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
                .collect();
            let sql = format!(
                "INSERT INTO nuage_blob_refs (blob_id, refs) VALUES {} \
                 ON CONFLICT (blob_id) DO UPDATE SET refs = excluded.refs",
                rows.join(", ")
            );
            let mut params: Vec<Param<'_>> = Vec::with_capacity(chunk.len() * 2);
            for (blob, count) in chunk {
                params.push(blob);
                params.push(count);
            }
            tx.execute(sql.as_str(), &params).await?;
        }
        Ok(())
    }
}

const SELECT_LATEST: &str = "SELECT record FROM nuage_versions \
     WHERE bucket = $1 AND object_key = $2 ORDER BY seq DESC LIMIT 1";
const SELECT_VERSION_BY_ID: &str = "SELECT record FROM nuage_versions \
     WHERE bucket = $1 AND object_key = $2 AND version_id = $3";

async fn bucket_exists(tx: &Tx<'_>, name: &str) -> Result<bool, TxError> {
    exists(
        tx,
        "SELECT 1 FROM nuage_buckets WHERE name = $1",
        &[&name.as_bytes()],
    )
    .await
}

async fn latest_version(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
) -> Result<Option<VersionRecord>, TxError> {
    query_record(tx, SELECT_LATEST, &[&bucket.as_bytes(), &key.as_bytes()]).await
}

async fn find_version(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: &str,
) -> Result<Option<VersionRecord>, TxError> {
    query_record(
        tx,
        SELECT_VERSION_BY_ID,
        &[&bucket.as_bytes(), &key.as_bytes(), &version_id],
    )
    .await
}

/// The given version of a key, or its latest when `version_id` is None.
async fn version(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
) -> Result<Option<VersionRecord>, TxError> {
    match version_id {
        Some(id) => find_version(tx, bucket, key, id).await,
        None => latest_version(tx, bucket, key).await,
    }
}

/// Removes an upload's row: `NoSuchUpload` when there is none.
async fn delete_upload(
    tx: &Tx<'_>,
    bucket: &str,
    key: &str,
    upload_id: &str,
) -> Result<(), TxError> {
    let removed = execute(
        tx,
        "DELETE FROM nuage_uploads WHERE bucket = $1 AND object_key = $2 AND upload_id = $3",
        &[&bucket.as_bytes(), &key.as_bytes(), &upload_id.as_bytes()],
    )
    .await?;
    if removed == 0 {
        return Err(MetaError::NoSuchUpload.into());
    }
    Ok(())
}

/// Points `nuage_latest` at the newest remaining version of a key (or
/// removes its row when none is left).
async fn refresh_latest(tx: &Tx<'_>, bucket: &str, key: &str) -> Result<(), TxError> {
    let newest = query_i64(
        tx,
        "SELECT seq FROM nuage_versions WHERE bucket = $1 AND object_key = $2 \
         ORDER BY seq DESC LIMIT 1",
        &[&bucket.as_bytes(), &key.as_bytes()],
    )
    .await?;
    match newest {
        Some(seq) => set_latest(tx, bucket, key, seq).await,
        None => {
            execute(
                tx,
                "DELETE FROM nuage_latest WHERE bucket = $1 AND object_key = $2",
                &[&bucket.as_bytes(), &key.as_bytes()],
            )
            .await?;
            Ok(())
        }
    }
}

async fn set_latest(tx: &Tx<'_>, bucket: &str, key: &str, seq: i64) -> Result<(), TxError> {
    execute(
        tx,
        "INSERT INTO nuage_latest (bucket, object_key, seq) VALUES ($1, $2, $3) \
         ON CONFLICT (bucket, object_key) DO UPDATE SET seq = excluded.seq",
        &[&bucket.as_bytes(), &key.as_bytes(), &seq],
    )
    .await?;
    Ok(())
}

async fn delete_version_row(tx: &Tx<'_>, record: &VersionRecord) -> Result<(), TxError> {
    let seq = seq_to_sql(record.seq)?;
    execute(
        tx,
        "DELETE FROM nuage_versions WHERE bucket = $1 AND object_key = $2 AND seq = $3",
        &[&record.bucket.as_bytes(), &record.key.as_bytes(), &seq],
    )
    .await?;
    Ok(())
}

/// The embedded backend's `write_version`, in SQL: checks, assigns seq and
/// version id, replaces the null version, moves references. Freed blobs are
/// left in `refs.freed`; the caller flushes `refs`.
async fn write_version(
    tx: &Tx<'_>,
    put: &PutVersion,
    refs: &mut BlobRefs,
) -> Result<VersionRecord, TxError> {
    let mut record = put.record.clone();
    if !bucket_exists(tx, &record.bucket).await? {
        return Err(MetaError::NoSuchBucket.into());
    }
    // Checked before this transaction drops any reference (a copy onto its
    // own key replaces the very version it shares with).
    refs.load(tx, put.shared_blobs.iter().map(String::as_str))
        .await?;
    for blob in &put.shared_blobs {
        if refs.count(blob)? == 0 {
            return Err(MetaError::SharedBlobGone(blob.clone()).into());
        }
    }
    let latest = latest_version(tx, &record.bucket, &record.key).await?;
    rules::check_condition(&put.condition, latest.as_ref())?;
    record.seq = rules::next_seq(record.last_modified_unix_ns, latest.as_ref());
    if put.null_version
        && let Some(old) =
            find_version(tx, &record.bucket, &record.key, ids::NULL_VERSION_ID).await?
    {
        delete_version_row(tx, &old).await?;
        refs.drop_all(tx, &segment_blobs(&old)).await?;
    }
    record.version_id = rules::version_id(put.null_version, record.seq);
    refs.add_all(tx, &segment_blobs(&record)).await?;
    let value = encode(&record)?;
    let seq = seq_to_sql(record.seq)?;
    execute(
        tx,
        "INSERT INTO nuage_versions (bucket, object_key, seq, version_id, record) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &record.bucket.as_bytes(),
            &record.key.as_bytes(),
            &seq,
            &record.version_id,
            &value,
        ],
    )
    .await?;
    // The new version is the key's newest: its seq is above every other.
    set_latest(tx, &record.bucket, &record.key, seq).await?;
    Ok(record)
}

/// Deletes every part of an upload and drops their references; the blobs
/// left without any are in `refs.freed`.
async fn remove_parts(tx: &Tx<'_>, upload_id: &str, refs: &mut BlobRefs) -> Result<(), TxError> {
    let parts: Vec<PartRecord> = query_records(
        tx,
        "SELECT record FROM nuage_parts WHERE upload_id = $1 ORDER BY part_number",
        &[&upload_id.as_bytes()],
    )
    .await?;
    execute(
        tx,
        "DELETE FROM nuage_parts WHERE upload_id = $1",
        &[&upload_id.as_bytes()],
    )
    .await?;
    let blobs: Vec<&str> = parts.iter().map(|p| p.blob_id.as_str()).collect();
    refs.drop_all(tx, &blobs).await
}

/// Runs one attempt of an operation: a serializable transaction on a pooled
/// connection, `$body` inside it (an expression using `$tx`, with `?`),
/// then COMMIT. Everything the body names is borrowed, so an attempt can
/// be made again.
macro_rules! attempt {
    ($store:expr, $read_only:expr, |$tx:ident| $body:expr) => {{
        let store: &PostgresMetaStore = $store;
        move || async move {
            let mut client = store.pool.get().await?;
            let $tx = match client
                .build_transaction()
                .isolation_level(IsolationLevel::Serializable)
                .read_only($read_only)
                .start()
                .await
            {
                Ok(tx) => tx,
                Err(e) if connection_lost(&e) => return Err(TxError::Closed(e)),
                Err(e) => return Err(e.into()),
            };
            let out = $body;
            $tx.commit().await?;
            Ok(out)
        }
    }};
}

impl PostgresMetaStore {
    /// Connects (lazily: the pool opens connections on demand, at most
    /// `config.pool_size`) and applies the schema migrations this version
    /// knows that the database lacks.
    ///
    /// # Errors
    /// A malformed connection string, TLS settings that do not fit it (see
    /// [`PostgresConfig::tls_mode`]) or certificate files that cannot be
    /// read, an unreachable database, a certificate that does not verify, a
    /// server that refuses the connection, or a schema newer than this
    /// version knows. Never includes the URL or the password.
    pub async fn connect(config: &PostgresConfig) -> MetaResult<Self> {
        let (mut pg, mode) = tls::resolve(&config.url, &config.tls)?;
        if let Some(password) = &config.password {
            pg.password(password.as_bytes());
        }
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match tls::client_config(mode, &config.tls)? {
            None => Manager::from_config(pg, NoTls, manager_config),
            Some(rustls) => {
                Manager::from_config(pg, MakeRustlsConnect::new(rustls), manager_config)
            }
        };
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.clamp(1, POOL_SIZE_MAX))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(backend)?;
        let store = Self { pool };
        // The first connection opens here: a failure to connect names the
        // TLS mode, and a certificate failure what verify-full checks.
        store.migrate().await.map_err(|e| match e {
            MetaError::Backend(message) if message.contains("no database connection") => {
                let hint = if message.contains("invalid peer certificate") {
                    ": the server's certificate must chain to ca_file (or a system root) \
                     and name the URL's host"
                } else {
                    ""
                };
                MetaError::Backend(format!("{message} (metadata TLS mode: {mode}{hint})"))
            }
            other => other,
        })?;
        Ok(store)
    }

    /// The schema version the database is at (the newest migration run).
    ///
    /// # Errors
    /// As any operation.
    pub async fn schema_version(&self) -> MetaResult<i64> {
        self.retry(
            "schema_version",
            attempt!(self, true, |tx| {
                query_i64(
                    &tx,
                    "SELECT version FROM nuage_schema_migrations ORDER BY version DESC LIMIT 1",
                    &[],
                )
                .await?
                .unwrap_or(0)
            }),
        )
        .await
    }

    /// The record `sql` finds, if any, in a read-only transaction.
    async fn read_record<T: serde::de::DeserializeOwned + Send>(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> MetaResult<Option<T>> {
        self.retry(
            operation,
            attempt!(self, true, |tx| query_record(&tx, sql, params).await?),
        )
        .await
    }

    /// The records `sql` finds, in order, in a read-only transaction.
    async fn read_records<T: serde::de::DeserializeOwned + Send>(
        &self,
        operation: &'static str,
        sql: &str,
        params: &[Param<'_>],
    ) -> MetaResult<Vec<T>> {
        self.retry(
            operation,
            attempt!(self, true, |tx| query_records(&tx, sql, params).await?),
        )
        .await
    }

    /// A listing's records: `scan` finished with `select`, `order` and `limit`.
    async fn read_scan<T: serde::de::DeserializeOwned + Send>(
        &self,
        operation: &'static str,
        scan: Scan,
        select: &str,
        order: &str,
        limit: usize,
    ) -> MetaResult<Vec<T>> {
        let (sql, params) = scan.finish(select, order, limit);
        self.read_records(operation, &sql, &params.refs()).await
    }

    /// Runs `attempt` until it succeeds, fails for a reason of its own, or
    /// fails [`TRANSACTION_ATTEMPTS_MAX`] times with a retryable error.
    async fn retry<T, F, Fut>(&self, operation: &'static str, mut attempt: F) -> MetaResult<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, TxError>>,
    {
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            let error = match attempt().await {
                Ok(out) => return Ok(out),
                Err(TxError::Meta(e)) => return Err(e),
                Err(TxError::Pool(e)) => {
                    // The pool's own words drop the cause (a TLS or
                    // authentication failure): say it.
                    let cause = match &e {
                        PoolError::Backend(e) => describe(e),
                        other => other.to_string(),
                    };
                    return Err(MetaError::Backend(format!(
                        "{operation}: no database connection: {cause}"
                    )));
                }
                Err(TxError::Sql(e)) => e,
                Err(TxError::Closed(e)) if attempts < TRANSACTION_ATTEMPTS_MAX => {
                    tracing::debug!(operation, attempts, error = %describe(&e), "stale connection");
                    continue;
                }
                Err(TxError::Closed(e)) => e,
            };
            if !retryable(&error) {
                return Err(MetaError::Backend(format!(
                    "{operation}: {}",
                    describe(&error)
                )));
            }
            if attempts >= TRANSACTION_ATTEMPTS_MAX {
                return Err(MetaError::Backend(format!(
                    "{operation}: gave up after {attempts} attempts: {}",
                    describe(&error)
                )));
            }
            tracing::debug!(operation, attempts, error = %describe(&error), "retrying transaction");
            tokio::time::sleep(backoff(attempts)).await;
        }
    }

    async fn migrate(&self) -> MetaResult<()> {
        // An up-to-date database runs no DDL at all: a gateway whose
        // database user may only read and write rows starts.
        let applied = match self.applied_migrations().await? {
            Some(applied) => applied,
            None => {
                self.ddl(schema::CREATE_MIGRATIONS_TABLE).await?;
                self.applied_migrations().await?.unwrap_or_default()
            }
        };
        let known = schema::MIGRATIONS.last().map_or(0, |m| m.version);
        if let Some(newest) = applied.iter().copied().max().filter(|v| *v > known) {
            return Err(MetaError::Backend(format!(
                "the metadata database's schema is at version {newest}, newer than this \
                 nuage knows ({known}): run a newer nuage"
            )));
        }
        for migration in schema::MIGRATIONS {
            if applied.contains(&migration.version) {
                continue;
            }
            for statement in migration.statements {
                self.ddl(statement).await?;
            }
            let (version, name) = (migration.version, migration.name);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
            self.retry(
                "migrate",
                attempt!(self, false, |tx| {
                    execute(
                        &tx,
                        "INSERT INTO nuage_schema_migrations (version, name, applied_unix_ns) \
                         VALUES ($1, $2, $3) ON CONFLICT (version) DO NOTHING",
                        &[&version, &name, &now],
                    )
                    .await?
                }),
            )
            .await?;
            tracing::info!(version, name, "applied metadata schema migration");
        }
        Ok(())
    }

    /// The versions of the migrations run, or None when the database has
    /// no migrations table yet (asked of `information_schema`, which all
    /// three engines have, so that no statement fails inside the
    /// transaction).
    async fn applied_migrations(&self) -> MetaResult<Option<Vec<i64>>> {
        self.retry(
            "migrate",
            attempt!(self, true, |tx| {
                let exists = query_opt(
                    &tx,
                    "SELECT 1 FROM information_schema.tables \
                     WHERE table_schema = current_schema() \
                     AND table_name = 'nuage_schema_migrations'",
                    &[],
                )
                .await?
                .is_some();
                if exists {
                    Some(
                        query(&tx, "SELECT version FROM nuage_schema_migrations", &[])
                            .await?
                            .iter()
                            .map(|r| r.try_get::<_, i64>(0))
                            .collect::<Result<Vec<i64>, _>>()?,
                    )
                } else {
                    None
                }
            }),
        )
        .await
    }

    /// Runs one idempotent schema statement on its own (an implicit
    /// transaction), again when a concurrent gateway's identical statement
    /// won a race on the catalog.
    async fn ddl(&self, statement: &str) -> MetaResult<()> {
        let mut attempts = 0_u32;
        loop {
            attempts += 1;
            let client = self
                .pool
                .get()
                .await
                .map_err(|e| MetaError::Backend(format!("no database connection: {e}")))?;
            let Err(error) = client.batch_execute(statement).await else {
                return Ok(());
            };
            let racing = matches!(
                error.code(),
                Some(c) if *c == SqlState::DUPLICATE_TABLE || *c == SqlState::DUPLICATE_OBJECT
            ) || retryable(&error);
            if !racing || attempts >= TRANSACTION_ATTEMPTS_MAX {
                return Err(MetaError::Backend(format!(
                    "schema migration failed: {}",
                    describe(&error)
                )));
            }
            tokio::time::sleep(backoff(attempts)).await;
        }
    }
}

#[async_trait::async_trait]
impl MetaStore for PostgresMetaStore {
    async fn create_bucket(&self, bucket: BucketRecord) -> MetaResult<()> {
        let value = encode(&bucket)?;
        let (name, value) = (bucket.name.as_bytes(), &value);
        self.retry(
            "create_bucket",
            attempt!(self, false, |tx| {
                if exists(&tx, "SELECT 1 FROM nuage_buckets WHERE name = $1", &[&name]).await? {
                    return Err(MetaError::BucketAlreadyExists.into());
                }
                execute(
                    &tx,
                    "INSERT INTO nuage_buckets (name, record) VALUES ($1, $2)",
                    &[&name, value],
                )
                .await?
            }),
        )
        .await?;
        Ok(())
    }

    async fn get_bucket(&self, name: &str) -> MetaResult<Option<BucketRecord>> {
        self.read_record(
            "get_bucket",
            "SELECT record FROM nuage_buckets WHERE name = $1",
            &[&name.as_bytes()],
        )
        .await
    }

    async fn update_bucket(&self, bucket: BucketRecord) -> MetaResult<()> {
        let value = encode(&bucket)?;
        let (name, value) = (bucket.name.as_bytes(), &value);
        self.retry(
            "update_bucket",
            attempt!(self, false, |tx| {
                let updated = execute(
                    &tx,
                    "UPDATE nuage_buckets SET record = $2 WHERE name = $1",
                    &[&name, value],
                )
                .await?;
                if updated == 0 {
                    return Err(MetaError::NoSuchBucket.into());
                }
            }),
        )
        .await
    }

    async fn delete_bucket(&self, name: &str) -> MetaResult<()> {
        self.retry(
            "delete_bucket",
            attempt!(self, false, |tx| {
                if !bucket_exists(&tx, name).await? {
                    return Err(MetaError::NoSuchBucket.into());
                }
                for sql in [
                    "SELECT 1 FROM nuage_versions WHERE bucket = $1 LIMIT 1",
                    "SELECT 1 FROM nuage_uploads WHERE bucket = $1 LIMIT 1",
                ] {
                    if exists(&tx, sql, &[&name.as_bytes()]).await? {
                        return Err(MetaError::BucketNotEmpty.into());
                    }
                }
                execute(
                    &tx,
                    "DELETE FROM nuage_buckets WHERE name = $1",
                    &[&name.as_bytes()],
                )
                .await?
            }),
        )
        .await?;
        Ok(())
    }

    async fn list_buckets(&self) -> MetaResult<Vec<BucketRecord>> {
        self.read_records(
            "list_buckets",
            "SELECT record FROM nuage_buckets ORDER BY name",
            &[],
        )
        .await
    }

    async fn put_version(&self, put: PutVersion) -> MetaResult<PutVersionOutcome> {
        let put = &put;
        self.retry(
            "put_version",
            attempt!(self, false, |tx| {
                let mut refs = BlobRefs::default();
                let record = write_version(&tx, put, &mut refs).await?;
                refs.flush(&tx).await?;
                PutVersionOutcome {
                    record,
                    freed_blobs: refs.freed,
                }
            }),
        )
        .await
    }

    async fn get_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
    ) -> MetaResult<Option<VersionRecord>> {
        self.retry(
            "get_version",
            attempt!(self, true, |tx| version(&tx, bucket, key, version_id)
                .await?),
        )
        .await
    }

    async fn delete_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
    ) -> MetaResult<(VersionRecord, Vec<String>)> {
        self.retry(
            "delete_version",
            attempt!(self, false, |tx| {
                let record = find_version(&tx, bucket, key, version_id)
                    .await?
                    .ok_or(MetaError::NoSuchVersion)?;
                delete_version_row(&tx, &record).await?;
                refresh_latest(&tx, bucket, key).await?;
                let mut refs = BlobRefs::default();
                refs.drop_all(&tx, &segment_blobs(&record)).await?;
                refs.flush(&tx).await?;
                (record, refs.freed)
            }),
        )
        .await
    }

    async fn set_version_tags(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        tags: Vec<(String, String)>,
    ) -> MetaResult<VersionRecord> {
        let tags = &tags;
        self.retry(
            "set_version_tags",
            attempt!(self, false, |tx| {
                let mut record = version(&tx, bucket, key, version_id)
                    .await?
                    .ok_or(MetaError::NoSuchVersion)?;
                if record.delete_marker {
                    return Err(MetaError::NoSuchVersion.into());
                }
                record.tags.clone_from(tags);
                let value = encode(&record)?;
                let seq = seq_to_sql(record.seq)?;
                execute(
                    &tx,
                    "UPDATE nuage_versions SET record = $4 \
                     WHERE bucket = $1 AND object_key = $2 AND seq = $3",
                    &[&bucket.as_bytes(), &key.as_bytes(), &seq, &value],
                )
                .await?;
                record
            }),
        )
        .await
    }

    async fn scan_latest(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<&[u8]>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        let mut scan = Scan::new(
            "l.bucket",
            bucket.as_bytes(),
            "l.object_key",
            prefix.as_bytes(),
        );
        if let Some(after) = after {
            let p = scan.push(after.to_vec());
            scan.condition(format!("l.object_key > {p}"));
        }
        self.read_scan(
            "scan_latest",
            scan,
            "SELECT v.record FROM nuage_latest l JOIN nuage_versions v \
             ON v.bucket = l.bucket AND v.object_key = l.object_key AND v.seq = l.seq",
            "l.object_key",
            limit,
        )
        .await
    }

    async fn scan_versions(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&[u8], Option<u64>)>,
        limit: usize,
    ) -> MetaResult<Vec<VersionRecord>> {
        let mut scan = Scan::new("bucket", bucket.as_bytes(), "object_key", prefix.as_bytes());
        match after {
            None => {}
            Some((key, None)) => {
                let p = scan.push(key.to_vec());
                scan.condition(format!("object_key > {p}"));
            }
            Some((key, Some(seq))) => match i64::try_from(seq) {
                // Strictly after (key, seq): older versions of the key, then
                // later keys.
                Ok(seq) => {
                    let k = scan.push(key.to_vec());
                    let s = scan.push(seq);
                    scan.condition(format!(
                        "(object_key > {k} OR (object_key = {k} AND seq < {s}))"
                    ));
                }
                // Above every stored seq: every version of the key follows.
                Err(_) => {
                    let k = scan.push(key.to_vec());
                    scan.condition(format!("object_key >= {k}"));
                }
            },
        }
        self.read_scan(
            "scan_versions",
            scan,
            "SELECT record FROM nuage_versions",
            "object_key, seq DESC",
            limit,
        )
        .await
    }

    async fn create_upload(&self, upload: UploadRecord) -> MetaResult<()> {
        let value = encode(&upload)?;
        let (upload, value) = (&upload, &value);
        self.retry(
            "create_upload",
            attempt!(self, false, |tx| {
                if !bucket_exists(&tx, &upload.bucket).await? {
                    return Err(MetaError::NoSuchBucket.into());
                }
                execute(
                    &tx,
                    "INSERT INTO nuage_uploads (bucket, object_key, upload_id, record) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (bucket, object_key, upload_id) \
                     DO UPDATE SET record = excluded.record",
                    &[
                        &upload.bucket.as_bytes(),
                        &upload.key.as_bytes(),
                        &upload.upload_id.as_bytes(),
                        value,
                    ],
                )
                .await?
            }),
        )
        .await?;
        Ok(())
    }

    async fn get_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Option<UploadRecord>> {
        self.read_record(
            "get_upload",
            "SELECT record FROM nuage_uploads \
             WHERE bucket = $1 AND object_key = $2 AND upload_id = $3",
            &[&bucket.as_bytes(), &key.as_bytes(), &upload_id.as_bytes()],
        )
        .await
    }

    async fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: PartRecord,
        shared: bool,
    ) -> MetaResult<Vec<String>> {
        let value = encode(&part)?;
        let (part, value) = (&part, &value);
        let part_number = i64::from(part.part_number);
        self.retry(
            "put_part",
            attempt!(self, false, |tx| {
                if !exists(
                    &tx,
                    "SELECT 1 FROM nuage_uploads \
                     WHERE bucket = $1 AND object_key = $2 AND upload_id = $3",
                    &[&bucket.as_bytes(), &key.as_bytes(), &upload_id.as_bytes()],
                )
                .await?
                {
                    return Err(MetaError::NoSuchUpload.into());
                }
                let mut refs = BlobRefs::default();
                refs.load(&tx, [part.blob_id.as_str()]).await?;
                if shared && refs.count(&part.blob_id)? == 0 {
                    return Err(MetaError::SharedBlobGone(part.blob_id.clone()).into());
                }
                let old: Option<PartRecord> = query_record(
                    &tx,
                    "SELECT record FROM nuage_parts WHERE upload_id = $1 AND part_number = $2",
                    &[&upload_id.as_bytes(), &part_number],
                )
                .await?;
                refs.add(&part.blob_id)?;
                if let Some(old) = old {
                    refs.drop_all(&tx, &[old.blob_id.as_str()]).await?;
                }
                execute(
                    &tx,
                    "INSERT INTO nuage_parts (upload_id, part_number, record) VALUES ($1, $2, $3) \
                     ON CONFLICT (upload_id, part_number) DO UPDATE SET record = excluded.record",
                    &[&upload_id.as_bytes(), &part_number, value],
                )
                .await?;
                refs.flush(&tx).await?;
                refs.freed
            }),
        )
        .await
    }

    async fn list_parts(
        &self,
        upload_id: &str,
        after: u32,
        limit: usize,
    ) -> MetaResult<Vec<PartRecord>> {
        let (after, limit) = (i64::from(after), limit_to_sql(limit));
        self.read_records(
            "list_parts",
            "SELECT record FROM nuage_parts WHERE upload_id = $1 AND part_number > $2 \
             ORDER BY part_number LIMIT $3",
            &[&upload_id.as_bytes(), &after, &limit],
        )
        .await
    }

    async fn list_uploads(
        &self,
        bucket: &str,
        prefix: &str,
        after: Option<(&str, &str)>,
        limit: usize,
    ) -> MetaResult<Vec<UploadRecord>> {
        let mut scan = Scan::new("bucket", bucket.as_bytes(), "object_key", prefix.as_bytes());
        if let Some((key, upload_id)) = after {
            let k = scan.push(key.as_bytes().to_vec());
            let u = scan.push(upload_id.as_bytes().to_vec());
            scan.condition(format!(
                "(object_key > {k} OR (object_key = {k} AND upload_id > {u}))"
            ));
        }
        self.read_scan(
            "list_uploads",
            scan,
            "SELECT record FROM nuage_uploads",
            "object_key, upload_id",
            limit,
        )
        .await
    }

    async fn abort_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
    ) -> MetaResult<Vec<String>> {
        self.retry(
            "abort_upload",
            attempt!(self, false, |tx| {
                delete_upload(&tx, bucket, key, upload_id).await?;
                let mut refs = BlobRefs::default();
                remove_parts(&tx, upload_id, &mut refs).await?;
                refs.flush(&tx).await?;
                refs.freed
            }),
        )
        .await
    }

    async fn complete_upload(
        &self,
        upload_id: &str,
        put: PutVersion,
    ) -> MetaResult<PutVersionOutcome> {
        let put = &put;
        self.retry(
            "complete_upload",
            attempt!(self, false, |tx| {
                delete_upload(&tx, &put.record.bucket, &put.record.key, upload_id).await?;
                // The parts' references go, the version's come.
                let mut refs = BlobRefs::default();
                remove_parts(&tx, upload_id, &mut refs).await?;
                let parts_freed = std::mem::take(&mut refs.freed);
                let record = write_version(&tx, put, &mut refs).await?;
                let freed_blobs = rules::freed_by_completion(
                    std::mem::take(&mut refs.freed),
                    parts_freed,
                    |blob| refs.count(blob),
                )?;
                refs.flush(&tx).await?;
                PutVersionOutcome {
                    record,
                    freed_blobs,
                }
            }),
        )
        .await
    }

    async fn blob_is_referenced(&self, blob_id: &str) -> MetaResult<bool> {
        self.retry(
            "blob_is_referenced",
            attempt!(self, true, |tx| {
                exists(
                    &tx,
                    "SELECT 1 FROM nuage_blob_refs WHERE blob_id = $1",
                    &[&blob_id],
                )
                .await?
            }),
        )
        .await
    }

    async fn count_versions(&self) -> MetaResult<u64> {
        self.retry(
            "count_versions",
            attempt!(self, true, |tx| {
                let count = query_i64(&tx, "SELECT count(*) FROM nuage_versions", &[])
                    .await?
                    .unwrap_or(0);
                u64::try_from(count).unwrap_or(0)
            }),
        )
        .await
    }
}

#[async_trait::async_trait]
impl DocumentStore for PostgresMetaStore {
    async fn get_document(&self, namespace: &str, key: &str) -> MetaResult<Option<Document>> {
        self.retry(
            "get_document",
            attempt!(self, true, |tx| {
                match query_opt(
                    &tx,
                    "SELECT revision, value FROM nuage_documents \
                     WHERE namespace = $1 AND doc_key = $2",
                    &[&namespace.as_bytes(), &key.as_bytes()],
                )
                .await?
                {
                    Some(row) => Some(document(key.to_owned(), &row, 0)?),
                    None => None,
                }
            }),
        )
        .await
    }

    async fn scan_documents(
        &self,
        namespace: &str,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> MetaResult<Vec<Document>> {
        let mut scan = Scan::new(
            "namespace",
            namespace.as_bytes(),
            "doc_key",
            prefix.as_bytes(),
        );
        if let Some(after) = after {
            let p = scan.push(after.as_bytes().to_vec());
            scan.condition(format!("doc_key > {p}"));
        }
        let (sql, params) = scan.finish(
            "SELECT doc_key, revision, value FROM nuage_documents",
            "doc_key",
            limit,
        );
        let (sql, params) = (sql.as_str(), &params);
        self.retry(
            "scan_documents",
            attempt!(self, true, |tx| {
                let mut out = Vec::new();
                for row in query(&tx, sql, &params.refs()).await? {
                    let key = String::from_utf8(bytes(&row, 0)?)
                        .map_err(|e| MetaError::Corrupt(format!("document key: {e}")))?;
                    out.push(document(key, &row, 1)?);
                }
                out
            }),
        )
        .await
    }

    async fn commit_documents(&self, writes: Vec<DocumentWrite>) -> MetaResult<()> {
        if writes
            .iter()
            .any(|w| w.key.contains('\0') || w.namespace.contains('\0'))
        {
            return Err(MetaError::Backend(
                "document keys must not contain NUL".into(),
            ));
        }
        let writes = &writes;
        self.retry(
            "commit_documents",
            attempt!(self, false, |tx| {
                for write in writes {
                    let (namespace, key) = (write.namespace.as_bytes(), write.key.as_bytes());
                    let current = query_i64(
                        &tx,
                        "SELECT revision FROM nuage_documents \
                         WHERE namespace = $1 AND doc_key = $2",
                        &[&namespace, &key],
                    )
                    .await?;
                    let holds = match (write.expect, current) {
                        (Expect::Any, _) | (Expect::Absent, None) => true,
                        (Expect::Revision(r), Some(revision)) => {
                            u64::try_from(revision).is_ok_and(|revision| revision == r)
                        }
                        _ => false,
                    };
                    if !holds {
                        return Err(MetaError::PreconditionFailed.into());
                    }
                    match (&write.value, current) {
                        (None, None) => {}
                        (None, Some(_)) => {
                            execute(
                                &tx,
                                "DELETE FROM nuage_documents \
                                 WHERE namespace = $1 AND doc_key = $2",
                                &[&namespace, &key],
                            )
                            .await?;
                        }
                        (Some(value), None) => {
                            execute(
                                &tx,
                                "INSERT INTO nuage_documents (namespace, doc_key, revision, value) \
                                 VALUES ($1, $2, 1, $3)",
                                &[&namespace, &key, value],
                            )
                            .await?;
                        }
                        (Some(value), Some(revision)) => {
                            execute(
                                &tx,
                                "UPDATE nuage_documents SET revision = $3, value = $4 \
                                 WHERE namespace = $1 AND doc_key = $2",
                                &[&namespace, &key, &revision.saturating_add(1), value],
                            )
                            .await?;
                        }
                    }
                }
            }),
        )
        .await
    }
}

/// A document from a row whose columns from `first` are (revision, value).
fn document(key: String, row: &Row, first: usize) -> Result<Document, TxError> {
    let revision: i64 = row.try_get(first)?;
    let revision = u64::try_from(revision)
        .map_err(|_| MetaError::Corrupt(format!("document {key}: revision {revision}")))?;
    Ok(Document {
        key,
        revision,
        value: bytes(row, first + 1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_string_past_the_prefix() {
        assert_eq!(prefix_end(b""), None);
        assert_eq!(prefix_end(b"a/"), Some(b"a0".to_vec()));
        assert_eq!(prefix_end(b"a\xFF"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xFF\xFF"), None);
    }
}
