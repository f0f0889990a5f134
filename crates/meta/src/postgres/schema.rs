//! The PostgreSQL schema and its versioned migrations, applied in order when
//! a store opens.
//!
//! Every ordered or prefix-scanned column (bucket names, object keys, upload
//! ids, namespaces, document keys) is `BYTEA`, so order is the bytes' order
//! (S3's) whatever the database's collation. Records are the same JSON the
//! embedded backend stores, in a `BYTEA` column beside the columns queries
//! need.
//!
//! Why no transaction around a migration: CockroachDB does not run schema
//! changes inside explicit transactions atomically, and recommends one
//! schema change per implicit transaction. So each statement runs alone
//! and must be idempotent (`IF NOT EXISTS`); the version row is written
//! last, in its own transaction. Two gateways starting at once may both run
//! a migration's statements: the second finds everything there (or, in
//! PostgreSQL, loses a race on the catalog with a unique violation, which
//! is retried) and its `ON CONFLICT DO NOTHING` insert of the version row
//! changes nothing. No advisory lock: CockroachDB has none that locks.
//! A gateway serves only once every migration's row is present.

/// One schema version: statements each idempotent, run in order.
pub(super) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub statements: &'static [&'static str],
}

/// The table that records which migrations ran.
pub(super) const CREATE_MIGRATIONS_TABLE: &str =
    "CREATE TABLE IF NOT EXISTS nuage_schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    applied_unix_ns BIGINT NOT NULL
)";

/// Every migration, in version order. Append only: a released migration is
/// never edited (a gateway that already ran it would not run it again).
pub(super) const MIGRATIONS: &[Migration] = &[Migration {
    version: 1,
    name: "buckets, versions, uploads, parts, blob references, documents",
    statements: &[
        "CREATE TABLE IF NOT EXISTS nuage_buckets (
            name BYTEA PRIMARY KEY,
            record BYTEA NOT NULL
        )",
        // One row per version or delete marker; seq orders a key's versions.
        "CREATE TABLE IF NOT EXISTS nuage_versions (
            bucket BYTEA NOT NULL,
            object_key BYTEA NOT NULL,
            seq BIGINT NOT NULL,
            version_id TEXT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (bucket, object_key, seq)
        )",
        // Version ids are unique per key (one `null` version at most).
        "CREATE UNIQUE INDEX IF NOT EXISTS nuage_versions_by_id
            ON nuage_versions (bucket, object_key, version_id)",
        // The newest version of each key that has one: listings walk this
        // table in key order instead of skipping older versions.
        "CREATE TABLE IF NOT EXISTS nuage_latest (
            bucket BYTEA NOT NULL,
            object_key BYTEA NOT NULL,
            seq BIGINT NOT NULL,
            PRIMARY KEY (bucket, object_key)
        )",
        "CREATE TABLE IF NOT EXISTS nuage_uploads (
            bucket BYTEA NOT NULL,
            object_key BYTEA NOT NULL,
            upload_id BYTEA NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (bucket, object_key, upload_id)
        )",
        "CREATE TABLE IF NOT EXISTS nuage_parts (
            upload_id BYTEA NOT NULL,
            part_number BIGINT NOT NULL,
            record BYTEA NOT NULL,
            PRIMARY KEY (upload_id, part_number)
        )",
        // How many records (versions, parts) reference each blob; no row:
        // none (the orphan collector may delete the blob).
        "CREATE TABLE IF NOT EXISTS nuage_blob_refs (
            blob_id TEXT PRIMARY KEY,
            refs BIGINT NOT NULL
        )",
        "CREATE TABLE IF NOT EXISTS nuage_documents (
            namespace BYTEA NOT NULL,
            doc_key BYTEA NOT NULL,
            revision BIGINT NOT NULL,
            value BYTEA NOT NULL,
            PRIMARY KEY (namespace, doc_key)
        )",
    ],
}];
