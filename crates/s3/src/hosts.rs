//! Addressing: virtual-host style (`bucket.DOMAIN`) for the configured base
//! domains, path style for every other host (IP addresses, `localhost`, ...).

use s3s::host::{S3Host, VirtualHost};

/// The base domains under which `bucket.DOMAIN` names a bucket.
#[derive(Debug, Clone, Default)]
pub struct VirtualHosts {
    domains: Vec<String>,
}

/// The host name without its port (IPv6 literals keep their brackets).
fn host_name(host: &str) -> &str {
    if let Some(end) = host.strip_prefix('[').and_then(|h| h.find(']')) {
        return &host[..end + 2];
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

impl VirtualHosts {
    #[must_use]
    pub fn new(domains: Vec<String>) -> Self {
        Self {
            domains: domains
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
        }
    }

    /// The bucket a virtual-host-style `Host` header names, if any.
    #[must_use]
    pub fn bucket_in_host<'h>(&self, host: &'h str) -> Option<(&str, &'h str)> {
        let name = host_name(host);
        self.domains.iter().find_map(|domain| {
            name.strip_suffix(domain.as_str())
                .and_then(|b| b.strip_suffix('.'))
                .filter(|b| !b.is_empty())
                .map(|bucket| (domain.as_str(), bucket))
        })
    }

    /// The bucket a request addresses, from its host or else its first path segment.
    #[must_use]
    pub fn bucket_of(&self, host: Option<&str>, path: &str) -> Option<String> {
        if let Some((_, bucket)) = host.and_then(|h| self.bucket_in_host(h)) {
            return Some(bucket.to_owned());
        }
        path.trim_start_matches('/')
            .split('/')
            .next()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    }
}

impl S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<VirtualHost<'a>> {
        Ok(match self.bucket_in_host(host) {
            Some((domain, bucket)) => VirtualHost::new(domain).with_bucket(bucket),
            None => VirtualHost::new(host_name(host)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_hosts_and_path_style() {
        let hosts = VirtualHosts::new(vec!["s3.example.fr".into(), "localhost".into()]);
        assert_eq!(
            hosts
                .bucket_in_host("photos.s3.example.fr:9000")
                .map(|x| x.1),
            Some("photos")
        );
        assert_eq!(
            hosts.bucket_in_host("a.b.localhost").map(|x| x.1),
            Some("a.b")
        );
        assert_eq!(hosts.bucket_in_host("s3.example.fr"), None);
        assert_eq!(hosts.bucket_in_host("127.0.0.1:9000"), None);
        assert_eq!(hosts.bucket_in_host("evil-s3.example.fr"), None);
        assert_eq!(
            hosts.bucket_of(Some("127.0.0.1:9000"), "/bucket/key/x"),
            Some("bucket".into())
        );
        assert_eq!(
            hosts.bucket_of(Some("b1.localhost:80"), "/key"),
            Some("b1".into())
        );
        assert_eq!(hosts.bucket_of(None, "/"), None);
        assert_eq!(host_name("[::1]:9000"), "[::1]");
    }
}
