//! Tunnel management: the sans-IO policy shared with the simulator, and the
//! async driver that applies it to QUIC connections.

pub mod driver;
pub mod policy;

pub use policy::{
    Action, CloseReason, ConfigError, Direction, Failure, ParseReplacementError, PeerId, Policy,
    PolicyConfig, PolicyStats, ProbeRound, Refusal, Replacement, TunnelId, TunnelInfo, TunnelState,
};
