//! NodeCore's peers: the peer DB as tunnel candidates, peer exchange
//! (rounds out, messages in; the schedule and the table are
//! [`crate::peers`]), our signed announcement, and address discovery (the
//! address book is [`crate::addresses`]).

use std::net::{Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use super::boundary::TunnelCmd;
use super::{NodeCore, Now};
use crate::identity::{PeerAnnouncement, SignedAnnouncement, node_address, unix_secs};
use crate::peers::{Inserted, exchange};
use crate::tunnels::driver::PeerKey;

impl NodeCore {
    /// The peer DB changed: the driver gets its peers (without those of
    /// our LAN links) as candidates.
    pub(super) fn candidates_changed(&mut self, now: Now) {
        let lan: Vec<PeerKey> = self.driver.lan_peers().collect();
        let peers: Vec<PeerKey> = self
            .db
            .iter()
            .map(|e| PeerKey {
                serial: e.serial,
                prefix: e.prefix,
            })
            .filter(|p| !lan.contains(p))
            .collect();
        self.driver.handle_candidates(peers, now.mono);
    }

    /// Stores a verified announcement; whether the DB changed.
    pub(super) fn insert_announcement(&mut self, signed: &SignedAnnouncement, now: Now) -> bool {
        match self.db.insert(signed, &self.verifier, now.wall) {
            Ok(Inserted::New | Inserted::Updated) => true,
            Ok(Inserted::Unchanged) => false,
            Err(e) => {
                tracing::debug!(error = %e, "announcement not stored");
                false
            }
        }
    }

    /// Nodes of the routing table (their addresses), without us.
    fn destinations(&self) -> Vec<Ipv6Addr> {
        self.engine
            .fib()
            .into_iter()
            .filter_map(|e| match e.prefix {
                IpNet::V6(p) if self.network.network.contains(&p) && p != self.cert.prefix => {
                    Some(node_address(p))
                }
                _ => None,
            })
            .collect()
    }

    pub(super) fn exchange_round(&mut self, now: Now) {
        let dests = self.destinations();
        if let Some(round) = self
            .exchange
            .handle_timeout(&dests, self.db.len(), now.mono)
        {
            tracing::debug!(
                targets = round.targets.len(),
                reply = round.reply,
                "peer exchange round"
            );
            for t in round.targets {
                self.send_announcement(t, round.reply, now);
            }
        }
    }

    pub(super) fn handle_exchange(&mut self, from: Ipv6Addr, payload: &[u8], now: Now) {
        let got = self.exchange.handle_message(
            from,
            payload,
            &mut self.db,
            &self.verifier,
            now.wall,
            now.mono,
        );
        if got.changed {
            self.candidates_changed(now);
        }
        if got.answer {
            self.send_announcement(from, false, now);
        }
    }

    /// Addresses we announce ([`crate::addresses`]): configured first,
    /// then UPnP, then routable local addresses; none behind a NAT.
    pub(super) fn advertised(&self) -> Vec<SocketAddr> {
        self.addresses.announce()
    }

    /// Our announcement for peers, signed now.
    pub(super) fn announcement(&self, now: Now) -> Option<SignedAnnouncement> {
        self.sign_announcement(None, now)
    }

    /// Our announcement, with `topology` (for the registry), signed now.
    pub(super) fn sign_announcement(
        &self,
        topology: Option<crate::identity::Topology>,
        now: Now,
    ) -> Option<SignedAnnouncement> {
        let mut addresses = self.advertised();
        if addresses.is_empty() {
            return None;
        }
        addresses.truncate(crate::identity::MAX_ADDRESSES);
        let a = PeerAnnouncement {
            prefix: self.cert.prefix,
            addresses,
            timestamp: unix_secs(now.wall),
            tcp_port: self.config.tcp_port,
            topology,
        };
        match a.sign(&self.cert, &self.key) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot sign our announcement");
                None
            }
        }
    }

    pub(super) fn send_announcement(&mut self, to: Ipv6Addr, reply: bool, now: Now) {
        let Some(signed) = self.announcement(now) else {
            tracing::debug!("no address to announce yet");
            return;
        };
        match exchange::packet(self.cert.address, to, reply, signed) {
            Ok(packet) => self.tunnel_cmd(TunnelCmd::SendPacket {
                bytes: packet.into(),
            }),
            Err(e) => tracing::warn!(error = %e, "cannot encode our announcement"),
        }
    }

    /// After any change to the address book: if the announced addresses
    /// changed, tell the registry soon (peers learn them from the next
    /// exchange rounds).
    pub(super) fn check_announced(&mut self, now: Now) {
        let announce = self.addresses.announce();
        if announce == self.announced {
            return;
        }
        tracing::info!(addresses = ?announce, "announced addresses changed");
        if announce.is_empty() {
            tracing::warn!(
                "no reachable address: this node dials out only (behind NAT? see `re6st status`, \
                 --upnp, --advertise, --routable)"
            );
        }
        self.announced = announce;
        self.registry.addresses_changed(now.mono);
    }
}
