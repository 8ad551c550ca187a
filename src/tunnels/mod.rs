//! Tunnel management: the sans-IO policy shared with the simulator, and the
//! async driver that applies it to QUIC connections.

pub mod policy;

pub use policy::{
    Action, CloseReason, ConfigError, Direction, Failure, PeerId, Policy, PolicyConfig,
    PolicyStats, Refusal, Replacement, TunnelId, TunnelInfo, TunnelState,
};
