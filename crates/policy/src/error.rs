//! [`PolicyError`]: why a policy document was refused.
//!
//! Every refusal names where the problem is (statement index, its `Sid` when it has one, and the
//! element) so that the IAM and S3 front ends can hand the message back verbatim as
//! `MalformedPolicyDocument` / `MalformedPolicy`. Evaluation never fails, so this is the crate's
//! only error type.

/// A policy document Nuage refuses to store or evaluate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not one well-formed JSON object (or repeats a member name, which JSON parsers
    /// disagree about and which has been used to smuggle statements past reviewers).
    #[error("policy is not valid JSON: {0}")]
    Syntax(String),
    /// The text, white space included, is larger than the parser will look at
    /// ([`POLICY_TEXT_BYTES_MAX`](crate::limits::POLICY_TEXT_BYTES_MAX)).
    #[error("policy text is {text_bytes} bytes; the parser reads at most {text_bytes_max}")]
    TextTooLarge {
        text_bytes: usize,
        text_bytes_max: usize,
    },
    /// The text is larger than the limit the caller chose.
    #[error("policy is {size_bytes} bytes without white space; the limit is {size_bytes_max}")]
    TooLarge {
        size_bytes: usize,
        size_bytes_max: usize,
    },
    /// The JSON is well formed but is not a valid policy. `at` locates the problem, for example
    /// `Statement[2] (Sid "DenyLogs"), Condition.StringLike`.
    #[error("{at}: {reason}")]
    Malformed { at: String, reason: String },
}

impl PolicyError {
    pub(crate) fn malformed(at: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            at: at.into(),
            reason: reason.into(),
        }
    }
}
