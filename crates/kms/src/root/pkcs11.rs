//! The production root of trust: an AES-256 key inside a hardware security
//! module, used over PKCS#11 (the `cryptoki` crate; SoftHSM2 in tests).
//!
//! The root key is a token object labelled by configuration (`nuage-root` by
//! default), created on first start with `CKA_TOKEN`, `CKA_PRIVATE`,
//! `CKA_SENSITIVE` true and `CKA_EXTRACTABLE`, `CKA_MODIFIABLE`, `CKA_WRAP`,
//! `CKA_UNWRAP` false: the HSM generates it, keeps it, and will not hand it
//! out. A key found under the label that is extractable or not sensitive is
//! refused rather than used. Wrapping a tenant key is one `CKM_AES_GCM`
//! encryption inside the HSM with a 12-byte IV from the HSM's generator and
//! the wrapped-key AAD of `nuage-crypto`; unwrapping is the matching
//! decryption. So the root key's bytes never exist in Nuage's memory or on
//! its disk; the tenant keys it protects do pass through this process, as
//! they must to wrap data keys.
//!
//! PKCS#11 calls block, so every one runs on tokio's blocking pool. A session
//! must not be used by two threads at once: the one session sits behind a
//! mutex. A session the HSM has dropped (token reset, logout) is reopened and
//! logged in again once, then the call is retried.
//!
//! The root's [`RootId`] (recorded beside every key it wraps) is a SHA-256
//! digest of the token label, the key label and the key's `CKA_ID`, which
//! Nuage sets to 16 random bytes when it generates the key: a key destroyed
//! and generated again under the same label is another root. (A key made by
//! an older Nuage has no `CKA_ID`; labels alone then name it.)
//!
//! This module must never read files or the environment: the module path,
//! token label and PIN arrive in [`Pkcs11RootConfig`].

use super::{ROOT_ID_BYTES, RootId, RootOfTrust, RootOfTrustError};
use crate::KeyError;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as Pkcs11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use nuage_crypto::{
    CryptoError, KEY_BYTES, KeyEncryptionKey, TAG_BYTES, WRAPPED_KEY_BYTES, WRAPPED_KEY_FORMAT_V1,
};
use sha2::{Digest as _, Sha256};
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use zeroize::Zeroizing;

/// The root key's label when the configuration names none.
pub const DEFAULT_KEY_LABEL: &str = "nuage-root";
/// AES-GCM IV length: 96 bits, the length GCM is designed for (SP 800-38D).
const GCM_IV_BYTES: usize = 12;
/// AES-256.
const ROOT_KEY_BYTES: u64 = 32;
/// Random bytes of the `CKA_ID` given to a generated root key.
const KEY_ID_ATTRIBUTE_BYTES: usize = 16;
/// Domain separation of the digest that makes an HSM root's [`RootId`].
const ROOT_ID_LABEL: &[u8] = b"nuage pkcs11 root-of-trust identifier v1";

/// Where the root key lives. Built by the binary from its configuration; the
/// PIN is read there (from a file only its owner can read) and zeroed here
/// when dropped.
pub struct Pkcs11RootConfig {
    /// The PKCS#11 library, for example `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The label of the token holding the root key.
    pub token_label: String,
    /// The token's user PIN.
    pub pin: Zeroizing<String>,
    /// The label of the root key object ([`DEFAULT_KEY_LABEL`] by default).
    pub key_label: String,
}

impl fmt::Debug for Pkcs11RootConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11RootConfig")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("pin", &"<redacted>")
            .field("key_label", &self.key_label)
            .finish()
    }
}

/// A root key in an HSM. Cheap to clone: clones share the session.
#[derive(Clone)]
pub struct Pkcs11Root {
    inner: Arc<Inner>,
}

struct Inner {
    context: Pkcs11,
    module: PathBuf,
    token_label: String,
    key_label: String,
    pin: AuthPin,
    /// Computed once at open, from the labels and the key's `CKA_ID`.
    root_id: RootId,
    /// Whether a missing key is generated (`open`) or refused
    /// (`open_existing`).
    create_if_missing: bool,
    /// `None` after the HSM dropped the session; reopened on next use.
    connection: Mutex<Option<Connection>>,
}

/// A logged-in session and the root key's handle in it.
struct Connection {
    session: Session,
    key: ObjectHandle,
}

impl fmt::Debug for Pkcs11Root {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkcs11Root")
            .field("module", &self.inner.module)
            .field("token_label", &self.inner.token_label)
            .field("key_label", &self.inner.key_label)
            .finish_non_exhaustive()
    }
}

impl Pkcs11Root {
    /// Loads the module, finds the token, logs in and finds the root key,
    /// creating it if the token has none under the label. Runs on the
    /// blocking pool.
    ///
    /// # Errors
    /// A module that does not load, no token with the label, a wrong or
    /// locked PIN, several keys under the label, a key that is extractable or
    /// not sensitive, or any other failure of the HSM.
    pub async fn open(config: Pkcs11RootConfig) -> Result<Self, RootOfTrustError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config, true))
            .await
            .map_err(|error| RootOfTrustError::Task(error.to_string()))?
    }

    /// [`Pkcs11Root::open`] for a key that must already exist: the root a
    /// migration moves keys *away* from, where generating a fresh key would
    /// only leave a stray object in the token.
    ///
    /// # Errors
    /// As [`Pkcs11Root::open`], and [`RootOfTrustError::KeyNotFound`] when
    /// the token has no key under the label.
    pub async fn open_existing(config: Pkcs11RootConfig) -> Result<Self, RootOfTrustError> {
        tokio::task::spawn_blocking(move || Self::open_blocking(config, false))
            .await
            .map_err(|error| RootOfTrustError::Task(error.to_string()))?
    }

    /// [`Pkcs11Root::open`], on the calling thread.
    fn open_blocking(
        config: Pkcs11RootConfig,
        create_if_missing: bool,
    ) -> Result<Self, RootOfTrustError> {
        let module_error = |error: &Pkcs11Error| RootOfTrustError::Module {
            module: config.module.clone(),
            detail: one_line(error),
        };
        let context = Pkcs11::new(&config.module).map_err(|e| module_error(&e))?;
        match context.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
            // Already initialized: another root in this process loaded the
            // same module (PKCS#11 state is per process, not per handle).
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
            Err(error) => return Err(module_error(&error)),
        }
        let mut inner = Inner {
            context,
            module: config.module.clone(),
            token_label: config.token_label.clone(),
            key_label: config.key_label.clone(),
            pin: AuthPin::from(config.pin.as_str()),
            root_id: RootId([0; ROOT_ID_BYTES]),
            create_if_missing,
            connection: Mutex::new(None),
        };
        let connection = inner.connect()?;
        inner.root_id = inner.read_root_id(&connection)?;
        *inner
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(connection);
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Runs `operation` on the blocking pool with the session and the root
    /// key. The outer error is a failure to reach the HSM at all; the inner
    /// one is the operation's own, left to the caller to interpret.
    async fn call<T, F>(&self, operation: F) -> Result<Result<T, Pkcs11Error>, RootOfTrustError>
    where
        T: Send + 'static,
        F: Fn(&Session, ObjectHandle) -> Result<T, Pkcs11Error> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || inner.call_blocking(&operation))
            .await
            .map_err(|error| RootOfTrustError::Task(error.to_string()))?
    }

    /// The label of the root key object.
    #[must_use]
    pub fn key_label(&self) -> &str {
        &self.inner.key_label
    }

    /// Destroys the root key inside the HSM. Every key it wrapped is then
    /// lost for good: call this only once nothing is stored under this root
    /// (after a completed migration, and only when the operator asks). This
    /// root is unusable afterwards.
    ///
    /// # Errors
    /// The HSM refused or could not be reached.
    pub async fn destroy_key(&self) -> Result<(), RootOfTrustError> {
        let result = self
            .call(|session, key| session.destroy_object(key))
            .await?;
        result.map_err(|e| self.inner.error("destroying the root key", &e))?;
        tracing::warn!(
            token = %self.inner.token_label,
            key = %self.inner.key_label,
            "destroyed the root key in the HSM"
        );
        Ok(())
    }

    fn failure(&self, operation: &'static str, error: &Pkcs11Error) -> KeyError {
        RootOfTrustError::Pkcs11 {
            token: self.inner.token_label.clone(),
            operation,
            detail: one_line(error),
        }
        .into()
    }
}

impl Inner {
    /// A new logged-in session on the token, and the root key in it.
    fn connect(&self) -> Result<Connection, RootOfTrustError> {
        let slot = self.find_slot()?;
        let session = self
            .context
            .open_rw_session(slot)
            .map_err(|e| self.error("opening a session", &e))?;
        match session.login(UserType::User, Some(&self.pin)) {
            // Login is per application, not per session: a second session
            // (a reconnection, another root on the same token) is already in.
            Ok(()) | Err(Pkcs11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
            Err(Pkcs11Error::Pkcs11(RvError::PinIncorrect, _)) => {
                return Err(RootOfTrustError::PinIncorrect {
                    token: self.token_label.clone(),
                });
            }
            Err(Pkcs11Error::Pkcs11(RvError::PinLocked, _)) => {
                return Err(RootOfTrustError::PinLocked {
                    token: self.token_label.clone(),
                });
            }
            Err(error) => return Err(self.error("logging in", &error)),
        }
        let key = self.find_or_create_key(&session)?;
        Ok(Connection { session, key })
    }

    /// The root's id: a digest of both labels and the key's `CKA_ID`.
    fn read_root_id(&self, connection: &Connection) -> Result<RootId, RootOfTrustError> {
        let attributes = connection
            .session
            .get_attributes(connection.key, &[AttributeType::Id])
            .map_err(|e| self.error("reading the root key's CKA_ID", &e))?;
        let key_id = attributes
            .into_iter()
            .find_map(|attribute| match attribute {
                Attribute::Id(id) => Some(id),
                _ => None,
            })
            .unwrap_or_default();
        let mut digest = Sha256::new();
        // Each part is length-prefixed, so no two label pairs collide.
        for part in [
            ROOT_ID_LABEL,
            self.token_label.as_bytes(),
            self.key_label.as_bytes(),
            key_id.as_slice(),
        ] {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part);
        }
        let mut id = [0u8; ROOT_ID_BYTES];
        id.copy_from_slice(&digest.finalize()[..ROOT_ID_BYTES]);
        Ok(RootId(id))
    }

    fn find_slot(&self) -> Result<Slot, RootOfTrustError> {
        let slots = self
            .context
            .get_slots_with_token()
            .map_err(|e| self.error("listing slots", &e))?;
        let mut found = Vec::new();
        for slot in slots {
            let info = self
                .context
                .get_token_info(slot)
                .map_err(|e| self.error("reading token information", &e))?;
            if info.label() == self.token_label {
                return Ok(slot);
            }
            // SoftHSM always offers one blank, uninitialized token: not worth
            // listing.
            if !info.label().is_empty() {
                found.push(info.label().to_owned());
            }
        }
        Err(RootOfTrustError::TokenNotFound {
            module: self.module.clone(),
            label: self.token_label.clone(),
            found,
        })
    }

    fn find_or_create_key(&self, session: &Session) -> Result<ObjectHandle, RootOfTrustError> {
        let template = [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(true),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
        ];
        let keys = session
            .find_objects(&template)
            .map_err(|e| self.error("searching for the root key", &e))?;
        let key = match keys.as_slice() {
            [] if self.create_if_missing => self.create_key(session)?,
            [] => {
                return Err(RootOfTrustError::KeyNotFound {
                    token: self.token_label.clone(),
                    label: self.key_label.clone(),
                });
            }
            [key] => *key,
            more => {
                return Err(RootOfTrustError::AmbiguousKey {
                    token: self.token_label.clone(),
                    label: self.key_label.clone(),
                    count: more.len(),
                });
            }
        };
        self.check_key(session, key)?;
        Ok(key)
    }

    /// Generates the root key inside the token.
    ///
    /// Two processes starting at once on a fresh token could both create a
    /// key; the next start then refuses the ambiguity instead of guessing.
    fn create_key(&self, session: &Session) -> Result<ObjectHandle, RootOfTrustError> {
        // A random CKA_ID, so that this key's RootId differs from that of
        // any earlier key under the same label.
        let mut key_id = vec![0u8; KEY_ID_ATTRIBUTE_BYTES];
        session
            .generate_random_slice(&mut key_id)
            .map_err(|e| self.error("generating the root key's CKA_ID", &e))?;
        let template = [
            Attribute::Id(key_id),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(ROOT_KEY_BYTES.into()),
            Attribute::Label(self.key_label.as_bytes().to_vec()),
            // Kept by the token across sessions, usable only when logged in.
            Attribute::Token(true),
            Attribute::Private(true),
            // Never leaves the HSM, in clear or wrapped, and that cannot be
            // changed afterwards.
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            // Used for AES-GCM encryption of tenant keys only.
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| self.error("generating the root key", &e))?;
        tracing::info!(
            token = %self.token_label,
            key = %self.key_label,
            "created the root key in the HSM (AES-256, sensitive, not extractable)"
        );
        Ok(key)
    }

    /// Refuses a key whose material could leave the HSM, or that is not an
    /// AES-256 key allowed to encrypt and decrypt.
    fn check_key(&self, session: &Session, key: ObjectHandle) -> Result<(), RootOfTrustError> {
        let attributes = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::ValueLen,
                    AttributeType::Encrypt,
                    AttributeType::Decrypt,
                ],
            )
            .map_err(|e| self.error("reading the root key's attributes", &e))?;
        let (mut sensitive, mut extractable, mut length, mut encrypt, mut decrypt) =
            (false, true, 0, false, false);
        for attribute in attributes {
            match attribute {
                Attribute::Sensitive(value) => sensitive = value,
                Attribute::Extractable(value) => extractable = value,
                Attribute::ValueLen(value) => length = *value,
                Attribute::Encrypt(value) => encrypt = value,
                Attribute::Decrypt(value) => decrypt = value,
                _ => {}
            }
        }
        let reason = if !sensitive {
            Some("it is not sensitive (CKA_SENSITIVE is false): its bytes can be read out")
        } else if extractable {
            Some("it is extractable (CKA_EXTRACTABLE is true): it can be exported wrapped")
        } else if length != ROOT_KEY_BYTES {
            Some("it is not a 256-bit AES key")
        } else if !(encrypt && decrypt) {
            Some("it may not encrypt and decrypt (CKA_ENCRYPT, CKA_DECRYPT)")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(RootOfTrustError::UnsuitableKey {
                token: self.token_label.clone(),
                label: self.key_label.clone(),
                reason,
            }),
            None => Ok(()),
        }
    }

    /// Runs `operation`, reconnecting and retrying once if the HSM had
    /// dropped the session.
    fn call_blocking<T>(
        &self,
        operation: &dyn Fn(&Session, ObjectHandle) -> Result<T, Pkcs11Error>,
    ) -> Result<Result<T, Pkcs11Error>, RootOfTrustError> {
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut retried = false;
        loop {
            let current = match connection.take() {
                Some(current) => current,
                None => self.connect()?,
            };
            let result = operation(&current.session, current.key);
            match result {
                Err(ref error) if session_lost(error) && !retried => {
                    tracing::warn!(
                        token = %self.token_label,
                        error = %one_line(error),
                        "the HSM dropped the session; reconnecting"
                    );
                    retried = true;
                }
                result => {
                    *connection = Some(current);
                    return Ok(result);
                }
            }
        }
    }

    fn error(&self, operation: &'static str, error: &Pkcs11Error) -> RootOfTrustError {
        RootOfTrustError::Pkcs11 {
            token: self.token_label.clone(),
            operation,
            detail: one_line(error),
        }
    }
}

#[async_trait::async_trait]
impl RootOfTrust for Pkcs11Root {
    fn describe(&self) -> String {
        format!(
            "key `{}` in PKCS#11 token `{}` ({}), root id {}",
            self.inner.key_label,
            self.inner.token_label,
            self.inner.module.display(),
            self.inner.root_id
        )
    }

    fn id(&self) -> RootId {
        self.inner.root_id
    }

    async fn wrap_key(&self, key: &KeyEncryptionKey, aad: &[u8]) -> Result<Vec<u8>, KeyError> {
        let plaintext = Zeroizing::new(*key.expose_bytes());
        let aad = nuage_crypto::key_encryption_key_wrap_aad(aad);
        let result = self
            .call(move |session, root| {
                let mut iv = [0u8; GCM_IV_BYTES];
                session.generate_random_slice(&mut iv)?;
                let sealed = {
                    let params = GcmParams::new(&mut iv, &aad, tag_bits())?;
                    session.encrypt(&Mechanism::AesGcm(params), root, plaintext.as_ref())?
                };
                Ok((iv, sealed))
            })
            .await?;
        let (iv, sealed) = result.map_err(|e| self.failure("AES-GCM encryption", &e))?;
        if sealed.len() != KEY_BYTES + TAG_BYTES {
            return Err(RootOfTrustError::Pkcs11 {
                token: self.inner.token_label.clone(),
                operation: "AES-GCM encryption",
                detail: format!(
                    "returned {} bytes, not the {} of a key and its tag",
                    sealed.len(),
                    KEY_BYTES + TAG_BYTES
                ),
            }
            .into());
        }
        let mut wrapped = Vec::with_capacity(WRAPPED_KEY_BYTES);
        wrapped.push(WRAPPED_KEY_FORMAT_V1);
        wrapped.extend_from_slice(&iv);
        wrapped.extend_from_slice(&sealed);
        Ok(wrapped)
    }

    async fn unwrap_key(&self, wrapped: &[u8], aad: &[u8]) -> Result<KeyEncryptionKey, KeyError> {
        if wrapped.len() != WRAPPED_KEY_BYTES {
            return Err(CryptoError::MalformedWrappedKey("wrong length").into());
        }
        let (version, rest) = wrapped.split_at(1);
        if version[0] != WRAPPED_KEY_FORMAT_V1 {
            return Err(CryptoError::MalformedWrappedKey("unknown format version").into());
        }
        let (iv, sealed) = rest.split_at(GCM_IV_BYTES);
        let mut iv_bytes = [0u8; GCM_IV_BYTES];
        iv_bytes.copy_from_slice(iv);
        let sealed = sealed.to_vec();
        let aad = nuage_crypto::key_encryption_key_wrap_aad(aad);
        let result = self
            .call(move |session, root| {
                let mut iv = iv_bytes;
                let params = GcmParams::new(&mut iv, &aad, tag_bits())?;
                // Straight into a buffer that is zeroed when dropped.
                session
                    .decrypt(&Mechanism::AesGcm(params), root, &sealed)
                    .map(Zeroizing::new)
            })
            .await?;
        let plaintext = match result {
            Ok(plaintext) => plaintext,
            // The tag did not verify: another root key, another AAD, or an
            // altered byte. SoftHSM 2.6 reports a failed tag as
            // CKR_GENERAL_ERROR, which a real fault can also cause: the code
            // goes to the debug log so the two can be told apart.
            Err(
                error @ Pkcs11Error::Pkcs11(
                    RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange
                    | RvError::GeneralError,
                    _,
                ),
            ) => {
                tracing::debug!(error = %one_line(&error), "the HSM refused to unwrap a tenant key");
                return Err(CryptoError::UnwrapAuthentication.into());
            }
            Err(error) => return Err(self.failure("AES-GCM decryption", &error)),
        };
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        if plaintext.len() != KEY_BYTES {
            return Err(CryptoError::MalformedWrappedKey("wrong key length").into());
        }
        key.copy_from_slice(&plaintext);
        Ok(KeyEncryptionKey::from_bytes(key))
    }
}

fn tag_bits() -> cryptoki::types::Ulong {
    ((TAG_BYTES * 8) as u64).into()
}

/// Errors after which a new session may succeed: the session, the login or
/// the key's handle is gone (a token reset, a logout, a restarted HSM).
fn session_lost(error: &Pkcs11Error) -> bool {
    matches!(
        error,
        Pkcs11Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::DeviceRemoved
                | RvError::TokenNotPresent
                | RvError::UserNotLoggedIn
                | RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid,
            _
        )
    )
}

/// A PKCS#11 error in one line: `C_Login: PinIncorrect` rather than the
/// paragraph `cryptoki` prints.
fn one_line(error: &Pkcs11Error) -> String {
    match error {
        Pkcs11Error::Pkcs11(code, function) => format!("C_{function:?}: {code:?}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
