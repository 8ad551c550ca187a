//! Gateway authorisations: which node may originate which prefix outside
//! the overlay (`::/0`, a site's prefix, an IPv4 range). Every node of the
//! network refuses routes to such prefixes from anyone else
//! ([`crate::identity::Origins`]).
//!
//! They live in the signed network configuration ([`GatewayGrant`]), so a
//! change is a new configuration version, served at once by a registry
//! started afterwards and within one sweep (`--sweep-every`) by a running
//! one, and applied by nodes without a restart when they fetch it. A
//! revoked node loses its authorisations at once (its certificates are on
//! the CRL anyway); a released prefix loses them before it can be
//! allocated again, so a new node never inherits them.

use std::time::SystemTime;

use ipnet::{IpNet, Ipv6Net};

use super::DirArgs;
use super::core::Settings;
use super::store::db::{Tx, vals};
use super::store::{self, META_NETWORK_CONFIG, META_SETTINGS, RevokeTarget, StoreError};
use crate::identity::{Ca, GatewayGrant, NetworkConfig, SignedNetworkConfig, unix_secs};

/// `re6st registry gateway` subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum GatewayCommand {
    /// Authorise a node to originate a prefix outside the overlay (`::/0`
    /// for a default gateway, a site prefix, an IPv4 range). It may then
    /// announce that prefix and any prefix inside it; nobody else may.
    /// Nodes apply it when they next fetch the network configuration.
    Add {
        /// The registry directory.
        #[command(flatten)]
        dir: DirArgs,
        /// The node: its prefix (fd00:1:2:3::/64) or the serial of one of
        /// its certificates.
        node: RevokeTarget,
        /// The prefix it may announce.
        prefix: IpNet,
    },
    /// List the authorisations in force.
    List {
        /// The registry directory.
        #[command(flatten)]
        dir: DirArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Withdraw an authorisation (every one of the node's without PREFIX).
    /// Nodes drop the routes at once when they fetch the new
    /// configuration; revoking the node is immediate everywhere the CRL
    /// reaches.
    Remove {
        /// The registry directory.
        #[command(flatten)]
        dir: DirArgs,
        /// The node: its prefix or a certificate serial.
        node: RevokeTarget,
        /// The prefix to withdraw.
        prefix: Option<IpNet>,
    },
}

/// Runs a `re6st registry gateway` subcommand.
pub fn admin(cmd: GatewayCommand) -> anyhow::Result<()> {
    let now = SystemTime::now();
    match cmd {
        GatewayCommand::Add { dir, node, prefix } => {
            let (store, place, _) = super::open_existing(&dir)?;
            let ca = super::core::load_ca(&place, &store)?;
            let (grant, new) = store.write(|tx| add(tx, &ca, node, prefix, now))?;
            if new {
                println!("authorised: {grant} (network configuration signed again)");
            } else {
                println!("already authorised: {grant}");
            }
        }
        GatewayCommand::List { dir, json } => {
            let (store, _, _) = super::open_existing(&dir)?;
            let grants = store.read(list)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
            } else {
                println!("{:<28} NODE", "PREFIX");
                for g in grants {
                    println!("{:<28} {}", g.prefix.to_string(), g.node);
                }
            }
        }
        GatewayCommand::Remove { dir, node, prefix } => {
            let (store, place, _) = super::open_existing(&dir)?;
            let ca = super::core::load_ca(&place, &store)?;
            let gone = store.write(|tx| remove(tx, &ca, node, prefix, now))?;
            if gone.is_empty() {
                anyhow::bail!("no such authorisation");
            }
            for g in gone {
                println!("withdrawn: {g}");
            }
        }
    }
    Ok(())
}

/// Runs `f` on the stored network configuration, in the caller's write
/// transaction. If it changed anything, the configuration is checked,
/// signed again with version + 1 and stored with the settings; the new
/// signed form is returned.
pub fn change_network(
    tx: &mut dyn Tx,
    ca: &Ca,
    now: SystemTime,
    f: impl FnOnce(&mut NetworkConfig) -> Result<(), StoreError>,
) -> Result<Option<SignedNetworkConfig>, StoreError> {
    let mut settings: Settings = store::meta(tx, META_SETTINGS)?
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Config(format!("bad settings in the store: {e}")))?
        .ok_or_else(|| {
            StoreError::Config("no network configuration yet: start the registry once".into())
        })?;
    let before = settings.network.clone();
    f(&mut settings.network)?;
    if settings.network == before {
        return Ok(None);
    }
    settings
        .network
        .validate()
        .map_err(|e| StoreError::Config(e.to_string()))?;
    settings.network.version = before.version + 1;
    settings.network.issued_at = unix_secs(now);
    let signed = settings.network.sign(ca)?;
    store::set_meta(tx, META_NETWORK_CONFIG, &to_json(&signed)?)?;
    store::set_meta(tx, META_SETTINGS, &to_json(&settings)?)?;
    Ok(Some(signed))
}

/// The prefix of the live (not revoked, not released) node `target`
/// names.
pub fn live_node(tx: &mut dyn Tx, target: RevokeTarget) -> Result<Ipv6Net, StoreError> {
    let (state, prefix) = match target {
        RevokeTarget::Serial(s) => {
            let (_, state, prefix) = store::issue::node_of_serial(tx, s)?;
            (state, prefix)
        }
        RevokeTarget::Prefix(p) => {
            let r = tx
                .query_opt(
                    "SELECT state, prefix FROM node WHERE prefix = $1 AND state != 'released'",
                    vals![p.trunc().to_string()],
                )?
                .ok_or_else(|| StoreError::Unknown(format!("no live node holds {p}")))?;
            (r.text(0)?, r.text(1)?)
        }
    };
    if state != "active" {
        return Err(StoreError::Unknown(format!(
            "{prefix} is {state}: only a live node can be a gateway"
        )));
    }
    store::parse_prefix(&prefix)
}

/// Authorises the live node `target` to originate `prefix`; returns the
/// grant, and whether it is new.
pub fn add(
    tx: &mut dyn Tx,
    ca: &Ca,
    target: RevokeTarget,
    prefix: IpNet,
    now: SystemTime,
) -> Result<(GatewayGrant, bool), StoreError> {
    let grant = GatewayGrant {
        node: live_node(tx, target)?,
        prefix: prefix.trunc(),
    };
    let changed = change_network(tx, ca, now, |n| {
        if !n.gateways.contains(&grant) {
            n.gateways.push(grant);
            n.gateways.sort();
        }
        Ok(())
    })?;
    Ok((grant, changed.is_some()))
}

/// Withdraws the node's authorisation for `prefix` (all of them if
/// `None`); returns those withdrawn. The node need not be live any more.
pub fn remove(
    tx: &mut dyn Tx,
    ca: &Ca,
    target: RevokeTarget,
    prefix: Option<IpNet>,
    now: SystemTime,
) -> Result<Vec<GatewayGrant>, StoreError> {
    let node = match target {
        RevokeTarget::Prefix(p) => p.trunc(),
        RevokeTarget::Serial(s) => store::parse_prefix(&store::issue::node_of_serial(tx, s)?.2)?,
    };
    let mut gone = Vec::new();
    change_network(tx, ca, now, |n| {
        n.gateways.retain(|g| {
            let hit = g.node == node && prefix.is_none_or(|p| p.trunc() == g.prefix);
            if hit {
                gone.push(*g);
            }
            !hit
        });
        Ok(())
    })?;
    Ok(gone)
}

/// Withdraws every authorisation of the nodes holding `nodes` (revoked or
/// released prefixes); returns how many.
pub fn drop_nodes(
    tx: &mut dyn Tx,
    ca: &Ca,
    nodes: &[Ipv6Net],
    now: SystemTime,
) -> Result<usize, StoreError> {
    if nodes.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    change_network(tx, ca, now, |cfg| {
        let before = cfg.gateways.len();
        cfg.gateways.retain(|g| !nodes.contains(&g.node));
        n = before - cfg.gateways.len();
        Ok(())
    })?;
    Ok(n)
}

/// The authorisations in force, from the stored configuration.
pub fn list(tx: &mut dyn Tx) -> Result<Vec<GatewayGrant>, StoreError> {
    let settings: Option<Settings> = store::meta(tx, META_SETTINGS)?
        .map(|j| serde_json::from_str(&j))
        .transpose()
        .map_err(|e| StoreError::Config(format!("bad settings in the store: {e}")))?;
    Ok(settings.map(|s| s.network.gateways).unwrap_or_default())
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}
