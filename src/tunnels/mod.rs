//! Tunnel management: the sans-IO policy shared with the simulator, and the
//! async driver that applies it to QUIC connections.
