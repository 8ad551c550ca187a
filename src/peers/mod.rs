//! Peers: the persistent peer DB and peer exchange over the overlay.
//!
//! - [`db`]: signed announcements of other nodes (SQLite, bounded).
//! - [`wire`]: the peer-exchange message and its IPv6/UDP packet.
//! - [`exchange`]: when to send our announcement, and to whom.

pub mod db;

pub use db::{Inserted, PeerDb, PeerDbConfig, PeerDbError, PeerDbStats, PeerEntry};
pub mod exchange;
pub mod wire;

pub use exchange::{Exchange, ExchangeConfig, ExchangeStats, Round};
pub use wire::{ExchangeError, ExchangeMessage};
