//! `nuage serve` with `[metadata] backend = "postgres"`, against a
//! throwaway PostgreSQL that the test starts (Debian's packages, see
//! `nuage-testsupport`), driven by the aws CLI: buckets, objects, listings,
//! multipart uploads and versioning work; a restart finds everything again;
//! and a second gateway on the same database serves the same namespace
//! (buckets, listings, heads: the metadata; object bytes stay in the blob
//! store of the gateway that wrote them until storage nodes are shared).
//!
//! Without PostgreSQL installed the test is skipped with a notice, except in
//! CI (`CI=true`), where it fails.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]
mod common;

use common::{Server, aws_err, aws_ok};
use std::path::{Path, PathBuf};

fn config_file(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("nuage.toml");
    std::fs::write(
        &path,
        format!("[metadata]\nbackend = \"postgres\"\nurl = \"{url}\"\npool_size = 8\n"),
    )
    .unwrap();
    path
}

fn start(data_dir: &Path, config: &Path) -> Server {
    Server::start_in(data_dir, &["--config", config.to_str().unwrap()])
}

/// The ETag of `key` in bucket `pg-shared`, as `aws s3api head-object` prints it.
fn etag_of(server: &Server, home: &Path, key: &str) -> String {
    aws_ok(
        server,
        home,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "pg-shared",
            "--key",
            key,
            "--query",
            "ETag",
        ],
    )
}

fn lines(text: &str) -> Vec<String> {
    let mut out: Vec<String> = text
        .split_whitespace()
        .filter(|w| *w != "None")
        .map(str::to_owned)
        .collect();
    out.sort();
    out
}

#[test]
fn gateways_on_one_postgres_database_serve_one_namespace() {
    let Some(postgres) = nuage_testsupport::postgres::server() else {
        return;
    };
    let url = postgres.create_database();
    let root = tempfile::tempdir().unwrap();
    let config = config_file(root.path(), &url);
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    let data_a = root.path().join("gateway-a");
    let mut a = start(&data_a, &config);
    assert!(
        !data_a.join("meta.redb").exists(),
        "the metadata is in PostgreSQL, not in the data directory"
    );

    aws_ok(
        &a,
        home,
        &["s3api", "create-bucket", "--bucket", "pg-shared"],
    );
    let small = root.path().join("small.txt");
    std::fs::write(&small, b"hello from postgres metadata").unwrap();
    for key in ["docs/a.txt", "docs/b.txt", "top.txt"] {
        aws_ok(
            &a,
            home,
            &[
                "s3api",
                "put-object",
                "--bucket",
                "pg-shared",
                "--key",
                key,
                "--body",
                small.to_str().unwrap(),
            ],
        );
    }
    let fetched = root.path().join("fetched.txt");
    aws_ok(
        &a,
        home,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "pg-shared",
            "--key",
            "docs/a.txt",
            fetched.to_str().unwrap(),
        ],
    );
    assert_eq!(
        std::fs::read(&fetched).unwrap(),
        b"hello from postgres metadata"
    );
    let listed = aws_ok(
        &a,
        home,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "pg-shared",
            "--prefix",
            "docs/",
            "--query",
            "Contents[].Key",
        ],
    );
    assert_eq!(lines(&listed), ["docs/a.txt", "docs/b.txt"]);
    aws_ok(
        &a,
        home,
        &[
            "s3api",
            "delete-object",
            "--bucket",
            "pg-shared",
            "--key",
            "docs/b.txt",
        ],
    );
    let error = aws_err(
        &a,
        home,
        &[
            "s3api",
            "head-object",
            "--bucket",
            "pg-shared",
            "--key",
            "docs/b.txt",
        ],
    );
    assert!(
        error.contains("404") || error.contains("Not Found"),
        "{error}"
    );

    // Multipart: the aws CLI splits a 20 MiB file into 8 MiB parts.
    let big = root.path().join("big.bin");
    let big_bytes = common::random_bytes(20 * 1024 * 1024, 6);
    std::fs::write(&big, &big_bytes).unwrap();
    aws_ok(
        &a,
        home,
        &["s3", "cp", big.to_str().unwrap(), "s3://pg-shared/big.bin"],
    );
    let etag = etag_of(&a, home, "big.bin");
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "multipart ETag: {etag}"
    );

    // Versioning.
    aws_ok(
        &a,
        home,
        &[
            "s3api",
            "put-bucket-versioning",
            "--bucket",
            "pg-shared",
            "--versioning-configuration",
            "Status=Enabled",
        ],
    );
    for _ in 0..2 {
        aws_ok(
            &a,
            home,
            &[
                "s3api",
                "put-object",
                "--bucket",
                "pg-shared",
                "--key",
                "v.txt",
                "--body",
                small.to_str().unwrap(),
            ],
        );
    }
    let versions = aws_ok(
        &a,
        home,
        &[
            "s3api",
            "list-object-versions",
            "--bucket",
            "pg-shared",
            "--prefix",
            "v.txt",
            "--query",
            "Versions[].VersionId",
        ],
    );
    assert_eq!(lines(&versions).len(), 2, "{versions}");

    // A restart finds everything in the database.
    a.stop();
    let a = start(&data_a, &config);
    let fetched_big = root.path().join("fetched.bin");
    aws_ok(
        &a,
        home,
        &[
            "s3api",
            "get-object",
            "--bucket",
            "pg-shared",
            "--key",
            "big.bin",
            fetched_big.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&fetched_big).unwrap() == big_bytes,
        "big.bin after restart"
    );
    let all = aws_ok(
        &a,
        home,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "pg-shared",
            "--query",
            "Contents[].Key",
        ],
    );
    assert_eq!(lines(&all), ["big.bin", "docs/a.txt", "top.txt", "v.txt"]);

    // A second gateway on the same database: its own data directory (blobs,
    // audit logs), the same root of trust and bootstrap credentials (tenant
    // keys and the audit signing key in the database are sealed by it).
    let data_b = root.path().join("gateway-b");
    std::fs::create_dir_all(&data_b).unwrap();
    for file in ["root.key", "credentials.toml"] {
        std::fs::copy(data_a.join(file), data_b.join(file)).unwrap();
    }
    let b = start(&data_b, &config);
    let buckets = aws_ok(
        &b,
        home,
        &["s3api", "list-buckets", "--query", "Buckets[].Name"],
    );
    assert_eq!(lines(&buckets), ["pg-shared"]);
    let seen_by_b = aws_ok(
        &b,
        home,
        &[
            "s3api",
            "list-objects-v2",
            "--bucket",
            "pg-shared",
            "--query",
            "Contents[].Key",
        ],
    );
    assert_eq!(
        lines(&seen_by_b),
        lines(&all),
        "list-after-write across gateways"
    );
    let head_b = etag_of(&b, home, "big.bin");
    assert_eq!(
        head_b, etag,
        "read-after-write of the metadata across gateways"
    );
    // And back: a bucket made on b is at once on a; a conditional create of
    // an existing key through b fails as it would on a.
    aws_ok(
        &b,
        home,
        &["s3api", "create-bucket", "--bucket", "pg-from-b"],
    );
    let buckets_a = aws_ok(
        &a,
        home,
        &["s3api", "list-buckets", "--query", "Buckets[].Name"],
    );
    assert_eq!(lines(&buckets_a), ["pg-from-b", "pg-shared"]);
    let conflict = aws_err(
        &b,
        home,
        &[
            "s3api",
            "put-object",
            "--bucket",
            "pg-shared",
            "--key",
            "top.txt",
            "--body",
            small.to_str().unwrap(),
            "--if-none-match",
            "*",
        ],
    );
    assert!(
        conflict.contains("PreconditionFailed") || conflict.contains("412"),
        "{conflict}"
    );
}
