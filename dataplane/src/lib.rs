//! The packet path of a re6st node: TUN device, lock-free FIB, IPv6 and
//! IPv4 forwarding, ICMPv6 and ICMPv4 errors and overlay fragmentation.
//!
//! This crate knows nothing of Babel or QUIC. It sees FIB snapshots
//! ([`fib`]), a TUN device ([`tun`], its only I/O) and next hops behind a
//! small trait ([`nexthop::NextHop`]) that the node implements with QUIC
//! connections. Everything but [`tun`] is sans-IO: time is a `now: Instant`
//! parameter, buffers belong to the caller, and the per-packet path does not
//! allocate (a packet read from the TUN leaves as `Bytes` sliced from the
//! receive buffer).
//!
//! # The node's loops
//!
//! **Routing.** When the Babel engine's selected routes change, the node
//! builds a [`fib::Fib`] (`prefix -> Route::Via(next-hop id)`, its own
//! prefixes `Route::Local`; IPv6 and IPv4 prefixes in one snapshot) and
//! calls [`fib::SharedFib::publish`]. Tunnels
//! coming and going only touch [`nexthop::NextHops`] (`insert`/`remove`),
//! which maps ids (the node's Babel interface ids) to handles.
//!
//! **TUN to tunnels.** Per batch: [`tun::Tun::recv_batch`], load the FIB
//! once, then per packet [`forward::Forwarder::handle_packet`] with
//! [`forward::Ingress::Tun`]:
//! - [`forward::Action::NextHop`]: look the id up in `NextHops` and call
//!   [`fragment::Fragmenter::send`], which sends the packet whole if it fits
//!   the tunnel's datagram size and as fragments otherwise;
//! - [`forward::Action::Tun`]: an ICMP error for the local kernel, write
//!   it back ([`tun::SendBatch`]);
//! - [`forward::Action::Drop`]: nothing (counted in
//!   [`forward::Forwarder::stats`]).
//!
//! Zero copy to QUIC: `handle_packet` works on `RecvBatch::packet_mut(i)`;
//! for a `NextHop` action, once the borrow ends, `RecvBatch::take(i)` is
//! the same packet (trimmed to its IP length) as `Bytes` sliced from the
//! receive buffer, ready for `send_datagram`.
//!
//! **Tunnels to TUN.** Per received datagram, [`frame::demux`]:
//! - `Frame::Ipv6`, `Frame::Ipv4`: `handle_packet` with
//!   [`forward::Ingress::Tunnel`] (Hop Limit or TTL is decremented for
//!   transit), then the same actions;
//! - `Frame::Babel`: to the engine;
//! - `Frame::Fragment`: [`fragment::Reassembler::handle_fragment`]; a
//!   completed datagram is demuxed again (schedule
//!   [`fragment::Reassembler::handle_timeout`] at
//!   [`fragment::Reassembler::poll_timeout`]);
//! - `Frame::Control`: the node's own control frames ([`frame::code`]).
//!
//! # Example
//!
//! ```
//! use std::sync::Mutex;
//! use std::time::Instant;
//! use bytes::Bytes;
//! use ipnet::IpNet;
//! use re6st_dataplane::fib::{Fib, Route, SharedFib};
//! use re6st_dataplane::forward::{Action, ForwardConfig, Forwarder, Ingress};
//! use re6st_dataplane::fragment::{Fragmenter, Reassembler, Sent};
//! use re6st_dataplane::frame::{self, Frame};
//! use re6st_dataplane::icmp::MAX_ERROR_LEN;
//! use re6st_dataplane::nexthop::{NextHop, NextHopError, NextHopId, NextHops};
//!
//! /// A tunnel whose QUIC path still has quinn's initial datagram size.
//! struct Tunnel {
//!     sent: Mutex<Vec<Bytes>>,
//! }
//! impl NextHop for Tunnel {
//!     fn max_datagram_size(&self) -> Option<usize> {
//!         Some(1162)
//!     }
//!     fn send_datagram(&self, datagram: Bytes) -> Result<(), NextHopError> {
//!         self.sent.lock().unwrap().push(datagram);
//!         Ok(())
//!     }
//! }
//!
//! // Routing: one remote /48 through next hop 7, our own /48 local.
//! let net = |s: &str| s.parse::<IpNet>().unwrap();
//! let fib = SharedFib::new(Fib::from_routes([
//!     (net("fd00:2::/48"), Route::Via(NextHopId(7))),
//!     (net("fd00:1::/48"), Route::Local),
//! ]));
//! let hops = NextHops::new();
//! let tunnel = std::sync::Arc::new(Tunnel { sent: Mutex::new(Vec::new()) });
//! hops.insert(NextHopId(7), tunnel.clone());
//!
//! // A 1280-byte packet from the local kernel to fd00:2::1.
//! let mut packet = vec![0u8; 1280];
//! packet[0] = 0x60;
//! packet[4..6].copy_from_slice(&(1280u16 - 40).to_be_bytes());
//! packet[6] = 17; // UDP
//! packet[7] = 64;
//! packet[8..24].copy_from_slice(&"fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
//! packet[24..40].copy_from_slice(&"fd00:2::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
//!
//! let mut forwarder = Forwarder::new(ForwardConfig {
//!     mtu: 1400,
//!     ..ForwardConfig::new("fd00:1::1".parse().unwrap())
//! });
//! let fragmenter = Fragmenter::new(0);
//! let mut icmp = [0u8; MAX_ERROR_LEN];
//! let now = Instant::now();
//! let snapshot = fib.load(); // once per batch
//! match forwarder.handle_packet(&snapshot, Ingress::Tun, &mut packet, &mut icmp, now) {
//!     Action::NextHop(id, bytes) => {
//!         let table = hops.load();
//!         let hop = table.get(id).expect("tunnel of a FIB route");
//!         // 1280 bytes over a 1162-byte datagram: two fragments.
//!         let sent = fragmenter.send(hop, Bytes::copy_from_slice(bytes)).unwrap();
//!         assert_eq!(sent, Sent::Fragments(2));
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//!
//! // The receiving node: demux, reassemble, forward.
//! let mut reassembler = Reassembler::default();
//! let mut whole = None;
//! for datagram in tunnel.sent.lock().unwrap().iter() {
//!     if let Ok(Frame::Fragment(f)) = frame::demux(datagram) {
//!         whole = reassembler.handle_fragment(NextHopId(3), f, now).unwrap().or(whole);
//!     }
//! }
//! let whole = whole.expect("reassembled");
//! assert!(matches!(frame::demux(&whole), Ok(Frame::Ipv6(_))));
//! assert_eq!(&whole[..], &packet[..]);
//! ```
#![warn(missing_docs)]

pub mod fib;
pub mod forward;
pub mod fragment;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod icmp;
pub mod nexthop;
pub mod packet;
pub mod ratelimit;
pub mod tun;
