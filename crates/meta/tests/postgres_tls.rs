//! TLS to the PostgreSQL metadata database, against a real server that
//! speaks TLS only (`nuage_testsupport::postgres::tls_server`: `ssl = on`,
//! a certificate for 127.0.0.1 and localhost from a throwaway CA,
//! `hostssl`-only `pg_hba.conf`, a `cert`-authenticated role).
//!
//! `verify-full` with the right CA connects and serves metadata; with
//! another CA, or for a host name the certificate does not name, the
//! handshake fails with a certificate error; `disable` is refused by the
//! server; `require` connects without checking; mutual TLS authenticates a
//! role by its client certificate.
//!
//! Skipped (with a notice) where PostgreSQL is not installed, failed in CI.
#![allow(clippy::unwrap_used)]

use nuage_meta::postgres::{PostgresConfig, PostgresMetaStore, PostgresTls, TlsMode};
use nuage_meta::*;
use nuage_testsupport::postgres::{MTLS_USER, TlsPostgresServer, tls_server};

mod common;

/// A fresh database on the TLS server (owned by `owner`) and its URL, or
/// None when PostgreSQL is absent.
async fn database(owner: &'static str) -> Option<(&'static TlsPostgresServer, String)> {
    let tls = tls_server()?;
    let url = tokio::task::spawn_blocking(move || tls.server().create_database_owned_by(owner))
        .await
        .unwrap();
    Some((tls, url))
}

fn config(url: &str, tls: PostgresTls) -> PostgresConfig {
    let mut config = PostgresConfig::new(url);
    config.tls = tls;
    config
}

fn verify_full(ca_file: std::path::PathBuf) -> PostgresTls {
    PostgresTls {
        mode: Some(TlsMode::VerifyFull),
        ca_file: Some(ca_file),
        ..PostgresTls::default()
    }
}

/// A few metadata operations, read back.
async fn exercise(store: &PostgresMetaStore) {
    store
        .create_bucket(common::bucket("over-tls", Versioning::Enabled))
        .await
        .unwrap();
    let record = common::version("over-tls", "k", "blob-1", 1, ChunkBinding::Blob);
    store
        .put_version(PutVersion {
            record,
            null_version: false,
            condition: WriteCondition::IfNoneMatchAny,
            shared_blobs: Vec::new(),
        })
        .await
        .unwrap();
    let current = store
        .get_version("over-tls", "k", None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.key, "k");
    let listed = store.scan_latest("over-tls", "", None, 10).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(store.schema_version().await.unwrap() > 0);
}

async fn connect_error(config: &PostgresConfig) -> String {
    match PostgresMetaStore::connect(config).await {
        Ok(_) => panic!("connected, but should have been refused"),
        Err(e) => {
            let error = e.to_string();
            eprintln!("refused as expected: {error}");
            error
        }
    }
}

#[tokio::test]
async fn verify_full_with_the_servers_ca_connects_and_serves_metadata() {
    let Some((tls, url)) = database(nuage_testsupport::postgres::USER).await else {
        return;
    };
    let store = PostgresMetaStore::connect(&config(&url, verify_full(tls.ca_file())))
        .await
        .unwrap();
    exercise(&store).await;
    // The same through the URL's sslmode, by the name `localhost` (the
    // certificate names both), and no `tls` setting.
    let by_name = format!(
        "{}?sslmode=verify-full",
        url.replace("127.0.0.1", "localhost")
    );
    let settings = PostgresTls {
        ca_file: Some(tls.ca_file()),
        ..PostgresTls::default()
    };
    let config = config(&by_name, settings);
    assert_eq!(config.tls_mode().unwrap(), TlsMode::VerifyFull);
    let again = PostgresMetaStore::connect(&config).await.unwrap();
    assert!(again.get_bucket("over-tls").await.unwrap().is_some());
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_from_another_ca() {
    let Some((tls, url)) = database(nuage_testsupport::postgres::USER).await else {
        return;
    };
    let error = connect_error(&config(&url, verify_full(tls.other_ca_file()))).await;
    assert!(
        error.contains("invalid peer certificate") && error.contains("UnknownIssuer"),
        "{error}"
    );
    assert!(error.contains("verify-full"), "{error}");
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host_name() {
    let Some((tls, url)) = database(nuage_testsupport::postgres::USER).await else {
        return;
    };
    // The right server at the right address, reached under a name its
    // certificate does not carry.
    let (authority, dbname) = url
        .trim_start_matches("postgres://")
        .split_once('/')
        .unwrap();
    let port = authority.rsplit(':').next().unwrap();
    let wrong_name = format!(
        "host=wrong-name.nuage.test hostaddr=127.0.0.1 port={port} user=nuage dbname={dbname}"
    );
    let error = connect_error(&config(&wrong_name, verify_full(tls.ca_file()))).await;
    assert!(
        error.contains("invalid peer certificate") && error.contains("wrong-name.nuage.test"),
        "{error}"
    );
}

#[tokio::test]
async fn plaintext_is_refused_by_a_hostssl_only_server() {
    let Some((_, url)) = database(nuage_testsupport::postgres::USER).await else {
        return;
    };
    let settings = PostgresTls {
        mode: Some(TlsMode::Disable),
        ..PostgresTls::default()
    };
    let error = connect_error(&config(&url, settings)).await;
    assert!(
        error.contains("no pg_hba.conf entry") && error.contains("no encryption"),
        "{error}"
    );
    // A loopback URL with no TLS setting defaults to plaintext, refused too.
    let error = connect_error(&PostgresConfig::new(&url)).await;
    assert!(error.contains("no encryption"), "{error}");
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    let Some((_, url)) = database(nuage_testsupport::postgres::USER).await else {
        return;
    };
    let settings = PostgresTls {
        mode: Some(TlsMode::Require),
        ..PostgresTls::default()
    };
    // No CA given at all: `require` trusts whatever the server presents
    // (the server accepts TLS connections only, so this one is encrypted).
    let store = PostgresMetaStore::connect(&config(&url, settings))
        .await
        .unwrap();
    exercise(&store).await;
}

#[tokio::test]
async fn mutual_tls_authenticates_the_role_by_its_client_certificate() {
    let Some((tls, url)) = database(MTLS_USER).await else {
        return;
    };
    // Without a client certificate the server refuses the role.
    let error = connect_error(&config(&url, verify_full(tls.ca_file()))).await;
    assert!(error.contains("certificate"), "{error}");
    let settings = PostgresTls {
        mode: Some(TlsMode::VerifyFull),
        ca_file: Some(tls.ca_file()),
        client_cert: Some(tls.client_cert_file()),
        client_key: Some(tls.client_key_file()),
    };
    let store = PostgresMetaStore::connect(&config(&url, settings))
        .await
        .unwrap();
    exercise(&store).await;
}
