use super::*;

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// The AWS vectors are dated 2015-08-30T12:36:00Z.
const VECTOR_TIME_UNIX_S: i64 = 1_440_938_160;

fn request(
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (http::Method, http::Uri, http::HeaderMap) {
    let mut map = http::HeaderMap::new();
    for (k, v) in headers {
        map.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    (method.parse().unwrap(), uri.parse().unwrap(), map)
}

fn check(method: &str, uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<(), SigV4Error> {
    let (method, uri, headers) = request(method, uri, headers);
    let credential =
        Credential::from_headers(&headers, &["iam", "service"], VECTOR_TIME_UNIX_S)?.unwrap();
    credential.verify(
        &SignedRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            body,
        },
        SECRET,
    )
}

/// AWS General Reference, "Examples of the complete Signature Version 4
/// signing process": IAM ListUsers.
#[test]
fn aws_iam_list_users_example() {
    let headers = [
        ("host", "iam.amazonaws.com"),
        (
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        ),
        ("x-amz-date", "20150830T123600Z"),
        (
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
             SignedHeaders=content-type;host;x-amz-date, \
             Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
        ),
    ];
    check(
        "GET",
        "/?Action=ListUsers&Version=2010-05-08",
        &headers,
        b"",
    )
    .unwrap();
    // Any change to what was signed breaks it.
    for (method, uri, body) in [
        ("GET", "/?Action=ListRoles&Version=2010-05-08", &b""[..]),
        ("POST", "/?Action=ListUsers&Version=2010-05-08", b""),
        ("GET", "/?Action=ListUsers&Version=2010-05-08", b"x"),
    ] {
        assert_eq!(
            check(method, uri, &headers, body),
            Err(SigV4Error::Mismatch),
            "{method} {uri}"
        );
    }
}

/// aws-sig-v4-test-suite: `get-vanilla` and `post-x-www-form-urlencoded`.
#[test]
fn aws_test_suite_vectors() {
    check(
        "GET",
        "/",
        &[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ],
        b"",
    )
    .unwrap();
    check(
        "POST",
        "/",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, \
                 Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a",
            ),
        ],
        b"Param1=value1",
    )
    .unwrap();
}

#[test]
fn only_the_expected_services_are_accepted() {
    let (_, _, headers) = request(
        "GET",
        "/",
        &[
            ("host", "example.amazonaws.com"),
            ("x-amz-date", "20150830T123600Z"),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
                 SignedHeaders=host;x-amz-date, \
                 Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
            ),
        ],
    );
    let refused = Credential::from_headers(&headers, &["kms"], VECTOR_TIME_UNIX_S).unwrap_err();
    assert_eq!(
        refused,
        SigV4Error::WrongService {
            service: "service".into(),
            expected: "kms".into()
        }
    );
    assert_eq!(
        refused.to_string(),
        "Credential should be scoped to correct service: 'kms'."
    );
    let accepted = Credential::from_headers(&headers, &["kms", "service"], VECTOR_TIME_UNIX_S)
        .unwrap()
        .unwrap();
    assert_eq!(accepted.service(), "service");
    assert_eq!(accepted.region(), "us-east-1");
    assert_eq!(accepted.access_key_id(), "AKIDEXAMPLE");
    assert_eq!(signing_service(&headers).as_deref(), Some("service"));
    assert_eq!(
        Credential::from_headers(&http::HeaderMap::new(), &["kms"], 0),
        Ok(None),
        "no header, no credential"
    );
}

#[test]
fn dates_scopes_and_required_headers() {
    let auth_header = "AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/iam/aws4_request, \
                       SignedHeaders=host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7";
    let (_, _, headers) = request(
        "GET",
        "/",
        &[
            ("x-amz-date", "20150830T123600Z"),
            ("authorization", auth_header),
        ],
    );
    let auth = parse_authorization(&headers).unwrap().unwrap();
    assert_eq!(auth.service, "iam");
    assert_eq!(auth.access_key_id, "AKID");
    assert!(check_date(&headers, &auth, VECTOR_TIME_UNIX_S + 14 * 60).is_ok());
    assert!(matches!(
        check_date(&headers, &auth, VECTOR_TIME_UNIX_S + 16 * 60),
        Err(SigV4Error::Expired(_))
    ));
    let (_, _, other_day) = request(
        "GET",
        "/",
        &[
            ("x-amz-date", "20150831T000000Z"),
            ("authorization", auth_header),
        ],
    );
    assert!(
        check_date(&other_day, &auth, 1_440_979_200).is_err(),
        "scope date must match"
    );
    let (_, _, token) = request(
        "GET",
        "/",
        &[
            ("x-amz-date", "20150830T123600Z"),
            ("x-amz-security-token", "t"),
            ("authorization", auth_header),
        ],
    );
    assert!(
        matches!(
            check_date(&token, &auth, VECTOR_TIME_UNIX_S),
            Err(SigV4Error::Incomplete(_))
        ),
        "an unsigned token is refused"
    );
    for bad in [
        "AWS AKID:sig",
        "AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
    ] {
        let (_, _, h) = request("GET", "/", &[("authorization", bad)]);
        assert!(
            matches!(parse_authorization(&h), Err(SigV4Error::Incomplete(_))),
            "{bad}"
        );
    }
    assert_eq!(parse_amz_date("20150830T123600Z"), Some(VECTOR_TIME_UNIX_S));
    assert_eq!(parse_amz_date("20151330T123600Z"), None);
}

#[test]
fn canonical_forms() {
    assert_eq!(
        canonical_query(Some("b=2&a=%2F x&a=1")),
        "a=%2F%20x&a=1&b=2"
    );
    assert_eq!(canonical_uri("/"), "/");
    assert_eq!(canonical_uri("/a b/%2F"), "/a%20b/%252F");
}

#[test]
fn what_sign_signs_verifies() {
    let mut request = http::Request::post("/")
        .header("host", "127.0.0.1:9000")
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", "TrentService.ListKeys")
        .header("x-amz-date", "20150830T123600Z")
        .body(Bytes::from_static(b"{}"))
        .unwrap();
    sign(&mut request, "AKID", SECRET, "fr-par", "kms").unwrap();
    let credential = Credential::from_headers(request.headers(), &["kms"], VECTOR_TIME_UNIX_S)
        .unwrap()
        .unwrap();
    assert_eq!(credential.region(), "fr-par");
    let signed = SignedRequest {
        method: request.method(),
        uri: request.uri(),
        headers: request.headers(),
        body: request.body(),
    };
    credential.verify(&signed, SECRET).unwrap();
    assert_eq!(
        credential.verify(&signed, "another secret"),
        Err(SigV4Error::Mismatch)
    );
    let altered = SignedRequest {
        body: b"{\"Limit\":1}",
        ..signed
    };
    assert_eq!(
        credential.verify(&altered, SECRET),
        Err(SigV4Error::Mismatch)
    );
}
