//! How a blob's data key is protected, beyond the default (SSE-S3, the
//! bucket owner's tenant key): under a customer KMS key with an encryption
//! context (SSE-KMS), or under a key the client sends with each request
//! (SSE-C).
//!
//! Owns the SSE-C customer key type and the bytes each wrapping
//! authenticates. It must never store, log or hash a customer key: whether a
//! presented key is the right one is decided only by an unwrap that
//! authenticates.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest as _;
use nuage_crypto::{KEY_BYTES, KeyEncryptionKey};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// A customer-provided key (S3 SSE-C), alive for one request.
pub struct CustomerKey {
    kek: KeyEncryptionKey,
    /// Base64 MD5 of the key, which S3 echoes in responses; kept only in
    /// memory for this request.
    md5: String,
}

impl std::fmt::Debug for CustomerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerKey(<redacted>)")
    }
}

impl CustomerKey {
    /// The key a client sent as `x-amz-server-side-encryption-customer-key`
    /// (base64 of 32 bytes); None when it is not valid base64 or not 32 bytes.
    #[must_use]
    pub fn from_base64(encoded: &str) -> Option<Self> {
        let decoded = Zeroizing::new(BASE64.decode(encoded.trim()).ok()?);
        let mut bytes = Zeroizing::new([0u8; KEY_BYTES]);
        if decoded.len() != KEY_BYTES {
            return None;
        }
        bytes.copy_from_slice(&decoded);
        let md5 = BASE64.encode(md5::Md5::digest(bytes.as_slice()));
        Some(Self {
            kek: KeyEncryptionKey::from_customer_key(bytes),
            md5,
        })
    }

    /// Base64 MD5 of the key (what `...-customer-key-MD5` must say).
    #[must_use]
    pub fn md5_base64(&self) -> &str {
        &self.md5
    }

    pub(crate) fn kek(&self) -> &KeyEncryptionKey {
        &self.kek
    }
}

/// How a new blob's data key is wrapped.
#[derive(Debug, Clone, Copy)]
pub enum Protection<'a> {
    /// SSE-S3: the bucket owner's tenant key.
    Tenant,
    /// SSE-KMS: the bucket owner's customer KMS key `arn`, with the
    /// encryption context `context` (canonical JSON, see [`canonical_context`])
    /// bound into the wrapping. `context` is None only for the parts of an
    /// upload created before contexts were bound.
    Kms {
        arn: &'a str,
        context: Option<&'a str>,
    },
    /// SSE-C: the key the client sent.
    Customer(&'a CustomerKey),
}

/// An encryption context in the one form Nuage stores and binds: JSON of
/// its pairs with keys in byte order, no spaces.
#[must_use]
pub fn canonical_context(pairs: &BTreeMap<String, String>) -> String {
    // A map of strings always serializes.
    serde_json::to_string(pairs).unwrap_or_default()
}

/// The pairs of a stored canonical context (None: not a JSON object of strings).
#[must_use]
pub fn context_pairs(canonical: &str) -> Option<BTreeMap<String, String>> {
    serde_json::from_str(canonical).ok()
}

/// What an SSE-KMS data key's wrapping authenticates: the blob's binding,
/// then the encryption context (length-prefixed). The binding encoding is
/// self-delimiting, so appending keeps it injective. Data written before
/// contexts were bound (`context` None) is wrapped under the binding alone.
pub(crate) fn kms_wrap_binding(binding: &[u8], context: Option<&str>) -> Vec<u8> {
    let mut out = binding.to_vec();
    if let Some(context) = context {
        out.extend_from_slice(b"ctx");
        out.extend_from_slice(&(context.len() as u64).to_be_bytes());
        out.extend_from_slice(context.as_bytes());
    }
    out
}

/// What an SSE-C data key's wrapping authenticates: the blob's binding and
/// a label, so the wrapping can never be taken for another kind.
pub(crate) fn customer_wrap_binding(binding: &[u8]) -> Vec<u8> {
    let mut out = binding.to_vec();
    out.extend_from_slice(b"sse-c");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn customer_key_parsing() {
        let key = BASE64.encode([7u8; 32]);
        let parsed = CustomerKey::from_base64(&key).expect("valid key");
        assert_eq!(
            parsed.md5_base64(),
            BASE64.encode(md5::Md5::digest([7u8; 32]))
        );
        assert!(CustomerKey::from_base64(&BASE64.encode([7u8; 31])).is_none());
        assert!(CustomerKey::from_base64("not base64!").is_none());
        assert_eq!(format!("{parsed:?}"), "CustomerKey(<redacted>)");
    }

    #[test]
    fn contexts_are_canonical_and_bound() {
        let mut pairs = BTreeMap::new();
        pairs.insert("b".to_owned(), "2".to_owned());
        pairs.insert("a".to_owned(), "1".to_owned());
        let canonical = canonical_context(&pairs);
        assert_eq!(canonical, r#"{"a":"1","b":"2"}"#);
        assert_eq!(context_pairs(&canonical), Some(pairs));
        let binding = b"binding";
        assert_eq!(kms_wrap_binding(binding, None), binding.to_vec());
        assert_ne!(
            kms_wrap_binding(binding, Some("{}")),
            kms_wrap_binding(binding, Some(r#"{"a":"1"}"#))
        );
    }
}
