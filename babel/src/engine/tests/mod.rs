//! Behaviour tests at the message level (RFC 8966 behaviours, one by one):
//! each drives one engine with decoded messages and inspects what it
//! decides to send. This file holds the helpers; the tests are grouped in
//! `neighbours` (Hello, IHU, RTT, link state), `routes` (updates,
//! feasibility, selection, expiry, retractions), `requests` (route and
//! seqno requests, starvation), `seqno` (our own seqno: echoes, requests,
//! catching up after a restart) and `limits` (every table's bound, flooded).

mod limits;
mod neighbours;
mod origin;
mod requests;
mod routes;
mod seqno;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::output::Outgoing;
use super::{Config, Engine, IfaceId, InterfaceKind, NoOriginAuth, OriginAuth, RouteInfo};
use crate::wire::{
    HelloRepr, IhuRepr, IhuTimestamp, Message, RouterId, SeqnoRequestRepr, UpdateRepr,
};

pub(super) const ME: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 1]);
pub(super) const SRC: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0x55]);
pub(super) const SRC2: RouterId = RouterId([0, 0, 0, 0, 0, 0, 0, 0x66]);
pub(super) const T1: IfaceId = IfaceId(1);
pub(super) const T2: IfaceId = IfaceId(2);
pub(super) const LAN: IfaceId = IfaceId(9);

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
pub(super) fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}
pub(super) fn pfx(s: &str) -> IpNet {
    s.parse().unwrap()
}
pub(super) fn p1() -> IpNet {
    pfx("fd00:1::/64")
}

pub(super) fn hello(seqno: u16, ts: Option<u32>) -> Message {
    Message::Hello(HelloRepr {
        unicast: false,
        seqno,
        interval: secs(4),
        timestamp: ts,
    })
}
pub(super) fn ihu(rxcost: u16) -> Message {
    Message::Ihu(IhuRepr {
        rxcost,
        interval: secs(12),
        address: None,
        timestamp: None,
    })
}
pub(super) fn update(prefix: IpNet, rid: RouterId, seqno: u16, metric: u16) -> Message {
    Message::Update(UpdateRepr {
        prefix: Some(prefix),
        interval: secs(16),
        seqno,
        metric,
        router_id: Some(rid),
        next_hop: None,
        proof: None,
    })
}
pub(super) fn seqno_request(prefix: IpNet, rid: RouterId, seqno: u16, hop_count: u8) -> Message {
    Message::SeqnoRequest(SeqnoRequestRepr {
        prefix,
        seqno,
        hop_count,
        router_id: rid,
    })
}

pub(super) struct T<A: OriginAuth = NoOriginAuth> {
    pub(super) e: Engine<A>,
    pub(super) now: Instant,
}

impl T {
    pub(super) fn new() -> T {
        T::with_auth(NoOriginAuth)
    }

    /// Tunnels T1, T2, ... (ids 1..=n), each with a neighbour fe80::2,
    /// fe80::3, ... that has sent Hello + IHU.
    pub(super) fn tunnels(n: u32) -> T {
        let mut t = T::new();
        for i in 1..=n {
            t.tunnel(IfaceId(i), &format!("fe80::{}", i + 1));
        }
        t
    }
}

impl<A: OriginAuth> T<A> {
    /// An engine (router-id `ME`, seqno 100) checking origins with `auth`.
    pub(super) fn with_auth(auth: A) -> T<A> {
        let now = Instant::now();
        T {
            e: Engine::with_origin_auth(auth, Config::default(), ME, 100, now).unwrap(),
            now,
        }
    }

    /// A tunnel with a neighbour that has sent Hello + IHU.
    pub(super) fn tunnel(&mut self, id: IfaceId, peer: &str) {
        self.e
            .add_interface(id, InterfaceKind::Tunnel, 1400, self.now)
            .unwrap();
        self.rx(id, peer, &[hello(1, None), ihu(96)]);
    }

    pub(super) fn rx(&mut self, iface: IfaceId, from: &str, msgs: &[Message]) {
        self.e.handle_messages(iface, addr(from), msgs, self.now);
    }

    pub(super) fn advance(&mut self, d: Duration) {
        self.now += d;
        self.e.handle_timeout(self.now);
    }

    /// Everything sent within `d` (timers run), grouped per destination.
    pub(super) fn drain_for(&mut self, d: Duration) -> Vec<Outgoing> {
        let end = self.now + d;
        let mut out = Vec::new();
        loop {
            while let Some(o) = self.e.poll_messages(self.now) {
                out.push(o);
            }
            match self.e.poll_timeout() {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.e.handle_timeout(self.now);
                }
                _ => break,
            }
        }
        self.now = end;
        out
    }

    /// Brings tunnel `T1` up and returns, 60 ms after our first Hello left
    /// (1 ms in), the neighbour's IHU echoing that Hello's timestamp. Sent
    /// with `hello(1, Some(5_010_000))` (the neighbour held our Hello for
    /// 10 ms), it gives a 51 ms sample: 102 ms for a new neighbour.
    pub(super) fn tunnel_with_timestamped_ihu(&mut self) -> Message {
        self.e
            .add_interface(T1, InterfaceKind::Tunnel, 1400, self.now)
            .unwrap();
        let origin = self
            .sent(ms(1))
            .iter()
            .find_map(|(_, _, m)| match m {
                Message::Hello(h) => h.timestamp,
                _ => None,
            })
            .unwrap();
        self.now += ms(60);
        Message::Ihu(IhuRepr {
            rxcost: 96,
            interval: secs(12),
            address: None,
            timestamp: Some(IhuTimestamp {
                origin,
                receive: 5_000_000,
            }),
        })
    }

    pub(super) fn sent(&mut self, d: Duration) -> Vec<(IfaceId, Option<IpAddr>, Message)> {
        self.drain_for(d)
            .into_iter()
            .flat_map(|o| o.messages.into_iter().map(move |m| (o.iface, o.dst, m)))
            .collect()
    }

    pub(super) fn selected(&self, p: IpNet) -> Option<RouteInfo> {
        self.e
            .routes(self.now)
            .into_iter()
            .find(|r| r.prefix == p && r.selected && !r.local)
    }
}

pub(super) fn updates_for(
    sent: &[(IfaceId, Option<IpAddr>, Message)],
    p: IpNet,
) -> Vec<(IfaceId, UpdateRepr)> {
    sent.iter()
        .filter_map(|(i, _, m)| match m {
            Message::Update(u) if u.prefix == Some(p) => Some((*i, u.clone())),
            _ => None,
        })
        .collect()
}

pub(super) fn seqno_requests(
    sent: &[(IfaceId, Option<IpAddr>, Message)],
) -> Vec<(IfaceId, Option<IpAddr>, SeqnoRequestRepr)> {
    sent.iter()
        .filter_map(|(i, d, m)| match m {
            Message::SeqnoRequest(r) => Some((*i, *d, *r)),
            _ => None,
        })
        .collect()
}
