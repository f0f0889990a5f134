//! First start (and upgrades of older data directories): the `default`
//! tenant, its administrator user with full rights over the tenant, and the
//! administrator key printed to the newcomer.

use crate::credentials::AdminCredentials;
use anyhow::Context as _;
use nuage_iam::{Iam, IamError, PolicyHolder, Tenant};

pub const DEFAULT_TENANT: &str = "default";
pub const ADMIN_USER: &str = "admin";
use nuage_iam::{
    ADMINISTRATOR_POLICY as ADMIN_POLICY, ADMINISTRATOR_POLICY_NAME as ADMIN_POLICY_NAME,
};

/// Makes sure the default tenant, its `admin` user and the printed key exist.
pub async fn ensure_default_tenant(
    iam: &Iam,
    creds: &AdminCredentials,
    country: &str,
) -> anyhow::Result<Tenant> {
    let tenant = match iam.tenant(DEFAULT_TENANT).await {
        Ok(t) => t,
        Err(IamError::NoSuchEntity(_)) => iam
            .create_tenant(DEFAULT_TENANT, country, "")
            .await
            .context("cannot create the default tenant")?,
        Err(e) => return Err(e.into()),
    };
    match iam.user(&tenant.id, ADMIN_USER).await {
        Ok(_) => {}
        Err(IamError::NoSuchEntity(_)) => {
            iam.create_user(&tenant.id, ADMIN_USER, None, Vec::new())
                .await?;
            iam.put_inline_policy(
                PolicyHolder::User,
                &tenant.id,
                ADMIN_USER,
                ADMIN_POLICY_NAME,
                ADMIN_POLICY,
            )
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
    if iam
        .resolve(&creds.access_key_id)
        .await
        .ok()
        .flatten()
        .is_none()
        && !iam
            .list_access_keys(&tenant.id, ADMIN_USER)
            .await?
            .iter()
            .any(|k| k.access_key_id == creds.access_key_id)
    {
        iam.import_access_key(
            &tenant.id,
            ADMIN_USER,
            &creds.access_key_id,
            &creds.secret_access_key,
        )
        .await
        .context("cannot register the administrator key")?;
    }
    Ok(tenant)
}
