//! Descriptions of Babel packets for people: what `re6st babel-dump` prints,
//! as JSON (serde) or as text close to `tcpdump -v`'s Babel decoder.
//!
//! A description holds the fields as transmitted (AE, flags, plen, omitted,
//! raw interval) next to what the stateful decoder made of them (the full
//! prefix, router-id and next hop in force), plus why a TLV was ignored.

use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use crate::wire::address::{Ae, read_address};
use crate::wire::{
    Decoded, Element, Message, NextHopRepr, Packet, ParseError, RouteRequestRepr, RouterId,
    SeqnoRequestRepr, SubTlvIter, Tlv, TlvIter, TlvType, UpdateTlv, be16, be32, subtype,
};

/// One packet: its TLVs and the TLVs of its trailer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PacketDescription {
    /// The body length of the header.
    pub body_len: usize,
    /// The TLVs of the body, in order.
    pub tlvs: Vec<TlvDescription>,
    /// The TLVs of the trailer (RFC 8967 MAC), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub trailer: Vec<TlvDescription>,
}

/// How the decoder treated a TLV.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Understood and used.
    Ok,
    /// Skipped on purpose: unknown, obsolete or authentication TLV, or a
    /// trailer TLV.
    Skipped,
    /// Malformed or invalid: ignored (its parser-state effect may remain).
    Malformed,
    /// Overruns the body: the rest of the packet is dropped.
    Fatal,
}

/// One TLV; fields that do not apply are absent (JSON) or `None`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TlvDescription {
    /// Type name (see [`TlvType::name`]).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Type code.
    pub code: u8,
    /// Value length (0 for Pad1).
    pub len: usize,
    /// How the decoder treated it.
    pub status: Option<Status>,
    /// Why it was ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Address encoding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ae: Option<u8>,
    /// Flags (Update: 0x80 default prefix, 0x40 router-id; Hello: 0x8000 U).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flags: Option<u16>,
    /// Prefix length as transmitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plen: Option<u8>,
    /// Omitted bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub omitted: Option<u8>,
    /// The full prefix after decompression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// IHU or Next Hop address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<IpAddr>,
    /// Router-id (Router-Id TLV, Update in force, Seqno Request).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Next hop in force for an Update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_hop: Option<IpAddr>,
    /// Seqno.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqno: Option<u16>,
    /// Metric (65535 = retraction).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metric: Option<u16>,
    /// IHU rxcost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rxcost: Option<u16>,
    /// Interval in centiseconds, as transmitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_cs: Option<u16>,
    /// Interval in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<f64>,
    /// Seqno Request hop count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hop_count: Option<u8>,
    /// Acknowledgment opaque value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opaque: Option<u16>,
    /// Packet counter (RFC 8967 PC, RFC 7298 TS/PC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_counter: Option<u32>,
    /// RFC 7298 TS/PC timestamp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<u32>,
    /// RFC 7298 HMAC key id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<u16>,
    /// RFC 7298 HMAC digest, hex.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Sub-TLVs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sub_tlvs: Vec<SubTlvDescription>,
}

/// One sub-TLV.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SubTlvDescription {
    /// Type name: pad1, padn, diversity, timestamp, origin-proof,
    /// proof-wanted, source-prefix, unknown, or "overrun" when it runs past
    /// its TLV.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Type code.
    pub code: u8,
    /// The mandatory bit.
    pub mandatory: bool,
    /// Value length.
    pub len: usize,
    /// Timestamps in microseconds (Hello: origin; IHU: origin, receive).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub timestamps: Vec<u32>,
    /// Diversity channels.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<u8>,
}

/// Describes a parsed packet.
pub fn describe(packet: &Packet<'_>) -> PacketDescription {
    PacketDescription {
        body_len: packet.body().len(),
        tlvs: packet.decode().map(|d| describe_tlv(&d)).collect(),
        trailer: TlvIter::new(packet.trailer())
            .map(|t| match t {
                Ok(tlv) => {
                    let mut d = describe_raw(&tlv);
                    d.status = Some(Status::Skipped);
                    d
                }
                Err(e) => overrun(packet.trailer(), e),
            })
            .collect(),
    }
}

fn overrun(bytes: &[u8], e: ParseError) -> TlvDescription {
    let code = bytes.first().copied().unwrap_or(0);
    TlvDescription {
        kind: TlvType::from(code).name(),
        code,
        len: bytes.get(1).map_or(0, |&l| usize::from(l)),
        status: Some(Status::Fatal),
        error: Some(e.to_string()),
        ..Default::default()
    }
}

fn hex_id(id: &[u8]) -> String {
    let mut s = String::with_capacity(23);
    for (i, b) in id.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn id_string(id: RouterId) -> String {
    hex_id(&id.0)
}

/// Describes one decoded TLV: raw fields, plus the decoder's view.
pub fn describe_tlv(d: &Decoded<'_>) -> TlvDescription {
    let Ok(tlv) = Tlv::new_checked(d.bytes) else {
        return overrun(
            d.bytes,
            d.result.clone().err().unwrap_or(ParseError::TlvOverrun {
                tlv: d.kind,
                need: 2,
                have: d.bytes.len(),
            }),
        );
    };
    let mut out = describe_raw(&tlv);
    out.prefix = out.prefix.take().or(d.prefix.map(|p| p.to_string()));
    match &d.result {
        Ok(Element::Message(Message::Update(u))) => {
            out.prefix = u.prefix.map(|p| p.to_string());
            out.router_id = u.router_id.map(id_string);
            out.next_hop = u.next_hop;
            out.status = Some(Status::Ok);
        }
        Ok(_) => out.status = Some(Status::Ok),
        Err(e) => {
            out.status = Some(match e {
                ParseError::TlvOverrun { .. } => Status::Fatal,
                ParseError::UnknownTlv(_) | ParseError::Unsupported(_) => Status::Skipped,
                _ => Status::Malformed,
            });
            out.error = Some(e.to_string());
        }
    }
    out
}

fn sub_tlvs(kind: TlvType, bytes: &[u8]) -> Vec<SubTlvDescription> {
    SubTlvIter::new(kind, bytes)
        .map(|s| match s {
            Ok(s) => {
                let name = match s.kind {
                    subtype::PAD1 => "pad1",
                    subtype::PADN => "padn",
                    subtype::DIVERSITY => "diversity",
                    subtype::TIMESTAMP => "timestamp",
                    subtype::ORIGIN_PROOF => "origin-proof",
                    subtype::PROOF_WANTED => "proof-wanted",
                    subtype::SOURCE_PREFIX => "source-prefix",
                    _ => "unknown",
                };
                let timestamps = if s.kind == subtype::TIMESTAMP {
                    s.value.chunks_exact(4).map(be32).collect()
                } else {
                    Vec::new()
                };
                let channels = if s.kind == subtype::DIVERSITY {
                    s.value.to_vec()
                } else {
                    Vec::new()
                };
                SubTlvDescription {
                    kind: name,
                    code: s.kind,
                    mandatory: s.is_mandatory(),
                    len: s.value.len(),
                    timestamps,
                    channels,
                }
            }
            Err(_) => SubTlvDescription {
                kind: "overrun",
                code: 0,
                mandatory: false,
                len: 0,
                timestamps: Vec::new(),
                channels: Vec::new(),
            },
        })
        .collect()
}

/// The fields of a TLV as transmitted, without packet state.
fn describe_raw(tlv: &Tlv<&[u8]>) -> TlvDescription {
    let kind = tlv.kind();
    let v = tlv.value();
    let mut d = TlvDescription {
        kind: kind.name(),
        code: kind.into(),
        len: tlv.value_len(),
        ..Default::default()
    };
    let interval = |d: &mut TlvDescription, cs: u16| {
        d.interval_cs = Some(cs);
        d.interval = Some(f64::from(cs) / 100.0);
    };
    match kind {
        TlvType::Hello if v.len() >= 6 => {
            d.flags = Some(be16(&v[0..2]));
            d.seqno = Some(be16(&v[2..4]));
            interval(&mut d, be16(&v[4..6]));
            d.sub_tlvs = sub_tlvs(kind, &v[6..]);
        }
        TlvType::Ihu if v.len() >= 6 => {
            d.ae = Some(v[0]);
            d.rxcost = Some(be16(&v[2..4]));
            interval(&mut d, be16(&v[4..6]));
            if let Ok((address, used)) = read_address(kind, Ae::from(v[0]), &v[6..], 6) {
                d.address = address;
                d.sub_tlvs = sub_tlvs(kind, &v[6 + used..]);
            }
        }
        TlvType::RouterId if v.len() >= 10 => {
            d.router_id = Some(hex_id(&v[2..10]));
            d.sub_tlvs = sub_tlvs(kind, &v[10..]);
        }
        TlvType::NextHop if v.len() >= 2 => {
            d.ae = Some(v[0]);
            if let Ok((nh, subs)) = NextHopRepr::parse_fixed(tlv) {
                d.address = Some(nh.address);
                d.sub_tlvs = sub_tlvs(kind, subs);
            }
        }
        TlvType::Update if v.len() >= 10 => {
            d.ae = Some(v[0]);
            d.flags = Some(u16::from(v[1]));
            d.plen = Some(v[2]);
            d.omitted = Some(v[3]);
            interval(&mut d, be16(&v[4..6]));
            d.seqno = Some(be16(&v[6..8]));
            d.metric = Some(be16(&v[8..10]));
            if let Ok((_, subs)) = UpdateTlv::parse_fixed(tlv) {
                d.sub_tlvs = sub_tlvs(kind, subs);
            }
        }
        TlvType::RouteRequest if v.len() >= 2 => {
            d.ae = Some(v[0]);
            d.plen = Some(v[1]);
            if let Ok(r) = RouteRequestRepr::parse(tlv) {
                d.prefix = r.prefix.map(|p| p.to_string());
                let used = crate::wire::address::prefix_bytes(v[1]);
                d.sub_tlvs = sub_tlvs(kind, v.get(2 + used..).unwrap_or_default());
            }
        }
        TlvType::SeqnoRequest if v.len() >= 14 => {
            d.ae = Some(v[0]);
            d.plen = Some(v[1]);
            d.seqno = Some(be16(&v[2..4]));
            d.hop_count = Some(v[4]);
            d.router_id = Some(hex_id(&v[6..14]));
            if let Ok(r) = SeqnoRequestRepr::parse(tlv) {
                d.prefix = Some(r.prefix.to_string());
            }
        }
        TlvType::AckRequest if v.len() >= 6 => {
            d.opaque = Some(be16(&v[2..4]));
            interval(&mut d, be16(&v[4..6]));
        }
        TlvType::Ack if v.len() >= 2 => d.opaque = Some(be16(&v[0..2])),
        TlvType::TsPc if v.len() >= 6 => {
            d.packet_counter = Some(u32::from(be16(&v[0..2])));
            d.timestamp = Some(be32(&v[2..6]));
        }
        TlvType::Hmac if v.len() >= 2 => {
            d.key_id = Some(be16(&v[0..2]));
            let mut hex = String::with_capacity(2 * v.len());
            for b in &v[2..] {
                let _ = write!(hex, "{b:02X}");
            }
            d.digest = Some(hex);
        }
        TlvType::Pc if v.len() >= 4 => d.packet_counter = Some(be32(&v[0..4])),
        _ => {}
    }
    d
}

/// An interval as tcpdump prints it.
fn interval_text(cs: u16) -> String {
    if cs == 0 {
        "0.0s (bogus)".to_string()
    } else {
        format!("{}.{:02}s", cs / 100, cs % 100)
    }
}

fn timestamp_text(t: u32) -> String {
    format!("{}.{:06}s", t / 1_000_000, t % 1_000_000)
}

impl PacketDescription {
    /// One line per TLV in the style of `tcpdump -v`, with "----" before
    /// the trailer.
    pub fn text_lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.tlvs.iter().map(TlvDescription::text).collect();
        if !self.trailer.is_empty() {
            out.push("----".to_string());
            out.extend(self.trailer.iter().map(TlvDescription::text));
        }
        out
    }
}

impl TlvDescription {
    /// The tcpdump-style line, followed by `[malformed: why]` or
    /// `[fatal: why]` when the decoder ignored the TLV.
    pub fn text(&self) -> String {
        let mut s = self.tcpdump_text();
        match (self.status, &self.error) {
            (Some(Status::Malformed), Some(e)) => {
                let _ = write!(s, " [malformed: {e}]");
            }
            (Some(Status::Fatal), Some(e)) => {
                let _ = write!(s, " [fatal: {e}]");
            }
            _ => {}
        }
        s
    }

    fn sub_text(&self, s: &mut String) {
        for sub in &self.sub_tlvs {
            if sub.kind == "pad1" {
                s.push_str(" sub-pad1");
                continue;
            }
            if sub.mandatory {
                s.push_str(" (M)");
            }
            match sub.kind {
                "padn" => s.push_str(" sub-padn"),
                "diversity" => {
                    s.push_str(" sub-diversity");
                    if sub.channels.is_empty() {
                        s.push_str(" empty");
                    }
                    for (i, c) in sub.channels.iter().enumerate() {
                        s.push_str(if i == 0 { " " } else { "-" });
                        match c {
                            0 => s.push_str("reserved"),
                            255 => s.push_str("all"),
                            c => {
                                let _ = write!(s, "{c}");
                            }
                        }
                    }
                    if self.kind != "update" {
                        s.push_str(" (bogus)");
                    }
                }
                "timestamp" => {
                    s.push_str(" sub-timestamp");
                    match (self.kind, sub.timestamps.as_slice()) {
                        ("hello", [t, ..]) => {
                            let _ = write!(s, " {}", timestamp_text(*t));
                        }
                        ("ihu", [t1, t2, ..]) => {
                            let _ = write!(s, " {}|{}", timestamp_text(*t1), timestamp_text(*t2));
                        }
                        ("hello" | "ihu", _) => s.push_str(" (invalid)"),
                        _ => s.push_str(" (bogus)"),
                    }
                }
                "origin-proof" => {
                    let _ = write!(s, " sub-origin-proof {}B", sub.len);
                    if self.kind != "update" {
                        s.push_str(" (bogus)");
                    }
                }
                "proof-wanted" => {
                    s.push_str(" sub-proof-wanted");
                    if self.kind != "route-request" {
                        s.push_str(" (bogus)");
                    }
                }
                "overrun" => s.push_str(" (invalid)"),
                _ => {
                    let _ = write!(s, " sub-unknown-0x{:02x}", sub.code);
                }
            }
        }
    }

    fn tcpdump_text(&self) -> String {
        let mut s = String::new();
        let v4v6 = if self.ae == Some(4) {
            " (v4-via-v6)"
        } else {
            ""
        };
        let prefix = self.prefix.as_deref().unwrap_or("?");
        match self.kind {
            "pad1" => s.push_str("Pad 1"),
            "padn" => {
                let _ = write!(s, "Pad {}", self.len + 2);
            }
            "ack-request" => {
                s.push_str("Acknowledgment Request");
                if let (Some(o), Some(i)) = (self.opaque, self.interval_cs) {
                    let _ = write!(s, " {o:04x} {}", interval_text(i));
                }
            }
            "ack" => {
                s.push_str("Acknowledgment");
                if let Some(o) = self.opaque {
                    let _ = write!(s, " {o:04x}");
                }
            }
            "hello" => {
                s.push_str("Hello");
                if let (Some(f), Some(seqno), Some(i)) = (self.flags, self.seqno, self.interval_cs)
                {
                    if f & 0x8000 != 0 {
                        s.push_str(" (Unicast)");
                    }
                    let _ = write!(s, " seqno {seqno} ");
                    if i == 0 {
                        s.push_str("unscheduled");
                    } else {
                        let _ = write!(s, "interval {}", interval_text(i));
                    }
                    self.sub_text(&mut s);
                }
            }
            "ihu" => {
                s.push_str("IHU");
                if let (Some(c), Some(i)) = (self.rxcost, self.interval_cs) {
                    let who = self.address.map_or("any".to_string(), |a| a.to_string());
                    let _ = write!(s, " {who} rxcost {c} interval {}", interval_text(i));
                    self.sub_text(&mut s);
                }
            }
            "router-id" => {
                s.push_str("Router Id");
                if let Some(id) = &self.router_id {
                    let _ = write!(s, " {id}");
                }
            }
            "next-hop" => {
                s.push_str("Next Hop");
                if let Some(a) = self.address {
                    let _ = write!(s, " {a}");
                } else if self.ae == Some(0) {
                    s.push_str(" invalid AE 0");
                }
            }
            "update" => {
                s.push_str("Update");
                if let (Some(f), Some(m), Some(seqno), Some(i)) =
                    (self.flags, self.metric, self.seqno, self.interval_cs)
                {
                    if f & 0x80 != 0 {
                        s.push_str("/prefix");
                    }
                    if f & 0x40 != 0 {
                        s.push_str("/id");
                    }
                    if f & 0x3f != 0 {
                        s.push_str("/unknown");
                    }
                    let what = if self.ae == Some(0) { "any" } else { prefix };
                    let interval = if i == 0xffff {
                        "infinity".to_string()
                    } else {
                        interval_text(i)
                    };
                    let _ = write!(
                        s,
                        " {what} metric {m} seqno {seqno} interval {interval}{v4v6}"
                    );
                    self.sub_text(&mut s);
                }
            }
            "route-request" => {
                s.push_str("Route Request");
                if self.ae.is_some() {
                    let what = if self.ae == Some(0) { "any" } else { prefix };
                    let _ = write!(s, " for {what}{v4v6}");
                }
                self.sub_text(&mut s);
            }
            "seqno-request" => {
                s.push_str("Seqno Request");
                if let (Some(h), Some(seqno), Some(id)) =
                    (self.hop_count, self.seqno, &self.router_id)
                {
                    let _ = write!(s, " ({h} hops) for {prefix} seqno {seqno} id {id}{v4v6}");
                }
            }
            "ts-pc" => {
                s.push_str("TS/PC");
                if let (Some(t), Some(pc)) = (self.timestamp, self.packet_counter) {
                    let _ = write!(s, " timestamp {t} packetcounter {pc}");
                }
            }
            "hmac" => {
                s.push_str("HMAC");
                if let (Some(k), Some(d)) = (self.key_id, &self.digest) {
                    let _ = write!(s, " key-id {k} digest-{} {d}", self.len.saturating_sub(2));
                }
            }
            "mac" => {
                let _ = write!(s, "MAC len {}", self.len);
            }
            "pc" => {
                s.push_str("PC");
                if let Some(pc) = self.packet_counter {
                    let _ = write!(s, " value {pc} index len {}", self.len - 4);
                }
            }
            "challenge-request" => {
                let _ = write!(s, "Challenge Request len {}", self.len);
            }
            "challenge-reply" => {
                let _ = write!(s, "Challenge Reply len {}", self.len);
            }
            "ss-update" => s.push_str("SS-Update"),
            "ss-request" => s.push_str("SS-Request"),
            "ss-seqno-request" => s.push_str("SS-MH-Request"),
            _ => {
                let _ = write!(s, "Unknown message type {}", self.code);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_packet;

    #[test]
    fn text_and_json_of_a_packet() {
        #[rustfmt::skip]
        let bytes = [
            42, 2, 0, 43,
            4, 12, 0, 0, 0xe5, 0xb5, 1, 0x90, 3, 4, 0x84, 0x7f, 0x99, 0x4b,
            6, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
            8, 12, 2, 0x80, 16, 0, 6, 0x40, 0, 7, 0, 96, 0xfd, 0,
            0, 0xc8, 0,
            // trailer
            16, 2, 1, 2,
        ];
        let d = describe(&parse_packet(&bytes).unwrap());
        assert_eq!(
            d.text_lines(),
            [
                "Hello seqno 58805 interval 4.00s sub-timestamp 2222.954827s",
                "Router Id 01:02:03:04:05:06:07:08",
                "Update/prefix fd00::/16 metric 96 seqno 7 interval 16.00s",
                "Pad 1",
                "Unknown message type 200",
                "----",
                "MAC len 2",
            ]
        );
        let json = serde_json::to_value(&d).unwrap();
        let update = &json["tlvs"][2];
        assert_eq!(update["type"], "update");
        assert_eq!(update["prefix"], "fd00::/16");
        assert_eq!(update["router_id"], "01:02:03:04:05:06:07:08");
        assert_eq!(update["flags"], 0x80);
        assert_eq!(update["interval"], 16.0);
        assert_eq!(update["status"], "ok");
        assert_eq!(
            json["tlvs"][0]["sub_tlvs"][0]["timestamps"][0],
            2_222_954_827u32
        );
        assert_eq!(json["tlvs"][4]["status"], "skipped");
        assert_eq!(json["trailer"][0]["type"], "mac");
    }

    #[test]
    fn origin_proof_and_proof_wanted_are_named() {
        #[rustfmt::skip]
        let bytes = [
            42, 2, 0, 39,
            6, 10, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8,
            8, 17, 2, 0x80, 16, 0, 6, 0x40, 0, 7, 0, 96, 0xfd, 0, 112, 3, 9, 9, 9,
            9, 6, 2, 16, 0xfd, 0, 113, 0,
        ];
        let d = describe(&parse_packet(&bytes).unwrap());
        let lines = d.text_lines();
        assert!(lines[1].ends_with("sub-origin-proof 3B"), "{lines:?}");
        assert!(lines[2].ends_with("sub-proof-wanted"), "{lines:?}");
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["tlvs"][1]["sub_tlvs"][0]["type"], "origin-proof");
        assert_eq!(json["tlvs"][2]["sub_tlvs"][0]["type"], "proof-wanted");
    }

    #[test]
    fn malformed_tlvs_are_marked() {
        // Update without router-id, then an overrunning TLV.
        let bytes = [
            42, 2, 0, 17, 8, 12, 2, 0x80, 16, 0, 6, 0x40, 0, 7, 0, 96, 0xfd, 0, 4, 9, 0,
        ];
        let d = describe(&parse_packet(&bytes).unwrap());
        let lines = d.text_lines();
        assert_eq!(
            lines[0],
            "Update/prefix fd00::/16 metric 96 seqno 7 interval 16.00s \
             [malformed: finite update without a router-id]"
        );
        assert_eq!(d.tlvs[1].status, Some(Status::Fatal));
        assert!(lines[1].starts_with("Hello [fatal: hello overruns the body"));
    }
}
