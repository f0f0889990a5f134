//! The `Condition` element: operators, their typed values, and their evaluation against a
//! [`RequestContext`].
//!
//! A condition block maps operators to keys to values. Everything in one block must hold (keys
//! and operators are AND'ed); the values listed for one key are alternatives (OR'ed). Values are
//! checked for their operator's type when the policy is parsed (a `NumericLessThan` on `"ten"` is
//! refused then), so evaluation never fails: a comparison that cannot be made, such as a context
//! value that is not a number, is simply not satisfied.
//!
//! Missing keys follow the IAM User Guide, "IAM JSON policy elements: Condition operators"
//! (the *Important* note at the top of the page): "If the key that you specify in a policy
//! condition is not present in the request context, the values do not match and the condition is
//! false. If the policy condition requires that the key is not matched, such as `StringNotLike`
//! or `ArnNotLike`, and the right key is not present, the condition is true. This logic applies to
//! all condition operators except `...IfExists` and `Null` check." `...IfExists` makes a missing
//! key true; `ForAllValues:` is true on a missing or empty key and `ForAnyValue:` false ("Set
//! operators for multivalued context keys").
//!
//! This module owns none of the ARN, wildcard or variable logic; it calls `arn` and `pattern`.

use std::cmp::Ordering;
use std::net::IpAddr;

use time::format_description::well_known::{Iso8601, Rfc3339};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use crate::arn;
use crate::context::RequestContext;
use crate::json::Json;
use crate::limits::CONDITION_KEY_BYTES_MAX;
use crate::pattern::{Pattern, Token, glob_match_str, tokens_to_text};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetQualifier {
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Equals,
    LessThan,
    LessThanEquals,
    GreaterThan,
    GreaterThanEquals,
}

impl Comparison {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Equals => ordering == Ordering::Equal,
            Self::LessThan => ordering == Ordering::Less,
            Self::LessThanEquals => ordering != Ordering::Greater,
            Self::GreaterThan => ordering == Ordering::Greater,
            Self::GreaterThanEquals => ordering != Ordering::Less,
        }
    }
}

/// The comparison an operator makes, before negation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Test {
    StringEquals,
    StringEqualsIgnoreCase,
    StringLike,
    Numeric(Comparison),
    Date(Comparison),
    Bool,
    Binary,
    IpAddress,
    /// `ArnEquals` and `ArnLike` behave the same: both allow wildcards in every component.
    Arn,
    Null,
}

/// A parsed operator name such as `ForAllValues:StringNotLikeIfExists`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Operator {
    qualifier: Option<SetQualifier>,
    test: Test,
    negated: bool,
    if_exists: bool,
}

impl Operator {
    fn parse(name: &str) -> Result<Self, String> {
        let (qualifier, rest) = if let Some(rest) = name.strip_prefix("ForAnyValue:") {
            (Some(SetQualifier::ForAnyValue), rest)
        } else if let Some(rest) = name.strip_prefix("ForAllValues:") {
            (Some(SetQualifier::ForAllValues), rest)
        } else {
            (None, name)
        };
        let (base, if_exists) = match rest.strip_suffix("IfExists") {
            Some(base) => (base, true),
            None => (rest, false),
        };
        let (test, negated) = match base {
            "StringEquals" => (Test::StringEquals, false),
            "StringNotEquals" => (Test::StringEquals, true),
            "StringEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, false),
            "StringNotEqualsIgnoreCase" => (Test::StringEqualsIgnoreCase, true),
            "StringLike" => (Test::StringLike, false),
            "StringNotLike" => (Test::StringLike, true),
            "NumericEquals" => (Test::Numeric(Comparison::Equals), false),
            "NumericNotEquals" => (Test::Numeric(Comparison::Equals), true),
            "NumericLessThan" => (Test::Numeric(Comparison::LessThan), false),
            "NumericLessThanEquals" => (Test::Numeric(Comparison::LessThanEquals), false),
            "NumericGreaterThan" => (Test::Numeric(Comparison::GreaterThan), false),
            "NumericGreaterThanEquals" => (Test::Numeric(Comparison::GreaterThanEquals), false),
            "DateEquals" => (Test::Date(Comparison::Equals), false),
            "DateNotEquals" => (Test::Date(Comparison::Equals), true),
            "DateLessThan" => (Test::Date(Comparison::LessThan), false),
            "DateLessThanEquals" => (Test::Date(Comparison::LessThanEquals), false),
            "DateGreaterThan" => (Test::Date(Comparison::GreaterThan), false),
            "DateGreaterThanEquals" => (Test::Date(Comparison::GreaterThanEquals), false),
            "Bool" => (Test::Bool, false),
            "BinaryEquals" => (Test::Binary, false),
            "IpAddress" => (Test::IpAddress, false),
            "NotIpAddress" => (Test::IpAddress, true),
            "ArnEquals" | "ArnLike" => (Test::Arn, false),
            "ArnNotEquals" | "ArnNotLike" => (Test::Arn, true),
            "Null" => (Test::Null, false),
            _ => return Err(format!("unknown condition operator \"{name}\"")),
        };
        if test == Test::Null && (if_exists || qualifier.is_some()) {
            return Err(format!(
                "\"{name}\": Null takes neither IfExists nor ForAnyValue:/ForAllValues:"
            ));
        }
        Ok(Self {
            qualifier,
            test,
            negated,
            if_exists,
        })
    }
}

/// A number as policies compare them: integers exactly, anything else as a float.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Integer(i128),
    Decimal(f64),
}

impl Number {
    fn parse(text: &str) -> Option<Self> {
        if let Ok(integer) = text.parse::<i128>() {
            return Some(Self::Integer(integer));
        }
        // `f64::from_str` also accepts "inf" and "NaN", which are not numbers in a policy.
        let numeric = !text.is_empty()
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'));
        let value: f64 = text.parse().ok().filter(|_| numeric)?;
        value.is_finite().then_some(Self::Decimal(value))
    }

    fn compare(self, other: Self) -> Option<Ordering> {
        match (self, other) {
            (Self::Integer(a), Self::Integer(b)) => Some(a.cmp(&b)),
            // Precision is lost only for integers beyond 2^53, which no condition key carries.
            #[allow(clippy::cast_precision_loss)]
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn as_f64(self) -> f64 {
        match self {
            Self::Integer(i) => i as f64,
            Self::Decimal(d) => d,
        }
    }
}

/// Parses a date as AWS accepts them: epoch seconds, or ISO 8601 (`2024-05-01`,
/// `2024-05-01T12:00:00Z`, with an offset or fractional seconds; without an offset, UTC).
/// Returns nanoseconds since the epoch.
fn parse_date(text: &str) -> Option<i128> {
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds: i64 = text.parse().ok()?;
        return OffsetDateTime::from_unix_timestamp(seconds)
            .ok()
            .map(OffsetDateTime::unix_timestamp_nanos);
    }
    if let Ok(time) = OffsetDateTime::parse(text, &Rfc3339) {
        return Some(time.unix_timestamp_nanos());
    }
    if let Ok(time) = OffsetDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(time.unix_timestamp_nanos());
    }
    if let Ok(time) = PrimitiveDateTime::parse(text, &Iso8601::DEFAULT) {
        return Some(time.assume_utc().unix_timestamp_nanos());
    }
    let date = Date::parse(text, &Iso8601::DEFAULT).ok()?;
    Some(
        PrimitiveDateTime::new(date, Time::MIDNIGHT)
            .assume_utc()
            .unix_timestamp_nanos(),
    )
}

/// An IPv4 or IPv6 network; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix_bits: u32,
}

impl Cidr {
    fn parse(text: &str) -> Option<Self> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address.parse().ok()?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix_bits = match prefix {
            // Only plain decimal digits: `u32::from_str` would also take "+24".
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => width,
        };
        (prefix_bits <= width).then_some(Self {
            network,
            prefix_bits,
        })
    }

    /// Whether `address` is in this network. The families never mix (an IPv4 range does not
    /// contain an IPv6 caller), but an IPv4-mapped IPv6 address, as dual-stack sockets report
    /// IPv4 clients, counts as the IPv4 address it maps.
    fn contains(self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX
                    .checked_shl(32 - self.prefix_bits)
                    .unwrap_or_default();
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX
                    .checked_shl(128 - self.prefix_bits)
                    .unwrap_or_default();
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// One policy value, parsed for its operator.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// String and ARN operators; may hold policy variables.
    Pattern(Pattern),
    Number(Number),
    Date(i128),
    Bool(bool),
    Binary(String),
    Cidr(Cidr),
    /// `Null`: `true` requires the key to be absent, `false` present.
    Null(bool),
}

/// One operator applied to one key, with its alternative values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    operator: Operator,
    /// Lowercased: context keys are case-insensitive.
    key: String,
    values: Vec<Value>,
}

/// Where a problem in a condition block is (`Condition.StringLike.s3:prefix`) and what it is.
pub(crate) type BlockError = (String, String);

/// Parses a `Condition` element. `variables` is whether the policy version allows variables.
pub(crate) fn parse_block(json: &Json, variables: bool) -> Result<Vec<Condition>, BlockError> {
    let Json::Object(operators) = json else {
        return Err((
            "Condition".into(),
            format!(
                "expected an object of operators to keys, found {}",
                json.kind()
            ),
        ));
    };
    let mut conditions = Vec::new();
    for (operator_name, keys) in operators {
        let at = format!("Condition.{operator_name}");
        let operator = Operator::parse(operator_name).map_err(|reason| (at.clone(), reason))?;
        let Json::Object(keys) = keys else {
            return Err((
                at,
                format!(
                    "expected an object of keys to values, found {}",
                    keys.kind()
                ),
            ));
        };
        if keys.is_empty() {
            return Err((at, "names no condition key".into()));
        }
        for (key, values) in keys {
            let at = format!("{at}.{key}");
            check_key(key).map_err(|reason| (at.clone(), reason))?;
            let values = condition_values(values)
                .and_then(|texts| {
                    texts
                        .iter()
                        .map(|text| parse_value(operator.test, text, variables))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(|reason| (at.clone(), reason))?;
            conditions.push(Condition {
                operator,
                key: key.to_lowercase(),
                values,
            });
        }
    }
    Ok(conditions)
}

/// Condition keys are `service:name` (`aws:SourceIp`, `s3:prefix`, `aws:PrincipalTag/team`).
fn check_key(key: &str) -> Result<(), String> {
    if key.len() > CONDITION_KEY_BYTES_MAX {
        return Err(format!(
            "condition key is longer than {CONDITION_KEY_BYTES_MAX} bytes"
        ));
    }
    match key.split_once(':') {
        Some((service, name)) if !service.is_empty() && !name.is_empty() => Ok(()),
        _ => Err(format!(
            "\"{key}\" is not a condition key: expected service:name, such as aws:SourceIp"
        )),
    }
}

/// A condition's values as text: a string, number or boolean, or a non-empty array of them.
fn condition_values(json: &Json) -> Result<Vec<String>, String> {
    fn scalar(json: &Json) -> Result<String, String> {
        match json {
            Json::String(s) | Json::Number(s) => Ok(s.clone()),
            Json::Bool(b) => Ok(b.to_string()),
            other => Err(format!(
                "a condition value must be a string, number or boolean, found {}",
                other.kind()
            )),
        }
    }
    match json {
        Json::Array(items) if items.is_empty() => Err("the list of values is empty".into()),
        Json::Array(items) => items.iter().map(scalar).collect(),
        other => Ok(vec![scalar(other)?]),
    }
}

fn parse_value(operator: Test, text: &str, variables: bool) -> Result<Value, String> {
    let not_a = |what: &str| format!("\"{text}\" is not {what}");
    match operator {
        Test::StringEquals | Test::StringEqualsIgnoreCase => {
            Ok(Value::Pattern(Pattern::compile(text, false, variables)?))
        }
        Test::StringLike => Ok(Value::Pattern(Pattern::compile(text, true, variables)?)),
        Test::Arn => {
            let pattern = Pattern::compile(text, true, variables)?;
            if !pattern.has_variables() {
                arn::check_pattern_shape(&pattern.skeleton())?;
            }
            Ok(Value::Pattern(pattern))
        }
        Test::Numeric(_) => Number::parse(text)
            .map(Value::Number)
            .ok_or_else(|| not_a("a number")),
        Test::Date(_) => parse_date(text)
            .map(Value::Date)
            .ok_or_else(|| not_a("a date (ISO 8601 or epoch seconds)")),
        Test::Bool => parse_bool(text)
            .map(Value::Bool)
            .ok_or_else(|| not_a("a boolean (true or false)")),
        Test::Binary => Ok(Value::Binary(text.to_owned())),
        Test::IpAddress => Cidr::parse(text)
            .map(Value::Cidr)
            .ok_or_else(|| not_a("an IP address or CIDR range")),
        Test::Null => parse_bool(text)
            .map(Value::Null)
            .ok_or_else(|| not_a("true or false")),
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A policy value ready to compare: patterns have their variables substituted.
enum Resolved<'a> {
    Tokens(Vec<Token>),
    Value(&'a Value),
}

impl Condition {
    /// Whether this condition holds for `ctx`.
    pub(crate) fn holds(&self, ctx: &RequestContext) -> bool {
        let context_values = ctx.values(&self.key);
        let operator = self.operator;
        if operator.test == Test::Null {
            let absent = context_values.is_empty();
            return self.values.contains(&Value::Null(absent));
        }
        if context_values.is_empty() {
            // See the module documentation for the AWS rules cited here.
            if operator.if_exists {
                return true;
            }
            return match operator.qualifier {
                Some(SetQualifier::ForAllValues) => true,
                Some(SetQualifier::ForAnyValue) => false,
                None => operator.negated,
            };
        }
        // A value whose variable cannot be resolved is `None`: it compares as "cannot tell",
        // which satisfies neither a positive operator nor a negated one. AWS documents that an
        // unresolvable variable "might cause the entire statement to be invalid"; refusing to
        // let it satisfy anything is the closest reading that never widens access through an
        // Allow with a negated operator.
        let policy_values: Vec<Option<Resolved>> = self
            .values
            .iter()
            .map(|value| match value {
                Value::Pattern(pattern) => pattern.resolve(ctx).map(Resolved::Tokens),
                other => Some(Resolved::Value(other)),
            })
            .collect();
        let satisfied = |context_value: &&str| {
            let mut outcomes = policy_values
                .iter()
                .map(|policy_value| compare(operator.test, context_value, policy_value.as_ref()));
            if operator.negated {
                outcomes.all(|outcome| outcome == Some(false))
            } else {
                outcomes.any(|outcome| outcome == Some(true))
            }
        };
        // Without a qualifier a negated operator is the negation of the positive one (no context
        // value may match any policy value) and a positive one needs any value to match.
        let every_value = match operator.qualifier {
            Some(SetQualifier::ForAllValues) => true,
            Some(SetQualifier::ForAnyValue) => false,
            None => operator.negated,
        };
        if every_value {
            context_values.iter().all(satisfied)
        } else {
            context_values.iter().any(satisfied)
        }
    }
}

/// Condition keys whose fixed values S3 trusts to keep a policy that names `"*"` non-public
/// (S3 User Guide, "Blocking public access to your Amazon S3 storage", "The meaning of
/// 'public'"), lowercased.
const NON_PUBLIC_KEYS: [&str; 11] = [
    "aws:principalarn",
    "aws:principalaccount",
    "aws:principalorgid",
    "aws:sourcearn",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceowner",
    "aws:sourceaccount",
    "aws:userid",
    "s3:x-amz-server-side-encryption-aws-kms-key-id",
    "s3:dataaccesspointarn",
];

impl Condition {
    /// Whether this condition confines a statement to trusted callers in the sense of S3's
    /// "The meaning of 'public'": `aws:SourceIp` limited to CIDR ranges (other than `/0`), or
    /// one of [`NON_PUBLIC_KEYS`] fixed to literal values. A negated, `...IfExists` or
    /// `ForAllValues:` condition never confines, since each holds when the key is missing.
    pub(crate) fn confines_to_trusted_callers(&self) -> bool {
        let operator = self.operator;
        if operator.negated
            || operator.if_exists
            || operator.qualifier == Some(SetQualifier::ForAllValues)
        {
            return false;
        }
        match operator.test {
            Test::IpAddress => {
                self.key == "aws:sourceip"
                    && self
                        .values
                        .iter()
                        .all(|value| matches!(value, Value::Cidr(cidr) if cidr.prefix_bits > 0))
            }
            Test::StringEquals | Test::StringEqualsIgnoreCase | Test::StringLike | Test::Arn => {
                NON_PUBLIC_KEYS.contains(&self.key.as_str())
                    && self.values.iter().all(
                        |value| matches!(value, Value::Pattern(pattern) if pattern.is_literal()),
                    )
            }
            _ => false,
        }
    }
}

/// Compares one context value with one policy value: `Some(true)` if they match before any
/// negation, `Some(false)` if they do not, `None` if the comparison cannot be made.
fn compare(test: Test, context_value: &str, policy_value: Option<&Resolved>) -> Option<bool> {
    match (test, policy_value?) {
        (Test::StringEquals, Resolved::Tokens(tokens)) => {
            Some(tokens_to_text(tokens) == context_value)
        }
        (Test::StringEqualsIgnoreCase, Resolved::Tokens(tokens)) => {
            Some(tokens_to_text(tokens).to_lowercase() == context_value.to_lowercase())
        }
        (Test::StringLike, Resolved::Tokens(tokens)) => Some(glob_match_str(tokens, context_value)),
        (Test::Arn, Resolved::Tokens(tokens)) => {
            arn::split(context_value)?;
            Some(arn::matches(tokens, context_value))
        }
        (Test::Numeric(comparison), Resolved::Value(Value::Number(number))) => {
            let ordering = Number::parse(context_value)?.compare(*number)?;
            Some(comparison.holds(ordering))
        }
        (Test::Date(comparison), Resolved::Value(Value::Date(date))) => {
            Some(comparison.holds(parse_date(context_value)?.cmp(date)))
        }
        (Test::Bool, Resolved::Value(Value::Bool(expected))) => {
            Some(parse_bool(context_value)? == *expected)
        }
        (Test::Binary, Resolved::Value(Value::Binary(expected))) => Some(context_value == expected),
        (Test::IpAddress, Resolved::Value(Value::Cidr(cidr))) => {
            Some(cidr.contains(context_value.parse().ok()?))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Principal;

    fn ctx() -> RequestContext {
        RequestContext::new(
            "s3:ListBucket",
            "arn:aws:s3:::bucket",
            Principal::new("arn:aws:iam::111122223333:user/alice", "111122223333")
                .with_user_name("alice"),
        )
    }

    fn block(json: &str) -> Vec<Condition> {
        parse_block(&Json::parse(json).unwrap(), true).unwrap()
    }

    fn holds(json: &str, ctx: &RequestContext) -> bool {
        block(json).iter().all(|condition| condition.holds(ctx))
    }

    fn error(json: &str) -> String {
        let (at, reason) = parse_block(&Json::parse(json).unwrap(), true).unwrap_err();
        format!("{at}: {reason}")
    }

    #[test]
    fn string_operators() {
        let ctx = ctx().with_key("s3:prefix", "Home/alice/");
        assert!(holds(
            r#"{"StringEquals": {"s3:prefix": "Home/alice/"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringEquals": {"s3:prefix": "home/alice/"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEqualsIgnoreCase": {"s3:prefix": "home/ALICE/"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringNotEquals": {"s3:prefix": ["a", "b"]}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringNotEquals": {"s3:prefix": ["a", "Home/alice/"]}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringNotEqualsIgnoreCase": {"s3:prefix": "HOME/alice/"}}"#,
            &ctx
        ));
        assert!(holds(r#"{"StringLike": {"s3:prefix": "Home/*"}}"#, &ctx));
        assert!(holds(
            r#"{"StringLike": {"s3:prefix": "Home/${aws:username}/"}}"#,
            &ctx
        ));
        assert!(holds(r#"{"StringNotLike": {"s3:prefix": "home/*"}}"#, &ctx));
        // StringEquals has no wildcards: `*` is a literal star.
        assert!(!holds(r#"{"StringEquals": {"s3:prefix": "Home/*"}}"#, &ctx));
    }

    #[test]
    fn values_of_one_key_are_ored_keys_and_operators_are_anded() {
        let ctx = ctx()
            .with_key("s3:prefix", "b")
            .with_key("s3:delimiter", "/");
        assert!(holds(
            r#"{"StringEquals": {"s3:prefix": ["a", "b", "c"]}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEquals": {"s3:prefix": "b", "s3:delimiter": "/"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringEquals": {"s3:prefix": "b", "s3:delimiter": "-"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringEquals": {"s3:prefix": "b"}, "StringLike": {"s3:delimiter": "x*"}}"#,
            &ctx
        ));
    }

    #[test]
    fn missing_keys_follow_the_documented_rules() {
        let ctx = ctx();
        assert!(!holds(r#"{"StringEquals": {"s3:prefix": "a"}}"#, &ctx));
        assert!(!holds(r#"{"StringLike": {"s3:prefix": "*"}}"#, &ctx));
        assert!(holds(r#"{"StringNotEquals": {"s3:prefix": "a"}}"#, &ctx));
        assert!(holds(r#"{"StringNotLike": {"s3:prefix": "*"}}"#, &ctx));
        assert!(holds(
            r#"{"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::x"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"Bool": {"aws:SecureTransport": "false"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"NumericLessThan": {"s3:max-keys": "10"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEqualsIfExists": {"s3:prefix": "a"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"ForAllValues:StringEquals": {"aws:TagKeys": "a"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": "a"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"ForAnyValue:StringEqualsIfExists": {"aws:TagKeys": "a"}}"#,
            &ctx
        ));
    }

    #[test]
    fn if_exists_checks_present_keys_normally() {
        let ctx = ctx().with_key("s3:prefix", "b");
        assert!(!holds(
            r#"{"StringEqualsIfExists": {"s3:prefix": "a"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEqualsIfExists": {"s3:prefix": "b"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringNotEqualsIfExists": {"s3:prefix": "a"}}"#,
            &ctx
        ));
    }

    #[test]
    fn null_tests_presence() {
        let present = ctx().with_key("aws:TokenIssueTime", "2024-01-01T00:00:00Z");
        let absent = ctx();
        assert!(holds(
            r#"{"Null": {"aws:TokenIssueTime": "true"}}"#,
            &absent
        ));
        assert!(!holds(
            r#"{"Null": {"aws:TokenIssueTime": "true"}}"#,
            &present
        ));
        assert!(holds(
            r#"{"Null": {"aws:TokenIssueTime": false}}"#,
            &present
        ));
        assert!(!holds(
            r#"{"Null": {"aws:TokenIssueTime": "false"}}"#,
            &absent
        ));
        // An empty multivalued key counts as absent.
        let empty = ctx().with_values("aws:TagKeys", Vec::<String>::new());
        assert!(holds(r#"{"Null": {"aws:TagKeys": "true"}}"#, &empty));
    }

    #[test]
    fn set_operators_on_multivalued_keys() {
        let ctx = ctx().with_values("aws:TagKeys", ["Department", "CostCenter"]);
        let all = r#"{"ForAllValues:StringEquals": {"aws:TagKeys": ["Department", "CostCenter", "Project"]}}"#;
        assert!(holds(all, &ctx));
        let all_too_narrow = r#"{"ForAllValues:StringEquals": {"aws:TagKeys": ["Department"]}}"#;
        assert!(!holds(all_too_narrow, &ctx));
        let any = r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": ["CostCenter", "Other"]}}"#;
        assert!(holds(any, &ctx));
        let any_none = r#"{"ForAnyValue:StringEquals": {"aws:TagKeys": ["Other"]}}"#;
        assert!(!holds(any_none, &ctx));
        // ForAnyValue:StringNotEquals: at least one request value is outside the list.
        let any_not = r#"{"ForAnyValue:StringNotEquals": {"aws:TagKeys": ["Department"]}}"#;
        assert!(holds(any_not, &ctx));
        // ForAllValues:StringNotLike: no request value matches any pattern.
        let all_not = r#"{"ForAllValues:StringNotLike": {"aws:TagKeys": ["Secret*"]}}"#;
        assert!(holds(all_not, &ctx));
        let all_not_fails = r#"{"ForAllValues:StringNotLike": {"aws:TagKeys": ["Cost*"]}}"#;
        assert!(!holds(all_not_fails, &ctx));
        // Without a qualifier: positive is "any value matches", negated is "none matches".
        assert!(holds(
            r#"{"StringEquals": {"aws:TagKeys": "CostCenter"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringNotEquals": {"aws:TagKeys": "CostCenter"}}"#,
            &ctx
        ));
    }

    #[test]
    fn numeric_operators() {
        let ctx = ctx().with_key("s3:max-keys", "100");
        assert!(holds(r#"{"NumericEquals": {"s3:max-keys": 100}}"#, &ctx));
        assert!(holds(
            r#"{"NumericNotEquals": {"s3:max-keys": "10"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"NumericLessThanEquals": {"s3:max-keys": "100"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"NumericLessThan": {"s3:max-keys": "100"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"NumericGreaterThan": {"s3:max-keys": "99.5"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"NumericGreaterThanEquals": {"s3:max-keys": "1e2"}}"#,
            &ctx
        ));
        let not_a_number = ctx.clone().with_key("s3:max-keys", "lots");
        assert!(!holds(
            r#"{"NumericLessThan": {"s3:max-keys": "10"}}"#,
            &not_a_number
        ));
        assert!(!holds(
            r#"{"NumericNotEquals": {"s3:max-keys": "10"}}"#,
            &not_a_number
        ));
    }

    #[test]
    fn date_operators_accept_iso_8601_and_epoch_seconds() {
        let ctx = ctx().with_current_time(1_714_564_800); // 2024-05-01T12:00:00Z
        let cases = [
            (
                r#"{"DateGreaterThan": {"aws:CurrentTime": "2024-05-01T00:00:00Z"}}"#,
                true,
            ),
            (
                r#"{"DateLessThan": {"aws:CurrentTime": "2024-05-01"}}"#,
                false,
            ),
            (
                r#"{"DateGreaterThanEquals": {"aws:CurrentTime": "2024-05-01"}}"#,
                true,
            ),
            (
                r#"{"DateEquals": {"aws:CurrentTime": "2024-05-01T14:00:00+02:00"}}"#,
                true,
            ),
            (
                r#"{"DateEquals": {"aws:CurrentTime": "2024-05-01T12:00:00.000Z"}}"#,
                true,
            ),
            (
                r#"{"DateNotEquals": {"aws:CurrentTime": "2024-05-01T12:00:01Z"}}"#,
                true,
            ),
            (
                r#"{"DateLessThanEquals": {"aws:CurrentTime": 1714564800}}"#,
                true,
            ),
            (
                r#"{"DateLessThan": {"aws:EpochTime": "2024-05-02T00:00:00Z"}}"#,
                true,
            ),
            (
                r#"{"DateGreaterThan": {"aws:EpochTime": "1714564799"}}"#,
                true,
            ),
            (
                r#"{"DateEquals": {"aws:CurrentTime": "2024-05-01T12:00:00"}}"#,
                true,
            ),
        ];
        for (json, expected) in cases {
            assert_eq!(holds(json, &ctx), expected, "{json}");
        }
    }

    #[test]
    fn bool_operator() {
        let https = ctx().with_key("aws:SecureTransport", "true");
        let http = ctx().with_key("aws:SecureTransport", "false");
        assert!(holds(
            r#"{"Bool": {"aws:SecureTransport": "true"}}"#,
            &https
        ));
        assert!(holds(r#"{"Bool": {"aws:SecureTransport": true}}"#, &https));
        assert!(holds(
            r#"{"Bool": {"aws:SecureTransport": "FALSE"}}"#,
            &http
        ));
        assert!(!holds(
            r#"{"Bool": {"aws:SecureTransport": "false"}}"#,
            &https
        ));
    }

    #[test]
    fn ip_operators_cover_ipv4_ipv6_and_mapped_addresses() {
        let v4 = ctx().with_key("aws:SourceIp", "203.0.113.77");
        let v6 = ctx().with_key("aws:SourceIp", "2001:db8:1234:5678::1");
        let mapped = ctx().with_key("aws:SourceIp", "::ffff:203.0.113.77");
        let range =
            r#"{"IpAddress": {"aws:SourceIp": ["203.0.113.0/24", "2001:DB8:1234:5678::/64"]}}"#;
        assert!(holds(range, &v4));
        assert!(holds(range, &v6));
        assert!(holds(range, &mapped));
        assert!(holds(
            r#"{"IpAddress": {"aws:SourceIp": "203.0.113.77"}}"#,
            &v4
        ));
        assert!(!holds(
            r#"{"IpAddress": {"aws:SourceIp": "203.0.113.76/32"}}"#,
            &v4
        ));
        assert!(holds(
            r#"{"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#,
            &v4
        ));
        assert!(holds(
            r#"{"IpAddress": {"aws:SourceIp": "203.0.113.200/24"}}"#,
            &v4
        ));
        // NotIpAddress with only IPv4 ranges is true for IPv6 callers, as in AWS.
        assert!(holds(
            r#"{"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}"#,
            &v6
        ));
        assert!(!holds(
            r#"{"NotIpAddress": {"aws:SourceIp": "203.0.113.0/24"}}"#,
            &v4
        ));
        let garbage = ctx().with_key("aws:SourceIp", "not-an-ip");
        assert!(!holds(
            r#"{"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#,
            &garbage
        ));
        assert!(!holds(
            r#"{"NotIpAddress": {"aws:SourceIp": "10.0.0.0/8"}}"#,
            &garbage
        ));
    }

    #[test]
    fn arn_operators_match_component_by_component() {
        let ctx = ctx().with_key("aws:SourceArn", "arn:aws:s3:::logs-bucket");
        assert!(holds(
            r#"{"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::logs-bucket"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"ArnLike": {"aws:SourceArn": "arn:aws:s3:::logs-*"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"ArnNotLike": {"aws:SourceArn": "arn:aws:s3:::other*"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"ArnNotEquals": {"aws:SourceArn": "arn:aws:s3:::logs-bucket"}}"#,
            &ctx
        ));
        let principal_arn =
            r#"{"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:user/*"}}"#;
        assert!(holds(principal_arn, &ctx));
    }

    #[test]
    fn unresolvable_variables_satisfy_nothing() {
        let ctx = ctx().with_key("s3:prefix", "x");
        assert!(!holds(
            r#"{"StringEquals": {"s3:prefix": "${aws:userid}"}}"#,
            &ctx
        ));
        assert!(!holds(
            r#"{"StringNotEquals": {"s3:prefix": "${aws:userid}"}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEquals": {"s3:prefix": ["${aws:userid}", "x"]}}"#,
            &ctx
        ));
        assert!(holds(
            r#"{"StringEquals": {"s3:prefix": "${aws:userid, 'x'}"}}"#,
            &ctx
        ));
    }

    #[test]
    fn operator_names_are_checked() {
        assert_eq!(
            error(r#"{"StringEqual": {"s3:prefix": "a"}}"#),
            "Condition.StringEqual: unknown condition operator \"StringEqual\""
        );
        assert!(error(r#"{"stringequals": {"s3:prefix": "a"}}"#).contains("unknown"));
        assert!(error(r#"{"ForSomeValues:StringEquals": {"s3:prefix": "a"}}"#).contains("unknown"));
        assert!(error(r#"{"NullIfExists": {"s3:prefix": "true"}}"#).contains("Null takes neither"));
        assert!(
            error(r#"{"ForAllValues:Null": {"s3:prefix": "true"}}"#).contains("Null takes neither")
        );
        // Every documented form parses.
        block(
            r#"{"ForAllValues:StringNotEqualsIgnoreCaseIfExists": {"a:b": "x"},
                "ForAnyValue:ArnNotLike": {"a:c": "arn:aws:s3:::x"},
                "NumericGreaterThanEqualsIfExists": {"a:d": 1},
                "DateNotEqualsIfExists": {"a:e": "2024-01-01"},
                "BoolIfExists": {"a:f": true},
                "BinaryEquals": {"a:g": "QmluYXJ5"},
                "NotIpAddressIfExists": {"a:h": "::1"}}"#,
        );
    }

    #[test]
    fn values_are_checked_for_their_operator() {
        assert_eq!(
            error(r#"{"NumericLessThan": {"s3:max-keys": "ten"}}"#),
            "Condition.NumericLessThan.s3:max-keys: \"ten\" is not a number"
        );
        assert!(error(r#"{"NumericLessThan": {"s3:max-keys": "NaN"}}"#).contains("not a number"));
        assert!(
            error(r#"{"DateLessThan": {"aws:CurrentTime": "tomorrow"}}"#).contains("not a date")
        );
        assert!(error(r#"{"Bool": {"aws:SecureTransport": "yes"}}"#).contains("not a boolean"));
        assert!(error(r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}"#).contains("not an IP"));
        assert!(error(r#"{"IpAddress": {"aws:SourceIp": "10.0.0.0/+8"}}"#).contains("not an IP"));
        assert!(error(r#"{"IpAddress": {"aws:SourceIp": "10.0.0"}}"#).contains("not an IP"));
        assert!(
            error(r#"{"Null": {"aws:TokenIssueTime": "maybe"}}"#).contains("not true or false")
        );
        assert!(error(r#"{"ArnLike": {"aws:SourceArn": "bucket"}}"#).contains("not an ARN"));
        assert!(
            error(r#"{"StringEquals": {"s3:prefix": []}}"#).contains("list of values is empty")
        );
        assert!(error(r#"{"StringEquals": {"s3:prefix": null}}"#).contains("found null"));
        assert!(error(r#"{"StringEquals": {"s3:prefix": [["a"]]}}"#).contains("found an array"));
        assert!(
            error(r#"{"StringEquals": {"s3:prefix": {"a": "b"}}}"#).contains("found an object")
        );
        assert!(error(r#"{"StringEquals": "s3:prefix"}"#).contains("expected an object of keys"));
        assert!(error(r#"{"StringEquals": {}}"#).contains("names no condition key"));
        assert!(error(r#"{"StringEquals": {"prefix": "a"}}"#).contains("not a condition key"));
        assert!(error(r#"["StringEquals"]"#).contains("expected an object of operators"));
    }

    #[test]
    fn numbers_compare_exactly_when_integral() {
        let big = Number::parse("9007199254740993").unwrap();
        let bigger = Number::parse("9007199254740994").unwrap();
        assert_eq!(big.compare(bigger), Some(Ordering::Less));
        assert_eq!(
            Number::parse("1.5")
                .unwrap()
                .compare(Number::parse("2").unwrap()),
            Some(Ordering::Less)
        );
        assert_eq!(Number::parse("inf"), None);
        assert_eq!(Number::parse(""), None);
    }
}
