//! Peers: the peer DB, its durable copy, and peer exchange over the
//! overlay.
//!
//! - [`db`]: signed announcements of other nodes (in memory, bounded).
//! - [`store`]: the peer DB's durable copy (SQLite).
//! - [`wire`]: the peer-exchange message and its IPv6/UDP packet.
//! - [`exchange`]: when to send our announcement, and to whom.

pub mod db;
pub mod exchange;
pub mod store;
pub mod wire;

pub use db::{Inserted, PeerChange, PeerDb, PeerDbConfig, PeerDbError, PeerDbStats, PeerEntry};
pub use exchange::{Exchange, ExchangeConfig, ExchangeStats, Received, Round};
pub use store::PeerStore;
pub use wire::{ExchangeError, ExchangeMessage};
