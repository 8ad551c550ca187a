//! NodeCore's unit tests, in virtual time: each decision from hand-made
//! inputs on one node (`tunnels`, `peers`, `registry`, `lan`), nodes of the
//! virtual network for the decisions that take both ends of a tunnel or
//! many nodes (`network`, `refresh`), and any input sequence
//! (`bad_input`).

mod bad_input;
mod lan;
mod network;
mod origin_cost;
mod origins;
mod peers;
mod refresh;
mod registry;
mod rig;
mod rogue;
mod shortcuts;
mod tunnels;
