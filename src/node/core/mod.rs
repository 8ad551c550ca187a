//! NodeCore: every decision a node takes, as a sans-IO state machine (what
//! `quinn-proto`'s `Connection` is to a QUIC connection). See
//! `docs/architecture.md`.
//!
//! Inputs are `handle_*(…, now)` calls, outputs are `poll_command()` and
//! `poll_timeout()`. It reads no clock ([`Now`] is given), draws its
//! randomness from the seeded RNG its caller gives, and does no I/O: dials,
//! sends, files, registry requests and FIB snapshots are [`Command`]s.
//!
//! - [`boundary`]: what crosses between NodeCore and the packet loop
//!   ([`TunnelEvent`] in, [`TunnelCmd`] out).
//! - [`command`]: NodeCore's outputs to the control loop and its other
//!   inputs (clocks, registry answers).

pub mod boundary;
pub mod command;

pub use boundary::{ConnId, DialError, Handshake, NextHopId, TunnelCmd, TunnelEvent, TunnelId};
pub use command::{Command, LanNotice, Now, PeerChange, RegistryReply, RegistryRequest};
