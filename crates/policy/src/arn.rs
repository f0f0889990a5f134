//! Amazon Resource Names: `arn:partition:service:region:account:resource`.
//!
//! ARNs in `Resource` elements and in the `Arn*` condition operators are matched one
//! colon-separated component at a time, as the IAM User Guide describes for `ArnLike`: a `*` in
//! the region never swallows the account. The sixth component is everything after the fifth
//! colon, so resources such as `bucket/a:b` keep their colons. The partition is matched like any
//! other component: Nuage's requests use the `aws` partition, so policies written for AWS work
//! unchanged. This module never looks at what a service or resource means.

use crate::pattern::{Token, glob_match_str};

/// Number of components in an ARN.
pub(crate) const ARN_COMPONENTS: usize = 6;

/// The six components of `text`, or `None` if it is not an ARN (`arn:` and at least five colons).
pub(crate) fn split(text: &str) -> Option<[&str; ARN_COMPONENTS]> {
    let mut parts = text.splitn(ARN_COMPONENTS, ':');
    let components = [
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ];
    (components[0] == "arn").then_some(components)
}

/// Checks the shape of an ARN written in a policy (variables already stood in for by
/// placeholders): `arn`, a partition, a service, and six components in all. Wildcards are allowed
/// in every component, as AWS allows them.
pub(crate) fn check_pattern_shape(text: &str) -> Result<(), String> {
    let Some([_, partition, service, ..]) = split(text) else {
        return Err(format!(
            "\"{text}\" is not an ARN: expected arn:partition:service:region:account:resource"
        ));
    };
    if partition.is_empty() {
        return Err(format!("ARN \"{text}\" has an empty partition"));
    }
    if service.is_empty() {
        return Err(format!("ARN \"{text}\" has an empty service"));
    }
    Ok(())
}

/// Whether ARN `text` matches the resolved ARN pattern `pattern`, component by component.
/// Text that is not an ARN never matches.
pub(crate) fn matches(pattern: &[Token], text: &str) -> bool {
    let Some(components) = split(text) else {
        return false;
    };
    let Some(pattern_components) = split_tokens(pattern) else {
        return false;
    };
    pattern_components
        .iter()
        .zip(components)
        .all(|(pattern, component)| glob_match_str(pattern, component))
}

/// Splits resolved pattern tokens at the first five literal colons.
fn split_tokens(tokens: &[Token]) -> Option<Vec<&[Token]>> {
    let mut components = Vec::with_capacity(ARN_COMPONENTS);
    let mut rest = tokens;
    while components.len() < ARN_COMPONENTS - 1 {
        let colon = rest.iter().position(|t| *t == Token::Literal(':'))?;
        components.push(&rest[..colon]);
        rest = &rest[colon + 1..];
    }
    components.push(rest);
    Some(components)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::{Pattern, Variables};

    struct NoVariables;

    impl Variables for NoVariables {
        fn variable(&self, _key: &str) -> Option<&str> {
            None
        }
    }

    fn arn_like(pattern: &str, text: &str) -> bool {
        let tokens = Pattern::compile(pattern, true, true)
            .unwrap()
            .resolve(&NoVariables)
            .unwrap();
        matches(&tokens, text)
    }

    #[test]
    fn splits_six_components_keeping_colons_in_the_resource() {
        assert_eq!(
            split("arn:aws:s3:::bucket/a:b"),
            Some(["arn", "aws", "s3", "", "", "bucket/a:b"])
        );
        assert_eq!(split("arn:aws:s3::bucket"), None);
        assert_eq!(split("urn:aws:s3:::bucket"), None);
    }

    #[test]
    fn components_match_separately() {
        assert!(arn_like(
            "arn:aws:s3:::bucket/*",
            "arn:aws:s3:::bucket/a/b:c"
        ));
        assert!(arn_like(
            "arn:aws:iam::*:user/*",
            "arn:aws:iam::123456789012:user/alice"
        ));
        // A `*` in the account cannot reach into the resource, as a whole-string match would.
        assert!(!arn_like("arn:aws:iam::*:root", "arn:aws:iam::1:2:root"));
        assert!(arn_like("arn:aws:iam::*:*root", "arn:aws:iam::1:2:root"));
        assert!(!arn_like("arn:aws:s3:::bucket", "arn:aws:s3:::bucket/key"));
        assert!(!arn_like("arn:aws:s3:::bucket/*", "bucket/key"));
    }

    #[test]
    fn partition_is_part_of_the_match() {
        assert!(!arn_like("arn:aws:s3:::bucket", "arn:nuage:s3:::bucket"));
        assert!(arn_like("arn:*:s3:::bucket", "arn:nuage:s3:::bucket"));
    }

    #[test]
    fn resources_are_case_sensitive() {
        assert!(!arn_like(
            "arn:aws:s3:::Bucket/*",
            "arn:aws:s3:::bucket/key"
        ));
    }

    #[test]
    fn pattern_shape_is_checked() {
        assert!(check_pattern_shape("arn:aws:s3:::bucket").is_ok());
        assert!(check_pattern_shape("arn:*:s3:::*").is_ok());
        assert!(check_pattern_shape("arn:aws:s3:bucket").is_err());
        assert!(check_pattern_shape("arn::s3:::bucket").is_err());
        assert!(check_pattern_shape("arn:aws::::bucket").is_err());
        assert!(check_pattern_shape("bucket/*").is_err());
    }
}
