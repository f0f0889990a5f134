//! Who a cluster member is: its node id, its site and its role, as named by
//! the URI `nuage://<site>/<role>/<node>` in its certificate's subject
//! alternative names.
//!
//! The identity is read only from a certificate that the cluster CA signed
//! (the TLS layer has checked the chain before anything here looks at it), so
//! naming a site is a claim the operator who issued the certificate made.
//! This module parses; it never decides what an identity may do (`server.rs`
//! does).

use crate::NodeError;
use std::fmt;

/// The URI scheme of an identity in a certificate.
pub const IDENTITY_SCHEME: &str = "nuage://";
/// Longest node or site id (a DNS label's limit, so an id can name a host).
pub const ID_BYTES_MAX: usize = 63;

/// What a cluster member does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Stores chunks for gateways (`nuage serve --role storage`).
    Storage,
    /// Serves the S3 API and places chunks on storage nodes.
    Gateway,
    /// Runs virtual machines for gateways (`nuage serve --role compute`).
    Compute,
}

impl Role {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Storage => "storage",
            Self::Gateway => "gateway",
            Self::Compute => "compute",
        }
    }

    /// Parses `storage`, `gateway` or `compute`.
    ///
    /// # Errors
    /// `NodeError::BadIdentity` for anything else.
    pub fn parse(text: &str) -> Result<Self, NodeError> {
        match text {
            "storage" => Ok(Self::Storage),
            "gateway" => Ok(Self::Gateway),
            "compute" => Ok(Self::Compute),
            other => Err(NodeError::BadIdentity(format!(
                "role `{other}` is not `storage`, `gateway` or `compute`"
            ))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster member's identity: node id, site id and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeIdentity {
    pub node: String,
    pub site: String,
    pub role: Role,
}

impl NodeIdentity {
    /// Checks both ids.
    ///
    /// # Errors
    /// `NodeError::BadIdentity` when an id is not 1 to 63 of `[a-z0-9-]`,
    /// starting and ending with a letter or digit.
    pub fn new(node: &str, site: &str, role: Role) -> Result<Self, NodeError> {
        check_id("node", node)?;
        check_id("site", site)?;
        Ok(Self {
            node: node.to_owned(),
            site: site.to_owned(),
            role,
        })
    }

    /// `nuage://<site>/<role>/<node>`.
    #[must_use]
    pub fn uri(&self) -> String {
        format!("{IDENTITY_SCHEME}{}/{}/{}", self.site, self.role, self.node)
    }

    /// Parses `nuage://<site>/<role>/<node>`.
    ///
    /// # Errors
    /// `NodeError::BadIdentity` for any other shape.
    pub fn parse_uri(uri: &str) -> Result<Self, NodeError> {
        let bad = || NodeError::BadIdentity(format!("`{uri}` is not nuage://<site>/<role>/<node>"));
        let rest = uri.strip_prefix(IDENTITY_SCHEME).ok_or_else(bad)?;
        let mut parts = rest.split('/');
        let (Some(site), Some(role), Some(node), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        Self::new(node, site, Role::parse(role)?)
    }

    /// The identity a DER certificate names: exactly one `nuage://` URI
    /// among its subject alternative names. Does not check the signature:
    /// call it on certificates the TLS layer has verified.
    ///
    /// # Errors
    /// `NodeError::BadIdentity` when the certificate does not parse, names no
    /// identity, or names more than one.
    pub fn from_certificate_der(der: &[u8]) -> Result<Self, NodeError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| NodeError::BadIdentity(format!("unparsable certificate: {e}")))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| NodeError::BadIdentity(format!("bad subjectAltName: {e}")))?
            .ok_or_else(|| {
                NodeError::BadIdentity("certificate has no subjectAltName".to_owned())
            })?;
        let mut found: Option<Self> = None;
        for name in &san.value.general_names {
            if let GeneralName::URI(uri) = name
                && uri.starts_with(IDENTITY_SCHEME)
            {
                if found.is_some() {
                    return Err(NodeError::BadIdentity(
                        "certificate names more than one nuage:// identity".to_owned(),
                    ));
                }
                found = Some(Self::parse_uri(uri)?);
            }
        }
        found.ok_or_else(|| {
            NodeError::BadIdentity("certificate names no nuage:// identity".to_owned())
        })
    }
}

impl fmt::Display for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

fn check_id(what: &str, id: &str) -> Result<(), NodeError> {
    let ok = !id.is_empty()
        && id.len() <= ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(NodeError::BadIdentity(format!(
            "{what} id `{id}` must be 1 to {ID_BYTES_MAX} of a-z, 0-9 and inner `-`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_round_trips_and_bad_shapes_are_refused() -> Result<(), NodeError> {
        let id = NodeIdentity::new("node-1", "fr-par", Role::Storage)?;
        assert_eq!(id.uri(), "nuage://fr-par/storage/node-1");
        assert_eq!(NodeIdentity::parse_uri(&id.uri())?, id);
        let host = NodeIdentity::new("fr-1", "par1", Role::Compute)?;
        assert_eq!(NodeIdentity::parse_uri("nuage://par1/compute/fr-1")?, host);
        for bad in [
            "nuage://fr-par/storage",
            "nuage://fr-par/storage/n/x",
            "nuage://fr-par/admin/n",
            "nuage://FR/storage/n",
            "nuage://-fr/storage/n",
            "https://fr/storage/n",
            "nuage:///storage/n",
        ] {
            assert!(NodeIdentity::parse_uri(bad).is_err(), "{bad}");
        }
        assert!(NodeIdentity::new(&"a".repeat(64), "s", Role::Gateway).is_err());
        Ok(())
    }
}
