//! A stateful target: one [`Engine`] driven by a sequence of inputs the
//! fuzzer chooses (packets built from messages it picks, raw bytes, clock
//! steps from milliseconds to weeks, interfaces coming and going, costs,
//! budgets, our own prefixes, reconfiguration), checked after every step.
//! The input's first byte picks the origin policy: plain Babel, or a
//! policy the fuzzer steers (proofs good or bad, origins distrusted and
//! routes rechecked).
//!
//! The checks: nothing panics; every packet the engine sends parses with
//! our own decoder and fits its interface's budget; the timers settle
//! (no deadline that stays in the past); the FIB only names interfaces
//! that exist, never holds an unreachable route or one of our own
//! prefixes; selected routes are finite; no route of a distrusted origin
//! survives.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

use ipnet::IpNet;

use crate::engine::{
    Claim, Config, Engine, IfaceId, InterfaceKind, MIN_BUDGET, NoOriginAuth, OriginAuth, Rejection,
    Sender, Verdict,
};
use crate::wire::{
    AckRepr, AckRequestRepr, BuildError, HelloRepr, INFINITY, IhuRepr, IhuTimestamp, Message,
    OriginProof, PacketBuilder, RouteRequestRepr, RouterId, SeqnoRequestRepr, UpdateRepr,
    parse_packet,
};

/// Our router-id.
const OURS: RouterId = RouterId([2, 0, 0, 0, 0, 0, 0, 1]);
/// Router-ids the messages use: ours, two others, and the two reserved.
const ROUTER_IDS: [RouterId; 5] = [
    OURS,
    RouterId([2, 0, 0, 0, 0, 0, 0, 2]),
    RouterId([2, 0, 0, 0, 0, 0, 0, 3]),
    RouterId([0; 8]),
    RouterId([0xFF; 8]),
];
/// Most steps of one input (keeps every run short).
const MAX_STEPS: usize = 256;
/// The first byte of every proof [`FuzzAuth`] accepts.
const GOOD_PROOF: u8 = 0xBA;

/// An origin policy the fuzzer steers: a distrusted router-id is
/// rejected; a proof is good when it starts with [`GOOD_PROOF`], bad
/// otherwise; a claim without a proof is valid at an even seqno and needs
/// one at an odd seqno.
#[derive(Default)]
struct FuzzAuth {
    distrusted: BTreeSet<RouterId>,
}

impl OriginAuth for FuzzAuth {
    fn check(
        &mut self,
        claim: &Claim,
        proof: Option<&OriginProof>,
        _: Sender,
        now: Instant,
    ) -> Verdict {
        if !self.holds(claim, now) {
            return Verdict::Rejected(Rejection::NotAuthorised);
        }
        match proof {
            Some(p) if p.as_bytes()[0] == GOOD_PROOF => Verdict::Valid,
            Some(_) => Verdict::Rejected(Rejection::BadProof),
            None if claim.seqno.is_multiple_of(2) => Verdict::Valid,
            None => Verdict::NeedProof,
        }
    }

    fn holds(&mut self, claim: &Claim, _: Instant) -> bool {
        !self.distrusted.contains(&claim.router_id)
    }

    fn proof(&mut self, claim: &Claim, _: Instant) -> Option<OriginProof> {
        OriginProof::new(&[GOOD_PROOF, claim.seqno as u8])
    }
}

/// Reads the fuzzer's bytes; zeros once they run out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    fn done(&self) -> bool {
        self.0.is_empty()
    }

    fn prefix(&mut self) -> IpNet {
        const PREFIXES: [&str; 8] = [
            "fd00:a::/64", // ours
            "fd00:b::/64",
            "fd00:b::/48",
            "fd00:b:0:1::/64",
            "::/0",
            "2001:db8::/32",
            "10.0.0.0/8",
            "0.0.0.0/0",
        ];
        PREFIXES[usize::from(self.u8()) % PREFIXES.len()]
            .parse()
            .expect("a valid prefix")
    }

    fn address(&mut self) -> IpAddr {
        match self.u8() % 6 {
            0..=3 => IpAddr::V6(Ipv6Addr::new(
                0xfe80,
                0,
                0,
                0,
                0,
                0,
                0,
                u16::from(self.u8() % 4) + 1,
            )),
            4 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0xb, 0, 0, 0, 0, 0, 1)),
            _ => IpAddr::V4([10, 0, 0, 1].into()),
        }
    }

    /// None, a good proof, a bad one, or the longest one.
    fn proof(&mut self) -> Option<OriginProof> {
        match self.u8() % 4 {
            0 => None,
            1 => OriginProof::new(&[GOOD_PROOF, self.u8()]),
            2 => OriginProof::new(&[self.u8() & 0x7F]),
            _ => OriginProof::new(&[GOOD_PROOF; OriginProof::MAX_LEN]),
        }
    }

    fn router_id(&mut self) -> RouterId {
        ROUTER_IDS[usize::from(self.u8()) % ROUTER_IDS.len()]
    }

    /// An interval as the wire has them (centiseconds), zero included.
    fn interval(&mut self) -> Duration {
        Duration::from_millis(u64::from(self.u16()) * 10)
    }

    fn metric(&mut self) -> u16 {
        match self.u8() % 5 {
            0 => 0,
            1 => 96,
            2 => INFINITY,
            3 => INFINITY - 1,
            _ => self.u16(),
        }
    }

    fn message(&mut self) -> Message {
        match self.u8() % 7 {
            0 => Message::Hello(HelloRepr {
                unicast: self.u8() & 1 == 1,
                seqno: self.u16(),
                interval: self.interval(),
                timestamp: (self.u8() & 1 == 1).then(|| self.u32()),
            }),
            1 => Message::Ihu(IhuRepr {
                rxcost: self.metric(),
                interval: self.interval(),
                address: (self.u8() & 1 == 1).then(|| self.address()),
                timestamp: (self.u8() & 1 == 1).then(|| IhuTimestamp {
                    origin: self.u32(),
                    receive: self.u32(),
                }),
            }),
            2 => Message::Update(UpdateRepr {
                prefix: (!self.u8().is_multiple_of(8)).then(|| self.prefix()),
                interval: self.interval(),
                seqno: self.u16(),
                metric: self.metric(),
                router_id: (!self.u8().is_multiple_of(8)).then(|| self.router_id()),
                next_hop: self.u8().is_multiple_of(4).then(|| self.address()),
                proof: self.proof(),
            }),
            3 => Message::RouteRequest(RouteRequestRepr {
                prefix: (self.u8() & 1 == 1).then(|| self.prefix()),
                proof_wanted: self.u8() & 1 == 1,
            }),
            4 => Message::SeqnoRequest(SeqnoRequestRepr {
                prefix: self.prefix(),
                seqno: self.u16(),
                hop_count: self.u8(),
                router_id: self.router_id(),
            }),
            5 => Message::AckRequest(AckRequestRepr {
                opaque: self.u16(),
                interval: self.interval(),
            }),
            _ => Message::Ack(AckRepr { opaque: self.u16() }),
        }
    }
}

/// A packet of `n` messages the fuzzer picks (those the builder refuses
/// are left out).
fn packet(input: &mut Input<'_>, n: usize) -> Vec<u8> {
    let mut b = PacketBuilder::new(1400);
    for _ in 0..n {
        let mut m = input.message();
        match b.push(&m) {
            Ok(()) | Err(BuildError::Full | BuildError::TooBig { .. }) => {}
            Err(BuildError::IhuTimestampWithoutHello) => {
                if let Message::Ihu(ihu) = &mut m {
                    ihu.timestamp = None;
                    let _ = b.push(&m);
                }
            }
            Err(_) => {}
        }
    }
    b.finish()
}

/// Runs the engine through the sequence `data` describes.
pub fn engine_sequence(data: &[u8]) {
    let mut input = Input(data);
    let now = Instant::now();
    let checked = input.u8() & 1 == 1;
    let seqno = input.u16();
    if checked {
        if let Ok(engine) =
            Engine::with_origin_auth(FuzzAuth::default(), Config::default(), OURS, seqno, now)
        {
            run(engine, input, now);
        }
    } else if let Ok(engine) =
        Engine::with_origin_auth(NoOriginAuth, Config::default(), OURS, seqno, now)
    {
        run(engine, input, now);
    }
}

/// The origin policy's side of the checks.
trait Policy: OriginAuth {
    /// Whether routes of `id` must be gone.
    fn distrusts(&self, id: RouterId) -> bool;
    /// Distrusts `id` if trusted, trusts it again otherwise.
    fn toggle(&mut self, id: RouterId);
}

impl Policy for NoOriginAuth {
    fn distrusts(&self, _: RouterId) -> bool {
        false
    }

    fn toggle(&mut self, _: RouterId) {}
}

impl Policy for FuzzAuth {
    fn distrusts(&self, id: RouterId) -> bool {
        self.distrusted.contains(&id)
    }

    fn toggle(&mut self, id: RouterId) {
        if !self.distrusted.remove(&id) {
            self.distrusted.insert(id);
        }
    }
}

fn run<A: Policy>(mut engine: Engine<A>, mut input: Input<'_>, mut now: Instant) {
    let mut ours: BTreeSet<IpNet> = BTreeSet::new();
    let own: IpNet = "fd00:a::/64".parse().expect("a valid prefix");
    engine.add_xroute(own, 0, now).expect("a finite metric");
    ours.insert(own);
    let mut ifaces: BTreeMap<IfaceId, usize> = BTreeMap::new();
    let mut last_sent: Vec<u8> = Vec::new();
    for _ in 0..MAX_STEPS {
        if input.done() {
            break;
        }
        let id = IfaceId(u32::from(input.u8() % 4));
        match input.u8() % 13 {
            0 => {
                let kind = if input.u8() & 1 == 0 {
                    InterfaceKind::Tunnel
                } else {
                    InterfaceKind::Lan {
                        address: IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xff)),
                    }
                };
                let budget = MIN_BUDGET + usize::from(input.u16() % 1400);
                if engine.add_interface(id, kind, budget, now).is_ok() {
                    ifaces.insert(id, budget);
                }
            }
            1 => {
                if engine.interface_down(id, now).is_ok() {
                    ifaces.remove(&id);
                }
            }
            2 => now += Duration::from_millis(u64::from(input.u16())),
            3 => now += Duration::from_secs(u64::from(input.u16()) * 60),
            4 => {
                let len = usize::from(input.u8());
                let from = input.address();
                let bytes = input.bytes(len).to_vec();
                engine.handle_packet(id, from, &bytes, now);
            }
            5..=7 => {
                let n = 1 + usize::from(input.u8() % 8);
                let from = input.address();
                let bytes = packet(&mut input, n);
                engine.handle_packet(id, from, &bytes, now);
            }
            8 => {
                let extra = input.u16();
                let _ = engine.set_interface_cost(id, extra, now);
            }
            9 => {
                let prefix = input.prefix();
                let metric = input.metric();
                if input.u8() & 1 == 0 {
                    if engine.add_xroute(prefix, metric, now).is_ok() {
                        ours.insert(prefix.trunc());
                    }
                } else {
                    engine.remove_xroute(prefix, now);
                    ours.remove(&prefix.trunc());
                }
            }
            10 => {
                let budget = MIN_BUDGET.saturating_sub(8) + usize::from(input.u16() % 1400);
                if engine.set_interface_budget(id, budget).is_ok() {
                    ifaces.insert(id, budget);
                }
            }
            11 => {
                let config = Config {
                    hello_interval: input.interval(),
                    ihu_interval: input.interval(),
                    update_interval: input.interval(),
                    ..engine.config().clone()
                };
                let _ = engine.reconfigure(config, now);
            }
            _ => match input.u8() % 4 {
                0 => {
                    // Our own packet comes back (a loop in the network).
                    let from = input.address();
                    engine.handle_packet(id, from, &last_sent, now);
                }
                1 => {
                    engine.retract_all(now);
                    ours.clear();
                }
                2 => {
                    // A certificate revoked (or restored) at the caller.
                    let origin = input.router_id();
                    engine.origin_auth_mut().toggle(origin);
                    engine.recheck_origins(now);
                }
                _ => {
                    let prefix = input.prefix();
                    engine.request_proof(id, prefix, now);
                }
            },
        }
        settle(&mut engine, now, &ifaces, &mut last_sent);
        check(&engine, now, &ifaces, &ours);
    }
}

/// Runs the timers that are due and drains every output.
fn settle<A: OriginAuth>(
    engine: &mut Engine<A>,
    now: Instant,
    ifaces: &BTreeMap<IfaceId, usize>,
    last_sent: &mut Vec<u8>,
) {
    for round in 0.. {
        assert!(
            round < 64,
            "the timers do not settle: a deadline stays in the past"
        );
        if engine.poll_timeout().is_some_and(|t| t <= now) {
            engine.handle_timeout(now);
        }
        let mut sent = 0;
        while let Some(t) = engine.poll_transmit(now) {
            sent += 1;
            assert!(sent < 100_000, "poll_transmit does not run dry");
            let budget = ifaces
                .get(&t.iface)
                .unwrap_or_else(|| panic!("a packet for interface {} that is gone", t.iface));
            assert!(
                t.bytes.len() <= *budget,
                "a packet of {} bytes on an interface whose budget is {budget}",
                t.bytes.len()
            );
            let packet = parse_packet(&t.bytes).expect("the engine sent a packet we cannot parse");
            for m in packet.messages() {
                m.expect("the engine sent a message we cannot parse");
            }
            *last_sent = t.bytes;
        }
        let mut events = 0;
        while engine.poll_event().is_some() {
            events += 1;
            assert!(events < 1000, "poll_event does not run dry");
        }
        if engine.poll_timeout().is_none_or(|t| t > now) {
            break;
        }
    }
}

/// The invariants of the tables.
fn check<A: Policy>(
    engine: &Engine<A>,
    now: Instant,
    ifaces: &BTreeMap<IfaceId, usize>,
    ours: &BTreeSet<IpNet>,
) {
    for f in engine.fib() {
        assert!(
            ifaces.contains_key(&f.iface),
            "FIB route via a gone interface: {f:?}"
        );
        assert!(
            !ours.contains(&f.prefix),
            "one of our own prefixes in the FIB: {f:?}"
        );
    }
    for r in engine.routes(now) {
        assert!(
            r.local || r.metric == INFINITY || !engine.origin_auth().distrusts(r.router_id),
            "a route of a distrusted origin: {r:?}"
        );
        if r.selected && !r.local {
            assert!(
                r.metric < INFINITY,
                "a selected route is unreachable: {r:?}"
            );
            assert!(
                r.iface.is_some_and(|i| ifaces.contains_key(&i)),
                "a selected route via a gone interface: {r:?}"
            );
        }
    }
}
