//! Streaming encryption and decryption of objects in the chunked format.
//!
//! Owns the two adapters between a stream of plaintext and a stream of sealed
//! chunks. Memory is bounded whatever the input: each adapter holds at most
//! one chunk of its own (at most [`CHUNK_CIPHERTEXT_BYTES`]) plus the one
//! input buffer it is consuming, and outputs are at most one chunk long.
//! Neither adapter ever yields plaintext from a chunk whose tag has not
//! verified, and both end after the first error.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use ring::aead::{Aad, LessSafeKey};

use crate::format::{
    CHUNK_CIPHERTEXT_BYTES, CHUNK_PLAINTEXT_BYTES, ChunkSpan, PLAINTEXT_BYTES_MAX, TAG_BYTES,
    chunk_count, chunk_nonce, chunk_plaintext_len,
};
use crate::{CryptoError, DataKey};

/// Encrypts `plaintext` under `key`, binding every chunk to `binding`, and
/// yields the sealed chunks in order (each at most
/// [`CHUNK_CIPHERTEXT_BYTES`]); their concatenation is the object ciphertext.
///
/// The key is taken by value because a data key must seal exactly one
/// plaintext (nonces repeat across plaintexts; see the crate documentation).
/// Wrap it with [`crate::wrap_data_key`] first.
///
/// A full chunk is held back until more input or the end of the input
/// arrives, because only then is it known whether it is the final chunk.
/// Errors from `plaintext` are passed through as `E2` and end the stream; the
/// caller must then discard the partial ciphertext (it has no final chunk and
/// will not decrypt).
pub fn encrypt_stream<S, E, E2>(key: DataKey, binding: &[u8], plaintext: S) -> EncryptStream<S, E2>
where
    S: Stream<Item = Result<Bytes, E>>,
    E2: From<E> + From<CryptoError>,
{
    EncryptStream {
        plaintext: Box::pin(plaintext),
        key: key.into_aead_key(),
        binding: binding.into(),
        pending: Bytes::new(),
        chunk: BytesMut::with_capacity(CHUNK_CIPHERTEXT_BYTES),
        chunk_index: 0,
        plaintext_bytes: 0,
        finished: false,
        _error: PhantomData,
    }
}

/// The stream returned by [`encrypt_stream`]. `Send` and `Sync` when the
/// plaintext stream is.
pub struct EncryptStream<S, E2> {
    // Boxed so the adapter is `Unpin` for any input, without unsafe pinning.
    plaintext: Pin<Box<S>>,
    key: LessSafeKey,
    binding: Box<[u8]>,
    /// Input not yet copied into `chunk`.
    pending: Bytes,
    /// Plaintext of the chunk being filled; never more than a chunk.
    chunk: BytesMut,
    chunk_index: u64,
    plaintext_bytes: u64,
    finished: bool,
    _error: PhantomData<fn() -> E2>,
}

impl<S, E2> EncryptStream<S, E2> {
    fn seal_chunk(&mut self, is_final: bool) -> Bytes {
        let capacity = if is_final { 0 } else { CHUNK_CIPHERTEXT_BYTES };
        let mut sealed = std::mem::replace(&mut self.chunk, BytesMut::with_capacity(capacity));
        // Cannot fail: AES-GCM refuses only inputs of many gigabytes, and a
        // chunk is at most 64 KiB. An assertion about this code, not input.
        let tag = self
            .key
            .seal_in_place_separate_tag(
                chunk_nonce(self.chunk_index, is_final),
                Aad::from(&self.binding[..]),
                &mut sealed,
            )
            .expect("a 64 KiB chunk is within AES-GCM's input limit");
        sealed.extend_from_slice(tag.as_ref());
        self.chunk_index += 1;
        sealed.freeze()
    }
}

impl<S, E, E2> Stream for EncryptStream<S, E2>
where
    S: Stream<Item = Result<Bytes, E>>,
    E2: From<E> + From<CryptoError>,
{
    type Item = Result<Bytes, E2>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            if !this.pending.is_empty() {
                if this.chunk.len() < CHUNK_PLAINTEXT_BYTES {
                    let n = (CHUNK_PLAINTEXT_BYTES - this.chunk.len()).min(this.pending.len());
                    this.chunk.extend_from_slice(&this.pending.split_to(n));
                    continue;
                }
                // A full chunk with input after it: not the final chunk.
                return Poll::Ready(Some(Ok(this.seal_chunk(false))));
            }
            match ready!(this.plaintext.as_mut().poll_next(cx)) {
                Some(Ok(bytes)) => {
                    this.plaintext_bytes = this.plaintext_bytes.saturating_add(bytes.len() as u64);
                    if this.plaintext_bytes > PLAINTEXT_BYTES_MAX {
                        this.finished = true;
                        let error = CryptoError::ObjectTooLarge {
                            plaintext_len: this.plaintext_bytes,
                        };
                        return Poll::Ready(Some(Err(error.into())));
                    }
                    this.pending = bytes;
                }
                Some(Err(error)) => {
                    this.finished = true;
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    // Whatever is buffered (possibly nothing, possibly a full
                    // chunk) is the final chunk.
                    this.finished = true;
                    return Poll::Ready(Some(Ok(this.seal_chunk(true))));
                }
            }
        }
    }
}

/// Decrypts the chunks of `span` from `ciphertext`, which must deliver
/// exactly the span's ciphertext bytes (`span.ciphertext_len()` bytes from
/// `span.ciphertext_offset()` of the object) split in any way, and yields the
/// plaintext of the span's range.
///
/// Each chunk is opened as soon as its bytes have arrived; its plaintext is
/// yielded only after its tag verifies. The object's last chunk must carry the
/// final flag. Ciphertext that ends early is [`CryptoError::Truncated`];
/// ciphertext that continues past the span is
/// [`CryptoError::TrailingCiphertext`], reported before the last piece of
/// plaintext is released. Errors from `ciphertext` pass through as `E2`.
pub fn decrypt_stream<S, E, E2>(
    key: &DataKey,
    binding: &[u8],
    span: ChunkSpan,
    ciphertext: S,
) -> DecryptStream<S, E2>
where
    S: Stream<Item = Result<Bytes, E>>,
    E2: From<E> + From<CryptoError>,
{
    DecryptStream {
        ciphertext: Box::pin(ciphertext),
        key: key.aead_key(),
        binding: binding.into(),
        span,
        object_last_chunk: chunk_count(span.plaintext_len()) - 1,
        chunk_index: span.first_chunk(),
        skip_front: span.skip_front(),
        take_remaining: span.take(),
        pending: Bytes::new(),
        sealed: BytesMut::new(),
        received_bytes: 0,
        held: None,
        state: DecryptState::Opening,
        _error: PhantomData,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DecryptState {
    /// Assembling and opening the span's chunks.
    Opening,
    /// All chunks opened; making sure the input ends here before releasing
    /// the last plaintext (`held`).
    CheckingEnd,
    Finished,
}

/// The stream returned by [`decrypt_stream`]. `Send` and `Sync` when the
/// ciphertext stream is.
pub struct DecryptStream<S, E2> {
    ciphertext: Pin<Box<S>>,
    key: LessSafeKey,
    binding: Box<[u8]>,
    span: ChunkSpan,
    object_last_chunk: u64,
    /// Index (in the object) of the chunk being assembled.
    chunk_index: u64,
    /// Plaintext bytes still to drop from the front (first chunk only).
    skip_front: u64,
    take_remaining: u64,
    /// Input not yet copied into `sealed`.
    pending: Bytes,
    /// Sealed bytes of the chunk being assembled; never more than a chunk.
    sealed: BytesMut,
    received_bytes: u64,
    held: Option<Bytes>,
    state: DecryptState,
    _error: PhantomData<fn() -> E2>,
}

impl<S, E2> DecryptStream<S, E2> {
    fn sealed_len(&self, index: u64) -> usize {
        // At most CHUNK_CIPHERTEXT_BYTES, so the cast cannot truncate.
        (chunk_plaintext_len(self.span.plaintext_len(), index) as usize) + TAG_BYTES
    }

    /// Opens the assembled chunk and returns the part of its plaintext that
    /// lies in the requested range.
    fn open_chunk(&mut self) -> Result<Bytes, CryptoError> {
        let index = self.chunk_index;
        let mut sealed = std::mem::take(&mut self.sealed);
        let plaintext_len = match self.key.open_in_place(
            chunk_nonce(index, index == self.object_last_chunk),
            Aad::from(&self.binding[..]),
            &mut sealed,
        ) {
            Ok(plaintext) => plaintext.len(),
            Err(_) => return Err(CryptoError::ChunkAuthentication { chunk: index }),
        };
        sealed.truncate(plaintext_len);
        let plaintext = sealed.freeze();
        self.chunk_index += 1;

        // skip_front <= plaintext_len: the span starts inside (or, for an
        // empty range at the object's end, just past) this chunk.
        // Lengths are compared as u64 and cast only once bounded by the
        // chunk's length, so nothing truncates.
        let chunk_len = plaintext.len() as u64;
        let start = self.skip_front.min(chunk_len);
        let kept = (chunk_len - start).min(self.take_remaining);
        self.skip_front = 0;
        self.take_remaining -= kept;
        Ok(plaintext.slice(start as usize..(start + kept) as usize))
    }

    fn fail<E>(&mut self, error: E) -> Poll<Option<Result<Bytes, E2>>>
    where
        E2: From<E>,
    {
        self.state = DecryptState::Finished;
        self.held = None;
        Poll::Ready(Some(Err(error.into())))
    }
}

impl<S, E, E2> Stream for DecryptStream<S, E2>
where
    S: Stream<Item = Result<Bytes, E>>,
    E2: From<E> + From<CryptoError>,
{
    type Item = Result<Bytes, E2>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.state {
                DecryptState::Finished => return Poll::Ready(None),
                DecryptState::Opening => {
                    let want = this.sealed_len(this.chunk_index);
                    if this.sealed.len() < want {
                        if this.pending.is_empty() {
                            match ready!(this.ciphertext.as_mut().poll_next(cx)) {
                                Some(Ok(bytes)) => {
                                    this.received_bytes += bytes.len() as u64;
                                    this.pending = bytes;
                                }
                                Some(Err(error)) => return this.fail(error),
                                None => {
                                    let error = CryptoError::Truncated {
                                        expected_bytes: this.span.ciphertext_len(),
                                        received_bytes: this.received_bytes,
                                    };
                                    return this.fail(error);
                                }
                            }
                            continue;
                        }
                        let n = (want - this.sealed.len()).min(this.pending.len());
                        this.sealed.reserve(want - this.sealed.len());
                        this.sealed.extend_from_slice(&this.pending.split_to(n));
                        continue;
                    }
                    let plaintext = match this.open_chunk() {
                        Ok(plaintext) => plaintext,
                        Err(error) => return this.fail(error),
                    };
                    if this.chunk_index > this.span.last_chunk() {
                        this.held = Some(plaintext);
                        this.state = DecryptState::CheckingEnd;
                        continue;
                    }
                    if !plaintext.is_empty() {
                        return Poll::Ready(Some(Ok(plaintext)));
                    }
                }
                DecryptState::CheckingEnd => {
                    let trailing = CryptoError::TrailingCiphertext {
                        expected_bytes: this.span.ciphertext_len(),
                    };
                    if !this.pending.is_empty() {
                        return this.fail(trailing);
                    }
                    match ready!(this.ciphertext.as_mut().poll_next(cx)) {
                        Some(Ok(bytes)) if bytes.is_empty() => {}
                        Some(Ok(_)) => return this.fail(trailing),
                        Some(Err(error)) => return this.fail(error),
                        None => {
                            this.state = DecryptState::Finished;
                            match this.held.take() {
                                Some(plaintext) if !plaintext.is_empty() => {
                                    return Poll::Ready(Some(Ok(plaintext)));
                                }
                                _ => return Poll::Ready(None),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
