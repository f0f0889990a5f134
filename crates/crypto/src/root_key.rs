//! The development root of trust: a key-encryption key kept in a local file.
//!
//! **Development only.** Anyone who can read the file (or a backup of it, or
//! the disk) can decrypt every object. Production keeps the root key inside a
//! hardware security module and reaches it through PKCS#11 (`nuage-kms`'s
//! `Pkcs11Root`, `[root_of_trust] kind = "pkcs11"`); this file is the
//! default only so that `nuage serve` works with no setup.
//!
//! This module owns the file's format (exactly [`KEY_BYTES`] random bytes, no
//! header) and its safety rules: created with mode `0600`, written to a
//! temporary file that is fsynced before it appears under its name, and never
//! read if group or others have any access to it. It must never overwrite an
//! existing key file: losing the root key loses every object.

use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::keys::KEY_BYTES;
use crate::{CryptoError, KeyEncryptionKey};

/// Permission bits that must be clear on a root key file: all access by group
/// and others.
const GROUP_OTHER_ACCESS_MASK: u32 = 0o077;
const ROOT_KEY_FILE_MODE: u32 = 0o600;

/// The development root key file. See the module documentation: this is not
/// how a production deployment holds its root key.
#[derive(Debug)]
pub struct RootKeyFile;

impl RootKeyFile {
    /// Reads the root key at `path`, or creates one there if no file exists.
    ///
    /// Creation writes 32 fresh random bytes to a temporary file in the same
    /// directory (mode `0600`), fsyncs it, links it into place without ever
    /// replacing an existing file, and fsyncs the directory. If another
    /// process creates the key concurrently, both end up with the same key.
    ///
    /// Refuses ([`CryptoError::RootKeyPermissions`]) a file that group or
    /// others can read, write or execute, a path that is not a regular file,
    /// and a file that is not exactly 32 bytes long.
    pub fn open_or_create(path: &Path) -> Result<KeyEncryptionKey, CryptoError> {
        match Self::open(path) {
            Err(CryptoError::RootKeyIo { source, .. }) if source.kind() == ErrorKind::NotFound => {
                Self::create(path)
            }
            result => result,
        }
    }

    fn open(path: &Path) -> Result<KeyEncryptionKey, CryptoError> {
        let io_error = |source| CryptoError::RootKeyIo {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(io_error)?;
        // Checked on the open handle, so the file read is the file checked.
        let metadata = file.metadata().map_err(io_error)?;
        if !metadata.is_file() {
            return Err(CryptoError::RootKeyNotAFile {
                path: path.to_owned(),
            });
        }
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & GROUP_OTHER_ACCESS_MASK != 0 {
            return Err(CryptoError::RootKeyPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        if metadata.len() != KEY_BYTES as u64 {
            return Err(CryptoError::RootKeyLength {
                path: path.to_owned(),
                len: metadata.len(),
            });
        }
        let mut key = Zeroizing::new([0u8; KEY_BYTES]);
        file.read_exact(key.as_mut()).map_err(io_error)?;
        Ok(KeyEncryptionKey::from_secret(key))
    }

    fn create(path: &Path) -> Result<KeyEncryptionKey, CryptoError> {
        let io_error = |source| CryptoError::RootKeyIo {
            path: path.to_owned(),
            source,
        };
        let key = KeyEncryptionKey::generate()?;
        let temp = temp_path(path)?;
        let written = write_synced(&temp, key.secret());
        if let Err(source) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error(source));
        }
        // A hard link, not a rename: rename would silently replace a key file
        // another process created meanwhile, and objects wrapped under that
        // key would be lost. Linking fails instead, and we read the winner's.
        let linked = fs::hard_link(&temp, path);
        let _ = fs::remove_file(&temp);
        match linked {
            Ok(()) => {}
            Err(error) if error.kind() == ErrorKind::AlreadyExists => return Self::open(path),
            Err(source) => return Err(io_error(source)),
        }
        sync_directory(path).map_err(io_error)?;
        Ok(key)
    }
}

/// `.<name>.<random>.tmp` beside `path`; random so a file left by a crash
/// never blocks the next attempt.
fn temp_path(path: &Path) -> Result<PathBuf, CryptoError> {
    let mut suffix = [0u8; 8];
    SystemRandom::new()
        .fill(&mut suffix)
        .map_err(|_| CryptoError::Random)?;
    let suffix = u64::from_be_bytes(suffix);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(path.with_file_name(format!(".{name}.{suffix:016x}.tmp")))
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(ROOT_KEY_FILE_MODE)
        .open(path)?;
    // The umask may have cleared owner bits; set the mode exactly.
    file.set_permissions(fs::Permissions::from_mode(ROOT_KEY_FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

fn sync_directory(path: &Path) -> io::Result<()> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(directory)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{DataKey, unwrap_data_key, wrap_data_key};

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn creates_a_private_file_and_reopens_the_same_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        let created = RootKeyFile::open_or_create(&path).expect("create");
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(fs::read(&path).expect("read").as_slice(), created.secret());
        // Only the key file remains: the temporary file is gone.
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["root.key"]);

        let reopened = RootKeyFile::open_or_create(&path).expect("reopen");
        assert_eq!(reopened.secret(), created.secret());
        // Usable as a key-encryption key across the reopen.
        let dek = DataKey::generate().expect("rng");
        let wrapped = wrap_data_key(&created, &dek, b"aad").expect("wrap");
        let unwrapped = unwrap_data_key(&reopened, &wrapped, b"aad").expect("unwrap");
        assert_eq!(unwrapped.secret(), dek.secret());
    }

    #[test]
    fn refuses_a_file_group_or_others_can_access() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.key");
        RootKeyFile::open_or_create(&path).expect("create");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602, 0o620, 0o610, 0o601] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            match RootKeyFile::open_or_create(&path) {
                Err(error @ CryptoError::RootKeyPermissions { mode: found, .. }) => {
                    assert_eq!(found, mode);
                    let message = error.to_string();
                    assert!(message.contains("chmod 600"), "{message}");
                    assert!(message.contains(&format!("{mode:04o}")), "{message}");
                }
                other => panic!("mode {mode:o}: expected a permission error, got {other:?}"),
            }
        }
        // Owner-only modes are accepted, including read-only.
        for mode in [0o600, 0o400] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            RootKeyFile::open_or_create(&path).expect("owner-only file opens");
        }
    }

    #[test]
    fn refuses_wrong_length_and_non_files_without_overwriting() {
        let dir = tempfile::tempdir().expect("tempdir");
        for len in [0, 31, 33] {
            let path = dir.path().join(format!("short-{len}.key"));
            fs::write(&path, vec![1u8; len]).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            assert!(matches!(
                RootKeyFile::open_or_create(&path),
                Err(CryptoError::RootKeyLength { len: found, .. }) if found == len as u64
            ));
            assert_eq!(
                fs::read(&path).expect("read"),
                vec![1u8; len],
                "left untouched"
            );
        }
        let subdir = dir.path().join("a-directory");
        fs::create_dir(&subdir).expect("mkdir");
        fs::set_permissions(&subdir, fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(matches!(
            RootKeyFile::open_or_create(&subdir),
            Err(CryptoError::RootKeyNotAFile { .. })
        ));
    }

    #[test]
    fn missing_directory_is_an_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent").join("root.key");
        assert!(matches!(
            RootKeyFile::open_or_create(&path),
            Err(CryptoError::RootKeyIo { .. })
        ));
    }
}
