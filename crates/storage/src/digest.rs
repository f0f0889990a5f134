//! Digests computed while bytes stream through: MD5 for the ETag, and the S3
//! checksum family (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256) in S3's wire form,
//! base64 of the big-endian digest.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;
use nuage_meta::Checksums;

/// An S3 checksum algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    /// Parses S3's name (`CRC32`, `CRC32C`, `CRC64NVME`, `SHA1`, `SHA256`).
    #[must_use]
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "CRC32" => Some(Self::Crc32),
            "CRC32C" => Some(Self::Crc32c),
            "CRC64NVME" => Some(Self::Crc64Nvme),
            "SHA1" => Some(Self::Sha1),
            "SHA256" => Some(Self::Sha256),
            _ => None,
        }
    }

    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// This algorithm's value in a checksum set.
    #[must_use]
    pub fn get(self, c: &Checksums) -> Option<&String> {
        match self {
            Self::Crc32 => c.crc32.as_ref(),
            Self::Crc32c => c.crc32c.as_ref(),
            Self::Crc64Nvme => c.crc64nvme.as_ref(),
            Self::Sha1 => c.sha1.as_ref(),
            Self::Sha256 => c.sha256.as_ref(),
        }
    }

    pub fn set(self, c: &mut Checksums, value: Option<String>) {
        match self {
            Self::Crc32 => c.crc32 = value,
            Self::Crc32c => c.crc32c = value,
            Self::Crc64Nvme => c.crc64nvme = value,
            Self::Sha1 => c.sha1 = value,
            Self::Sha256 => c.sha256 = value,
        }
    }

    pub const ALL: [Self; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The digest of `data`, raw bytes.
    #[must_use]
    pub fn digest_raw(self, data: &[u8]) -> Vec<u8> {
        let mut set = DigestSet::new(&[self]);
        set.update(data);
        let d = set.finish();
        self.get(&d.checksums)
            .and_then(|v| STANDARD.decode(v).ok())
            .unwrap_or_default()
    }
}

/// Which algorithms to compute while streaming.
pub struct DigestSet {
    md5: md5::Md5,
    crc32: Option<crc32fast::Hasher>,
    crc32c: Option<u32>,
    crc64: Option<crc64fast_nvme::Digest>,
    sha1: Option<sha1::Sha1>,
    sha256: Option<sha2::Sha256>,
}

/// The result of a [`DigestSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub md5: [u8; 16],
    pub checksums: Checksums,
}

impl Digests {
    #[must_use]
    pub fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }
}

impl DigestSet {
    /// MD5 always, plus the given checksums.
    #[must_use]
    pub fn new(algorithms: &[ChecksumAlgorithm]) -> Self {
        let on = |a| algorithms.contains(&a);
        Self {
            md5: md5::Md5::new(),
            crc32: on(ChecksumAlgorithm::Crc32).then(crc32fast::Hasher::new),
            crc32c: on(ChecksumAlgorithm::Crc32c).then_some(0),
            crc64: on(ChecksumAlgorithm::Crc64Nvme).then(crc64fast_nvme::Digest::new),
            sha1: on(ChecksumAlgorithm::Sha1).then(sha1::Sha1::new),
            sha256: on(ChecksumAlgorithm::Sha256).then(sha2::Sha256::new),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(h) = &mut self.crc32 {
            h.update(data);
        }
        if let Some(c) = &mut self.crc32c {
            *c = crc32c::crc32c_append(*c, data);
        }
        if let Some(h) = &mut self.crc64 {
            h.write(data);
        }
        if let Some(h) = &mut self.sha1 {
            h.update(data);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(data);
        }
    }

    #[must_use]
    pub fn finish(self) -> Digests {
        let b64 = |bytes: &[u8]| STANDARD.encode(bytes);
        let checksums = Checksums {
            crc32: self.crc32.map(|h| b64(&h.finalize().to_be_bytes())),
            crc32c: self.crc32c.map(|c| b64(&c.to_be_bytes())),
            crc64nvme: self.crc64.map(|h| b64(&h.sum64().to_be_bytes())),
            sha1: self.sha1.map(|h| b64(&h.finalize())),
            sha256: self.sha256.map(|h| b64(&h.finalize())),
            checksum_type: None,
        };
        Digests {
            md5: self.md5.finalize().into(),
            checksums,
        }
    }
}

/// Decodes a `Content-MD5` header (base64 of 16 bytes).
///
/// # Errors
/// `InvalidDigest` when it is not base64 of 16 bytes.
pub fn parse_content_md5(value: &str) -> Result<[u8; 16], crate::StorageError> {
    STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|v| <[u8; 16]>::try_from(v).ok())
        .ok_or_else(|| {
            crate::StorageError::InvalidDigest("the Content-MD5 you specified is not valid".into())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        let mut set = DigestSet::new(&ChecksumAlgorithm::ALL);
        set.update(b"hello ");
        set.update(b"world");
        let d = set.finish();
        assert_eq!(d.md5_hex(), "5eb63bbbe01eeed093cb22bb8f5acdc3");
        // Values as the AWS SDKs compute them for "hello world".
        assert_eq!(d.checksums.crc32.as_deref(), Some("DUoRhQ=="));
        assert_eq!(d.checksums.crc32c.as_deref(), Some("yZRlqg=="));
        assert_eq!(
            d.checksums.sha1.as_deref(),
            Some("Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
        );
        assert_eq!(
            d.checksums.sha256.as_deref(),
            Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
        );
        assert_eq!(d.checksums.crc64nvme.as_deref(), Some("jSnVw/bqjr4="));
    }
}
