//! The control API of a running node: a Unix socket in its state directory
//! (mode 0600) answering `re6st status/peers/tunnels/routes [--json]`, and
//! optional Prometheus metrics on a loopback address.
//!
//! - [`api`]: the request and response types (the JSON), shared by both ends.
//! - [`server`]: the node side (views of a [`crate::node::NodeHandle`]).
//! - [`metrics`]: the Prometheus exposition and its HTTP listener.
//! - [`table`]: the text views the CLI prints.
//! - [`client`]: the CLI side.

pub mod api;
pub mod client;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod server;
pub mod table;

pub use client::{ClientArgs, Query, query, run};
