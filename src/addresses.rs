//! Address discovery: which UDP addresses a node announces to its peers
//! (the `addresses` of its signed [`PeerAnnouncement`]).
//!
//! A node learns candidates from four sources and announces, in this
//! order, only those that work:
//!
//! 1. **configured** by hand (`--advertise`): announced as given, first;
//!    the operator knows best (a port forward, a public address on another
//!    box);
//! 2. **UPnP**: the external address of the port mapping our router granted
//!    ([`crate::upnp`]); the router vouches for it;
//! 3. **local** interface addresses with the bound port (only the bound
//!    address when the socket is bound to one: `--listen` is configuration
//!    too, announced whatever its scope), if the address is routable: no loopback, link-local, multicast, documentation or other
//!    special-purpose ones, none inside the overlay itself (a tunnel inside
//!    a tunnel), and no private ones (RFC 1918, CGNAT, ULA, 198.18/15)
//!    unless the operator says which private networks every node can reach
//!    ([`AddressConfig::routable`], e.g. a corporate 10.0.0.0/8). Addresses
//!    at which peers did reach us (an incoming tunnel arrived there) come
//!    before the others; IPv6 before IPv4 (no NAT on the way);
//! 4. **observed**: the address peers report seeing us from. When it is not
//!    one of ours, a NAT is in the way: such an address is *never*
//!    announced (a NAT drops what we did not ask for), it only tells the
//!    operator that the node is behind NAT.
//!
//! A node with nothing to announce is not reachable: it dials out only (the
//! tunnel policy still opens its k outgoing tunnels, and QUIC keep-alives
//! hold its NAT mappings open) and sends no announcement at all, so no peer
//! wastes dials on it.
//!
//! Sans-IO: the node feeds interface scans, UPnP changes, observed and
//! reached addresses in, with the time, and asks for the list.
//!
//! [`PeerAnnouncement`]: crate::identity::PeerAnnouncement

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use ipnet::{IpNet, Ipv6Net};

use crate::identity::MAX_ADDRESSES;

/// How far an address can be reached, as far as we can tell from the
/// address alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Globally routable unicast.
    Global,
    /// Routable only inside some private network (RFC 1918, CGNAT
    /// 100.64/10, benchmarking 198.18/15, IPv6 ULA fc00::/7, ...).
    Private,
    /// Never worth announcing: loopback, link-local, multicast, broadcast,
    /// unspecified, documentation, reserved, IPv4-mapped, or an address of
    /// the overlay itself.
    Unusable,
}

/// The scope of `ip` for a node of the overlay `overlay`.
pub fn scope(ip: IpAddr, overlay: Option<Ipv6Net>) -> Scope {
    match ip {
        IpAddr::V4(v4) => scope_v4(v4),
        IpAddr::V6(v6) => {
            if v6.to_ipv4_mapped().is_some() {
                // An IPv4 address written for a dual-stack socket: the
                // IPv4 form is the one to announce ([`canonical`]).
                return Scope::Unusable;
            }
            if overlay.is_some_and(|n| n.contains(&v6)) {
                return Scope::Unusable;
            }
            scope_v6(v6)
        }
    }
}

fn scope_v4(ip: Ipv4Addr) -> Scope {
    let o = ip.octets();
    let unusable = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || o[0] >= 240 // reserved
        || (o[0] == 192 && o[1] == 0 && o[2] == 0); // IETF protocol assignments
    if unusable {
        Scope::Unusable
    } else if ip.is_private()
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // CGNAT 100.64/10
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
    // benchmarking 198.18/15
    {
        Scope::Private
    } else {
        Scope::Global
    }
}

fn scope_v6(ip: Ipv6Addr) -> Scope {
    let s = ip.segments();
    let unusable = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || ip.is_unicast_link_local()
        || (s[0] & 0xffc0) == 0xfec0 // deprecated site-local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only 100::/64
        || s[0] == 0 // ::/16: unspecified, loopback, IPv4-compatible/-mapped
        || (s[0] == 0x0064 && s[1] == 0xff9b); // NAT64: not ours to announce
    if unusable {
        Scope::Unusable
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Scope::Private // ULA fc00::/7
    } else if (s[0] & 0xe000) == 0x2000 {
        Scope::Global // 2000::/3 global unicast
    } else {
        Scope::Unusable // not allocated for unicast
    }
}

/// Settings of address discovery.
#[derive(Debug, Clone, Default)]
pub struct AddressConfig {
    /// Addresses announced as given, first (`--advertise`).
    pub configured: Vec<SocketAddr>,
    /// Private networks that every node of the overlay can reach, whose
    /// addresses are announced like global ones (`--routable`), e.g. a
    /// company's 10.0.0.0/8 or a lab's fd00:1::/64.
    pub routable: Vec<IpNet>,
    /// The overlay network: its addresses are never underlay addresses.
    pub overlay: Option<Ipv6Net>,
}

/// Where a candidate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Configured by hand.
    Configured,
    /// The external side of our UPnP port mapping.
    Upnp,
    /// An address of a local interface with our port.
    Local,
    /// How a peer saw us (not announced unless it is also local).
    Observed,
}

/// One candidate address and what we know about it (`re6st status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// The UDP address.
    pub addr: SocketAddr,
    /// Where we learnt it.
    pub source: Source,
    /// Whether it is in the announcement.
    pub announced: bool,
    /// Why not, when it is not.
    pub reason: Option<&'static str>,
}

/// How long an address where a peer reached us stays "proven".
pub const REACHED_TTL: Duration = Duration::from_secs(3600);
/// How long an observed address is remembered.
pub const OBSERVED_TTL: Duration = Duration::from_secs(600);
/// Observed addresses kept (the most recent ones).
const MAX_OBSERVED: usize = 8;

/// The address book of one node: candidates in, announcement out.
#[derive(Debug, Clone)]
pub struct Addresses {
    config: AddressConfig,
    /// The bound UDP socket: port, and which families it serves.
    bound: SocketAddr,
    local: Vec<IpAddr>,
    upnp: Option<SocketAddr>,
    observed: Vec<(SocketAddr, Instant)>,
    reached: Vec<(IpAddr, Instant)>,
}

impl Addresses {
    /// An empty book for a socket bound to `bound` (`[::]:port` serves
    /// both families, `0.0.0.0:port` IPv4 only, a specific address only
    /// itself).
    pub fn new(config: AddressConfig, bound: SocketAddr) -> Self {
        let mut a = Self {
            config,
            bound,
            local: Vec::new(),
            upnp: None,
            observed: Vec::new(),
            reached: Vec::new(),
        };
        if !bound.ip().is_unspecified() {
            a.local = vec![bound.ip()];
        }
        a
    }

    /// The settings.
    pub fn config(&self) -> &AddressConfig {
        &self.config
    }

    /// Replaces the local interface addresses (a fresh scan). Ignored when
    /// the socket is bound to one address. Returns whether they changed.
    pub fn set_local(&mut self, ips: impl IntoIterator<Item = IpAddr>) -> bool {
        if !self.bound.ip().is_unspecified() {
            return false;
        }
        let mut ips: Vec<IpAddr> = ips
            .into_iter()
            .map(canonical_ip)
            .filter(|ip| self.serves(*ip))
            .collect();
        ips.sort();
        ips.dedup();
        let changed = ips != self.local;
        self.local = ips;
        changed
    }

    /// Sets or clears the UPnP-mapped external address. Returns whether it
    /// changed.
    pub fn set_upnp(&mut self, external: Option<SocketAddr>) -> bool {
        let changed = self.upnp != external;
        self.upnp = external;
        changed
    }

    /// A peer told us it sees us at `addr` (the `observed` of a tunnel
    /// handshake).
    pub fn handle_observed(&mut self, addr: SocketAddr, now: Instant) {
        let addr = canonical(addr);
        self.observed.retain(|(a, _)| *a != addr);
        self.observed.push((addr, now));
        if self.observed.len() > MAX_OBSERVED {
            self.observed.remove(0);
        }
    }

    /// A peer reached us at our local address `ip` (an incoming tunnel
    /// arrived there): proof that it works.
    pub fn handle_reached(&mut self, ip: IpAddr, now: Instant) {
        let ip = canonical_ip(ip);
        self.reached.retain(|(a, _)| *a != ip);
        self.reached.push((ip, now));
        if self.reached.len() > MAX_ADDRESSES {
            self.reached.remove(0);
        }
    }

    /// Forgets what is too old.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.observed
            .retain(|(_, t)| now.saturating_duration_since(*t) < OBSERVED_TTL);
        self.reached
            .retain(|(_, t)| now.saturating_duration_since(*t) < REACHED_TTL);
    }

    /// Whether the socket can send from/receive at `ip`.
    fn serves(&self, ip: IpAddr) -> bool {
        match (self.bound, ip) {
            (SocketAddr::V6(b), _) if b.ip().is_unspecified() => true,
            (SocketAddr::V4(b), IpAddr::V4(_)) if b.ip().is_unspecified() => true,
            (b, ip) => b.ip() == ip,
        }
    }

    /// Whether an automatically found address may be announced, and if
    /// not, why.
    fn judge(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.config.routable.iter().any(|n| n.contains(&ip)) {
            return Ok(());
        }
        match scope(ip, self.config.overlay) {
            Scope::Global => Ok(()),
            Scope::Private => Err("private address (add its network with --routable)"),
            Scope::Unusable => Err("not routable (loopback, link-local, overlay, ...)"),
        }
    }

    fn is_local(&self, ip: IpAddr) -> bool {
        self.local.contains(&canonical_ip(ip))
    }

    fn reached_at(&self, ip: IpAddr) -> bool {
        self.reached.iter().any(|(a, _)| *a == ip)
    }

    /// Every candidate with its verdict, in announcement order first.
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = Vec::new();
        let mut push = |addr: SocketAddr, source, verdict: Result<(), &'static str>| {
            if out.iter().any(|c| c.addr == addr) {
                return;
            }
            let verdict = if addr.port() == 0 {
                Err("port 0")
            } else {
                verdict
            };
            out.push(Candidate {
                addr,
                source,
                announced: verdict.is_ok(),
                reason: verdict.err(),
            });
        };
        for a in &self.config.configured {
            push(*a, Source::Configured, Ok(()));
        }
        if let Some(u) = self.upnp {
            push(u, Source::Upnp, self.judge(u.ip()));
        }
        // Locals: reached first, then IPv6 before IPv4, then by address.
        let mut local: Vec<IpAddr> = self.local.clone();
        local.sort_by_key(|ip| (!self.reached_at(*ip), ip.is_ipv4(), *ip));
        for ip in local {
            // A socket bound to one address is the operator's choice
            // (`--listen`), announced whatever its scope.
            let verdict = if ip == self.bound.ip() {
                Ok(())
            } else {
                self.judge(ip)
            };
            push(
                SocketAddr::new(ip, self.bound.port()),
                Source::Local,
                verdict,
            );
        }
        let mut observed: Vec<_> = self.observed.iter().rev().map(|(a, _)| *a).collect();
        observed.dedup();
        for a in observed {
            let verdict = if self.is_local(a.ip()) && a.port() == self.bound.port() {
                self.judge(a.ip())
            } else {
                Err("behind NAT: peers cannot dial this")
            };
            push(a, Source::Observed, verdict);
        }
        let mut n = 0;
        for c in &mut out {
            if c.announced {
                n += 1;
                if n > MAX_ADDRESSES {
                    c.announced = false;
                    c.reason = Some("more than an announcement holds");
                }
            }
        }
        out
    }

    /// The addresses to announce, best first (at most [`MAX_ADDRESSES`]).
    /// Empty: the node is not reachable and dials out only.
    pub fn announce(&self) -> Vec<SocketAddr> {
        self.candidates()
            .into_iter()
            .filter(|c| c.announced)
            .map(|c| c.addr)
            .collect()
    }

    /// Whether peers see us through a NAT: an observed address that is
    /// neither ours nor our UPnP mapping.
    pub fn behind_nat(&self) -> bool {
        self.observed.iter().any(|(a, _)| {
            !(self.is_local(a.ip()) && a.port() == self.bound.port()) && Some(*a) != self.upnp
        })
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d` (what a dual-stack socket reports).
pub fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(canonical_ip(a.ip()), a.port())
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The addresses of this host's interfaces that are up (one system call;
/// the node rescans now and then, interfaces come and go).
pub fn interface_addresses() -> std::io::Result<Vec<IpAddr>> {
    use getifaddrs::InterfaceFlags;
    Ok(getifaddrs::getifaddrs()?
        .filter(|i| i.flags.contains(InterfaceFlags::UP))
        .filter_map(|i| i.address.ip_addr())
        .collect())
}

#[cfg(test)]
mod tests;
