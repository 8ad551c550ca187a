//! The packet path of a re6st node: TUN device, lock-free FIB, IPv6
//! forwarding, ICMPv6 errors and overlay fragmentation.
//!
//! This crate knows nothing of Babel or QUIC: it sees FIB snapshots, a TUN
//! device and next hops behind a small trait that the node implements.
#![warn(missing_docs)]

pub mod fib;
pub mod forward;
pub mod fragment;
pub mod frame;
pub mod icmp;
pub mod nexthop;
pub mod packet;
pub mod ratelimit;
