//! A pcap writer for `Net` captures (what `re6st babel-dump` reads).

use std::net::{IpAddr, Ipv6Addr};

use super::{Sent, node_addr};

/// A classic pcap (LINKTYPE_RAW) of captured packets, each in an IPv6/UDP
/// header from the sender's address to ff02::1:6 (or its unicast
/// destination), port 6696 both ways, with a correct UDP checksum.
pub fn pcap(sent: &[Sent]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&65535u32.to_le_bytes());
    out.extend_from_slice(&101u32.to_le_bytes()); // LINKTYPE_RAW
    let group = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 6);
    for p in sent {
        let src = match node_addr(p.node) {
            IpAddr::V6(a) => a,
            IpAddr::V4(_) => unreachable!(),
        };
        let dst = match p.dst {
            Some(IpAddr::V6(a)) => a,
            _ => group,
        };
        let udp_len = 8 + p.bytes.len();
        let mut frame = Vec::with_capacity(40 + udp_len);
        frame.extend_from_slice(&[0x60, 0, 0, 0]);
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[17, 1]);
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&dst.octets());
        frame.extend_from_slice(&6696u16.to_be_bytes());
        frame.extend_from_slice(&6696u16.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(&p.bytes);
        // UDP checksum over the IPv6 pseudo-header and the datagram.
        let mut sum: u32 = 0;
        let mut add = |b: &[u8]| {
            for c in b.chunks(2) {
                let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
                sum += u32::from(w);
            }
        };
        add(&src.octets());
        add(&dst.octets());
        add(&(udp_len as u32).to_be_bytes());
        add(&[0, 0, 0, 17]);
        add(&frame[40..]);
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        let ck = match !(sum as u16) {
            0 => 0xffff,
            c => c,
        };
        frame[46..48].copy_from_slice(&ck.to_be_bytes());
        out.extend_from_slice(&(p.at.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&p.at.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}
