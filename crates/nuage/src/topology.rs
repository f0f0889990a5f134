//! The server's topology (`docs/residency.md`): the operator's
//! `topology_file` when the configuration names one, checked against the
//! configured regions; otherwise, for a single node, a one-site topology
//! synthesized from the first region.
//!
//! Residency policies are checked against it when they are set (admin API)
//! and when a bucket is created (the storage service's bucket admission).

use anyhow::{Context as _, bail};
use nuage_placement::{NodeEntry, Operator, RegionEntry, SiteEntry, Topology, TopologyFile};
use std::io::Read as _;
use std::path::Path;

/// The id of the site (and of its one node) a single node synthesizes.
pub const LOCAL_SITE: &str = "local";

/// Reads the topology for `regions` (the configured ones, first is the
/// default): `file` when given, else the single-node one.
///
/// # Errors
/// An unreadable or invalid file, or a configured region the file lacks.
pub fn load(file: Option<&Path>, regions: &[nuage_storage::Region]) -> anyhow::Result<Topology> {
    let Some(path) = file else {
        return synthesize(regions);
    };
    let text = read_bounded(path, nuage_placement::limits::TOPOLOGY_FILE_BYTES_MAX)?;
    let topology = Topology::from_toml(&text)
        .with_context(|| format!("topology_file {} is not a valid topology", path.display()))?;
    for region in regions {
        if !topology.regions().contains_key(&region.name) {
            let known: Vec<&str> = topology.regions().keys().map(String::as_str).collect();
            bail!(
                "region `{}` of the configuration is not in topology_file {} (its regions: {})",
                region.name,
                path.display(),
                known.join(", ")
            );
        }
    }
    Ok(topology)
}

/// One site, `local`, in the first region and its country (with the
/// jurisdictions that country implies: EU and EEA for a member), operated
/// from that country, without qualifications, holding one node: this
/// server. The other configured regions exist but have no site: every byte
/// of a single node is on this machine, in the first region's country.
fn synthesize(regions: &[nuage_storage::Region]) -> anyhow::Result<Topology> {
    let first = regions
        .first()
        .context("no region is configured, so no topology can be synthesized")?;
    let file = TopologyFile {
        regions: regions
            .iter()
            .map(|r| RegionEntry {
                id: r.name.clone(),
                name: None,
            })
            .collect(),
        sites: vec![SiteEntry {
            id: LOCAL_SITE.to_owned(),
            region: first.name.clone(),
            country: first.country.clone(),
            jurisdictions: Vec::new(),
            operator: Operator {
                entity: "the operator of this single-node Nuage".to_owned(),
                country_of_control: first.country.clone(),
            },
            qualifications: Vec::new(),
        }],
        nodes: vec![NodeEntry {
            id: LOCAL_SITE.to_owned(),
            site: LOCAL_SITE.to_owned(),
            endpoint: "local".to_owned(),
            // Not measured: the single node's room is its disk's.
            capacity_bytes: u64::MAX,
        }],
        compute_hosts: Vec::new(),
    };
    Topology::new(file).context(
        "cannot synthesize a single-node topology from the configured regions (region names \
         must be lower-case letters, digits and `-`, countries assigned upper-case ISO 3166-1 \
         codes); fix them or set topology_file",
    )
}

fn read_bounded(path: &Path, max: usize) -> anyhow::Result<String> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open topology_file {}", path.display()))?;
    let mut text = String::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit)
        .read_to_string(&mut text)
        .with_context(|| format!("cannot read topology_file {} as UTF-8", path.display()))?;
    if text.len() > max {
        bail!(
            "topology_file {} is larger than {max} bytes",
            path.display()
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use nuage_placement::Jurisdiction;

    fn region(name: &str, country: &str) -> nuage_storage::Region {
        nuage_storage::Region {
            name: name.into(),
            country: country.into(),
        }
    }

    #[test]
    fn a_single_node_is_one_site_in_the_first_region() {
        let t = load(None, &[region("fr-par", "FR"), region("us-east", "US")]).unwrap();
        assert_eq!(t.regions().len(), 2);
        let site = t.site(LOCAL_SITE).unwrap();
        assert_eq!(site.region, "fr-par");
        assert_eq!(site.country.as_str(), "FR");
        assert!(
            site.jurisdictions
                .contains(&Jurisdiction::parse("EU").unwrap())
        );
        assert!(site.qualifications.is_empty());
        assert_eq!(t.nodes().len(), 1);
    }

    #[test]
    fn a_file_must_hold_every_configured_region() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topology.toml");
        std::fs::write(
            &path,
            r#"
[[region]]
id = "fr-par"
[[site]]
id = "par1"
region = "fr-par"
country = "FR"
operator = { entity = "Op", country_of_control = "FR" }
[[node]]
id = "par1-n1"
site = "par1"
endpoint = "https://par1-n1:7000"
capacity_bytes = 1000
"#,
        )
        .unwrap();
        assert!(load(Some(&path), &[region("fr-par", "FR")]).is_ok());
        let e = load(
            Some(&path),
            &[region("fr-par", "FR"), region("de-fra", "DE")],
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("de-fra"), "{e:#}");
    }
}
