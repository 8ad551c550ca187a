//! Tunnel management: the sans-IO policy shared with the simulator, and the
//! async driver that applies it to QUIC connections.

pub mod driver;
pub mod policy;

// The node's driver uses part of this API, the simulator the rest.
#[allow(unused_imports)]
pub use policy::{
    Action, CloseReason, ConfigError, Direction, Failure, ParseReplacementError, PeerId, Policy,
    PolicyConfig, PolicyStats, ProbeRound, Refusal, Replacement, TunnelId, TunnelInfo, TunnelState,
};
