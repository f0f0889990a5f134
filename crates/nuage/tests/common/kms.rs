//! Signed KMS JSON requests (`TrentService.*`) over plain HTTP.

use super::Server;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::time::Duration;

/// A KMS JSON request signed with SigV4 for `kms` by `(key, secret)`, sent
/// over plain HTTP: the status and the JSON body.
pub fn kms_call_as(
    server: &Server,
    (access_key_id, secret): (&str, &str),
    operation: &str,
    body: &Value,
) -> (u16, Value) {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity =
        aws_credential_types::Credentials::new(access_key_id, secret, None, None, "kms-test")
            .into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(&server.credentials.region)
        .name("kms")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let host = server.endpoint.trim_start_matches("http://").to_owned();
    let url = format!("{}/", server.endpoint);
    let target = format!("TrentService.{operation}");
    let payload = body.to_string();
    let headers = [
        ("host", host.as_str()),
        ("content-type", "application/x-amz-json-1.1"),
        ("x-amz-target", target.as_str()),
    ];
    let request = SignableRequest::new(
        "POST",
        &url,
        headers.iter().copied(),
        SignableBody::Bytes(payload.as_bytes()),
    )
    .unwrap();
    let (instructions, _) = sign(request, &params).unwrap().into_parts();
    let mut stream = std::net::TcpStream::connect(&host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut head = String::from("POST / HTTP/1.1\r\nConnection: close\r\n");
    for (name, value) in headers.iter().copied().chain(instructions.headers()) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", payload.len()));
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(payload.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let status: u16 = String::from_utf8_lossy(&response[..split])
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let body = &response[split + 4..];
    let body = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)))
    };
    (status, body)
}

/// [`kms_call_as`] by the server's default administrator.
pub fn kms_call(server: &Server, operation: &str, body: &Value) -> (u16, Value) {
    let creds = &server.credentials;
    kms_call_as(
        server,
        (&creds.access_key_id, &creds.secret_access_key),
        operation,
        body,
    )
}
