//! Babel (RFC 8966, version 2 wire format) with the RTT extension (RFC 9616).
//!
//! * [`wire`]: zero-copy views and plain `Repr` values for the packet format,
//!   the stateful per-packet decoder and a byte-budgeted packet builder.
//! * [`engine`]: the sans-IO routing engine ([`engine::Engine`]): neighbour,
//!   source, route and request tables, route selection with hysteresis,
//!   triggered and periodic updates, a FIB feed. Its module docs give the
//!   call order and a runnable two-router example.
//! * [`metric`]: seqno arithmetic, link cost and the RTT penalty.
//! * [`describe`]: packets described for people (JSON and tcpdump-like
//!   text), what `re6st babel-dump` prints; [`capture`]: UDP datagrams out
//!   of pcap/pcapng captures; [`fuzzing`]: the fuzz targets' entry points.
//!
//! Nothing in this crate does I/O or reads a clock: bytes and time come in
//! as arguments, bytes and deadlines go out as return values.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod capture;
pub mod describe;
pub mod engine;
pub mod fuzzing;
pub mod metric;
pub mod wire;
