//! The quickest end-to-end check: a fresh server takes a bucket and an object.
#![allow(clippy::unwrap_used)]
mod common;

#[tokio::test]
async fn fresh_server_stores_and_returns_an_object() {
    let server = common::Server::start();
    assert!(
        server
            .banner
            .contains("aws configure set aws_access_key_id"),
        "{}",
        server.banner
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&server.data_dir)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the data directory is its owner's alone");
    let s3 = server.client();
    s3.create_bucket().bucket("smoke").send().await.unwrap();
    s3.put_object()
        .bucket("smoke")
        .key("k")
        .body(b"hello".to_vec().into())
        .send()
        .await
        .unwrap();
    let got = s3
        .get_object()
        .bucket("smoke")
        .key("k")
        .send()
        .await
        .unwrap();
    assert_eq!(
        got.body.collect().await.unwrap().into_bytes().as_ref(),
        b"hello"
    );
}
