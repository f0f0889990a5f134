//! Reading a signed request's body before its signature can be checked
//! (the query and JSON protocols sign the body's hash): bounded, and the
//! declared length refused before a byte is read when it is already too
//! large. Shared by the IAM/STS, KMS and EC2 front ends, which each word
//! the refusal in their own protocol's error.

use bytes::Bytes;
use http_body_util::BodyExt as _;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// More than the limit, declared or sent.
    TooLarge,
    /// The stream failed (the client disconnected, a bad chunk).
    Incomplete(String),
}

/// The whole body, at most `max` bytes.
///
/// # Errors
/// [`BodyError::TooLarge`] when `Content-Length` or the bytes sent exceed
/// `max`; [`BodyError::Incomplete`] when the stream fails.
pub async fn read_limited<B>(
    headers: &http::HeaderMap,
    body: B,
    max: usize,
) -> Result<Bytes, BodyError>
where
    B: http_body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(e) => Err(BodyError::Incomplete(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::Full;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// A body whose stream fails at once, as a client that disconnects.
    struct Broken;

    impl http_body::Body for Broken {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, std::io::Error>>> {
            Poll::Ready(Some(Err(std::io::Error::other("connection reset"))))
        }
    }

    fn declaring(len: usize) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, len.into());
        headers
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_limit_and_no_further() {
        let ten = Full::new(Bytes::from_static(b"0123456789"));
        let read = read_limited(&declaring(10), ten.clone(), 10).await;
        assert_eq!(read.unwrap(), Bytes::from_static(b"0123456789"));
        // Too large as declared: refused before reading.
        assert_eq!(
            read_limited(&declaring(11), ten.clone(), 10).await,
            Err(BodyError::TooLarge)
        );
        // Too large as sent, whatever was declared (or not).
        assert_eq!(
            read_limited(&http::HeaderMap::new(), ten, 9).await,
            Err(BodyError::TooLarge)
        );
        assert!(matches!(
            read_limited(&http::HeaderMap::new(), Broken, 10).await,
            Err(BodyError::Incomplete(why)) if why.contains("connection reset")
        ));
    }
}
