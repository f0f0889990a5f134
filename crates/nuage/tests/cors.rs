//! CORS: a bucket's configuration round-trips, preflights are answered from it
//! without a signature, and actual responses carry the allowed headers.
#![allow(clippy::unwrap_used)]
mod common;

use aws_sdk_s3::types::{CorsConfiguration, CorsRule};
use common::{Server, header, raw_request};

#[tokio::test]
async fn preflight_and_actual_requests_follow_the_bucket_configuration() {
    let server = Server::start();
    let s3 = server.client();
    let bucket = common::bucket_name("cors");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let path = format!("/{bucket}/photo.jpg");
    let preflight = [
        ("Origin", "https://app.example.fr"),
        ("Access-Control-Request-Method", "PUT"),
    ];

    // No configuration: refused.
    let (status, _, _) = raw_request(&server.endpoint, "OPTIONS", &path, &preflight);
    assert_eq!(status, 403);

    let rule = CorsRule::builder()
        .allowed_origins("https://app.example.fr")
        .allowed_methods("GET")
        .allowed_methods("PUT")
        .allowed_headers("content-type")
        .allowed_headers("x-amz-*")
        .expose_headers("ETag")
        .max_age_seconds(600)
        .build()
        .unwrap();
    let config = CorsConfiguration::builder()
        .cors_rules(rule)
        .build()
        .unwrap();
    s3.put_bucket_cors()
        .bucket(&bucket)
        .cors_configuration(config)
        .send()
        .await
        .unwrap();
    let got = s3.get_bucket_cors().bucket(&bucket).send().await.unwrap();
    assert_eq!(got.cors_rules().len(), 1);
    assert_eq!(got.cors_rules()[0].allowed_methods(), ["GET", "PUT"]);

    let mut with_headers = preflight.to_vec();
    with_headers.push(("Access-Control-Request-Headers", "Content-Type, X-Amz-Date"));
    let (status, headers, _) = raw_request(&server.endpoint, "OPTIONS", &path, &with_headers);
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example.fr")
    );
    assert_eq!(header(&headers, "access-control-max-age"), Some("600"));
    assert!(
        header(&headers, "access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    assert!(header(&headers, "x-amz-request-id").is_some());

    // Another origin, a method not allowed, or a header not allowed: refused.
    for bad in [
        vec![
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "PUT"),
        ],
        vec![
            ("Origin", "https://app.example.fr"),
            ("Access-Control-Request-Method", "DELETE"),
        ],
        vec![
            ("Origin", "https://app.example.fr"),
            ("Access-Control-Request-Method", "PUT"),
            ("Access-Control-Request-Headers", "authorization-extra"),
        ],
    ] {
        let (status, headers, _) = raw_request(&server.endpoint, "OPTIONS", &path, &bad);
        assert_eq!(status, 403, "{bad:?}");
        assert_eq!(header(&headers, "access-control-allow-origin"), None);
    }

    // An actual (here anonymous, so refused) request still carries the CORS
    // headers, so the browser can show the S3 error to the page.
    let (status, headers, body) = raw_request(
        &server.endpoint,
        "GET",
        &path,
        &[("Origin", "https://app.example.fr")],
    );
    assert_eq!(status, 403);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    let id = header(&headers, "x-amz-request-id").unwrap();
    assert!(
        body.contains(&format!("<RequestId>{id}</RequestId>")),
        "the error body names the request id: {body}"
    );
    assert_eq!(
        header(&headers, "access-control-expose-headers"),
        Some("ETag")
    );

    // Deleting the configuration closes the door again.
    s3.delete_bucket_cors()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let (status, _, _) = raw_request(&server.endpoint, "OPTIONS", &path, &preflight);
    assert_eq!(status, 403);
}
