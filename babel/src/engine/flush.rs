//! Turning due buffers into packets (RFC 8966 §3.7, §4; RFC 9616 §3.1).
//!
//! A buffer becomes one ordered list of messages: the Hello (stamped now),
//! IHUs, then Updates resolved against the current tables and grouped by
//! router-id so that the encoder emits few Router-Id TLVs, then requests.
//! The list is cut into packets of at most the interface budget; a TLV is
//! never split, and a packet carrying a timestamped IHU always carries a
//! Hello too (an unscheduled one if needed), as RFC 9616 requires.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::neighbour::STAMP_MAX_AGE;
use super::origin::{Claim, OriginAuth};
use super::output::{Buffer, Outgoing};
use super::{Engine, IfaceId, Transmit};
use crate::wire::{
    BuildError, HelloRepr, INFINITY, IhuRepr, IhuTimestamp, Message, PacketBuilder, RouterId,
    UpdateRepr,
};

impl<A: OriginAuth> Engine<A> {
    /// Returns the next packet to send, flushing the buffers due at `now`.
    /// Call it until it returns `None` after every `handle_*` call.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        if self.packed.is_empty() {
            self.flush_due(now);
            while self.packed.is_empty() {
                let Some(out) = self.output.ready.pop_front() else {
                    break;
                };
                self.pack(out, now);
            }
        }
        let t = self.packed.pop_front();
        // After the pop: what is left decides whether a flush is still due
        // (a deadline left at "now" would wake the caller for nothing).
        self.timeout = self.next_deadline();
        if t.is_some() {
            self.counters.packets_sent += 1;
        }
        t
    }

    /// The next group of messages, unencoded (tests of the engine logic).
    #[cfg(test)]
    pub(crate) fn poll_messages(&mut self, now: Instant) -> Option<Outgoing> {
        self.flush_due(now);
        let out = self.output.ready.pop_front();
        self.timeout = self.next_deadline();
        out
    }

    /// Resolves every buffer due at `now` into a message list.
    pub(super) fn flush_due(&mut self, now: Instant) {
        for ((iface, dst), buf) in self.output.take_due(now) {
            if !self.interfaces.contains_key(&iface) {
                continue;
            }
            let messages = self.assemble(iface, dst, buf, now);
            if !messages.is_empty() {
                self.output.ready.push_back(Outgoing {
                    iface,
                    dst,
                    messages,
                });
            }
        }
    }

    fn assemble(
        &mut self,
        iface: IfaceId,
        dst: Option<IpAddr>,
        buf: Buffer,
        now: Instant,
    ) -> Vec<Message> {
        let mut out = Vec::new();
        let ts = self.timestamp(now);
        let (hello_interval, ihu_interval) = (self.config.hello_interval, self.config.ihu_interval);
        let Some(ifc) = self.interfaces.get_mut(&iface) else {
            return out;
        };
        if buf.hello && dst.is_none() {
            out.push(Message::Hello(HelloRepr {
                unicast: false,
                seqno: ifc.next_hello_seqno(),
                interval: hello_interval,
                timestamp: Some(ts),
            }));
        }
        let ifc = ifc.clone();
        let params = *ifc.params(&self.config);
        for n in &buf.ihus {
            let Some(nb) = self.neighbours.get(*n).filter(|nb| nb.iface == iface) else {
                continue;
            };
            let stamp = nb
                .hello_stamp
                .filter(|s| now.saturating_duration_since(s.at) < STAMP_MAX_AGE);
            out.push(Message::Ihu(IhuRepr {
                rxcost: nb.rxcost(&params),
                interval: ihu_interval,
                address: ifc.ihu_address(nb.addr),
                timestamp: stamp.map(|s| IhuTimestamp {
                    origin: s.origin,
                    receive: s.receive,
                }),
            }));
        }
        let mut prefixes: BTreeSet<IpNet> = buf.updates;
        if buf.full_dump {
            prefixes.extend(self.xroutes.iter().map(|(p, _)| p));
            prefixes.extend(
                self.routes
                    .iter()
                    .filter(|(_, e)| e.selected().is_some_and(|r| r.metric < INFINITY))
                    .map(|(p, _)| *p),
            );
        }
        let mut updates: Vec<(RouterId, IpNet, Message)> = prefixes
            .into_iter()
            .filter_map(|p| self.update_for(p, iface, now).map(|(rid, m)| (rid, p, m)))
            .collect();
        // Group by router-id (fewer Router-Id TLVs), longer prefixes first
        // within a group as babeld does.
        updates.sort_by(|a, b| {
            (a.0, std::cmp::Reverse(a.1.prefix_len()), a.1).cmp(&(
                b.0,
                std::cmp::Reverse(b.1.prefix_len()),
                b.1,
            ))
        });
        out.extend(updates.into_iter().map(|u| u.2));
        out.extend(buf.messages);
        out
    }

    /// The Update announcing the current state of `prefix` on `iface`, and
    /// the router-id it carries; `None` under split horizon. Announcing a
    /// finite route moves its FD (RFC 8966 §3.7.3).
    fn update_for(
        &mut self,
        prefix: IpNet,
        iface: IfaceId,
        now: Instant,
    ) -> Option<(RouterId, Message)> {
        let interval = self.config.update_interval;
        let split_horizon = self
            .interfaces
            .get(&iface)
            .is_some_and(|i| i.params(&self.config).split_horizon);
        let (rid, seqno, metric) = if let Some(m) = self.xroutes.get(&prefix) {
            self.resend.satisfy(prefix, self.router_id, self.seqno);
            (self.router_id, self.seqno, m)
        } else if let Some(r) = self
            .routes
            .selected(&prefix)
            .filter(|r| r.metric < INFINITY)
        {
            let (rid, seqno, metric) = (r.router_id, r.seqno, r.metric);
            let via = self.neighbours.get(r.neighbour).map(|n| n.iface);
            // Answered once we announce it (even where split horizon
            // keeps this copy from going out).
            self.resend.satisfy(prefix, rid, seqno);
            if split_horizon && via == Some(iface) {
                return None;
            }
            self.sources.update_on_send(prefix, rid, seqno, metric, now);
            (rid, seqno, metric)
        } else {
            (self.router_id, self.seqno, INFINITY)
        };
        let proof = if metric < INFINITY {
            let claim = Claim {
                prefix,
                router_id: rid,
                seqno,
            };
            self.proof_to_send(iface, &claim, now)
        } else {
            // Retracted here: the next finite announcement proves again.
            self.proofs.forget(iface, Some(prefix));
            None
        };
        Some((
            rid,
            Message::Update(UpdateRepr {
                prefix: Some(prefix),
                interval,
                seqno,
                metric,
                router_id: Some(rid),
                next_hop: None,
                proof,
            }),
        ))
    }

    /// Cuts a message list into packets of at most the interface budget.
    fn pack(&mut self, out: Outgoing, now: Instant) {
        let Some(budget) = self.interfaces.get(&out.iface).map(|i| i.budget) else {
            return;
        };
        let mut packets: Vec<Vec<u8>> = Vec::new();
        let mut builder = PacketBuilder::new(budget);
        for mut msg in out.messages {
            // Bounded: at worst a new packet, a Hello, then the message.
            let mut placed = false;
            for _ in 0..4 {
                match builder.push(&msg) {
                    Ok(()) => {
                        placed = true;
                        break;
                    }
                    Err(BuildError::IhuTimestampWithoutHello) => {
                        let hello = self.unscheduled_hello(out.iface, now);
                        if builder.push(&hello).is_err() && !builder.is_empty() {
                            let full = std::mem::replace(&mut builder, PacketBuilder::new(budget));
                            packets.push(full.finish());
                        }
                    }
                    Err(BuildError::Full) if !builder.is_empty() => {
                        let full = std::mem::replace(&mut builder, PacketBuilder::new(budget));
                        packets.push(full.finish());
                    }
                    Err(BuildError::TooBig { .. }) if has_proof(&msg) => {
                        // A budget too small for the proof: the Update
                        // goes without (the receiver asks again, in vain,
                        // until the budget grows).
                        if let Message::Update(u) = &mut msg {
                            u.proof = None;
                        }
                        self.counters.oversized_messages += 1;
                    }
                    Err(_) => break,
                }
            }
            if !placed {
                self.counters.oversized_messages += 1;
            }
        }
        if !builder.is_empty() {
            packets.push(builder.finish());
        }
        for bytes in packets {
            self.packed.push_back(Transmit {
                iface: out.iface,
                dst: out.dst,
                bytes,
            });
        }
    }

    /// An unscheduled multicast Hello (interval 0) to accompany an IHU.
    fn unscheduled_hello(&mut self, iface: IfaceId, now: Instant) -> Message {
        let ts = self.timestamp(now);
        let seqno = self
            .interfaces
            .get_mut(&iface)
            .map_or(0, |i| i.next_hello_seqno());
        Message::Hello(HelloRepr {
            unicast: false,
            seqno,
            interval: Duration::ZERO,
            timestamp: Some(ts),
        })
    }
}

fn has_proof(msg: &Message) -> bool {
    matches!(msg, Message::Update(u) if u.proof.is_some())
}
