//! Virtual-host-style addressing: `bucket.localhost` names the bucket, and the
//! SigV4 signature (which covers the Host header) is checked against it.
#![allow(clippy::unwrap_used)]
mod common;

use aws_sdk_s3::presigning::PresigningConfig;
use common::{Server, raw_request};
use std::time::Duration;

#[tokio::test]
async fn bucket_in_the_host_name_is_addressed() {
    let server = Server::start();
    let bucket = common::bucket_name("vhost");
    let path_style = server.client();
    path_style
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    path_style
        .put_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .body(b"bonjour".to_vec().into())
        .send()
        .await
        .unwrap();

    // A client configured for virtual-host style signs for bucket.localhost:PORT.
    let port = server.endpoint.rsplit(':').next().unwrap().to_owned();
    let virtual_style = server.client_with(|c| {
        c.endpoint_url(format!("http://localhost:{port}"))
            .force_path_style(false)
    });
    let presigned = virtual_style
        .get_object()
        .bucket(&bucket)
        .key("dir/hello.txt")
        .presigned(PresigningConfig::expires_in(Duration::from_secs(300)).unwrap())
        .await
        .unwrap();
    let url = presigned.uri().to_owned();
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    assert_eq!(
        host,
        format!("{bucket}.localhost:{port}"),
        "the SDK put the bucket in the host"
    );
    assert!(path.starts_with("/dir/hello.txt?"), "{path}");

    let (status, _, body) = raw_request(&server.endpoint, "GET", path, &[("Host", host)]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(body, b"bonjour");

    // The same request for another bucket's host fails: the signature covers the host.
    let other = format!("other-{bucket}.localhost:{port}");
    let (status, _, _) = raw_request(&server.endpoint, "GET", path, &[("Host", &other)]);
    assert_eq!(status, 403);
}
