//! re6st-rs library: the parts of the `re6st` binary that other parts and
//! the integration tests reuse.
//!
//! - [`identity`]: keys, certificates, CRL, signed network configuration,
//!   signed peer announcements, mutual-TLS configurations.
//! - [`state_dir`]: the files of a node's state directory.
//! - [`registry`]: the registry server, its store, allocator, API types and
//!   the client nodes use.
//! - [`join`]: `re6st join`.
//! - [`addresses`]: which UDP addresses a node announces (address discovery).
//! - [`gateway`]: the gateway role (prefixes outside the overlay).
//! - [`lan`]: LAN discovery (signed multicast beacons, direct LAN links).
//! - [`upnp`]: UPnP IGD port mapping (map, renew, remove).
//! - [`transport`]: the QUIC endpoint (mutual TLS, datagrams, control
//!   stream) that carries every tunnel.
//! - [`tunnels`]: the sans-IO tunnel policy (shared with `re6st sim`) and
//!   the driver that applies it.
//! - [`peers`]: the peer DB and peer exchange over the overlay.
//! - [`node`]: `re6st node`, as a library [`node::Node`] that tests run
//!   many of in one process.
//! - [`control`]: a running node's control socket, metrics and CLI.
//! - [`netns`]: network namespaces and processes for the demo and the
//!   real-network tests.
//! - [`vnet`]: the virtual-time network: many NodeCores over a simulated
//!   transport.

#![warn(missing_docs)]

pub mod addresses;
pub mod control;
pub mod gateway;
pub mod identity;
pub mod join;
pub mod lan;
pub mod netns;
pub mod node;
pub mod peers;
pub mod registry;
pub mod state_dir;
#[doc(hidden)]
pub mod test_pki;
pub mod transport;
pub mod tunnels;
pub mod upnp;
pub mod vnet;
