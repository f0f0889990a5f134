//! The AWS KMS JSON API (in progress).
