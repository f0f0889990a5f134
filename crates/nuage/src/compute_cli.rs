//! `nuage serve --role compute`: a compute host (docs/compute.md, "Several
//! hosts"). It opens a `ComputeHost` from the `[compute]` section, as a
//! gateway's local host, and serves only the compute host protocol over
//! mutual TLS (`nuage-compute-node`): no EC2, S3, metadata store or keys.
//! Its id and site are its certificate's (`nuage cluster cert issue --role
//! compute`); gateways find it in the topology's `[[compute_host]]`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nuage_node::Role;
use nuage_node::tls::TlsMaterial;

use crate::config::FileConfig;
use crate::server::compute::HostsMode;

pub fn run(
    config_path: Option<&Path>,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
) -> anyhow::Result<()> {
    let file = match config_path {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    let settings = file
        .compute
        .context("--role compute needs a [compute] section")?
        .resolve()?;
    if settings.hosts != HostsMode::Local {
        bail!("compute.hosts is for gateways; a compute host runs its instances itself");
    }
    let need = |what: &str, value: Option<PathBuf>| {
        value.with_context(|| {
            format!("compute.{what} is required for --role compute (from `nuage cluster cert issue --role compute`)")
        })
    };
    let tls = TlsMaterial::load(
        &need("cert", settings.cert.clone())?,
        &need("key", settings.key.clone())?,
        &need("ca", settings.ca.clone())?,
    )?;
    let identity = tls.identity()?;
    if identity.role != Role::Compute {
        bail!(
            "the certificate names {identity}, not a compute host (issue one with --role compute)"
        );
    }
    if let Some(site) = &settings.site
        && *site != identity.site
    {
        bail!(
            "compute.site is `{site}` but the certificate names site `{}`",
            identity.site
        );
    }
    let listen_text = listen
        .or_else(|| settings.listen.clone())
        .context("compute.listen (or --listen) is required for --role compute")?;
    let listen: SocketAddr = listen_text
        .parse()
        .with_context(|| format!("`{listen_text}` is not an IP address and port"))?;
    let data_dir = data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_DATA_DIR));
    let state_dir = settings
        .state_dir
        .clone()
        .unwrap_or_else(|| data_dir.join("compute"));
    // A host's zone is its site unless said otherwise, as the topology's
    // `[[compute_host]]` default.
    let availability_zone = settings
        .availability_zone
        .clone()
        .unwrap_or_else(|| identity.site.clone());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let host =
            crate::server::compute::open_host(&settings, &state_dir, &availability_zone).await?;
        let decision = host.host().accelerator().clone();
        let capacity = host.host().capacity();
        let server = nuage_compute_node::ComputeNodeServer::start(
            nuage_compute_node::ComputeNodeServerConfig {
                tls,
                listen,
                host,
                uploads_dir: state_dir.join("uploads"),
                availability_zone: availability_zone.clone(),
            },
        )
        .await?;
        // Tests and scripts read the bound address (port 0) from here.
        println!(
            "nuage compute host {} listening on {} ({} vCPUs, {} MiB, zone {availability_zone}, accelerator {} ({}))",
            server.identity(),
            server.local_addr(),
            capacity.vcpus,
            capacity.memory_mib,
            decision.accelerator,
            decision.reason
        );
        crate::server::shutdown_signal().await;
        server.shutdown().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compute_host_without_its_certificate_or_address_does_not_start() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("host.toml");
        std::fs::write(&config, "[compute]\nlisten = \"127.0.0.1:0\"\n")?;
        let err = run(Some(&config), Some(dir.path().into()), None)
            .err()
            .context("started without a certificate")?;
        assert!(err.to_string().contains("compute.cert"), "{err:#}");
        std::fs::write(&config, "")?;
        let err = run(Some(&config), Some(dir.path().into()), None)
            .err()
            .context("started without [compute]")?;
        assert!(err.to_string().contains("[compute]"), "{err:#}");
        Ok(())
    }
}
