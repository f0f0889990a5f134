//! Validation of bucket names, object keys, metadata and tags, by S3's rules.

use crate::limits;

/// Why a name was refused; the message is shown to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

/// Checks a bucket name against S3's general-purpose bucket naming rules.
///
/// # Errors
/// Returns why the name is invalid.
pub fn validate_bucket_name(name: &str) -> Result<(), InvalidName> {
    let bad = |why: &str| Err(InvalidName(format!("bucket name `{name}` {why}")));
    if name.len() < 3 || name.len() > 63 {
        return bad("must be between 3 and 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("may contain only lowercase letters, digits, dots and hyphens");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !(first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric()) {
        return bad("must begin and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not contain adjacent dots or a dot next to a hyphen");
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return bad("must not be formatted as an IP address");
    }
    if name.starts_with("xn--") || name.starts_with("sthree-") || name.starts_with("amzn-s3-demo-")
    {
        return bad("must not start with a reserved prefix");
    }
    if name.ends_with("-s3alias")
        || name.ends_with("--ol-s3")
        || name.ends_with(".mrap")
        || name.ends_with("--x-s3")
    {
        return bad("must not end with a reserved suffix");
    }
    Ok(())
}

/// Checks an object key: non-empty, at most 1,024 bytes, and free of the NUL
/// character (XML 1.0 cannot carry it, and the metadata index uses it as a
/// separator).
///
/// # Errors
/// Returns why the key is invalid.
pub fn validate_object_key(key: &str) -> Result<(), InvalidName> {
    if key.is_empty() {
        return Err(InvalidName("object key must not be empty".into()));
    }
    if key.len() > limits::KEY_LENGTH_BYTES_MAX {
        return Err(InvalidName(format!(
            "object key is {} bytes long, the limit is {}",
            key.len(),
            limits::KEY_LENGTH_BYTES_MAX
        )));
    }
    if key.contains('\0') {
        return Err(InvalidName(
            "object key must not contain the NUL character".into(),
        ));
    }
    Ok(())
}

/// Checks a tag set against S3's limits.
///
/// # Errors
/// Returns why the tag set is invalid.
pub fn validate_tags<'a>(
    tags: impl IntoIterator<Item = (&'a str, &'a str)>,
    tags_max: usize,
) -> Result<(), InvalidName> {
    let mut seen = std::collections::BTreeSet::new();
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > limits::TAG_KEY_CHARS_MAX {
            return Err(InvalidName(format!(
                "tag key `{key}` must be 1 to 128 characters"
            )));
        }
        if value.chars().count() > limits::TAG_VALUE_CHARS_MAX {
            return Err(InvalidName(format!(
                "tag value for `{key}` exceeds 256 characters"
            )));
        }
        if !seen.insert(key) {
            return Err(InvalidName(format!("tag key `{key}` appears twice")));
        }
    }
    if seen.len() > tags_max {
        return Err(InvalidName(format!(
            "{} tags given, the limit is {tags_max}",
            seen.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3_rules() {
        for good in ["abc", "my-bucket", "my.bucket.1", "a1b", &"a".repeat(63)] {
            assert!(validate_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            "ABC",
            "-abc",
            "abc-",
            "a..b",
            "a.-b",
            "192.168.1.1",
            "xn--abc",
            "my_bucket",
            &"a".repeat(64),
            "abc-s3alias",
        ] {
            assert!(validate_bucket_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_are_bounded() {
        assert!(validate_object_key("a/b/c").is_ok());
        assert!(validate_object_key("").is_err());
        assert!(validate_object_key(&"k".repeat(1025)).is_err());
        assert!(validate_object_key(&"k".repeat(1024)).is_ok());
        assert!(validate_object_key("a\0b").is_err());
    }

    #[test]
    fn tags_are_checked() {
        assert!(validate_tags([("a", "1"), ("b", "2")], 10).is_ok());
        assert!(validate_tags([("a", "1"), ("a", "2")], 10).is_err());
        assert!(validate_tags([("", "1")], 10).is_err());
        assert!(validate_tags([("a", "1"), ("b", "2")], 1).is_err());
    }
}
