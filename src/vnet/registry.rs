//! The virtual network's registry: it stores the announcements of the
//! rounds, answers bootstraps with random ones, and serves the CRL and the
//! network configuration the test publishes. Answers take two one-way
//! delays; a registry that is down answers with failures.

use std::collections::BTreeMap;

use ipnet::Ipv6Net;
use rand::seq::IndexedRandom;

use super::Network;
use super::events::Ev;
use crate::identity::{Crl, NetworkConfig, SignedAnnouncement, SignedNetworkConfig};
use crate::node::core::{RegistryReply, RegistryRequest};

/// The simulated registry.
#[derive(Debug, Default)]
pub(super) struct Registry {
    /// Announcements received, by prefix.
    announcements: BTreeMap<Ipv6Net, SignedAnnouncement>,
    crl: Option<Crl>,
    network: Option<(NetworkConfig, SignedNetworkConfig)>,
    pub(super) down: bool,
}

impl Network {
    /// The registry publishes a new CRL revoking `serials` (nodes get it at
    /// their next round, peers by flooding).
    pub fn revoke(&mut self, serials: &[u64]) -> Crl {
        let number = self.registry.crl.as_ref().map_or(1, |c| c.number + 1);
        let crl = self.pki.crl(number, serials);
        self.registry.crl = Some(crl.clone());
        crl
    }
    /// The registry publishes a new network configuration (its version is
    /// set to the next one).
    pub fn publish_network(&mut self, mut cfg: NetworkConfig) {
        let version = self
            .registry
            .network
            .as_ref()
            .map_or(self.config.network.version, |(c, _)| c.version);
        cfg.version = version + 1;
        let signed = cfg.sign(&self.pki.ca).expect("the CA signs");
        self.registry.network = Some((cfg, signed));
    }
    pub(super) fn registry_request(&mut self, i: usize, req: RegistryRequest) {
        self.stats.registry_requests += 1;
        let Some(d) = self.config.registry_delay else {
            return;
        };
        let epoch = self.nodes[i].epoch;
        let mut replies = Vec::new();
        if self.registry.down {
            let why = "registry unreachable".to_string();
            replies.push(match req {
                RegistryRequest::Round { .. } => RegistryReply::RoundFailed(why),
                RegistryRequest::Bootstrap { .. } => RegistryReply::BootstrapFailed(why),
            });
        } else {
            match req {
                RegistryRequest::Bootstrap { n } => {
                    let me = self.nodes[i].cert.prefix;
                    let all: Vec<&SignedAnnouncement> = self
                        .registry
                        .announcements
                        .iter()
                        .filter(|(p, _)| **p != me)
                        .map(|(_, s)| s)
                        .collect();
                    let n = usize::try_from(n).unwrap_or(usize::MAX);
                    let list = all.sample(&mut self.rng, n).map(|s| (*s).clone()).collect();
                    replies.push(RegistryReply::Bootstrapped(list));
                }
                RegistryRequest::Round { announcement } => {
                    if let Some(a) = announcement
                        && let Ok(p) =
                            serde_json::from_str::<crate::identity::PeerAnnouncement>(&a.payload)
                    {
                        self.registry.announcements.insert(p.prefix, a);
                    }
                    if let Some(crl) = &self.registry.crl {
                        replies.push(RegistryReply::Crl(Box::new(crl.clone())));
                    }
                    if let Some((config, signed)) = &self.registry.network {
                        replies.push(RegistryReply::Network {
                            config: Box::new(config.clone()),
                            signed: Box::new(signed.clone()),
                        });
                    }
                    replies.push(RegistryReply::Done);
                }
            }
        }
        for r in replies {
            self.schedule(2 * d, epoch, Ev::Registry(i, r));
        }
    }
}
