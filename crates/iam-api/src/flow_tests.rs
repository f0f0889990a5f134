//! Whole requests through [`IamQueryApi::handle`]: signed bytes in, XML out,
//! over a real identity service on a temporary metadata store.
#![allow(clippy::unwrap_used)]

use crate::{IamQueryApi, RequestContext};
use bytes::Bytes;
use nuage_base::{Clock, SystemClock};
use nuage_iam::{Iam, PolicyHolder};
use nuage_meta::embedded::EmbeddedMetaStore;
use std::sync::Arc;

const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

struct Fixture {
    api: IamQueryApi,
    iam: Iam,
    tenant: String,
    admin: (String, String),
    _dir: tempfile::TempDir,
}

struct Creds<'a> {
    key: &'a str,
    secret: &'a str,
    token: Option<&'a str>,
}

fn form_encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, nuage_sigv4::RFC3986_RESERVED).to_string()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> &'a str {
    let start = text
        .find(open)
        .map(|i| i + open.len())
        .unwrap_or_else(|| panic!("no {open} in {text}"));
    let end = text[start..].find(close).unwrap() + start;
    &text[start..end]
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedMetaStore::open(&dir.path().join("meta.redb")).unwrap();
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let iam = Iam::new(Arc::new(store), Arc::clone(&clock));
        let tenant = iam.create_tenant("default", "FR", "").await.unwrap().id;
        iam.create_user(&tenant, "admin", None, vec![])
            .await
            .unwrap();
        iam.put_inline_policy(PolicyHolder::User, &tenant, "admin", "all", ADMIN_POLICY)
            .await
            .unwrap();
        let key = iam.create_access_key(&tenant, "admin").await.unwrap();
        Self {
            api: IamQueryApi::new(iam.clone(), clock),
            iam,
            tenant,
            admin: (key.access_key_id, key.secret_access_key),
            _dir: dir,
        }
    }

    fn admin(&self) -> Creds<'_> {
        Creds {
            key: &self.admin.0,
            secret: &self.admin.1,
            token: None,
        }
    }

    /// POSTs `params` (name, value) signed with `creds` for `service`.
    async fn call(
        &self,
        creds: &Creds<'_>,
        service: &str,
        params: &[(&str, &str)],
    ) -> (u16, String) {
        let (status, body, _) = self.call_audited(creds, service, params).await;
        (status, body)
    }

    /// [`Fixture::call`], with the audit record the response carries.
    async fn call_audited(
        &self,
        creds: &Creds<'_>,
        service: &str,
        params: &[(&str, &str)],
    ) -> (u16, String, Option<nuage_audit::RequestAudit>) {
        let body: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", form_encode(v)))
            .collect();
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second()
        );
        let mut request = http::Request::post("/")
            .header("host", "127.0.0.1:9000")
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header("x-amz-date", amz_date)
            .body(Bytes::from(body.join("&")))
            .unwrap();
        if let Some(token) = creds.token {
            request
                .headers_mut()
                .insert("x-amz-security-token", token.parse().unwrap());
        }
        nuage_sigv4::sign(&mut request, creds.key, creds.secret, "us-east-1", service).unwrap();
        assert!(IamQueryApi::is_match(
            request.method(),
            request.uri(),
            request.headers()
        ));
        let context = RequestContext {
            request_id: "REQ1".into(),
            ..RequestContext::default()
        };
        let response = self
            .api
            .handle(request.map(http_body_util::Full::new), &context)
            .await;
        let audit = response
            .extensions()
            .get::<nuage_audit::RequestAudit>()
            .cloned();
        (
            response.status().as_u16(),
            String::from_utf8(response.into_body().to_vec()).unwrap(),
            audit,
        )
    }
}

#[tokio::test]
async fn every_request_of_a_known_key_carries_its_audit_record() {
    use nuage_audit::{ActorKind, Authentication, Effect};
    let f = Fixture::new().await;
    let admin = f.admin();
    let admin_arn = format!("arn:aws:iam::{}:user/admin", f.tenant);

    // Allowed: the action, the entity's ARN, the policy and who.
    let (status, _, audit) = f
        .call_audited(
            &admin,
            "iam",
            &[("Action", "CreateUser"), ("UserName", "carol")],
        )
        .await;
    assert_eq!(status, 200);
    let audit = audit.expect("an audit record");
    assert_eq!(audit.tenant, f.tenant);
    assert_eq!(audit.action, "iam:CreateUser");
    assert_eq!(
        audit.resource.as_deref(),
        Some(format!("arn:aws:iam::{}:user/carol", f.tenant).as_str())
    );
    assert_eq!(audit.decision.effect, Effect::Allow);
    assert_eq!(
        audit.decision.policy.as_deref(),
        Some("user/admin/inline/all")
    );
    assert_eq!(audit.actor.kind, ActorKind::TenantUser);
    assert_eq!(audit.actor.id.as_deref(), Some(admin_arn.as_str()));
    assert_eq!(audit.actor.auth, Authentication::Sigv4Header);
    assert_eq!(
        audit.actor.access_key_id.as_deref(),
        Some(f.admin.0.as_str())
    );

    // Denied by default (carol has no policy): a deny naming no policy.
    let key = f.iam.create_access_key(&f.tenant, "carol").await.unwrap();
    let carol = Creds {
        key: &key.access_key_id,
        secret: &key.secret_access_key,
        token: None,
    };
    let (status, _, audit) = f
        .call_audited(&carol, "iam", &[("Action", "ListUsers")])
        .await;
    assert_eq!(status, 403);
    let audit = audit.expect("an audit record");
    assert_eq!(
        (audit.action.as_str(), audit.resource.as_deref()),
        ("iam:ListUsers", Some("*"))
    );
    assert_eq!(audit.decision.effect, Effect::Deny);
    assert_eq!(audit.decision.policy, None);

    // Denied by an explicit Deny: its policy and Sid.
    let deny = r#"{"Version":"2012-10-17","Statement":[{"Sid":"NoUsers","Effect":"Deny","Action":"iam:CreateUser","Resource":"*"}]}"#;
    f.iam
        .put_inline_policy(PolicyHolder::User, &f.tenant, "admin", "fence", deny)
        .await
        .unwrap();
    let (status, _, audit) = f
        .call_audited(
            &admin,
            "iam",
            &[("Action", "CreateUser"), ("UserName", "dave")],
        )
        .await;
    assert_eq!(status, 403);
    let decision = audit.expect("an audit record").decision;
    assert_eq!(decision.effect, Effect::Deny);
    assert_eq!(decision.policy.as_deref(), Some("user/admin/inline/fence"));
    assert_eq!(decision.statement.as_deref(), Some("NoUsers"));

    // An action that needs no permission is allowed by no policy.
    let (status, _, audit) = f
        .call_audited(
            &admin,
            "sts",
            &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        )
        .await;
    assert_eq!(status, 200);
    let audit = audit.expect("an audit record");
    assert_eq!(audit.action, "sts:GetCallerIdentity");
    assert_eq!(audit.decision.effect, Effect::Allow);
    assert_eq!(audit.decision.policy, None);

    // A known key with a wrong signature: the key's tenant hears of it.
    let forged = Creds {
        key: &f.admin.0,
        secret: "not-the-secret",
        token: None,
    };
    let (status, _, audit) = f
        .call_audited(
            &forged,
            "iam",
            &[("Action", "DeleteUser"), ("UserName", "carol")],
        )
        .await;
    assert_eq!(status, 403);
    let audit = audit.expect("an audit record");
    assert_eq!(audit.action, "iam:DeleteUser");
    assert_eq!(audit.decision.effect, Effect::Deny);
    assert_eq!(
        audit.actor.access_key_id.as_deref(),
        Some(f.admin.0.as_str())
    );

    // An unknown key names no tenant: nothing to log.
    let stranger = Creds {
        key: "AKIAUNKNOWNUNKNOWN00",
        secret: "x",
        token: None,
    };
    let (status, _, audit) = f
        .call_audited(&stranger, "iam", &[("Action", "ListUsers")])
        .await;
    assert_eq!(status, 403);
    assert!(audit.is_none());
}

#[tokio::test]
async fn admin_manages_users_and_policies() {
    let f = Fixture::new().await;
    let admin = f.admin();
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[
                ("Action", "CreateUser"),
                ("Version", "2010-05-08"),
                ("UserName", "bob"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("<CreateUserResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">"),
        "{body}"
    );
    assert!(
        body.contains(&format!("<Arn>arn:aws:iam::{}:user/bob</Arn>", f.tenant)),
        "{body}"
    );
    assert!(body.contains("<RequestId>REQ1</RequestId>"));

    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "CreateUser"), ("UserName", "BOB")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (409, "EntityAlreadyExists"),
        "{body}"
    );

    let doc = "{\n  \"Version\": \"2012-10-17\",\n  \"Statement\": [{\"Effect\": \"Allow\", \"Action\": \"s3:GetObject\", \"Resource\": \"arn:aws:s3:::b/team/*\"}]\n}";
    let put = [
        ("Action", "PutUserPolicy"),
        ("UserName", "bob"),
        ("PolicyName", "team"),
        ("PolicyDocument", doc),
    ];
    let (status, body) = f.call(&admin, "iam", &put).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[
                ("Action", "GetUserPolicy"),
                ("UserName", "bob"),
                ("PolicyName", "team"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let encoded = between(&body, "<PolicyDocument>", "</PolicyDocument>");
    assert_eq!(
        percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .unwrap(),
        doc,
        "round trip"
    );

    let bad = [
        ("Action", "PutUserPolicy"),
        ("UserName", "bob"),
        ("PolicyName", "bad"),
        ("PolicyDocument", "{\"Statement\": 3}"),
    ];
    let (status, body) = f.call(&admin, "iam", &bad).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (400, "MalformedPolicyDocument"),
        "{body}"
    );

    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "ListUserPolicies"), ("UserName", "bob")],
        )
        .await;
    assert!(
        status == 200 && body.contains("<PolicyNames><member>team</member></PolicyNames>"),
        "{body}"
    );
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "DeleteUser"), ("UserName", "bob")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (409, "DeleteConflict"),
        "{body}"
    );
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "GetUser"), ("UserName", "nobody")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (404, "NoSuchEntity"),
        "{body}"
    );
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "CreateLoginProfile"), ("UserName", "bob")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (400, "InvalidAction"),
        "{body}"
    );

    // bob's key: bob may not administer.
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[("Action", "CreateAccessKey"), ("UserName", "bob")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let key = between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned();
    let secret = between(&body, "<SecretAccessKey>", "</SecretAccessKey>").to_owned();
    let bob = Creds {
        key: &key,
        secret: &secret,
        token: None,
    };
    let (status, body) = f
        .call(
            &bob,
            "iam",
            &[("Action", "CreateUser"), ("UserName", "mallory")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "AccessDenied"),
        "{body}"
    );
    let (status, body) = f
        .call(
            &bob,
            "sts",
            &[("Action", "GetCallerIdentity"), ("Version", "2011-06-15")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\""),
        "{body}"
    );
    assert_eq!(
        between(&body, "<Arn>", "</Arn>"),
        format!("arn:aws:iam::{}:user/bob", f.tenant)
    );

    // Deactivated: refused like an unknown key.
    let (status, _) = f
        .call(
            &admin,
            "iam",
            &[
                ("Action", "UpdateAccessKey"),
                ("UserName", "bob"),
                ("AccessKeyId", &key),
                ("Status", "Inactive"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = f
        .call(&bob, "sts", &[("Action", "GetCallerIdentity")])
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "InvalidClientTokenId"),
        "{body}"
    );
}

#[tokio::test]
async fn signatures_tokens_and_tenants() {
    let f = Fixture::new().await;
    let wrong = Creds {
        key: &f.admin.0,
        secret: "not-the-secret",
        token: None,
    };
    let (status, body) = f.call(&wrong, "iam", &[("Action", "ListUsers")]).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "SignatureDoesNotMatch"),
        "{body}"
    );
    let unknown = Creds {
        key: "AKIANOTAKEY",
        secret: "x",
        token: None,
    };
    let (status, body) = f.call(&unknown, "iam", &[("Action", "ListUsers")]).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "InvalidClientTokenId"),
        "{body}"
    );

    // Session credentials need their token, and cannot call IAM.
    let (status, body) = f
        .call(
            &f.admin(),
            "sts",
            &[("Action", "GetSessionToken"), ("DurationSeconds", "900")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (key, secret, token) = (
        between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned(),
        between(&body, "<SecretAccessKey>", "</SecretAccessKey>").to_owned(),
        between(&body, "<SessionToken>", "</SessionToken>").to_owned(),
    );
    let without = Creds {
        key: &key,
        secret: &secret,
        token: None,
    };
    let (status, _) = f
        .call(&without, "sts", &[("Action", "GetCallerIdentity")])
        .await;
    assert_eq!(status, 403);
    let forged = Creds {
        key: &key,
        secret: &secret,
        token: Some("forged"),
    };
    let (status, _) = f
        .call(&forged, "sts", &[("Action", "GetCallerIdentity")])
        .await;
    assert_eq!(status, 403);
    let with = Creds {
        key: &key,
        secret: &secret,
        token: Some(&token),
    };
    let (status, body) = f
        .call(&with, "sts", &[("Action", "GetCallerIdentity")])
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = f.call(&with, "iam", &[("Action", "ListUsers")]).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "AccessDenied"),
        "{body}"
    );
    let (status, _) = f.call(&with, "sts", &[("Action", "GetSessionToken")]).await;
    assert_eq!(status, 403, "no session from a session");
    let (status, body) = f
        .call(
            &f.admin(),
            "sts",
            &[("Action", "GetSessionToken"), ("DurationSeconds", "60")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (400, "ValidationError"),
        "{body}"
    );

    // Another tenant sees nothing of this one.
    let other = f.iam.create_tenant("other", "DE", "").await.unwrap().id;
    f.iam
        .create_user(&other, "root", None, vec![])
        .await
        .unwrap();
    f.iam
        .put_inline_policy(PolicyHolder::User, &other, "root", "all", ADMIN_POLICY)
        .await
        .unwrap();
    let k = f.iam.create_access_key(&other, "root").await.unwrap();
    let outsider = Creds {
        key: &k.access_key_id,
        secret: &k.secret_access_key,
        token: None,
    };
    let (status, body) = f
        .call(
            &outsider,
            "iam",
            &[("Action", "GetUser"), ("UserName", "admin")],
        )
        .await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (404, "NoSuchEntity"),
        "{body}"
    );
    let (status, body) = f.call(&outsider, "iam", &[("Action", "ListUsers")]).await;
    assert!(
        status == 200 && body.contains("root") && !body.contains("admin"),
        "{body}"
    );
}

#[tokio::test]
async fn roles_are_assumed_through_their_trust_policy() {
    let f = Fixture::new().await;
    let admin = f.admin();
    let t = f.tenant.clone();
    f.iam.create_user(&t, "carol", None, vec![]).await.unwrap();
    let carol_key = f.iam.create_access_key(&t, "carol").await.unwrap();
    let carol = Creds {
        key: &carol_key.access_key_id,
        secret: &carol_key.secret_access_key,
        token: None,
    };
    let trust = format!(
        r#"{{"Version":"2012-10-17","Statement":[{{"Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::{t}:user/carol"}},"Action":"sts:AssumeRole"}}]}}"#
    );
    let (status, body) = f
        .call(
            &admin,
            "iam",
            &[
                ("Action", "CreateRole"),
                ("RoleName", "reader"),
                ("AssumeRolePolicyDocument", &trust),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let role_arn = between(&body, "<Arn>", "</Arn>").to_owned();
    let encoded = between(
        &body,
        "<AssumeRolePolicyDocument>",
        "</AssumeRolePolicyDocument>",
    );
    assert_eq!(
        percent_encoding::percent_decode_str(encoded)
            .decode_utf8()
            .unwrap(),
        trust
    );

    let assume = [
        ("Action", "AssumeRole"),
        ("RoleArn", role_arn.as_str()),
        ("RoleSessionName", "s1"),
    ];
    let (status, body) = f.call(&admin, "sts", &assume).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (403, "AccessDenied"),
        "admin is not trusted: {body}"
    );
    let (status, body) = f.call(&carol, "sts", &assume).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        between(&body, "<AssumedRoleUser>", "</AssumedRoleUser>")
            .contains("assumed-role/reader/s1"),
        "{body}"
    );
    let (key, secret, token) = (
        between(&body, "<AccessKeyId>", "</AccessKeyId>").to_owned(),
        between(&body, "<SecretAccessKey>", "</SecretAccessKey>").to_owned(),
        between(&body, "<SessionToken>", "</SessionToken>").to_owned(),
    );
    let session = Creds {
        key: &key,
        secret: &secret,
        token: Some(&token),
    };
    let (status, body) = f
        .call(&session, "sts", &[("Action", "GetCallerIdentity")])
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        between(&body, "<Arn>", "</Arn>"),
        format!("arn:aws:sts::{t}:assumed-role/reader/s1")
    );

    let foreign = assume.map(|(k, v)| {
        if k == "RoleArn" {
            (k, "arn:aws:iam::999999999999:role/reader")
        } else {
            (k, v)
        }
    });
    let (status, _) = f.call(&carol, "sts", &foreign).await;
    assert_eq!(status, 403, "another tenant's role");
    let malformed = [
        ("Action", "AssumeRole"),
        ("RoleArn", role_arn.as_str()),
        ("RoleSessionName", "s2"),
        ("Policy", "{"),
    ];
    let (status, body) = f.call(&carol, "sts", &malformed).await;
    assert_eq!(
        (status, between(&body, "<Code>", "</Code>")),
        (400, "MalformedPolicyDocument"),
        "{body}"
    );
}

#[tokio::test]
async fn query_string_requests_and_oversized_bodies() {
    let f = Fixture::new().await;
    let context = RequestContext {
        request_id: "REQ2".into(),
        ..RequestContext::default()
    };
    let now = time::OffsetDateTime::now_utc();
    let amz_date = format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    // GET with the parameters in the query string (and one escaped character).
    let mut get = http::Request::get("/?Action=GetUser&Version=2010-05-08&UserName=adm%69n")
        .header("host", "127.0.0.1:9000")
        .header("x-amz-date", &amz_date)
        .body(Bytes::new())
        .unwrap();
    nuage_sigv4::sign(&mut get, &f.admin.0, &f.admin.1, "us-east-1", "iam").unwrap();
    assert!(IamQueryApi::is_match(
        get.method(),
        get.uri(),
        get.headers()
    ));
    let response = f
        .api
        .handle(get.map(http_body_util::Full::new), &context)
        .await;
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    assert_eq!(response.status(), 200, "{body}");
    assert!(body.contains("<UserName>admin</UserName>"), "{body}");

    // Unsigned: nothing is revealed.
    let unsigned = http::Request::post("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(Bytes::from_static(
            b"Action=ListUsers",
        )))
        .unwrap();
    let response = f.api.handle(unsigned, &context).await;
    assert_eq!(response.status(), 403);
    assert!(
        String::from_utf8(response.body().to_vec())
            .unwrap()
            .contains("MissingAuthenticationToken")
    );

    // Bodies are bounded, whether or not they declare their length.
    let huge = Bytes::from(vec![b'a'; nuage_base::limits::QUERY_API_BODY_BYTES_MAX + 1]);
    let oversized = http::Request::post("/")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(http_body_util::Full::new(huge))
        .unwrap();
    let response = f.api.handle(oversized, &context).await;
    assert_eq!(response.status(), 413);
}
