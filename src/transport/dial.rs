//! One dial: the addresses of one peer, tried in turn until one answers
//! as that peer. The QUIC and TCP engines share it; they differ only in how
//! they connect to an address.
//!
//! A dial ends in one of two ways: a connection to the peer (the engine
//! removes the dial), or no address left, and then [`Dial::failure`] says
//! why: another node answered at one of the addresses (the peer-DB entry is
//! stale), or the last attempt's error.

use std::net::{Ipv6Addr, SocketAddr};

use crate::identity::NodeCert;
use crate::node::core::boundary::DialError;

/// A dial in progress; `H` is the engine's handle of a connection.
#[derive(Debug)]
pub(crate) struct Dial<H> {
    /// The overlay address of the node dialled.
    pub peer: Ipv6Addr,
    addresses: Vec<SocketAddr>,
    next: usize,
    /// The connection trying the current address.
    pub conn: Option<H>,
    /// Another node's certificate answered at this address.
    other: Option<(SocketAddr, Box<NodeCert>)>,
    /// The last failure, for the report.
    last: Option<String>,
}

impl<H> Dial<H> {
    /// A dial of `peer` at `addresses`, in that order.
    pub fn new(peer: Ipv6Addr, addresses: Vec<SocketAddr>) -> Self {
        Self {
            peer,
            addresses,
            next: 0,
            conn: None,
            other: None,
            last: None,
        }
    }

    /// The next address to try, if any is left (the dial moves past it).
    pub fn next_address(&mut self) -> Option<SocketAddr> {
        let addr = *self.addresses.get(self.next)?;
        self.next += 1;
        Some(addr)
    }

    /// The current attempt failed for `why`: the report of the dial says
    /// so if no later attempt does better.
    pub fn attempt_failed(&mut self, why: String) {
        self.last = Some(why);
        self.conn = None;
    }

    /// Checks the certificate that answered at `at` (`Err`: it failed the
    /// CA or CRL check, with why). The peer's own is handed back; for any
    /// other, the attempt fails and the reason to close the connection
    /// with is returned. A valid certificate of another node is kept: if no
    /// address answers as the peer, the dial reports that node.
    pub fn check_peer(
        &mut self,
        at: SocketAddr,
        answered: Result<NodeCert, String>,
    ) -> Result<NodeCert, String> {
        let why = match answered {
            Ok(p) if p.address == self.peer => return Ok(p),
            Ok(p) => {
                let why = format!("expected {}, got {} ({})", self.peer, p.address, p.prefix);
                self.other.get_or_insert((at, Box::new(p)));
                why
            }
            Err(why) => format!("wrong peer: {why}"),
        };
        self.attempt_failed(why.clone());
        Err(why)
    }

    /// Why the dial failed, once no address is left; `transport` names
    /// the transport in the reasons ("" for the default, QUIC).
    pub fn failure(&self, transport: &str) -> DialError {
        let tag = |s: String| match transport {
            "" => s,
            t => format!("{t}: {s}"),
        };
        // Another node at one address, nothing of the one dialled at the
        // others: it is gone from there.
        match &self.other {
            Some((addr, found)) => DialError {
                answered_by: Some(found.clone()),
                ..DialError::unreachable(tag(format!(
                    "{addr} is now {} ({}), not {}",
                    found.address, found.prefix, self.peer
                )))
            },
            None => DialError::unreachable(tag(self
                .last
                .clone()
                .unwrap_or_else(|| format!("no usable address among {:?}", self.addresses)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_pki::Pki;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn addresses_are_tried_in_order_then_the_last_error_is_reported() {
        let mut d: Dial<u32> = Dial::new("fd00::2".parse().unwrap(), vec![addr(1), addr(2)]);
        assert_eq!(d.next_address(), Some(addr(1)));
        d.conn = Some(7);
        d.attempt_failed("no answer".into());
        assert_eq!(d.conn, None);
        assert_eq!(d.next_address(), Some(addr(2)));
        d.attempt_failed("reset".into());
        assert_eq!(d.next_address(), None);
        let e = d.failure("TCP");
        assert_eq!(e.reason, "TCP: reset");
        assert!(e.answered_by.is_none());
        let none: Dial<u32> = Dial::new("fd00::2".parse().unwrap(), vec![]);
        assert_eq!(none.failure("").reason, "no usable address among []");
    }

    #[test]
    fn another_node_answering_is_reported_over_later_errors() {
        let pki = Pki::new();
        let (me, other) = (pki.node(2).0, pki.node(3).0);
        let mut d: Dial<u32> = Dial::new(me.address, vec![addr(1), addr(2)]);
        d.next_address();
        let why = d.check_peer(addr(1), Ok(other.clone())).unwrap_err();
        assert!(why.starts_with("expected "), "{why}");
        d.next_address();
        assert_eq!(
            d.check_peer(addr(2), Err("revoked".into())),
            Err("wrong peer: revoked".into())
        );
        let e = d.failure("");
        assert_eq!(e.answered_by.as_deref(), Some(&other));
        assert!(e.reason.starts_with("127.0.0.1:1 is now "), "{}", e.reason);
        // The peer's own certificate is handed back.
        assert_eq!(d.check_peer(addr(2), Ok(me.clone())), Ok(me));
    }
}
