//! Entry points for the fuzz targets in `fuzz/` and for the tests that
//! replay their corpus (rustls' `fuzzing` module pattern).
//!
//! Each function takes arbitrary bytes and panics only when an invariant of
//! the codec or the engine is broken, which is what a fuzzer is looking
//! for: [`babel_packet`] for the codec, [`engine_sequence`] for an engine
//! fed a sequence of packets, clock steps and caller inputs.

mod engine;

pub use engine::engine_sequence;

use crate::wire::{
    BuildError, Message, PacketBuilder, SubTlvIter, TlvIter, TlvType, UpdateTlv, parse_packet,
};

/// Parses `data` as a Babel packet, walks every TLV and sub-TLV of the body
/// and trailer, re-encodes the messages that parsed, parses that again and
/// checks that the same messages come back, and that encoding them once
/// more gives the same bytes.
pub fn babel_packet(data: &[u8]) {
    let Ok(packet) = parse_packet(data) else {
        return;
    };
    for decoded in packet.decode() {
        walk_sub_tlvs(decoded.kind, decoded.bytes);
    }
    for tlv in TlvIter::new(packet.trailer()).flatten() {
        walk_sub_tlvs(tlv.kind(), tlv.tlv_bytes());
    }
    let messages: Vec<Message> = packet.messages().filter_map(Result::ok).collect();
    let (expected, packets) = encode_all(&messages, usize::MAX);
    let again = decode_all(&packets);
    assert_eq!(again, expected, "re-encoded messages differ");
    let (_, packets_again) = encode_all(&again, usize::MAX);
    assert_eq!(packets_again, packets, "encoding is not deterministic");
}

/// Walks the sub-TLVs of an Update (the only TLV whose sub-TLV offset
/// depends on its fields that `babel-dump` also computes this way).
fn walk_sub_tlvs(kind: TlvType, bytes: &[u8]) {
    if kind != TlvType::Update {
        return;
    }
    let Ok(tlv) = crate::wire::Tlv::new_checked(bytes) else {
        return;
    };
    if let Ok((_, subs)) = UpdateTlv::parse_fixed(&tlv) {
        for sub in SubTlvIter::new(kind, subs) {
            let _ = sub;
        }
    }
}

/// Parses packets produced by the builder; they must all be valid.
pub fn decode_all(packets: &[Vec<u8>]) -> Vec<Message> {
    let mut out = Vec::new();
    for p in packets {
        let packet = parse_packet(p).expect("the builder produced a bad header");
        for m in packet.messages() {
            out.push(m.expect("the builder produced a TLV its parser rejects"));
        }
    }
    out
}

/// Encodes `messages` into as many packets of at most `budget` bytes as
/// needed, as an engine would: on `Full` it starts a new packet. Returns
/// the messages as the receiver should decode them (an IHU whose timestamp
/// has no timestamped Hello in its packet loses the timestamp, a message
/// too big for an empty packet is dropped) and the packets.
pub fn encode_all(messages: &[Message], budget: usize) -> (Vec<Message>, Vec<Vec<u8>>) {
    let mut expected = Vec::with_capacity(messages.len());
    let mut packets = Vec::new();
    let mut builder = PacketBuilder::new(budget);
    for msg in messages {
        let mut msg = msg.clone();
        loop {
            match builder.push(&msg) {
                Ok(()) => {
                    expected.push(msg);
                    break;
                }
                Err(BuildError::Full) => {
                    assert!(!builder.is_empty(), "Full from an empty packet");
                    let full = std::mem::replace(&mut builder, PacketBuilder::new(budget));
                    packets.push(full.finish());
                }
                Err(BuildError::IhuTimestampWithoutHello) => match &mut msg {
                    Message::Ihu(ihu) => ihu.timestamp = None,
                    other => panic!("IHU error for {other:?}"),
                },
                Err(BuildError::TooBig { .. }) => break,
                Err(err) => panic!("the parser accepted what the builder refuses: {err} {msg:?}"),
            }
        }
    }
    if !builder.is_empty() {
        packets.push(builder.finish());
    }
    (expected, packets)
}
