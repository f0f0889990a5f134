//! CORS for browsers: answers preflight `OPTIONS` requests from a bucket's CORS
//! configuration, and adds the `Access-Control-*` headers to actual responses.
//! As in S3, a preflight needs no signature; no matching rule means 403.

use crate::hosts::VirtualHosts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use nuage_storage::{CorsRule, Storage};

/// CORS decisions for requests that carry an `Origin`.
#[derive(Clone)]
pub struct Cors {
    storage: Storage,
    hosts: VirtualHosts,
}

/// `*` matches any run of characters (S3 allows one wildcard per pattern).
fn wildcard_match(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern.eq_ignore_ascii_case(value),
        Some((head, tail)) => {
            value.len() >= head.len() + tail.len()
                && value[..head.len()].eq_ignore_ascii_case(head)
                && value[value.len() - tail.len()..].eq_ignore_ascii_case(tail)
        }
    }
}

fn rule_matches(rule: &CorsRule, origin: &str, method: &str, request_headers: &[&str]) -> bool {
    rule.allowed_origins
        .iter()
        .any(|o| wildcard_match(o, origin))
        && rule
            .allowed_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
        && request_headers
            .iter()
            .all(|h| rule.allowed_headers.iter().any(|a| wildcard_match(a, h)))
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

fn response_headers(
    rule: &CorsRule,
    origin: &str,
    request_headers: &[&str],
    preflight: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    insert(
        &mut headers,
        "access-control-allow-origin",
        if any_origin { "*" } else { origin },
    );
    if !any_origin {
        insert(
            &mut headers,
            "vary",
            "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        );
        insert(&mut headers, "access-control-allow-credentials", "true");
    }
    insert(
        &mut headers,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if preflight {
        if !request_headers.is_empty() {
            insert(
                &mut headers,
                "access-control-allow-headers",
                &request_headers.join(", "),
            );
        }
        if let Some(age) = rule.max_age_seconds {
            insert(&mut headers, "access-control-max-age", &age.to_string());
        }
    }
    if !rule.expose_headers.is_empty() {
        insert(
            &mut headers,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    headers
}

impl Cors {
    #[must_use]
    pub fn new(storage: Storage, hosts: VirtualHosts) -> Self {
        Self { storage, hosts }
    }

    async fn rules(&self, host: Option<&str>, path: &str) -> Option<Vec<CorsRule>> {
        let bucket = self.hosts.bucket_of(host, path)?;
        self.storage.bucket(&bucket).await.ok()?.cors
    }

    /// Answers a preflight request: status and headers.
    pub async fn preflight(
        &self,
        host: Option<&str>,
        path: &str,
        headers: &HeaderMap,
    ) -> (StatusCode, HeaderMap, &'static str) {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (Some(origin), Some(method)) = (text("origin"), text("access-control-request-method"))
        else {
            return (
                StatusCode::BAD_REQUEST,
                HeaderMap::new(),
                "Insufficient information. Origin request header needed.",
            );
        };
        let requested = text("access-control-request-headers").unwrap_or_default();
        let requested: Vec<&str> = requested
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .collect();
        let rules = self.rules(host, path).await.unwrap_or_default();
        match rules
            .iter()
            .find(|r| rule_matches(r, &origin, &method, &requested))
        {
            Some(rule) => (
                StatusCode::OK,
                response_headers(rule, &origin, &requested, true),
                "",
            ),
            None => (
                StatusCode::FORBIDDEN,
                HeaderMap::new(),
                "CORSResponse: This CORS request is not allowed.",
            ),
        }
    }

    /// The CORS headers for an actual (non-preflight) request, if a rule allows it.
    pub async fn actual_headers(
        &self,
        host: Option<&str>,
        path: &str,
        method: &Method,
        origin: &str,
    ) -> Option<HeaderMap> {
        let rules = self.rules(host, path).await?;
        let rule = rules
            .iter()
            .find(|r| rule_matches(r, origin, method.as_str(), &[]))?;
        Some(response_headers(rule, origin, &[], false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*", "https://a.example"));
        assert!(wildcard_match(
            "https://*.example.fr",
            "https://app.example.fr"
        ));
        assert!(!wildcard_match(
            "https://*.example.fr",
            "https://example.com"
        ));
        assert!(wildcard_match("x-amz-*", "X-Amz-Date"));
        assert!(wildcard_match("Content-Type", "content-type"));
    }

    #[test]
    fn rules_need_origin_method_and_headers() {
        let rule = CorsRule {
            id: None,
            allowed_methods: vec!["GET".into(), "PUT".into()],
            allowed_origins: vec!["https://app.example.fr".into()],
            allowed_headers: vec!["content-type".into(), "x-amz-*".into()],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        };
        assert!(rule_matches(
            &rule,
            "https://app.example.fr",
            "PUT",
            &["Content-Type", "x-amz-date"]
        ));
        assert!(!rule_matches(&rule, "https://evil.example", "PUT", &[]));
        assert!(!rule_matches(
            &rule,
            "https://app.example.fr",
            "DELETE",
            &[]
        ));
        assert!(!rule_matches(
            &rule,
            "https://app.example.fr",
            "GET",
            &["authorization2"]
        ));
        let h = response_headers(&rule, "https://app.example.fr", &["content-type"], true);
        assert_eq!(
            h.get("access-control-allow-origin")
                .map(HeaderValue::as_bytes),
            Some(&b"https://app.example.fr"[..])
        );
        assert_eq!(
            h.get("access-control-max-age").map(HeaderValue::as_bytes),
            Some(&b"600"[..])
        );
    }
}
