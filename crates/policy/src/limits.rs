//! Every limit the policy language enforces, as a named constant, with the unit last.
//!
//! The size limits are the ones AWS documents for each kind of policy ("IAM and AWS STS quotas",
//! "Bucket policy size"), so a policy AWS accepts fits here too. Which one applies is the
//! caller's choice: the same parser reads a user's inline policy, a bucket policy and a session
//! policy. Like AWS, sizes are counted without the white space outside JSON strings, so that
//! pretty-printing a policy never pushes it over its limit.

/// A managed policy (AWS: 6,144 characters).
pub const MANAGED_POLICY_BYTES_MAX: usize = 6_144;
/// All inline policies of one user together (AWS: 2,048 characters).
pub const USER_INLINE_POLICIES_BYTES_MAX: usize = 2_048;
/// All inline policies of one group together (AWS: 5,120 characters).
pub const GROUP_INLINE_POLICIES_BYTES_MAX: usize = 5_120;
/// All inline policies of one role together (AWS: 10,240 characters).
pub const ROLE_INLINE_POLICIES_BYTES_MAX: usize = 10_240;
/// A role's trust policy (AWS default quota: 2,048 characters).
pub const ROLE_TRUST_POLICY_BYTES_MAX: usize = 2_048;
/// A bucket policy (S3: 20 KB).
pub const BUCKET_POLICY_BYTES_MAX: usize = 20_480;
/// The inline session policy passed to `AssumeRole` (AWS: 2,048 characters).
pub const SESSION_POLICY_BYTES_MAX: usize = 2_048;

/// Largest policy text the parser looks at, white space included, whatever limit the caller
/// chose. It bounds the work done on a hostile document before its real size is known: the
/// largest limit above, pretty-printed, stays far below it.
pub const POLICY_TEXT_BYTES_MAX: usize = 128 * 1024;

/// Most statements in one policy. No document within [`BUCKET_POLICY_BYTES_MAX`] can hold more
/// (the shortest statement, `{"Effect":"Deny","Action":"*","Resource":"*"}`, is 45 bytes), so
/// this never refuses a policy AWS would accept; it bounds evaluation work all the same.
pub const STATEMENTS_MAX: usize = 512;

/// Longest condition key name (`aws:PrincipalTag/` plus a 128-character tag key fits).
pub const CONDITION_KEY_BYTES_MAX: usize = 256;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_max_never_refuses_a_policy_within_the_largest_size_limit() {
        let shortest = r#"{"Effect":"Deny","Action":"*","Resource":"*"}"#;
        assert_eq!(shortest.len(), 45);
        assert!(BUCKET_POLICY_BYTES_MAX / shortest.len() <= STATEMENTS_MAX);
    }
}
