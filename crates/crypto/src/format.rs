//! The chunked object format's arithmetic: sizes, nonces, and which ciphertext
//! bytes a plaintext range needs ([`ChunkSpan`]).
//!
//! Owns the mapping between plaintext and ciphertext positions described in
//! the crate documentation. Pure functions of lengths; it never sees key
//! material or data, and must stay free of I/O.

use ring::aead::Nonce;

use crate::CryptoError;

/// Plaintext bytes per chunk (every chunk but the last is exactly this long).
/// Part of the format: changing it makes existing objects unreadable.
pub const CHUNK_PLAINTEXT_BYTES: usize = 64 * 1024;
/// AES-GCM authentication tag appended to every chunk.
pub const TAG_BYTES: usize = 16;
/// Length of a full sealed chunk on disk.
pub const CHUNK_CIPHERTEXT_BYTES: usize = CHUNK_PLAINTEXT_BYTES + TAG_BYTES;
/// Largest plaintext the format accepts (1 EiB): far above any object size
/// Nuage allows, and low enough that no length arithmetic here can overflow.
pub const PLAINTEXT_BYTES_MAX: u64 = 1 << 60;

const CHUNK_PLAINTEXT: u64 = CHUNK_PLAINTEXT_BYTES as u64;
const CHUNK_CIPHERTEXT: u64 = CHUNK_CIPHERTEXT_BYTES as u64;
const TAG: u64 = TAG_BYTES as u64;

/// Number of chunks of a plaintext of `plaintext_len` bytes; at least one.
pub fn chunk_count(plaintext_len: u64) -> u64 {
    plaintext_len.div_ceil(CHUNK_PLAINTEXT).max(1)
}

/// Ciphertext length of a plaintext of `plaintext_len` bytes: one tag per
/// chunk. Exact up to [`PLAINTEXT_BYTES_MAX`]; beyond it the format does not
/// apply and the result saturates at `u64::MAX`.
pub fn ciphertext_len(plaintext_len: u64) -> u64 {
    // chunk_count * TAG is at most 2^48 * 16: no overflow.
    plaintext_len.saturating_add(chunk_count(plaintext_len) * TAG)
}

/// The plaintext length a ciphertext of `ciphertext_len` bytes encodes, or
/// `None` if no plaintext encrypts to that length (a truncated or padded
/// blob). The inverse of [`ciphertext_len`].
pub fn plaintext_len(ciphertext_len: u64) -> Option<u64> {
    let full_chunks = ciphertext_len / CHUNK_CIPHERTEXT;
    let rest = ciphertext_len % CHUNK_CIPHERTEXT;
    let len = if rest == 0 {
        if full_chunks == 0 {
            return None; // every object has at least one chunk
        }
        full_chunks * CHUNK_PLAINTEXT
    } else if rest > TAG || (rest == TAG && full_chunks == 0) {
        full_chunks * CHUNK_PLAINTEXT + (rest - TAG)
    } else {
        // Shorter than a tag, or an empty chunk after full ones (which the
        // encoder never writes: the last full chunk would be final instead).
        return None;
    };
    (len <= PLAINTEXT_BYTES_MAX).then_some(len)
}

/// Plaintext length of chunk `index` of an object of `plaintext_len` bytes.
pub(crate) fn chunk_plaintext_len(plaintext_len: u64, index: u64) -> u64 {
    let last = chunk_count(plaintext_len) - 1;
    if index < last {
        CHUNK_PLAINTEXT
    } else {
        plaintext_len - last * CHUNK_PLAINTEXT
    }
}

/// Nonce of chunk `index`: 11-byte big-endian counter, then the final flag.
pub(crate) fn chunk_nonce(index: u64, is_final: bool) -> Nonce {
    let mut nonce = [0u8; 12];
    // A u64 fills the low 8 of the counter's 11 bytes; the top 3 stay zero
    // (at most 2^44 chunks exist below PLAINTEXT_BYTES_MAX).
    nonce[3..11].copy_from_slice(&index.to_be_bytes());
    nonce[11] = u8::from(is_final);
    Nonce::assume_unique_for_key(nonce)
}

/// The chunks that cover a plaintext range, and where their ciphertext lies.
///
/// A reader fetches `ciphertext_len` bytes at `ciphertext_offset` of the
/// object's ciphertext, opens `chunk_count` chunks starting at `first_chunk`,
/// drops `skip_front` plaintext bytes and keeps `take` bytes. Built only by
/// [`ChunkSpan::for_range`] so its fields always agree with each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkSpan {
    plaintext_len: u64,
    first_chunk: u64,
    chunk_count: u64,
    ciphertext_offset: u64,
    ciphertext_len: u64,
    skip_front: u64,
    take: u64,
}

impl ChunkSpan {
    /// The span for plaintext bytes `offset .. offset + len` of an object of
    /// `plaintext_len` bytes. The range must lie within the object.
    ///
    /// An empty range still covers one chunk (the one holding `offset`, or the
    /// last chunk when `offset == plaintext_len`), so every read authenticates
    /// something; reading an empty object verifies its single empty chunk.
    pub fn for_range(plaintext_len: u64, offset: u64, len: u64) -> Result<Self, CryptoError> {
        if plaintext_len > PLAINTEXT_BYTES_MAX {
            return Err(CryptoError::ObjectTooLarge { plaintext_len });
        }
        let out_of_bounds = CryptoError::RangeOutOfBounds {
            offset,
            len,
            plaintext_len,
        };
        match offset.checked_add(len) {
            Some(end) if end <= plaintext_len => {}
            _ => return Err(out_of_bounds),
        }
        let object_last_chunk = chunk_count(plaintext_len) - 1;
        let first_chunk = (offset / CHUNK_PLAINTEXT).min(object_last_chunk);
        let last_chunk = if len == 0 {
            first_chunk
        } else {
            (offset + len - 1) / CHUNK_PLAINTEXT
        };
        let ciphertext_offset = first_chunk * CHUNK_CIPHERTEXT;
        let ciphertext_end = if last_chunk == object_last_chunk {
            ciphertext_len(plaintext_len)
        } else {
            (last_chunk + 1) * CHUNK_CIPHERTEXT
        };
        Ok(Self {
            plaintext_len,
            first_chunk,
            chunk_count: last_chunk - first_chunk + 1,
            ciphertext_offset,
            ciphertext_len: ciphertext_end - ciphertext_offset,
            skip_front: offset - first_chunk * CHUNK_PLAINTEXT,
            take: len,
        })
    }

    /// The span of the whole object.
    pub fn whole(plaintext_len: u64) -> Result<Self, CryptoError> {
        Self::for_range(plaintext_len, 0, plaintext_len)
    }

    /// Plaintext length of the whole object the span belongs to.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Index of the first chunk to open.
    pub fn first_chunk(&self) -> u64 {
        self.first_chunk
    }

    /// Number of chunks to open; at least one.
    pub fn chunk_count(&self) -> u64 {
        self.chunk_count
    }

    /// Where the first needed chunk starts in the object's ciphertext.
    pub fn ciphertext_offset(&self) -> u64 {
        self.ciphertext_offset
    }

    /// How many ciphertext bytes to fetch from `ciphertext_offset`.
    pub fn ciphertext_len(&self) -> u64 {
        self.ciphertext_len
    }

    /// Plaintext bytes of the first chunk that precede the range.
    pub fn skip_front(&self) -> u64 {
        self.skip_front
    }

    /// Length of the requested range in plaintext bytes.
    pub fn take(&self) -> u64 {
        self.take
    }

    /// Index of the last chunk to open.
    pub(crate) fn last_chunk(&self) -> u64 {
        self.first_chunk + self.chunk_count - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: u64 = CHUNK_PLAINTEXT;

    #[test]
    fn lengths_of_the_named_sizes() {
        // (plaintext, chunks, ciphertext)
        let cases = [
            (0, 1, 16),
            (1, 1, 17),
            (C - 1, 1, C + 15),
            (C, 1, C + 16),
            (C + 1, 2, C + 1 + 32),
            (3 * C + 5, 4, 3 * C + 5 + 64),
        ];
        for (plain, chunks, cipher) in cases {
            assert_eq!(chunk_count(plain), chunks, "chunks of {plain}");
            assert_eq!(ciphertext_len(plain), cipher, "ciphertext of {plain}");
            assert_eq!(plaintext_len(cipher), Some(plain), "plaintext of {cipher}");
        }
    }

    #[test]
    fn plaintext_len_inverts_ciphertext_len_exactly() {
        // Every ciphertext length up to a bit past three chunks: valid ones
        // map back to a plaintext that encrypts to exactly that length, and
        // exactly the lengths the encoder can produce are valid.
        let mut valid = 0u64;
        for cipher in 0..=3 * CHUNK_CIPHERTEXT + 100 {
            match plaintext_len(cipher) {
                Some(plain) => {
                    assert_eq!(ciphertext_len(plain), cipher);
                    valid += 1;
                }
                None => {
                    let rest = cipher % CHUNK_CIPHERTEXT;
                    assert!(rest < TAG || (rest == TAG && cipher > TAG) || cipher == 0);
                }
            }
        }
        // Plaintexts 0 ..= 3C + 84 are exactly the ones that fit.
        assert_eq!(valid, 3 * C + 85);
        assert_eq!(plaintext_len(u64::MAX), None);
        assert_eq!(ciphertext_len(u64::MAX), u64::MAX);
    }

    #[test]
    fn nonce_is_big_endian_counter_then_final_flag() {
        let nonce = chunk_nonce(0x0102_0304_0506_0708, true);
        assert_eq!(
            nonce.as_ref(),
            &[0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1],
            "counter in bytes 0..11, flag in byte 11"
        );
        assert_eq!(chunk_nonce(0, false).as_ref(), &[0u8; 12]);
    }

    #[test]
    fn span_fields_for_chosen_ranges() {
        let len = 3 * C + 5; // chunks: C, C, C, 5
        let span = ChunkSpan::for_range(len, 0, len).expect("in range");
        assert_eq!(
            (
                span.first_chunk(),
                span.chunk_count(),
                span.ciphertext_offset()
            ),
            (0, 4, 0)
        );
        assert_eq!(span.ciphertext_len(), ciphertext_len(len));
        assert_eq!((span.skip_front(), span.take()), (0, len));

        // The last byte of chunk 0 and the first of chunk 1.
        let span = ChunkSpan::for_range(len, C - 1, 2).expect("in range");
        assert_eq!((span.first_chunk(), span.chunk_count()), (0, 2));
        assert_eq!(span.ciphertext_len(), 2 * CHUNK_CIPHERTEXT);
        assert_eq!((span.skip_front(), span.take()), (C - 1, 2));

        // Only the short final chunk.
        let span = ChunkSpan::for_range(len, 3 * C + 1, 4).expect("in range");
        assert_eq!((span.first_chunk(), span.chunk_count()), (3, 1));
        assert_eq!(span.ciphertext_offset(), 3 * CHUNK_CIPHERTEXT);
        assert_eq!(span.ciphertext_len(), 5 + TAG);
        assert_eq!(span.skip_front(), 1);

        // Empty range at the very end of an object of whole chunks: the
        // final chunk, skipped entirely.
        let span = ChunkSpan::for_range(2 * C, 2 * C, 0).expect("in range");
        assert_eq!((span.first_chunk(), span.chunk_count()), (1, 1));
        assert_eq!((span.skip_front(), span.take()), (C, 0));

        // The empty object: its one empty chunk.
        let span = ChunkSpan::whole(0).expect("in range");
        assert_eq!((span.first_chunk(), span.chunk_count()), (0, 1));
        assert_eq!((span.ciphertext_offset(), span.ciphertext_len()), (0, TAG));
    }

    #[test]
    fn span_refuses_ranges_outside_the_object() {
        for (len, offset, take) in [(10, 0, 11), (10, 11, 0), (10, 5, u64::MAX), (0, 1, 0)] {
            assert!(
                matches!(
                    ChunkSpan::for_range(len, offset, take),
                    Err(CryptoError::RangeOutOfBounds { .. })
                ),
                "{len} {offset} {take}"
            );
        }
        assert!(matches!(
            ChunkSpan::whole(PLAINTEXT_BYTES_MAX + 1),
            Err(CryptoError::ObjectTooLarge { .. })
        ));
    }
}
