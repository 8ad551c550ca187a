//! The beacon socket: one UDP socket on `[::]:port`, joined to
//! [`GROUP`](super::GROUP) on each chosen interface. The kernel gives every
//! link-local source its interface as scope id, which is what the node
//! dials.

use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{GROUP, LanInterfaces};

/// The multicast socket of LAN discovery.
#[derive(Debug)]
pub struct LanSocket {
    sock: UdpSocket,
    /// Interfaces joined: index -> name.
    joined: BTreeMap<u32, String>,
}

impl LanSocket {
    /// Binds `[::]:port` (shared with other processes, as on a host with
    /// several nodes), hop limit 1, no loopback of our own beacons. Must
    /// run inside a tokio runtime.
    pub fn bind(port: u16) -> io::Result<Self> {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_multicast_loop_v6(false)?;
        s.set_multicast_hops_v6(1)?;
        s.set_nonblocking(true)?;
        s.bind(&SocketAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
        Ok(Self {
            sock: UdpSocket::from_std(s.into())?,
            joined: BTreeMap::new(),
        })
    }

    /// Joins the group on the interfaces `wanted` selects that are up now,
    /// and leaves it on those gone.
    pub fn refresh_interfaces(&mut self, wanted: &LanInterfaces) {
        let now = match eligible(wanted) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the network interfaces");
                return;
            }
        };
        for (idx, name) in &now {
            if !self.joined.contains_key(idx) {
                match self.sock.join_multicast_v6(&GROUP, *idx) {
                    Ok(()) => tracing::info!(interface = %name, "LAN discovery on"),
                    Err(e) => {
                        tracing::warn!(interface = %name, error = %e, "cannot join the LAN group");
                        continue;
                    }
                }
            }
        }
        for (idx, name) in &self.joined {
            if !now.contains_key(idx) {
                let _ = self.sock.leave_multicast_v6(&GROUP, *idx);
                tracing::info!(interface = %name, "LAN discovery off (interface gone)");
            }
        }
        if let LanInterfaces::Named(names) = wanted {
            for n in names {
                if !now.values().any(|v| v == n) {
                    tracing::debug!(interface = %n, "LAN interface not up or not multicast");
                }
            }
        }
        self.joined = now;
    }

    /// Names of the interfaces in use.
    pub fn interface_names(&self) -> Vec<String> {
        self.joined.values().cloned().collect()
    }

    /// Sends `bytes` to the group on every joined interface.
    pub fn send_all(&self, bytes: &[u8], port: u16) {
        for (idx, name) in &self.joined {
            let to = SocketAddrV6::new(GROUP, port, 0, *idx);
            if let Err(e) = self.sock.try_send_to(bytes, to.into()) {
                tracing::debug!(interface = %name, error = %e, "LAN beacon not sent");
            }
        }
    }

    /// The next datagram and its IPv6 source.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddrV6)> {
        loop {
            if let (n, SocketAddr::V6(from)) = self.sock.recv_from(buf).await? {
                return Ok((n, from));
            }
        }
    }
}

/// Interfaces that can carry beacons: up, multicast, not loopback, not
/// point-to-point (TUN devices are), with an IPv6 link-local address.
fn eligible(wanted: &LanInterfaces) -> io::Result<BTreeMap<u32, String>> {
    use getifaddrs::InterfaceFlags as F;
    let mut out = BTreeMap::new();
    if *wanted == LanInterfaces::Off {
        return Ok(out);
    }
    for i in getifaddrs::getifaddrs()? {
        let ok_flags = i.flags.contains(F::UP | F::MULTICAST)
            && !i.flags.intersects(F::LOOPBACK | F::POINTTOPOINT);
        let link_local = matches!(i.address.ip_addr(), Some(std::net::IpAddr::V6(a)) if a.is_unicast_link_local());
        let named = match wanted {
            LanInterfaces::Named(n) => n.contains(&i.name),
            _ => true,
        };
        if let (true, true, true, Some(idx)) = (ok_flags, link_local, named, i.index) {
            out.insert(idx, i.name);
        }
    }
    Ok(out)
}
