//! Scenarios from the AWS IAM User Guide and S3 User Guide, driven through the public API only.
//!
//! Each test restates a documented policy and the outcome the guide describes for it; the
//! section it comes from is named in the test's comment. The policies are re-typed, not copied,
//! and bucket and account names are the guides' placeholders.

use nuage_policy::{
    Decision, DenyKind, Effect, Outcome, Policy, PolicyError, PolicyKind, PolicySource, Principal,
    Reason, RequestContext, Version, evaluate, limits,
};

const OWNER: &str = "111122223333";
const OTHER: &str = "444455556666";

fn parse(kind: PolicyKind, name: &str, json: &str) -> Policy {
    Policy::parse(name, json, kind, limits::BUCKET_POLICY_BYTES_MAX)
        .unwrap_or_else(|error| panic!("{name} should parse: {error}"))
}

fn identity(json: &str) -> Policy {
    parse(PolicyKind::Identity, "identity", json)
}

fn bucket_policy(json: &str) -> Policy {
    parse(PolicyKind::Resource, "bucket-policy", json)
}

fn malformed(kind: PolicyKind, json: &str) -> String {
    match Policy::parse("bad", json, kind, limits::BUCKET_POLICY_BYTES_MAX) {
        Ok(_) => panic!("should be refused: {json}"),
        Err(error) => error.to_string(),
    }
}

fn user(account: &str, name: &str) -> Principal {
    Principal::new(format!("arn:aws:iam::{account}:user/{name}"), account).with_user_name(name)
}

fn root(account: &str) -> Principal {
    Principal::new(format!("arn:aws:iam::{account}:root"), account)
}

fn session(account: &str, role: &str, session: &str) -> Principal {
    Principal::new(
        format!("arn:aws:sts::{account}:assumed-role/{role}/{session}"),
        account,
    )
}

fn request(principal: Principal, action: &str, resource: &str) -> RequestContext {
    RequestContext::new(action, resource, principal)
}

fn allowed_by_identity(ctx: &RequestContext, policy: &Policy) -> bool {
    evaluate(ctx, &[policy], None, &[], true).is_allowed()
}

fn explicit_deny(decision: &Decision) -> bool {
    decision.outcome == Outcome::Deny(DenyKind::Explicit)
}

fn implicit_deny(decision: &Decision) -> bool {
    decision.outcome == Outcome::Deny(DenyKind::Implicit)
}

const ALLOW_ALL: &str = r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "*", "Resource": "*"}}"#;

// IAM User Guide, "IAM policy elements: Variables and tags" and the identity-based policy example
// "Amazon S3: Allows IAM users access to their S3 home directory, programmatically and in the
// console": list only your own prefix, read and write only under it.
const HOME_DIRECTORY: &str = r#"{
    "Version": "2012-10-17",
    "Statement": [
        {
            "Sid": "ListOwnHome",
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": "arn:aws:s3:::amzn-s3-demo-bucket",
            "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*", "home/${aws:username}"]}}
        },
        {
            "Sid": "ReadWriteOwnHome",
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/*"
        }
    ]
}"#;

#[test]
fn home_directory_lists_only_the_users_own_prefix() {
    let policy = identity(HOME_DIRECTORY);
    let list = |who: Principal, prefix: Option<&str>| {
        let ctx = request(who, "s3:ListBucket", "arn:aws:s3:::amzn-s3-demo-bucket");
        let ctx = match prefix {
            Some(prefix) => ctx.with_key("s3:prefix", prefix),
            None => ctx,
        };
        evaluate(&ctx, &[&policy], None, &[], true)
    };
    let decision = list(user(OWNER, "alice"), Some("home/alice/"));
    assert!(decision.is_allowed());
    assert_eq!(decision.reason, Reason::IdentityPolicyAllows);
    assert_eq!(decision.statements[0].sid.as_deref(), Some("ListOwnHome"));
    assert!(list(user(OWNER, "alice"), Some("home/alice")).is_allowed());
    assert!(list(user(OWNER, "alice"), Some("home/alice/photos/")).is_allowed());
    assert!(implicit_deny(&list(
        user(OWNER, "alice"),
        Some("home/bob/")
    )));
    assert!(implicit_deny(&list(user(OWNER, "alice"), Some("home/"))));
    // Listing the whole bucket sends no prefix: the condition key is missing, so StringLike is
    // false.
    assert!(implicit_deny(&list(user(OWNER, "alice"), None)));
}

#[test]
fn home_directory_objects_are_per_user() {
    let policy = identity(HOME_DIRECTORY);
    let object = |who: Principal, action: &str, key: &str| {
        let ctx = request(
            who,
            action,
            &format!("arn:aws:s3:::amzn-s3-demo-bucket/{key}"),
        );
        allowed_by_identity(&ctx, &policy)
    };
    assert!(object(
        user(OWNER, "alice"),
        "s3:GetObject",
        "home/alice/notes.txt"
    ));
    assert!(object(
        user(OWNER, "alice"),
        "s3:PutObject",
        "home/alice/a/b/c.txt"
    ));
    assert!(!object(
        user(OWNER, "alice"),
        "s3:GetObject",
        "home/bob/notes.txt"
    ));
    assert!(!object(user(OWNER, "alice"), "s3:GetObject", "home/alice"));
    assert!(!object(
        user(OWNER, "alice"),
        "s3:GetObjectAcl",
        "home/alice/notes.txt"
    ));
    // Resource matching is case-sensitive: Alice's home is not ALICE's.
    assert!(!object(
        user(OWNER, "alice"),
        "s3:GetObject",
        "home/ALICE/notes.txt"
    ));
    // A role session has no aws:username: the variable cannot be resolved and nothing matches.
    assert!(!object(
        session(OWNER, "Reader", "alice"),
        "s3:GetObject",
        "home/alice/notes.txt"
    ));
}

#[test]
fn policy_variables_are_literal_text_in_2008_policies() {
    let old = identity(&HOME_DIRECTORY.replace("2012-10-17", "2008-10-17"));
    assert_eq!(old.version(), Some(Version::V2008_10_17));
    let alice = request(
        user(OWNER, "alice"),
        "s3:GetObject",
        "arn:aws:s3:::amzn-s3-demo-bucket/home/alice/notes.txt",
    );
    assert!(!allowed_by_identity(&alice, &old));
    let literal = request(
        user(OWNER, "alice"),
        "s3:GetObject",
        "arn:aws:s3:::amzn-s3-demo-bucket/home/${aws:username}/notes.txt",
    );
    assert!(allowed_by_identity(&literal, &old));
}

// IAM User Guide, "Policy evaluation for requests within a single account", example
// identity-based and resource-based policy evaluation: Carlos may use his own bucket, but the
// DenyS3Logs statement wins over every allow for buckets with "log" in their name, even one that
// the bucket policy grants him.
#[test]
fn explicit_deny_beats_any_allow() {
    let carlos_policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AllowS3ListRead", "Effect": "Allow",
             "Action": ["s3:GetBucketLocation", "s3:ListAllMyBuckets"], "Resource": "arn:aws:s3:::*"},
            {"Sid": "AllowS3Self", "Effect": "Allow", "Action": "s3:*",
             "Resource": ["arn:aws:s3:::carlossalazar/*", "arn:aws:s3:::carlossalazar"]},
            {"Sid": "DenyS3Logs", "Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::*log*"}
        ]
    }"#,
    );
    let logs_bucket_policy = bucket_policy(
        r#"{
        "Version": "2012-10-17",
        "Statement": {"Sid": "AllowCarlos", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:user/carlossalazar"},
            "Action": "s3:*", "Resource": "arn:aws:s3:::carlossalazar-logs/*"}
    }"#,
    );
    let carlos = || user(OWNER, "carlossalazar");

    let own = request(
        carlos(),
        "s3:PutObject",
        "arn:aws:s3:::carlossalazar/report.txt",
    );
    assert!(evaluate(&own, &[&carlos_policy], None, &[], true).is_allowed());
    // The guide says AllowS3ListRead lets him list all buckets: an account-level action is
    // evaluated against the resource `arn:aws:s3:::*`, which `arn:aws:s3:::*` matches (and the
    // `*log*` deny does not).
    let list_all = request(carlos(), "s3:ListAllMyBuckets", "arn:aws:s3:::*");
    let decision = evaluate(&list_all, &[&carlos_policy], None, &[], true);
    assert!(decision.is_allowed());
    assert_eq!(
        decision.statements[0].sid.as_deref(),
        Some("AllowS3ListRead")
    );

    let logs = request(
        carlos(),
        "s3:PutObject",
        "arn:aws:s3:::carlossalazar-logs/today.log",
    );
    let decision = evaluate(
        &logs,
        &[&carlos_policy],
        Some(&logs_bucket_policy),
        &[],
        true,
    );
    assert!(explicit_deny(&decision));
    assert_eq!(decision.reason, Reason::ExplicitDeny);
    assert_eq!(decision.statements.len(), 1);
    let deciding = &decision.statements[0];
    assert_eq!(deciding.sid.as_deref(), Some("DenyS3Logs"));
    assert_eq!(deciding.source, PolicySource::Identity);
    assert_eq!(deciding.index, 2);
    assert_eq!(
        deciding.to_string(),
        "identity Statement[2] (Sid \"DenyS3Logs\")"
    );

    // Without the deny, the bucket policy alone would have let him in (same account).
    let decision = evaluate(&logs, &[], Some(&logs_bucket_policy), &[], true);
    assert!(decision.is_allowed());
    assert_eq!(decision.reason, Reason::ResourcePolicyAllows);
    assert_eq!(decision.statements[0].source, PolicySource::Resource);
}

// IAM User Guide, "IAM JSON policy elements: NotAction", "Deny all services except IAM" /
// the MFA example: a Deny with NotAction denies everything that is *not* listed.
#[test]
fn not_action_with_deny_blocks_everything_except_iam() {
    let policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "AllowAll", "Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "DenyAllButIam", "Effect": "Deny", "NotAction": "iam:*", "Resource": "*"}
        ]
    }"#,
    );
    let alice = || user(OWNER, "alice");
    let iam = request(
        alice(),
        "iam:CreateAccessKey",
        "arn:aws:iam::111122223333:user/alice",
    );
    assert!(allowed_by_identity(&iam, &policy));
    let s3 = request(alice(), "s3:GetObject", "arn:aws:s3:::bucket/key");
    let decision = evaluate(&s3, &[&policy], None, &[], true);
    assert!(explicit_deny(&decision));
    assert_eq!(decision.statements[0].sid.as_deref(), Some("DenyAllButIam"));
}

#[test]
fn not_action_with_mfa_if_exists() {
    // "BoolIfExists": a missing aws:MultiFactorAuthPresent (long-term keys) counts as "no MFA".
    let policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "DenyWithoutMfa", "Effect": "Deny",
             "NotAction": ["iam:ChangePassword", "iam:GetUser"], "Resource": "*",
             "Condition": {"BoolIfExists": {"aws:MultiFactorAuthPresent": "false"}}}
        ]
    }"#,
    );
    let s3 = |mfa: Option<&str>| {
        let ctx = request(user(OWNER, "alice"), "s3:ListBucket", "arn:aws:s3:::bucket");
        match mfa {
            Some(value) => ctx.with_key("aws:MultiFactorAuthPresent", value),
            None => ctx,
        }
    };
    assert!(!allowed_by_identity(&s3(None), &policy));
    assert!(!allowed_by_identity(&s3(Some("false")), &policy));
    assert!(allowed_by_identity(&s3(Some("true")), &policy));
    let password = request(
        user(OWNER, "alice"),
        "iam:ChangePassword",
        "arn:aws:iam::111122223333:user/alice",
    );
    assert!(allowed_by_identity(&password, &policy));
}

// IAM User Guide, "AWS: Denies access to AWS based on the source IP".
#[test]
fn source_ip_restriction_with_not_ip_address() {
    let policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "DenyOutsideOffice", "Effect": "Deny", "Action": "*", "Resource": "*",
             "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "203.0.113.0/24", "2001:db8::/32"]}}}
        ]
    }"#,
    );
    let from = |ip: &str| {
        request(
            user(OWNER, "alice"),
            "s3:GetObject",
            "arn:aws:s3:::bucket/key",
        )
        .with_key("aws:SourceIp", ip)
    };
    assert!(allowed_by_identity(&from("192.0.2.10"), &policy));
    assert!(allowed_by_identity(&from("203.0.113.254"), &policy));
    assert!(allowed_by_identity(&from("2001:db8:ffff::1"), &policy));
    assert!(allowed_by_identity(&from("::ffff:192.0.2.10"), &policy));
    let outside = evaluate(&from("198.51.100.1"), &[&policy], None, &[], true);
    assert!(explicit_deny(&outside));
    assert_eq!(
        outside.statements[0].sid.as_deref(),
        Some("DenyOutsideOffice")
    );
    assert!(!allowed_by_identity(&from("2001:db9::1"), &policy));
    // No source IP at all (an internal call): NotIpAddress on a missing key is true, so denied.
    let internal = request(
        user(OWNER, "alice"),
        "s3:GetObject",
        "arn:aws:s3:::bucket/key",
    );
    assert!(!allowed_by_identity(&internal, &policy));
}

#[test]
fn source_ip_allow_list_with_ip_address() {
    let policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::bucket/*",
            "Condition": {"IpAddress": {"aws:SourceIp": "10.1.0.0/16"}}}}"#,
    );
    let from = |ip: &str| {
        request(
            user(OWNER, "alice"),
            "s3:GetObject",
            "arn:aws:s3:::bucket/key",
        )
        .with_key("aws:SourceIp", ip)
    };
    assert!(allowed_by_identity(&from("10.1.200.3"), &policy));
    assert!(!allowed_by_identity(&from("10.2.0.1"), &policy));
}

// S3 User Guide, "Enforce encryption of data in transit" (the aws:SecureTransport bucket policy):
// a Deny to everyone when the request did not use TLS, which beats even an allow-everything
// identity policy of the owner.
#[test]
fn secure_transport_deny_in_a_bucket_policy() {
    let policy = bucket_policy(
        r#"{
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "RestrictToTLSRequestsOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::amzn-s3-demo-bucket", "arn:aws:s3:::amzn-s3-demo-bucket/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}}
        }]
    }"#,
    );
    let admin = identity(ALLOW_ALL);
    let over = |tls: &str| {
        request(
            user(OWNER, "alice"),
            "s3:GetObject",
            "arn:aws:s3:::amzn-s3-demo-bucket/k",
        )
        .with_key("aws:SecureTransport", tls)
    };
    let http = evaluate(&over("false"), &[&admin], Some(&policy), &[], true);
    assert!(explicit_deny(&http));
    assert_eq!(http.statements[0].source, PolicySource::Resource);
    assert_eq!(
        http.statements[0].sid.as_deref(),
        Some("RestrictToTLSRequestsOnly")
    );
    assert!(evaluate(&over("true"), &[&admin], Some(&policy), &[], true).is_allowed());
    // Other buckets are untouched.
    let other = request(user(OWNER, "alice"), "s3:GetObject", "arn:aws:s3:::other/k")
        .with_key("aws:SecureTransport", "false");
    assert!(evaluate(&other, &[&admin], Some(&policy), &[], true).is_allowed());
}

// IAM User Guide, "AWS: Allows access within specific dates" (aws:CurrentTime date window).
#[test]
fn date_window_with_current_time() {
    let policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": {
            "Effect": "Allow", "Action": "s3:*", "Resource": "*",
            "Condition": {
                "DateGreaterThan": {"aws:CurrentTime": "2020-04-01T00:00:00Z"},
                "DateLessThan": {"aws:CurrentTime": "2020-06-30T23:59:59Z"}
            }
        }
    }"#,
    );
    let at = |unix_seconds: i64| {
        request(
            user(OWNER, "alice"),
            "s3:GetObject",
            "arn:aws:s3:::bucket/key",
        )
        .with_current_time(unix_seconds)
    };
    let may_1_2020 = 1_588_291_200;
    let march_31_2020 = 1_585_612_800;
    let july_1_2020 = 1_593_561_600;
    assert!(allowed_by_identity(&at(may_1_2020), &policy));
    assert!(!allowed_by_identity(&at(march_31_2020), &policy));
    assert!(!allowed_by_identity(&at(july_1_2020), &policy));
    // Without a time in the context, the date conditions cannot hold.
    let timeless = request(
        user(OWNER, "alice"),
        "s3:GetObject",
        "arn:aws:s3:::bucket/key",
    );
    assert!(!allowed_by_identity(&timeless, &policy));
}

// IAM User Guide, "Set operators for multivalued context keys": ForAllValues allows only listed
// tag keys (and, alone, also allows a request with no tags, which the Null check closes);
// ForAnyValue denies if any listed key is present.
#[test]
fn for_all_values_and_for_any_value_on_tag_keys() {
    let policy = identity(
        r#"{
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "OnlyApprovedTagKeys", "Effect": "Allow", "Action": "s3:PutObjectTagging",
             "Resource": "arn:aws:s3:::bucket/*",
             "Condition": {
                "ForAllValues:StringEquals": {"s3:RequestObjectTagKeys": ["Department", "CostCenter"]},
                "Null": {"s3:RequestObjectTagKeys": "false"}
             }},
            {"Sid": "NeverTagSecret", "Effect": "Deny", "Action": "s3:PutObjectTagging",
             "Resource": "*",
             "Condition": {"ForAnyValue:StringLike": {"s3:RequestObjectTagKeys": ["secret*", "Secret*"]}}}
        ]
    }"#,
    );
    let tagging = |keys: &[&str]| {
        request(
            user(OWNER, "alice"),
            "s3:PutObjectTagging",
            "arn:aws:s3:::bucket/key",
        )
        .with_values("s3:RequestObjectTagKeys", keys.iter().copied())
    };
    assert!(allowed_by_identity(&tagging(&["Department"]), &policy));
    assert!(allowed_by_identity(
        &tagging(&["Department", "CostCenter"]),
        &policy
    ));
    assert!(!allowed_by_identity(
        &tagging(&["Department", "Owner"]),
        &policy
    ));
    // No tags: ForAllValues alone would be true; the Null check refuses it.
    assert!(!allowed_by_identity(&tagging(&[]), &policy));
    let secret = evaluate(
        &tagging(&["Department", "SecretLevel"]),
        &[&policy],
        None,
        &[],
        true,
    );
    assert!(explicit_deny(&secret));
    assert_eq!(secret.statements[0].sid.as_deref(), Some("NeverTagSecret"));
}

// S3 User Guide, "Requiring server-side encryption": deny PutObject when the encryption header is
// missing (Null) or names the wrong algorithm (StringNotEquals).
#[test]
fn null_check_requires_an_encryption_header() {
    let policy = bucket_policy(
        r#"{
        "Version": "2012-10-17",
        "Id": "PutObjectPolicy",
        "Statement": [
            {"Sid": "DenyIncorrectEncryptionHeader", "Effect": "Deny", "Principal": "*",
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/*",
             "Condition": {"StringNotEquals": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
            {"Sid": "DenyUnencryptedObjectUploads", "Effect": "Deny", "Principal": "*",
             "Action": "s3:PutObject", "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/*",
             "Condition": {"Null": {"s3:x-amz-server-side-encryption": "true"}}}
        ]
    }"#,
    );
    assert_eq!(policy.id(), Some("PutObjectPolicy"));
    let admin = identity(ALLOW_ALL);
    let put = |sse: Option<&str>| {
        let ctx = request(
            user(OWNER, "alice"),
            "s3:PutObject",
            "arn:aws:s3:::amzn-s3-demo-bucket/k",
        );
        let ctx = match sse {
            Some(sse) => ctx.with_key("s3:x-amz-server-side-encryption", sse),
            None => ctx,
        };
        evaluate(&ctx, &[&admin], Some(&policy), &[], true)
    };
    assert!(put(Some("aws:kms")).is_allowed());
    let wrong = put(Some("AES256"));
    assert!(explicit_deny(&wrong));
    assert_eq!(
        wrong.statements[0].sid.as_deref(),
        Some("DenyIncorrectEncryptionHeader")
    );
    // Missing header: StringNotEquals on a missing key is true, so the first Deny already applies;
    // the Null statement would too.
    let missing = put(None);
    assert!(explicit_deny(&missing));
    assert_eq!(
        missing.statements[0].sid.as_deref(),
        Some("DenyIncorrectEncryptionHeader")
    );
}

// IAM User Guide, "...IfExists condition operators": the condition is checked when the key is
// present and passes when it is absent.
#[test]
fn if_exists_passes_when_the_key_is_absent() {
    let policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:PutObject",
            "Resource": "arn:aws:s3:::bucket/*",
            "Condition": {"StringEqualsIfExists": {"s3:x-amz-storage-class": ["STANDARD", "STANDARD_IA"]}}}}"#,
    );
    let put = |class: Option<&str>| {
        let ctx = request(
            user(OWNER, "alice"),
            "s3:PutObject",
            "arn:aws:s3:::bucket/key",
        );
        match class {
            Some(class) => ctx.with_key("s3:x-amz-storage-class", class),
            None => ctx,
        }
    };
    assert!(allowed_by_identity(&put(None), &policy));
    assert!(allowed_by_identity(&put(Some("STANDARD_IA")), &policy));
    assert!(!allowed_by_identity(&put(Some("GLACIER")), &policy));
}

// IAM User Guide, "Cross-account policy evaluation logic" and S3 User Guide, "Bucket owner
// granting cross-account bucket permissions": the bucket policy grants the other account, and
// the other account's administrator must also grant its user.
#[test]
fn cross_account_access_needs_both_sides() {
    let grants_account = bucket_policy(
        r#"{
        "Version": "2012-10-17",
        "Statement": {"Sid": "CrossAccountRead", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
            "Action": ["s3:GetObject", "s3:ListBucket"],
            "Resource": ["arn:aws:s3:::amzn-s3-demo-bucket", "arn:aws:s3:::amzn-s3-demo-bucket/*"]}
    }"#,
    );
    let user_may_read = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "ReadPartnerBucket", "Effect": "Allow",
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/*"}}"#,
    );
    let get = |who: Principal| {
        request(
            who,
            "s3:GetObject",
            "arn:aws:s3:::amzn-s3-demo-bucket/shared.csv",
        )
    };

    let both = evaluate(
        &get(user(OTHER, "dave")),
        &[&user_may_read],
        Some(&grants_account),
        &[],
        false,
    );
    assert!(both.is_allowed());
    assert_eq!(both.reason, Reason::IdentityAndResourcePoliciesAllow);
    let sids: Vec<_> = both.statements.iter().map(|s| s.sid.as_deref()).collect();
    assert_eq!(sids, [Some("ReadPartnerBucket"), Some("CrossAccountRead")]);

    let no_identity = evaluate(
        &get(user(OTHER, "dave")),
        &[],
        Some(&grants_account),
        &[],
        false,
    );
    assert!(implicit_deny(&no_identity));
    assert_eq!(
        no_identity.reason,
        Reason::CrossAccountIdentityPolicyDoesNotAllow
    );

    let no_resource = evaluate(
        &get(user(OTHER, "dave")),
        &[&user_may_read],
        None,
        &[],
        false,
    );
    assert!(implicit_deny(&no_resource));
    assert_eq!(
        no_resource.reason,
        Reason::CrossAccountResourcePolicyDoesNotAllow
    );

    // A third account is not named by the bucket policy.
    let third = evaluate(
        &get(user("777788889999", "eve")),
        &[&user_may_read],
        Some(&grants_account),
        &[],
        false,
    );
    assert!(implicit_deny(&third));
    assert_eq!(third.reason, Reason::CrossAccountResourcePolicyDoesNotAllow);

    // Actions the bucket policy does not grant stay denied even if the identity side allows.
    let put = request(
        user(OTHER, "dave"),
        "s3:PutObject",
        "arn:aws:s3:::amzn-s3-demo-bucket/x",
    );
    let admin = identity(ALLOW_ALL);
    assert!(!evaluate(&put, &[&admin], Some(&grants_account), &[], false).is_allowed());
}

#[test]
fn cross_account_grant_to_one_user_or_role() {
    let grants_user_and_role = bucket_policy(
        r#"{
        "Version": "2012-10-17",
        "Statement": {"Effect": "Allow",
            "Principal": {"AWS": ["arn:aws:iam::444455556666:user/dave", "arn:aws:iam::444455556666:role/Auditor"]},
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/*"}
    }"#,
    );
    let admin = identity(ALLOW_ALL);
    let get = |who: Principal| {
        let ctx = request(who, "s3:GetObject", "arn:aws:s3:::amzn-s3-demo-bucket/k");
        evaluate(&ctx, &[&admin], Some(&grants_user_and_role), &[], false)
    };
    assert!(get(user(OTHER, "dave")).is_allowed());
    assert!(!get(user(OTHER, "erin")).is_allowed());
    assert!(get(session(OTHER, "Auditor", "quarterly")).is_allowed());
    assert!(!get(session(OTHER, "Builder", "ci")).is_allowed());
}

// IAM User Guide, "Policy evaluation for requests within a single account" and "AWS account
// principals": within the account a bucket policy naming the user suffices alone; one naming the
// account only delegates to it.
#[test]
fn same_account_resource_policy_rules() {
    let names_user = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "Alice", "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:user/alice"},
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}}"#,
    );
    let names_account = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "Account", "Effect": "Allow",
            "Principal": {"AWS": "111122223333"},
            "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}}"#,
    );
    let get = |who: Principal| request(who, "s3:GetObject", "arn:aws:s3:::bucket/key");

    let alone = evaluate(
        &get(user(OWNER, "alice")),
        &[],
        Some(&names_user),
        &[],
        true,
    );
    assert!(alone.is_allowed());
    assert_eq!(alone.reason, Reason::ResourcePolicyAllows);
    assert_eq!(alone.statements[0].sid.as_deref(), Some("Alice"));
    assert!(!evaluate(&get(user(OWNER, "bob")), &[], Some(&names_user), &[], true).is_allowed());

    let delegated = evaluate(
        &get(user(OWNER, "alice")),
        &[],
        Some(&names_account),
        &[],
        true,
    );
    assert!(implicit_deny(&delegated));
    assert_eq!(delegated.reason, Reason::NoPolicyAllows);
    assert!(evaluate(&get(root(OWNER)), &[], Some(&names_account), &[], true).is_allowed());
    let own_policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": "arn:aws:s3:::bucket/*"}}"#,
    );
    assert!(
        evaluate(
            &get(user(OWNER, "alice")),
            &[&own_policy],
            Some(&names_account),
            &[],
            true
        )
        .is_allowed()
    );
}

// IAM User Guide, "Session policies": the session's permissions are the intersection of the
// role's identity policies and the session policy; a resource policy naming the session ARN is
// not limited by it, one naming the role is.
#[test]
fn session_policies_only_narrow() {
    let role_policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "RoleS3", "Effect": "Allow",
            "Action": "s3:*", "Resource": "*"}}"#,
    );
    let session_policy = parse(
        PolicyKind::Session,
        "session",
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "ReadOnly", "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}}"#,
    );
    let reader = || session(OWNER, "Builder", "ci-run-7");
    let get = request(reader(), "s3:GetObject", "arn:aws:s3:::bucket/k");
    let put = request(reader(), "s3:PutObject", "arn:aws:s3:::bucket/k");

    let read = evaluate(&get, &[&role_policy], None, &[&session_policy], true);
    assert!(read.is_allowed());
    let sources: Vec<_> = read.statements.iter().map(|s| s.source).collect();
    assert_eq!(sources, [PolicySource::Identity, PolicySource::Session]);

    let write = evaluate(&put, &[&role_policy], None, &[&session_policy], true);
    assert!(implicit_deny(&write));
    assert_eq!(write.reason, Reason::SessionPolicyDoesNotAllow);
    // The session policy grants nothing the role lacks.
    assert!(!evaluate(&get, &[], None, &[&session_policy], true).is_allowed());
    // No session policies at all: the role's permissions apply unchanged.
    assert!(evaluate(&put, &[&role_policy], None, &[], true).is_allowed());

    let names_session = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:sts::111122223333:assumed-role/Builder/ci-run-7"},
            "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bucket/*"}}"#,
    );
    let names_role = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:role/Builder"},
            "Action": "s3:PutObject", "Resource": "arn:aws:s3:::bucket/*"}}"#,
    );
    assert!(evaluate(&put, &[], Some(&names_session), &[&session_policy], true).is_allowed());
    let by_role = evaluate(&put, &[], Some(&names_role), &[&session_policy], true);
    assert_eq!(by_role.reason, Reason::SessionPolicyDoesNotAllow);
    // A Deny in a session policy is an explicit deny like any other.
    let deny_session = parse(
        PolicyKind::Session,
        "session-deny",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Sid": "NoDeletes", "Effect": "Deny", "Action": "s3:Delete*", "Resource": "*"}]}"#,
    );
    let delete = request(reader(), "s3:DeleteObject", "arn:aws:s3:::bucket/k");
    let denied = evaluate(&delete, &[&role_policy], None, &[&deny_session], true);
    assert!(explicit_deny(&denied));
    assert_eq!(denied.statements[0].source, PolicySource::Session);
}

// S3 User Guide, "Granting read-only permission to a public anonymous user".
#[test]
fn public_read_bucket_policy_lets_anonymous_callers_read_only() {
    let public = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": [{"Sid": "PublicRead", "Effect": "Allow",
            "Principal": "*", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": "arn:aws:s3:::amzn-s3-demo-bucket/*"}]}"#,
    );
    let anonymous = |action: &str| {
        request(
            Principal::anonymous(),
            action,
            "arn:aws:s3:::amzn-s3-demo-bucket/index.html",
        )
    };
    let read = evaluate(&anonymous("s3:GetObject"), &[], Some(&public), &[], false);
    assert!(read.is_allowed());
    assert_eq!(read.reason, Reason::ResourcePolicyAllows);
    // Identity policies cannot belong to an anonymous caller and are ignored.
    let admin = identity(ALLOW_ALL);
    assert!(
        !evaluate(
            &anonymous("s3:PutObject"),
            &[&admin],
            Some(&public),
            &[],
            false
        )
        .is_allowed()
    );
    assert!(!evaluate(&anonymous("s3:GetObject"), &[], None, &[], false).is_allowed());
    // Any authenticated caller of another account still needs its own identity policy.
    let dave = request(
        user(OTHER, "dave"),
        "s3:GetObject",
        "arn:aws:s3:::amzn-s3-demo-bucket/i",
    );
    assert!(!evaluate(&dave, &[], Some(&public), &[], false).is_allowed());
    assert!(evaluate(&dave, &[&admin], Some(&public), &[], false).is_allowed());
}

// S3 User Guide, server access logging: the logging service principal writes to the target
// bucket, granted by the bucket policy alone.
#[test]
fn service_principals_are_granted_by_the_bucket_policy() {
    let logging = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "S3ServerAccessLogsPolicy",
            "Effect": "Allow", "Principal": {"Service": "logging.s3.amazonaws.com"},
            "Action": "s3:PutObject", "Resource": "arn:aws:s3:::amzn-s3-demo-logs/*",
            "Condition": {"StringEquals": {"aws:SourceAccount": "111122223333"}}}}"#,
    );
    let put = |account: &str| {
        request(
            Principal::service("logging.s3.amazonaws.com"),
            "s3:PutObject",
            "arn:aws:s3:::amzn-s3-demo-logs/2024-01-01",
        )
        .with_key("aws:SourceAccount", account)
    };
    assert!(evaluate(&put(OWNER), &[], Some(&logging), &[], false).is_allowed());
    assert!(!evaluate(&put(OTHER), &[], Some(&logging), &[], false).is_allowed());
}

// IAM User Guide, "AWS JSON policy elements: NotPrincipal": deny everyone but one user, which
// only works when the user's account is listed too.
#[test]
fn not_principal_deny_everyone_but_one_user() {
    let only_alice = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Sid": "OnlyAlice", "Effect": "Deny",
            "NotPrincipal": {"AWS": ["arn:aws:iam::111122223333:user/alice", "arn:aws:iam::111122223333:root"]},
            "Action": "s3:*", "Resource": ["arn:aws:s3:::vault", "arn:aws:s3:::vault/*"]}}"#,
    );
    let admin = identity(ALLOW_ALL);
    let get = |who: Principal| {
        let ctx = request(who, "s3:GetObject", "arn:aws:s3:::vault/secret");
        evaluate(&ctx, &[&admin], Some(&only_alice), &[], true)
    };
    assert!(get(user(OWNER, "alice")).is_allowed());
    let bob = get(user(OWNER, "bob"));
    assert!(explicit_deny(&bob));
    assert_eq!(bob.statements[0].sid.as_deref(), Some("OnlyAlice"));
    assert!(explicit_deny(&get(session(OWNER, "Admin", "s"))));
    assert!(explicit_deny(&get(Principal::anonymous())));
    let user_only = bucket_policy(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Deny",
            "NotPrincipal": {"AWS": "arn:aws:iam::111122223333:user/alice"},
            "Action": "s3:*", "Resource": "arn:aws:s3:::vault/*"}}"#,
    );
    let ctx = request(
        user(OWNER, "alice"),
        "s3:GetObject",
        "arn:aws:s3:::vault/secret",
    );
    assert!(explicit_deny(&evaluate(
        &ctx,
        &[&admin],
        Some(&user_only),
        &[],
        true
    )));
}

// IAM User Guide, "IAM JSON policy elements: NotResource": deny everything outside one bucket.
#[test]
fn not_resource_denies_everything_else() {
    let policy = identity(
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
            {"Sid": "OnlyThisBucket", "Effect": "Deny", "Action": "s3:*",
             "NotResource": ["arn:aws:s3:::project", "arn:aws:s3:::project/*"]}]}"#,
    );
    let get = |resource: &str| request(user(OWNER, "alice"), "s3:GetObject", resource);
    assert!(allowed_by_identity(
        &get("arn:aws:s3:::project/a/b"),
        &policy
    ));
    assert!(allowed_by_identity(&get("arn:aws:s3:::project"), &policy));
    assert!(!allowed_by_identity(
        &get("arn:aws:s3:::project-old/a"),
        &policy
    ));
    assert!(!allowed_by_identity(&get("arn:aws:s3:::other/a"), &policy));
}

// IAM User Guide, "Roles terms and concepts" / "Granting a user permissions to switch roles": a
// cross-account AssumeRole needs the trust policy and the caller's own permission.
#[test]
fn trust_policy_for_cross_account_assume_role() {
    let trust = parse(
        PolicyKind::Trust,
        "role/Auditor trust",
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
            "Action": "sts:AssumeRole",
            "Condition": {"Bool": {"aws:MultiFactorAuthPresent": "true"}}}}"#,
    );
    let may_assume = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "sts:AssumeRole",
            "Resource": "arn:aws:iam::111122223333:role/Auditor"}}"#,
    );
    let assume = |mfa: &str| {
        request(
            user(OTHER, "dave"),
            "sts:AssumeRole",
            "arn:aws:iam::111122223333:role/Auditor",
        )
        .with_key("aws:MultiFactorAuthPresent", mfa)
    };
    assert!(evaluate(&assume("true"), &[&may_assume], Some(&trust), &[], false).is_allowed());
    assert!(!evaluate(&assume("false"), &[&may_assume], Some(&trust), &[], false).is_allowed());
    assert!(!evaluate(&assume("true"), &[], Some(&trust), &[], false).is_allowed());
}

#[test]
fn actions_are_case_insensitive_and_wildcarded() {
    let policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow",
            "Action": ["S3:get*", "s3:List?ucket"], "Resource": "*"}}"#,
    );
    let can = |action: &str| {
        allowed_by_identity(
            &request(user(OWNER, "alice"), action, "arn:aws:s3:::b/k"),
            &policy,
        )
    };
    assert!(can("s3:GetObject"));
    assert!(can("s3:GetObjectTagging"));
    assert!(can("S3:GETOBJECT"));
    assert!(can("s3:ListBucket"));
    assert!(!can("s3:ListBuckets"));
    assert!(!can("s3:PutObject"));
    assert!(!can("s3x:GetObject"));
}

#[test]
fn resource_wildcards_span_slashes_and_match_single_characters() {
    let policy = identity(
        r#"{"Version": "2012-10-17", "Statement": {"Effect": "Allow", "Action": "s3:GetObject",
            "Resource": ["arn:aws:s3:::logs/*/2024-??-01.gz", "arn:aws:s3:::data*"]}}"#,
    );
    let can = |resource: &str| {
        allowed_by_identity(
            &request(user(OWNER, "alice"), "s3:GetObject", resource),
            &policy,
        )
    };
    assert!(can("arn:aws:s3:::logs/eu/west/2024-05-01.gz"));
    assert!(can("arn:aws:s3:::logs//2024-05-01.gz"));
    assert!(!can("arn:aws:s3:::logs/eu/2024-5-01.gz"));
    assert!(!can("arn:aws:s3:::logs/eu/2024-05-01.gz.bak"));
    // `data*` spans into keys, as in AWS: `arn:aws:s3:::data*` covers bucket `data-x` objects too.
    assert!(can("arn:aws:s3:::data-lake/any/key"));
    assert!(!can("arn:aws:s3:::Data-lake/any/key"));
    // The partition is matched like any other component.
    assert!(!can("arn:nuage:s3:::data-lake/any/key"));
}

#[test]
fn the_original_text_is_kept_byte_for_byte() {
    let text = "{\n  \"Statement\" : [ {\"Resource\":\"*\", \"Action\":\"s3:*\",\"Effect\":\"Allow\"} ],\n  \"Version\":\"2012-10-17\"\n}\n";
    let policy = identity(text);
    assert_eq!(policy.text(), text);
    assert_eq!(policy.name(), "identity");
    assert_eq!(policy.kind(), PolicyKind::Identity);
    assert_eq!(policy.statements().len(), 1);
    assert_eq!(policy.statements()[0].effect(), Effect::Allow);
    assert_eq!(policy.statements()[0].sid(), None);
}

#[test]
fn a_lone_statement_object_and_no_version_are_accepted() {
    let policy =
        identity(r#"{"Statement": {"Effect": "Deny", "Action": "s3:*", "Resource": "*"}}"#);
    assert_eq!(policy.version(), None);
    assert_eq!(policy.statements()[0].index(), 0);
}

#[test]
fn malformed_documents_are_refused_with_a_pointing_message() {
    use PolicyKind::{Identity, Resource, Trust};
    let cases: &[(PolicyKind, &str, &str)] = &[
        (
            Identity,
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"},
                {"Sid": "NoEffect", "Action": "s3:*", "Resource": "*"}]}"#,
            r#"Statement[1] (Sid "NoEffect"): missing Effect"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": "Both", "Effect": "Allow", "Action": "s3:*", "NotAction": "iam:*", "Resource": "*"}]}"#,
            r#"Statement[0] (Sid "Both"): has both Action and NotAction; use one"#,
        ),
        (
            Identity,
            r#"{"Statement": {"Effect": "Allow", "Resource": "*"}}"#,
            "Statement: missing Action or NotAction",
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "s3:*"}]}"#,
            "Statement[0]: missing Resource or NotResource",
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": "Op", "Effect": "Allow", "Action": "s3:*", "Resource": "*",
                "Condition": {"StringEqualz": {"s3:prefix": "a"}}}]}"#,
            r#"Statement[0] (Sid "Op"), Condition.StringEqualz: unknown condition operator "StringEqualz""#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": "Arn", "Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:bucket/*"}]}"#,
            r#"Statement[0] (Sid "Arn"), Resource: "arn:aws:s3:bucket/*" is not an ARN"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "my-bucket"}]}"#,
            r#"Statement[0], Resource: "my-bucket" is not an ARN"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": 42, "Resource": "*"}]}"#,
            "Statement[0], Action: expected a string or an array of strings, found a number",
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": true, "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0], Effect: expected a string, found a boolean",
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "allow", "Action": "s3:*", "Resource": "*"}]}"#,
            r#"Statement[0], Effect: "allow" is not an effect"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "s3GetObject", "Resource": "*"}]}"#,
            r#"Statement[0], Action: "s3GetObject" is not an action"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "s*:GetObject", "Resource": "*"}]}"#,
            r#"Statement[0], Action: "s*:GetObject" is not an action"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": [], "Resource": "*"}]}"#,
            "Statement[0], Action: the list is empty",
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": 7, "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0], Sid: expected a string, found a number",
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Resources": "*"}]}"#,
            r#"Statement[0]: unknown element "Resources""#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0]: an identity or session policy must not name a Principal",
        ),
        (
            Identity,
            r#"{"Statement": "everything"}"#,
            "Statement: expected an object or an array of objects, found a string",
        ),
        (
            Identity,
            r#"{"Statement": []}"#,
            "Statement: the list of statements is empty",
        ),
        (
            Identity,
            r#"{"Statement": ["x"]}"#,
            "Statement[0]: expected an object, found a string",
        ),
        (
            Identity,
            r#"{"Version": "2012-10-17"}"#,
            "policy: missing Statement",
        ),
        (
            Identity,
            r#"{"Version": "2012-10-18", "Statement": []}"#,
            r#"Version: "2012-10-18" is not a policy language version"#,
        ),
        (
            Identity,
            r#"{"Version": "2012-10-17", "Statements": []}"#,
            r#"policy: unknown element "Statements""#,
        ),
        (
            Identity,
            r#"["Statement"]"#,
            "policy: expected a JSON object, found an array",
        ),
        (Identity, r#"{"Statement": "#, "policy is not valid JSON"),
        (
            Identity,
            r#"{"Statement": {"Effect": "Allow", "Effect": "Deny", "Action": "*", "Resource": "*"}}"#,
            r#"member "Effect" appears twice"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": "Same", "Effect": "Allow", "Action": "*", "Resource": "*"},
                              {"Sid": "Same", "Effect": "Deny", "Action": "*", "Resource": "*"}]}"#,
            r#"Statement[1] (Sid "Same"): Sid "Same" is used by more than one statement"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Sid": "Num", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*",
                "Condition": {"NumericLessThanEquals": {"s3:max-keys": "ten"}}}]}"#,
            r#"Statement[0] (Sid "Num"), Condition.NumericLessThanEquals.s3:max-keys: "ten" is not a number"#,
        ),
        (
            Identity,
            r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": ["true", null]}}}]}"#,
            "Statement[0], Condition.Bool.aws:SecureTransport: a condition value must be a string, number or boolean, found null",
        ),
        (
            Resource,
            r#"{"Statement": [{"Sid": "Who", "Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}"#,
            r#"Statement[0] (Sid "Who"): missing Principal"#,
        ),
        (
            Resource,
            r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:user/*"}, "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0], Principal: AWS: invalid principal",
        ),
        (
            Resource,
            r#"{"Statement": [{"Effect": "Allow", "NotPrincipal": {"AWS": "111122223333"}, "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0], NotPrincipal: NotPrincipal may only be used with \"Effect\": \"Deny\"",
        ),
        (
            Resource,
            r#"{"Statement": [{"Effect": "Deny", "Principal": "*", "NotPrincipal": "*", "Action": "s3:*", "Resource": "*"}]}"#,
            "Statement[0]: has both Principal and NotPrincipal; use one",
        ),
        (
            Trust,
            r#"{"Statement": [{"Effect": "Allow", "Principal": {"AWS": "111122223333"}, "Action": "sts:AssumeRole", "Resource": "*"}]}"#,
            "Statement[0]: a trust policy must not have Resource or NotResource",
        ),
    ];
    for (kind, json, expected) in cases {
        let message = malformed(*kind, json);
        assert!(
            message.starts_with(expected) || message.contains(expected),
            "for {json}\n  expected: {expected}\n  got:      {message}"
        );
    }
}

#[test]
fn size_limits_are_the_callers_choice_and_ignore_white_space() {
    let statement =
        r#"{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"}"#;
    let statements = vec![statement; 100].join(",\n    ");
    let text = format!(
        "{{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [\n    {statements}\n  ]\n}}"
    );
    assert!(text.len() > limits::MANAGED_POLICY_BYTES_MAX);
    // Under the bucket-policy limit it is fine; under the managed-policy limit it is not.
    assert!(
        Policy::parse(
            "p",
            &text,
            PolicyKind::Identity,
            limits::BUCKET_POLICY_BYTES_MAX
        )
        .is_ok()
    );
    let error = Policy::parse(
        "p",
        &text,
        PolicyKind::Identity,
        limits::MANAGED_POLICY_BYTES_MAX,
    )
    .unwrap_err();
    assert!(matches!(
        error,
        PolicyError::TooLarge { size_bytes_max, .. } if size_bytes_max == limits::MANAGED_POLICY_BYTES_MAX
    ));
    // White space does not count: a small policy padded with spaces still fits.
    let padded = format!("{}{}", " ".repeat(10_000), ALLOW_ALL);
    assert!(
        Policy::parse(
            "p",
            &padded,
            PolicyKind::Identity,
            limits::SESSION_POLICY_BYTES_MAX
        )
        .is_ok()
    );
    // But the parser never looks at more than POLICY_TEXT_BYTES_MAX bytes.
    let huge = format!("{}{}", " ".repeat(limits::POLICY_TEXT_BYTES_MAX), ALLOW_ALL);
    assert!(matches!(
        Policy::parse("p", &huge, PolicyKind::Identity, usize::MAX),
        Err(PolicyError::TextTooLarge { .. })
    ));
}

#[test]
fn statement_count_is_bounded() {
    let statement = r#"{"Effect":"Deny","Action":"*","Resource":"*"}"#;
    let text = format!(
        r#"{{"Statement":[{}]}}"#,
        vec![statement; limits::STATEMENTS_MAX + 1].join(",")
    );
    let message = Policy::parse("p", &text, PolicyKind::Identity, usize::MAX)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("513 statements; the limit is 512"),
        "{message}"
    );
}

// S3 User Guide, "Blocking public access to your Amazon S3 storage", "The meaning of 'public'":
// a policy naming "*" is public unless a condition pins it to trusted callers.
#[test]
fn public_policies_are_recognised_as_s3_block_public_access_does() {
    let with = |principal: &str, effect: &str, condition: &str| {
        bucket_policy(&format!(
            r#"{{"Version": "2012-10-17", "Statement": {{"Effect": "{effect}", "Principal": {principal},
                "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket/*"{condition}}}}}"#
        ))
        .is_public()
    };
    let star = r#""*""#;
    assert!(with(star, "Allow", ""));
    assert!(with(r#"{"AWS": ["*"]}"#, "Allow", ""));
    assert!(!with(star, "Deny", ""));
    assert!(!with(r#"{"AWS": "111122223333"}"#, "Allow", ""));
    assert!(!with(
        r#"{"Service": "logging.s3.amazonaws.com"}"#,
        "Allow",
        ""
    ));
    let confined = [
        r#", "Condition": {"IpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}"#,
        r#", "Condition": {"StringEquals": {"aws:SourceAccount": "111122223333"}}"#,
        r#", "Condition": {"ArnEquals": {"aws:SourceArn": "arn:aws:s3:::logs"}}"#,
        r#", "Condition": {"StringEquals": {"aws:PrincipalAccount": ["111122223333"]}}"#,
        r#", "Condition": {"StringEquals": {"aws:SourceVpce": "vpce-1a2b3c4d"}, "StringLike": {"aws:UserAgent": "*"}}"#,
    ];
    for condition in confined {
        assert!(!with(star, "Allow", condition), "{condition}");
    }
    let still_public = [
        r#", "Condition": {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}"#,
        r#", "Condition": {"StringLike": {"aws:SourceAccount": "1111*"}}"#,
        r#", "Condition": {"StringEquals": {"aws:UserAgent": "my-app"}}"#,
        r#", "Condition": {"StringNotEquals": {"aws:SourceAccount": "444455556666"}}"#,
        r#", "Condition": {"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1a2b3c4d"}}"#,
        r#", "Condition": {"ForAllValues:StringEquals": {"aws:SourceAccount": "111122223333"}}"#,
        r#", "Condition": {"StringEquals": {"aws:SourceAccount": "${aws:PrincipalAccount}"}}"#,
        r#", "Condition": {"Bool": {"aws:SecureTransport": "true"}}"#,
    ];
    for condition in still_public {
        assert!(with(star, "Allow", condition), "{condition}");
    }
}
