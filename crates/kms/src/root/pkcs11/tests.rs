//! Tests against a real PKCS#11 module: SoftHSM2 (`apt-get install softhsm2`,
//! done by `scripts/install-test-deps.sh`), on a token made for each test.
//!
//! SoftHSM finds its tokens through `SOFTHSM2_CONF`, read when the library
//! initializes. Setting an environment variable inside this multi-threaded
//! test process is unsound (and `unsafe_code` is forbidden), so each test
//! runs twice: the outer run makes a token in a temporary directory and
//! re-runs this test binary on that one test, with `SOFTHSM2_CONF` in the
//! child's environment; the inner run does the work.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::KeyService;
use nuage_meta::DocumentStore;
use nuage_meta::embedded::EmbeddedMetaStore;
use std::path::{Path, PathBuf};
use std::process::Command;

const TOKEN_LABEL: &str = "nuage-test";
const USER_PIN: &str = "1234";
const SO_PIN: &str = "5678";
/// Set in the child process: the test's token directory is ready.
const CHILD_MARKER: &str = "NUAGE_TEST_SOFTHSM_CHILD";

/// Where Debian (and derivatives) put SoftHSM2's PKCS#11 module.
const MODULE_CANDIDATES: [&str; 3] = [
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

fn softhsm_module() -> PathBuf {
    MODULE_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| {
            panic!(
                "SoftHSM2 is not installed (no {}): run scripts/install-test-deps.sh \
                 (it apt-installs softhsm2)",
                MODULE_CANDIDATES.join(", ")
            )
        })
}

/// A fresh SoftHSM2 token in a temporary directory.
struct TestToken {
    _dir: tempfile::TempDir,
    conf: PathBuf,
}

impl TestToken {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens");
        std::fs::create_dir(&tokens).unwrap();
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let output = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN_LABEL])
            .args(["--pin", USER_PIN, "--so-pin", SO_PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot run softhsm2-util ({error}): SoftHSM2 is not installed? \
                     Run scripts/install-test-deps.sh"
                )
            });
        assert!(
            output.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Self { _dir: dir, conf }
    }
}

/// In the outer run: makes a token, runs `test` (a function of this module)
/// in a child process pointed at it, checks that the child ran exactly that
/// one test and passed, and returns `None`. In the child: returns the
/// module's path, for the test to go on.
fn softhsm_child(test: &str) -> Option<PathBuf> {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return Some(softhsm_module());
    }
    softhsm_module();
    let token = TestToken::new();
    // `nuage_kms::root::pkcs11::tests` -> `root::pkcs11::tests::TEST`, the
    // name libtest filters on.
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let name = format!("{module}::{test}");
    let output = Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env("SOFTHSM2_CONF", &token.conf)
        .env(CHILD_MARKER, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} against SoftHSM2 failed:\n{stdout}\n{stderr}"
    );
    None
}

fn config(module: &Path, key_label: &str) -> Pkcs11RootConfig {
    Pkcs11RootConfig {
        module: module.to_owned(),
        token_label: TOKEN_LABEL.to_owned(),
        pin: Zeroizing::new(USER_PIN.to_owned()),
        key_label: key_label.to_owned(),
    }
}

/// A session of the test's own on the token, to look at what Nuage made.
fn inspector(module: &Path) -> Session {
    let context = Pkcs11::new(module).unwrap();
    match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(error) => panic!("{error}"),
    }
    let slot = context
        .get_slots_with_token()
        .unwrap()
        .into_iter()
        .find(|slot| context.get_token_info(*slot).unwrap().label() == TOKEN_LABEL)
        .unwrap();
    let session = context.open_rw_session(slot).unwrap();
    match session.login(UserType::User, Some(&AuthPin::from(USER_PIN))) {
        Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => panic!("{error}"),
    }
    session
}

fn keys_labelled(session: &Session, label: &str) -> Vec<ObjectHandle> {
    session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .unwrap()
}

#[tokio::test]
async fn wraps_and_unwraps_tenant_keys_in_the_hsm() {
    let Some(module) = softhsm_child("wraps_and_unwraps_tenant_keys_in_the_hsm") else {
        return;
    };
    let root = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    assert!(
        root.describe().contains("nuage-test"),
        "{}",
        root.describe()
    );
    let tenant = KeyEncryptionKey::generate().unwrap();
    let wrapped = root.wrap_key(&tenant, b"111122223333").await.unwrap();
    assert_eq!(wrapped.len(), WRAPPED_KEY_BYTES);
    assert_eq!(wrapped[0], WRAPPED_KEY_FORMAT_V1);
    assert!(
        !wrapped
            .windows(KEY_BYTES)
            .any(|window| window == tenant.expose_bytes()),
        "the tenant key must not appear in clear"
    );
    // A fresh IV from the HSM each time.
    assert_ne!(
        wrapped,
        root.wrap_key(&tenant, b"111122223333").await.unwrap()
    );
    let back = root.unwrap_key(&wrapped, b"111122223333").await.unwrap();
    assert_eq!(back.expose_bytes(), tenant.expose_bytes());

    // Bound to its AAD; every byte authenticated.
    assert!(matches!(
        root.unwrap_key(&wrapped, b"444455556666").await,
        Err(KeyError::Crypto(CryptoError::UnwrapAuthentication))
    ));
    for byte in [1, 12, 13, 44, 45, 60] {
        let mut altered = wrapped.clone();
        altered[byte] ^= 0x01;
        assert!(
            matches!(
                root.unwrap_key(&altered, b"111122223333").await,
                Err(KeyError::Crypto(CryptoError::UnwrapAuthentication))
            ),
            "byte {byte}"
        );
    }
    assert!(matches!(
        root.unwrap_key(&wrapped[..60], b"111122223333").await,
        Err(KeyError::Crypto(CryptoError::MalformedWrappedKey(_)))
    ));

    // A second start finds the same key instead of making another.
    drop(root);
    let again = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let back = again.unwrap_key(&wrapped, b"111122223333").await.unwrap();
    assert_eq!(back.expose_bytes(), tenant.expose_bytes());
    assert_eq!(
        keys_labelled(&inspector(&module), DEFAULT_KEY_LABEL).len(),
        1
    );

    // Same format as a file root's, but a file root cannot open it.
    let file_root = KeyEncryptionKey::generate().unwrap();
    assert!(matches!(
        file_root.unwrap_key(&wrapped, b"111122223333").await,
        Err(KeyError::Crypto(CryptoError::UnwrapAuthentication))
    ));
}

#[tokio::test]
async fn the_key_service_runs_on_the_hsm_root() {
    let Some(module) = softhsm_child("the_key_service_runs_on_the_hsm_root") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
    let root = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let root_id = root.id();
    let keys = KeyService::new(store.clone(), root.clone());
    let (_, wrapped) = keys.new_data_key("111122223333", b"binding").await.unwrap();
    // A new service (a restart) unwraps the tenant key through the HSM.
    let again = KeyService::new(store.clone(), root);
    again
        .open_data_key(
            "111122223333",
            &wrapped,
            b"binding",
            crate::AccessReason::CustomerInitiatedAccess,
        )
        .await
        .unwrap();
    // The stored tenant key has the usual format, and only the HSM opens it.
    let doc = store
        .get_document("kms.tenant-key", "111122223333")
        .await
        .unwrap()
        .unwrap();
    let stored = crate::TaggedWrappedKey::parse(&doc.value).unwrap();
    assert_eq!(stored.root(), Some(root_id));
    assert_eq!(stored.wrapped().len(), WRAPPED_KEY_BYTES);
    let with_file_root = KeyService::new(store, KeyEncryptionKey::generate().unwrap());
    assert!(
        with_file_root
            .open_data_key(
                "111122223333",
                &wrapped,
                b"binding",
                crate::AccessReason::CustomerInitiatedAccess,
            )
            .await
            .is_err()
    );
}

#[tokio::test]
async fn the_root_key_never_leaves_the_hsm() {
    let Some(module) = softhsm_child("the_root_key_never_leaves_the_hsm") else {
        return;
    };
    let _root = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let session = inspector(&module);
    let [key] = keys_labelled(&session, DEFAULT_KEY_LABEL)[..] else {
        panic!("exactly one root key");
    };
    // Its value cannot be read...
    assert!(matches!(
        session
            .get_attribute_info(key, &[AttributeType::Value])
            .unwrap()[..],
        [cryptoki::object::AttributeInfo::Sensitive]
    ));
    assert!(
        session
            .get_attributes(key, &[AttributeType::Value])
            .unwrap()
            .is_empty(),
        "CKA_VALUE must be refused"
    );
    // ...and never could be.
    let attributes = session
        .get_attributes(
            key,
            &[
                AttributeType::Token,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Modifiable,
                AttributeType::ValueLen,
            ],
        )
        .unwrap();
    for attribute in &attributes {
        match attribute {
            Attribute::Token(value)
            | Attribute::Sensitive(value)
            | Attribute::AlwaysSensitive(value)
            | Attribute::NeverExtractable(value) => assert!(*value, "{attribute:?}"),
            Attribute::Extractable(value) | Attribute::Modifiable(value) => {
                assert!(!*value, "{attribute:?}");
            }
            Attribute::ValueLen(value) => assert_eq!(**value, 32),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(attributes.len(), 7);
    // It cannot be exported wrapped under another key either.
    let wrapping_key = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(false),
                Attribute::Wrap(true),
            ],
        )
        .unwrap();
    match session.wrap_key(&Mechanism::AesKeyWrap, wrapping_key, key) {
        Err(Pkcs11Error::Pkcs11(RvError::KeyUnextractable, _)) => {}
        other => panic!("wrapping the root key out of the HSM: {other:?}"),
    }
    // Nor made extractable.
    assert!(
        session
            .update_attributes(key, &[Attribute::Extractable(true)])
            .is_err()
    );
}

#[tokio::test]
async fn a_key_wrapped_under_one_hsm_key_does_not_unwrap_under_another() {
    let Some(module) =
        softhsm_child("a_key_wrapped_under_one_hsm_key_does_not_unwrap_under_another")
    else {
        return;
    };
    let first = Pkcs11Root::open(config(&module, "root-a")).await.unwrap();
    let second = Pkcs11Root::open(config(&module, "root-b")).await.unwrap();
    let tenant = KeyEncryptionKey::generate().unwrap();
    let wrapped = first.wrap_key(&tenant, b"111122223333").await.unwrap();
    let result = second.unwrap_key(&wrapped, b"111122223333").await;
    assert!(
        matches!(
            result,
            Err(KeyError::Crypto(CryptoError::UnwrapAuthentication))
        ),
        "{result:?}"
    );
    let back = first.unwrap_key(&wrapped, b"111122223333").await.unwrap();
    assert_eq!(back.expose_bytes(), tenant.expose_bytes());
}

#[tokio::test]
async fn start_up_failures_say_what_is_wrong() {
    let Some(module) = softhsm_child("start_up_failures_say_what_is_wrong") else {
        return;
    };
    let wrong_pin = Pkcs11RootConfig {
        pin: Zeroizing::new("0000".to_owned()),
        ..config(&module, DEFAULT_KEY_LABEL)
    };
    let error = Pkcs11Root::open(wrong_pin).await.unwrap_err();
    assert!(
        matches!(error, RootOfTrustError::PinIncorrect { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("PIN"), "{error}");

    let no_token = Pkcs11RootConfig {
        token_label: "no-such-token".to_owned(),
        ..config(&module, DEFAULT_KEY_LABEL)
    };
    let error = Pkcs11Root::open(no_token).await.unwrap_err().to_string();
    assert!(
        error.contains("no-such-token") && error.contains("`nuage-test`"),
        "{error}"
    );

    let no_module = Pkcs11RootConfig {
        module: PathBuf::from("/nonexistent/libpkcs11.so"),
        ..config(&module, DEFAULT_KEY_LABEL)
    };
    let error = Pkcs11Root::open(no_module).await.unwrap_err();
    assert!(matches!(error, RootOfTrustError::Module { .. }), "{error}");
    assert!(
        error.to_string().contains("/nonexistent/libpkcs11.so"),
        "{error}"
    );

    // A key under the label that could leave the HSM is refused, not used.
    let session = inspector(&module);
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32u64.into()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
                Attribute::Label(b"leaky".to_vec()),
            ],
        )
        .unwrap();
    let error = Pkcs11Root::open(config(&module, "leaky"))
        .await
        .unwrap_err();
    assert!(
        matches!(error, RootOfTrustError::UnsuitableKey { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn a_dropped_session_is_reopened() {
    let Some(module) = softhsm_child("a_dropped_session_is_reopened") else {
        return;
    };
    let root = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let tenant = KeyEncryptionKey::generate().unwrap();
    let wrapped = root.wrap_key(&tenant, b"t").await.unwrap();
    // Login state is shared by all of the application's sessions: logging
    // out here logs the root's session out too.
    inspector(&module).logout().unwrap();
    let back = root.unwrap_key(&wrapped, b"t").await.unwrap();
    assert_eq!(back.expose_bytes(), tenant.expose_bytes());
}

/// Tenant keys and KMS key materials under `root`, for a migration to move.
async fn fill(
    store: &Arc<EmbeddedMetaStore>,
    root: Arc<dyn RootOfTrust>,
) -> Vec<(String, Vec<u8>)> {
    let keys = KeyService::new(store.clone(), root);
    let mut wrapped = Vec::new();
    for tenant in ["111122223333", "444455556666"] {
        let (_, data_key) = keys.new_data_key(tenant, b"binding").await.unwrap();
        wrapped.push((tenant.to_owned(), data_key));
    }
    let kms = crate::CustomerKeys::new(keys, Arc::new(nuage_base::SystemClock), "fr-par");
    kms.create_key("111122223333", crate::NewKey::default())
        .await
        .unwrap();
    wrapped
}

async fn opens_all(
    store: &Arc<EmbeddedMetaStore>,
    root: Arc<dyn RootOfTrust>,
    wrapped: &[(String, Vec<u8>)],
) -> bool {
    let keys = KeyService::new(store.clone(), root);
    for (tenant, data_key) in wrapped {
        if keys
            .open_data_key(
                tenant,
                data_key,
                b"binding",
                crate::AccessReason::CustomerInitiatedAccess,
            )
            .await
            .is_err()
        {
            return false;
        }
    }
    true
}

#[tokio::test]
async fn a_file_root_migrates_into_the_hsm() {
    let Some(module) = softhsm_child("a_file_root_migrates_into_the_hsm") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
    let file: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
    let wrapped = fill(&store, Arc::clone(&file)).await;
    let hsm = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let hsm_id = hsm.id();
    let report = crate::rewrap(store.as_ref(), file.as_ref(), &hsm, "fr-par", &[])
        .await
        .unwrap();
    assert_eq!(report.of(crate::WrappedKind::TenantKey).rewrapped, 2);
    assert_eq!(report.of(crate::WrappedKind::KmsKeyMaterial).rewrapped, 1);
    let census = crate::census(store.as_ref(), &[]).await.unwrap();
    assert_eq!((census.under(hsm_id), census.not_under(hsm_id)), (3, 0));
    assert!(opens_all(&store, Arc::new(hsm), &wrapped).await);
    assert!(!opens_all(&store, file, &wrapped).await);
}

#[tokio::test]
async fn an_hsm_key_rotates_to_a_new_key_and_the_old_one_is_destroyed() {
    let Some(module) =
        softhsm_child("an_hsm_key_rotates_to_a_new_key_and_the_old_one_is_destroyed")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
    let old = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let wrapped = fill(&store, Arc::new(old.clone())).await;
    let new = Pkcs11Root::open(config(&module, "nuage-root-g2"))
        .await
        .unwrap();
    assert_ne!(old.id(), new.id(), "another key, another root");
    // Generated like the first: sensitive, not extractable, with a CKA_ID.
    let session = inspector(&module);
    let [generated] = keys_labelled(&session, "nuage-root-g2")[..] else {
        panic!("one new key");
    };
    let attributes = session
        .get_attributes(
            generated,
            &[
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::Id,
            ],
        )
        .unwrap();
    assert!(attributes.contains(&Attribute::Sensitive(true)));
    assert!(attributes.contains(&Attribute::Extractable(false)));
    assert!(
        attributes
            .iter()
            .any(|a| matches!(a, Attribute::Id(id) if id.len() == KEY_ID_ATTRIBUTE_BYTES))
    );

    let report = crate::rewrap(store.as_ref(), &old, &new, "fr-par", &[])
        .await
        .unwrap();
    assert_eq!(report.rewrapped(), 3);
    // Rerun: nothing left to do.
    let again = crate::rewrap(store.as_ref(), &old, &new, "fr-par", &[])
        .await
        .unwrap();
    assert_eq!(again.rewrapped(), 0);
    assert!(opens_all(&store, Arc::new(new.clone()), &wrapped).await);

    old.destroy_key().await.unwrap();
    assert!(keys_labelled(&session, DEFAULT_KEY_LABEL).is_empty());
    assert_eq!(keys_labelled(&session, "nuage-root-g2").len(), 1);
    assert!(opens_all(&store, Arc::new(new), &wrapped).await);
}

#[tokio::test]
async fn a_wrong_hsm_key_as_the_old_root_changes_nothing() {
    let Some(module) = softhsm_child("a_wrong_hsm_key_as_the_old_root_changes_nothing") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap());
    let file: Arc<dyn RootOfTrust> = Arc::new(KeyEncryptionKey::generate().unwrap());
    let wrapped = fill(&store, Arc::clone(&file)).await;
    let before = store
        .scan_documents("kms.tenant-key", "", None, 100)
        .await
        .unwrap();
    // The old root of a migration is opened, never generated.
    let absent = Pkcs11Root::open_existing(config(&module, "not-the-root")).await;
    assert!(
        matches!(absent, Err(RootOfTrustError::KeyNotFound { ref label, .. }) if label == "not-the-root"),
        "{absent:?}"
    );
    assert!(keys_labelled(&inspector(&module), "not-the-root").is_empty());
    let wrong = Pkcs11Root::open(config(&module, "not-the-root"))
        .await
        .unwrap();
    let new = Pkcs11Root::open(config(&module, DEFAULT_KEY_LABEL))
        .await
        .unwrap();
    let error = crate::rewrap(store.as_ref(), &wrong, &new, "fr-par", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(error, crate::RewrapError::ThirdRoot { .. }),
        "{error}"
    );
    let after = store
        .scan_documents("kms.tenant-key", "", None, 100)
        .await
        .unwrap();
    assert_eq!(before, after);
    assert!(opens_all(&store, file, &wrapped).await);
}
