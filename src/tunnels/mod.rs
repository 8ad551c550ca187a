//! Tunnel management: the sans-IO policy shared with the simulator, and the
//! async driver that applies it to QUIC connections.

pub mod driver;
pub mod policy;

// Part of the API is for the node's driver (issue 7), which is not written
// yet; the simulator uses the rest.
#[allow(unused_imports)]
pub use policy::{
    Action, CloseReason, ConfigError, Direction, Failure, PeerId, Policy, PolicyConfig,
    PolicyStats, Refusal, Replacement, TunnelId, TunnelInfo, TunnelState,
};
