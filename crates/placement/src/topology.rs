//! The operator's description of where nodes are: regions, sites (data
//! centres) and nodes, parsed from `topology.toml` and validated as a whole.
//!
//! A [`Topology`] is immutable and always valid: every node is in a known
//! site, every site in a known region, every country an ISO 3166-1 code, and
//! every site's jurisdictions include those its country implies (its own,
//! `EU`, `EEA`). Parsing is the only thing this module does with text; it
//! never reads a file (the binary does, and hands the text over).

use crate::geo::{CountryCode, Jurisdiction, Qualification};
use crate::limits::{
    TOPOLOGY_FILE_BYTES_MAX, TOPOLOGY_NODES_MAX, TOPOLOGY_REGIONS_MAX, TOPOLOGY_SITES_MAX,
};

/// Most `[[compute_host]]` tables.
pub const TOPOLOGY_COMPUTE_HOSTS_MAX: usize = 1024;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Longest id of a region, site or node.
const ID_CHARS_MAX: usize = 63;
/// Longest legal entity name or endpoint.
const TEXT_CHARS_MAX: usize = 256;

/// `topology.toml` as written, before validation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    /// `[[region]]` tables.
    #[serde(default, rename = "region")]
    pub regions: Vec<RegionEntry>,
    /// `[[site]]` tables.
    #[serde(default, rename = "site")]
    pub sites: Vec<SiteEntry>,
    /// `[[node]]` tables.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// `[[compute_host]]` tables.
    #[serde(
        default,
        rename = "compute_host",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub compute_hosts: Vec<ComputeHostEntry>,
}

/// A `[[region]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionEntry {
    /// The region's id (`fr-par`).
    pub id: String,
    /// A human name.
    #[serde(default)]
    pub name: Option<String>,
}

/// A `[[site]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteEntry {
    /// The site's id (`par1`).
    pub id: String,
    /// The region it belongs to.
    pub region: String,
    /// ISO 3166-1 alpha-2 code of the country the site is in.
    pub country: String,
    /// Jurisdictions beyond those the country implies.
    #[serde(default)]
    pub jurisdictions: Vec<String>,
    /// Who operates the site.
    pub operator: Operator,
    /// Qualifications the site holds (`secnumcloud`).
    #[serde(default)]
    pub qualifications: Vec<String>,
}

/// The legal entity operating a site, and the country that controls it
/// (where its ultimate parent is: a French subsidiary of a US company is
/// controlled from `US`, and US law can reach it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    /// The legal entity's name.
    pub entity: String,
    /// ISO 3166-1 alpha-2 code of its country of control.
    pub country_of_control: String,
}

/// A `[[node]]` table.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The node's id (`par1-n1`).
    pub id: String,
    /// The site it is in.
    pub site: String,
    /// Where the storage-node service listens (`https://host:port`).
    pub endpoint: String,
    /// Raw capacity.
    pub capacity_bytes: u64,
}

/// A `[[compute_host]]` table: a machine running `nuage serve --role
/// compute`, which gateways schedule instances onto.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeHostEntry {
    /// The host's id (`par1-c1`): its certificate names it.
    pub id: String,
    /// The site it is in: its certificate names it too.
    pub site: String,
    /// Where its host protocol listens (`https://host:port`).
    pub endpoint: String,
    /// The availability zone its instances show; default the site's id.
    #[serde(default)]
    pub availability_zone: Option<String>,
}

/// A validated compute host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComputeHostInfo {
    /// Its id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Its host protocol's endpoint.
    pub endpoint: String,
    /// Its availability zone.
    pub availability_zone: String,
}

/// What is wrong with a topology.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// Not TOML, or not the expected shape (unknown or missing field).
    #[error("topology file: {0}")]
    Syntax(String),
    /// Larger than the limits.
    #[error("topology: {0}")]
    TooLarge(String),
    /// No site or no node.
    #[error("topology: {0}")]
    Empty(&'static str),
    /// A malformed id.
    #[error("{kind} id `{id}`: {why}")]
    BadId {
        /// `region`, `site` or `node`.
        kind: &'static str,
        /// The id.
        id: String,
        /// What is wrong.
        why: String,
    },
    /// Two regions, sites or nodes with one id.
    #[error("duplicate {kind} id `{id}`")]
    Duplicate {
        /// `region`, `site` or `node`.
        kind: &'static str,
        /// The id.
        id: String,
    },
    /// A site naming a region not declared.
    #[error("site `{site}`: unknown region `{region}` (declare it in a [[region]] table)")]
    UnknownRegion {
        /// The site.
        site: String,
        /// The region it names.
        region: String,
    },
    /// A node naming a site not declared, or none.
    #[error("node `{node}`: {}", if site.is_empty() { "is in no site (set `site`)".to_string() } else { format!("unknown site `{site}`") })]
    UnknownSite {
        /// The node.
        node: String,
        /// The site it names.
        site: String,
    },
    /// A bad value in a site's description.
    #[error("site `{site}`: {field}: {why}")]
    BadSite {
        /// The site.
        site: String,
        /// The field (`country`, `jurisdictions`, ...).
        field: &'static str,
        /// What is wrong.
        why: String,
    },
    /// A `[[compute_host]]` table naming an unknown site or holding a bad
    /// value.
    #[error("compute host `{host}`: {why}")]
    BadComputeHost {
        /// The host.
        host: String,
        /// What is wrong.
        why: String,
    },
    /// A bad value in a node's description.
    #[error("node `{node}`: {field}: {why}")]
    BadNode {
        /// The node.
        node: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        why: String,
    },
}

/// A region: a group of sites one Nuage control plane serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Region {
    /// Its id.
    pub id: String,
    /// A human name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// A validated site, with everything residency decisions need. The same
/// shape is quoted in attestations, so that a tenant checks a replica's site
/// without the topology.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Its id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// The country it is in.
    pub country: CountryCode,
    /// Every jurisdiction it falls under: its country's, `EU`/`EEA` where the
    /// country belongs, and those the operator declared. Sorted.
    pub jurisdictions: BTreeSet<Jurisdiction>,
    /// Who operates it.
    pub operator: SiteOperator,
    /// Its qualifications. Sorted.
    pub qualifications: BTreeSet<Qualification>,
}

/// A validated [`Operator`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteOperator {
    /// The legal entity's name.
    pub entity: String,
    /// Its country of control.
    pub country_of_control: CountryCode,
}

/// A validated node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// Its id.
    pub id: String,
    /// Its site.
    pub site: String,
    /// Its storage service's endpoint.
    pub endpoint: String,
    /// Its raw capacity.
    pub capacity_bytes: u64,
}

/// A validated topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    regions: BTreeMap<String, Region>,
    sites: BTreeMap<String, Site>,
    nodes: BTreeMap<String, Node>,
    compute_hosts: BTreeMap<String, ComputeHostInfo>,
}

impl Topology {
    /// Parses and validates the text of a `topology.toml`.
    ///
    /// # Errors
    /// The first problem found, naming the region, site or node.
    pub fn from_toml(text: &str) -> Result<Self, TopologyError> {
        if text.len() > TOPOLOGY_FILE_BYTES_MAX {
            return Err(TopologyError::TooLarge(format!(
                "the file is {} bytes, more than {TOPOLOGY_FILE_BYTES_MAX}",
                text.len()
            )));
        }
        let file: TopologyFile =
            toml::from_str(text).map_err(|e| TopologyError::Syntax(e.to_string()))?;
        Self::new(file)
    }

    /// Validates a topology given as data.
    ///
    /// # Errors
    /// The first problem found, naming the region, site or node.
    pub fn new(file: TopologyFile) -> Result<Self, TopologyError> {
        check_count("region", file.regions.len(), TOPOLOGY_REGIONS_MAX)?;
        check_count("site", file.sites.len(), TOPOLOGY_SITES_MAX)?;
        check_count("node", file.nodes.len(), TOPOLOGY_NODES_MAX)?;
        check_count(
            "compute host",
            file.compute_hosts.len(),
            TOPOLOGY_COMPUTE_HOSTS_MAX,
        )?;
        if file.sites.is_empty() {
            return Err(TopologyError::Empty("no [[site]] is declared"));
        }
        if file.nodes.is_empty() {
            return Err(TopologyError::Empty("no [[node]] is declared"));
        }
        let mut regions = BTreeMap::new();
        for entry in file.regions {
            check_id("region", &entry.id)?;
            let region = Region {
                id: entry.id.clone(),
                name: entry.name,
            };
            if regions.insert(entry.id.clone(), region).is_some() {
                return Err(TopologyError::Duplicate {
                    kind: "region",
                    id: entry.id,
                });
            }
        }
        let mut sites = BTreeMap::new();
        for entry in file.sites {
            let site = validate_site(entry, &regions)?;
            let id = site.id.clone();
            if sites.insert(id.clone(), site).is_some() {
                return Err(TopologyError::Duplicate { kind: "site", id });
            }
        }
        let mut nodes = BTreeMap::new();
        let mut endpoints = BTreeMap::new();
        for entry in file.nodes {
            let node = validate_node(entry, &sites)?;
            if let Some(other) = endpoints.insert(node.endpoint.clone(), node.id.clone()) {
                // Two ids for one machine would count one copy as two.
                return Err(TopologyError::BadNode {
                    node: node.id,
                    field: "endpoint",
                    why: format!("`{}` is also node `{other}`'s", node.endpoint),
                });
            }
            let id = node.id.clone();
            if nodes.insert(id.clone(), node).is_some() {
                return Err(TopologyError::Duplicate { kind: "node", id });
            }
        }
        let mut compute_hosts = BTreeMap::new();
        for entry in file.compute_hosts {
            let host = validate_compute_host(entry, &sites)?;
            if let Some(other) = endpoints.insert(host.endpoint.clone(), host.id.clone()) {
                return Err(TopologyError::BadNode {
                    node: host.id,
                    field: "endpoint",
                    why: format!("`{}` is also `{other}`'s", host.endpoint),
                });
            }
            let id = host.id.clone();
            if nodes.contains_key(&id) || compute_hosts.insert(id.clone(), host).is_some() {
                return Err(TopologyError::Duplicate {
                    kind: "compute host",
                    id,
                });
            }
        }
        Ok(Self {
            regions,
            sites,
            nodes,
            compute_hosts,
        })
    }

    /// Every compute host, by id.
    #[must_use]
    pub fn compute_hosts(&self) -> &BTreeMap<String, ComputeHostInfo> {
        &self.compute_hosts
    }

    /// Every region, by id.
    #[must_use]
    pub fn regions(&self) -> &BTreeMap<String, Region> {
        &self.regions
    }

    /// Every site, by id.
    #[must_use]
    pub fn sites(&self) -> &BTreeMap<String, Site> {
        &self.sites
    }

    /// Every node, by id.
    #[must_use]
    pub fn nodes(&self) -> &BTreeMap<String, Node> {
        &self.nodes
    }

    /// One node.
    #[must_use]
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// One site.
    #[must_use]
    pub fn site(&self, id: &str) -> Option<&Site> {
        self.sites.get(id)
    }

    /// The site of a node.
    #[must_use]
    pub fn site_of(&self, node: &str) -> Option<&Site> {
        self.nodes.get(node).and_then(|n| self.sites.get(&n.site))
    }

    /// The nodes of one site.
    pub fn nodes_in<'a>(&'a self, site: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes.values().filter(move |n| n.site == site)
    }
}

fn check_count(kind: &str, count: usize, max: usize) -> Result<(), TopologyError> {
    if count > max {
        return Err(TopologyError::TooLarge(format!(
            "{count} {kind}s, more than {max}"
        )));
    }
    Ok(())
}

fn check_id(kind: &'static str, id: &str) -> Result<(), TopologyError> {
    let why = if id.is_empty() {
        Some("is empty".to_string())
    } else if id.len() > ID_CHARS_MAX {
        Some(format!("longer than {ID_CHARS_MAX} characters"))
    } else if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        || !id.starts_with(|c: char| c.is_ascii_alphanumeric())
    {
        Some("use lower-case letters, digits and `-`, starting with a letter or digit".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(TopologyError::BadId {
            kind,
            id: id.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

fn check_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("is empty".to_string());
    }
    if text.len() > TEXT_CHARS_MAX {
        return Err(format!("longer than {TEXT_CHARS_MAX} bytes"));
    }
    if text.chars().any(char::is_control) {
        return Err("contains a control character".to_string());
    }
    Ok(())
}

fn validate_site(
    entry: SiteEntry,
    regions: &BTreeMap<String, Region>,
) -> Result<Site, TopologyError> {
    check_id("site", &entry.id)?;
    let bad = |field: &'static str, why: String| TopologyError::BadSite {
        site: entry.id.clone(),
        field,
        why,
    };
    if !regions.contains_key(&entry.region) {
        return Err(TopologyError::UnknownRegion {
            site: entry.id.clone(),
            region: entry.region.clone(),
        });
    }
    let country = CountryCode::parse(&entry.country).map_err(|why| bad("country", why))?;
    let mut jurisdictions: BTreeSet<Jurisdiction> =
        country.implied_jurisdictions().into_iter().collect();
    for text in &entry.jurisdictions {
        let jurisdiction = Jurisdiction::parse(text).map_err(|why| bad("jurisdictions", why))?;
        // A known jurisdiction is a fact about the country, not a claim: a
        // site in US "declaring" EU is a typo that would let EU-only data in.
        let plausible = match &jurisdiction {
            Jurisdiction::Label(_) => true,
            known => known.contains_country(country),
        };
        if !plausible {
            return Err(bad(
                "jurisdictions",
                format!("a site in {country} does not fall under {jurisdiction}"),
            ));
        }
        jurisdictions.insert(jurisdiction);
    }
    let mut qualifications = BTreeSet::new();
    for text in &entry.qualifications {
        qualifications
            .insert(Qualification::parse(text).map_err(|why| bad("qualifications", why))?);
    }
    check_text(&entry.operator.entity).map_err(|why| bad("operator.entity", why))?;
    let country_of_control = CountryCode::parse(&entry.operator.country_of_control)
        .map_err(|why| bad("operator.country_of_control", why))?;
    Ok(Site {
        id: entry.id.clone(),
        region: entry.region.clone(),
        country,
        jurisdictions,
        operator: SiteOperator {
            entity: entry.operator.entity.clone(),
            country_of_control,
        },
        qualifications,
    })
}

fn validate_node(entry: NodeEntry, sites: &BTreeMap<String, Site>) -> Result<Node, TopologyError> {
    check_id("node", &entry.id)?;
    if !sites.contains_key(&entry.site) {
        return Err(TopologyError::UnknownSite {
            node: entry.id,
            site: entry.site,
        });
    }
    let bad = |field: &'static str, why: String| TopologyError::BadNode {
        node: entry.id.clone(),
        field,
        why,
    };
    check_text(&entry.endpoint).map_err(|why| bad("endpoint", why))?;
    if entry.endpoint.chars().any(char::is_whitespace) {
        return Err(bad("endpoint", "contains a space".to_string()));
    }
    if entry.capacity_bytes == 0 {
        return Err(bad("capacity_bytes", "is zero".to_string()));
    }
    Ok(Node {
        id: entry.id,
        site: entry.site,
        endpoint: entry.endpoint,
        capacity_bytes: entry.capacity_bytes,
    })
}

fn validate_compute_host(
    entry: ComputeHostEntry,
    sites: &BTreeMap<String, Site>,
) -> Result<ComputeHostInfo, TopologyError> {
    check_id("compute host", &entry.id)?;
    if !sites.contains_key(&entry.site) {
        return Err(TopologyError::BadComputeHost {
            why: if entry.site.is_empty() {
                "is in no site (set `site`)".to_string()
            } else {
                format!("unknown site `{}`", entry.site)
            },
            host: entry.id,
        });
    }
    let bad = |field: &'static str, why: String| TopologyError::BadComputeHost {
        host: entry.id.clone(),
        why: format!("{field}: {why}"),
    };
    check_text(&entry.endpoint).map_err(|why| bad("endpoint", why))?;
    if entry.endpoint.chars().any(char::is_whitespace) {
        return Err(bad("endpoint", "contains a space".to_string()));
    }
    let availability_zone = match entry.availability_zone {
        None => entry.site.clone(),
        Some(zone) => {
            if zone.is_empty()
                || zone.len() > ID_CHARS_MAX
                || !zone.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad(
                    "availability_zone",
                    format!("use 1 to {ID_CHARS_MAX} letters, digits and `-`"),
                ));
            }
            zone
        }
    };
    Ok(ComputeHostInfo {
        id: entry.id,
        site: entry.site,
        endpoint: entry.endpoint,
        availability_zone,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// France (two SecNumCloud sites and one that is not), Germany, and a US
    /// site operated by a US company; three nodes per site.
    pub(crate) const EXAMPLE: &str = r#"
[[region]]
id = "eu-west"
name = "Europe West"

[[region]]
id = "us-east"

[[site]]
id = "par1"
region = "eu-west"
country = "FR"
jurisdictions = ["EU", "EEA"]
qualifications = ["secnumcloud"]
operator = { entity = "Nuage Exploitation SAS", country_of_control = "FR" }

[[site]]
id = "par2"
region = "eu-west"
country = "FR"
qualifications = ["secnumcloud"]
operator = { entity = "Nuage Exploitation SAS", country_of_control = "FR" }

[[site]]
id = "mrs1"
region = "eu-west"
country = "FR"
operator = { entity = "Hyperscaler France SARL", country_of_control = "US" }

[[site]]
id = "fra1"
region = "eu-west"
country = "DE"
jurisdictions = ["EU"]
operator = { entity = "Nuage Deutschland GmbH", country_of_control = "DE" }

[[site]]
id = "iad1"
region = "us-east"
country = "US"
operator = { entity = "Nuage US Inc.", country_of_control = "US" }

[[node]]
id = "par1-n1"
site = "par1"
endpoint = "https://par1-n1.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "par1-n2"
site = "par1"
endpoint = "https://par1-n2.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "par1-n3"
site = "par1"
endpoint = "https://par1-n3.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "par2-n1"
site = "par2"
endpoint = "https://par2-n1.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "par2-n2"
site = "par2"
endpoint = "https://par2-n2.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "mrs1-n1"
site = "mrs1"
endpoint = "https://mrs1-n1.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "fra1-n1"
site = "fra1"
endpoint = "https://fra1-n1.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "fra1-n2"
site = "fra1"
endpoint = "https://fra1-n2.example.net:7443"
capacity_bytes = 1_000_000_000
[[node]]
id = "iad1-n1"
site = "iad1"
endpoint = "https://iad1-n1.example.net:7443"
capacity_bytes = 1_000_000_000
"#;

    pub(crate) fn example() -> Topology {
        Topology::from_toml(EXAMPLE).unwrap()
    }

    #[test]
    fn example_parses_with_implied_jurisdictions() {
        let topology = example();
        assert_eq!(topology.sites().len(), 5);
        assert_eq!(topology.nodes().len(), 9);
        let par2 = topology.site("par2").unwrap();
        let names: Vec<String> = par2.jurisdictions.iter().map(ToString::to_string).collect();
        assert_eq!(names, ["FR", "EU", "EEA"]);
        let iad1 = topology.site("iad1").unwrap();
        assert_eq!(iad1.jurisdictions.len(), 1);
        assert_eq!(topology.site_of("fra1-n2").unwrap().id, "fra1");
        assert_eq!(topology.nodes_in("par1").count(), 3);
    }

    fn with(from: &str, to: &str) -> Result<Topology, TopologyError> {
        assert!(EXAMPLE.contains(from), "{from}");
        Topology::from_toml(&EXAMPLE.replacen(from, to, 1))
    }

    #[test]
    fn each_mistake_is_named() {
        let error = with("site = \"fra1\"", "site = \"fra9\"").unwrap_err();
        assert_eq!(error.to_string(), "node `fra1-n1`: unknown site `fra9`");
        let error = with("site = \"fra1\"", "site = \"\"").unwrap_err();
        assert_eq!(
            error.to_string(),
            "node `fra1-n1`: is in no site (set `site`)"
        );
        let error = with("id = \"par2-n2\"", "id = \"par2-n1\"").unwrap_err();
        assert_eq!(error.to_string(), "duplicate node id `par2-n1`");
        let error = with("id = \"mrs1\"", "id = \"par2\"").unwrap_err();
        assert_eq!(error.to_string(), "duplicate site id `par2`");
        let error = with("country = \"DE\"", "country = \"UK\"").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("site `fra1`: country: `UK` is not"),
            "{error}"
        );
        let error = with(
            "country = \"US\"",
            "country = \"US\"\njurisdictions = [\"EU\"]",
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "site `iad1`: jurisdictions: a site in US does not fall under EU"
        );
        let error = with("region = \"us-east\"", "region = \"us-west\"").unwrap_err();
        assert!(error.to_string().contains("unknown region `us-west`"));
        let error = with("country_of_control = \"DE\"", "country_of_control = \"XX\"").unwrap_err();
        assert!(error.to_string().contains("operator.country_of_control"));
        let error = with("[\"secnumcloud\"]", "[\"SecNumCloud\"]").unwrap_err();
        assert!(error.to_string().contains("qualifications"), "{error}");
        let error = with(
            "endpoint = \"https://par2-n2.example.net:7443\"",
            "endpoint = \"https://par2-n1.example.net:7443\"",
        )
        .unwrap_err();
        assert!(error.to_string().contains("also node `par2-n1`"), "{error}");
        let error = with("capacity_bytes = 1_000_000_000", "capacity_bytes = 0").unwrap_err();
        assert_eq!(error.to_string(), "node `par1-n1`: capacity_bytes: is zero");
        let error = with("id = \"par1-n1\"", "id = \"Par1 N1\"").unwrap_err();
        assert!(matches!(error, TopologyError::BadId { .. }));
        let error = with("endpoint = \"https://iad1", "endpont = \"https://iad1").unwrap_err();
        assert!(matches!(error, TopologyError::Syntax(_)), "{error}");
        let error = with(
            "[[node]]\nid = \"par1-n1\"\nsite = \"par1\"\n",
            "[[node]]\nid = \"par1-n1\"\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("site"), "{error}");
        assert!(matches!(
            Topology::from_toml("[[region]]\nid = \"r\"\n"),
            Err(TopologyError::Empty(_))
        ));
    }
    #[test]
    fn compute_hosts_are_in_known_sites_with_unique_ids() {
        let host = |id: &str, site: &str, endpoint: &str, zone: &str| {
            format!(
                "{EXAMPLE}\n[[compute_host]]\nid = \"{id}\"\nsite = \"{site}\"\nendpoint = \"{endpoint}\"\n{zone}"
            )
        };
        let t = Topology::from_toml(&host("par1-c1", "par1", "https://c1:7300", "")).unwrap();
        let c = &t.compute_hosts()["par1-c1"];
        assert_eq!(
            (c.site.as_str(), c.availability_zone.as_str()),
            ("par1", "par1")
        );
        let t = Topology::from_toml(&host(
            "par1-c1",
            "par1",
            "https://c1:7300",
            "availability_zone = \"eu-west-1a\"",
        ))
        .unwrap();
        assert_eq!(t.compute_hosts()["par1-c1"].availability_zone, "eu-west-1a");
        let error = Topology::from_toml(&host("c1", "nowhere", "https://c1:7300", "")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "compute host `c1`: unknown site `nowhere`"
        );
        let twice = format!(
            "{}\n[[compute_host]]\nid = \"c1\"\nsite = \"fra1\"\nendpoint = \"https://c2:7300\"\n",
            host("c1", "par1", "https://c1:7300", "")
        );
        let error = Topology::from_toml(&twice).unwrap_err();
        assert_eq!(error.to_string(), "duplicate compute host id `c1`");
        let error =
            Topology::from_toml(&host("par1-n1", "par1", "https://c1:7300", "")).unwrap_err();
        assert_eq!(error.to_string(), "duplicate compute host id `par1-n1`");
        let error = Topology::from_toml(&host(
            "c1",
            "par1",
            "https://c1:7300",
            "availability_zone = \"a b\"",
        ))
        .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("compute host `c1`: availability_zone: use 1 to"),
            "{error}"
        );
        assert!(Topology::from_toml(&host("c1", "par1", "https://c1:7300", "cores = 2")).is_err());
    }
}
