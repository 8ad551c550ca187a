//! UDP datagrams out of packet captures, for `re6st babel-dump` and the
//! golden tests: classic pcap (both byte orders, micro- and nanosecond
//! timestamps) and pcapng (section, interface and enhanced/simple packet
//! blocks), with link types Ethernet (VLAN tags skipped), BSD loopback,
//! Linux cooked (SLL and SLL2) and raw IPv4/IPv6, then IPv4 or IPv6 (with
//! extension headers) and UDP.
//!
//! This parses bytes handed to it; it does no I/O. Every length is checked:
//! a truncated or corrupt capture gives [`CaptureError`], a frame that is
//! not UDP gives `None`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

/// Why a capture could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// The file starts with neither a pcap nor a pcapng magic number.
    #[error("not a pcap or pcapng file (magic {0:08x})")]
    NotACapture(u32),
    /// A header or record runs past the end of the file.
    #[error("capture truncated at byte {0}")]
    Truncated(usize),
    /// A pcapng block with an impossible length.
    #[error("corrupt pcapng block at byte {0}")]
    BadBlock(usize),
}

/// One captured frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Capture time since the Unix epoch.
    pub time: Duration,
    /// The link type of the interface (LINKTYPE_* number).
    pub linktype: u32,
    /// The captured bytes (possibly fewer than were on the wire).
    pub data: &'a [u8],
}

/// A UDP datagram found in a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload as captured.
    pub payload: &'a [u8],
}

#[derive(Clone, Copy, Debug)]
enum Format {
    Pcap {
        big_endian: bool,
        nanos: bool,
        linktype: u32,
    },
    PcapNg {
        big_endian: bool,
    },
}

/// Iterator over the frames of a capture; see [`frames`].
#[derive(Clone, Debug)]
pub struct Frames<'a> {
    data: &'a [u8],
    pos: usize,
    format: Format,
    /// pcapng interfaces: link type and timestamp units per second.
    interfaces: Vec<(u32, u64)>,
}

/// Opens a capture held in memory.
pub fn frames(data: &[u8]) -> Result<Frames<'_>, CaptureError> {
    let magic = read_u32(data, 0, false).ok_or(CaptureError::Truncated(0))?;
    let format = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => {
            let big_endian = matches!(magic, 0xa1b2_c3d4 | 0xa1b2_3c4d);
            let linktype = read_u32(data, 20, !big_endian).ok_or(CaptureError::Truncated(0))?;
            Format::Pcap {
                big_endian,
                nanos: matches!(magic, 0xa1b2_3c4d | 0x4d3c_b2a1),
                linktype: linktype & 0x0fff_ffff,
            }
        }
        0x0a0d_0d0a => Format::PcapNg { big_endian: false },
        other => return Err(CaptureError::NotACapture(other)),
    };
    let pos = if matches!(format, Format::Pcap { .. }) {
        24
    } else {
        0
    };
    Ok(Frames {
        data,
        pos,
        format,
        interfaces: Vec::new(),
    })
}

/// Reads a u32 at `at`, little-endian if `little`; `None` past the end.
fn read_u32(data: &[u8], at: usize, little: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(if little {
        u32::from_le_bytes(b)
    } else {
        u32::from_be_bytes(b)
    })
}

fn read_u16(data: &[u8], at: usize, little: bool) -> Option<u16> {
    let b: [u8; 2] = data.get(at..at.checked_add(2)?)?.try_into().ok()?;
    Some(if little {
        u16::from_le_bytes(b)
    } else {
        u16::from_be_bytes(b)
    })
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.data.len() {
            return None;
        }
        let item = match self.format {
            Format::Pcap {
                big_endian,
                nanos,
                linktype,
            } => self.next_pcap(!big_endian, nanos, linktype),
            Format::PcapNg { .. } => self.next_pcapng(),
        };
        if item.is_err() {
            self.pos = self.data.len();
        }
        item.transpose()
    }
}

impl<'a> Frames<'a> {
    fn next_pcap(
        &mut self,
        little: bool,
        nanos: bool,
        linktype: u32,
    ) -> Result<Option<Frame<'a>>, CaptureError> {
        let at = self.pos;
        let trunc = CaptureError::Truncated(at);
        let secs = read_u32(self.data, at, little).ok_or(trunc.clone())?;
        let frac = read_u32(self.data, at + 4, little).ok_or(trunc.clone())?;
        let caplen = read_u32(self.data, at + 8, little).ok_or(trunc.clone())? as usize;
        let start = at + 16;
        let data = self
            .data
            .get(start..start.saturating_add(caplen))
            .ok_or(trunc)?;
        self.pos = start + caplen;
        let sub = if nanos {
            Duration::from_nanos(u64::from(frac))
        } else {
            Duration::from_micros(u64::from(frac))
        };
        Ok(Some(Frame {
            time: Duration::from_secs(u64::from(secs)) + sub,
            linktype,
            data,
        }))
    }

    fn next_pcapng(&mut self) -> Result<Option<Frame<'a>>, CaptureError> {
        loop {
            let at = self.pos;
            if at >= self.data.len() {
                return Ok(None);
            }
            let Format::PcapNg { big_endian } = self.format else {
                return Ok(None);
            };
            let kind = read_u32(self.data, at, !big_endian).ok_or(CaptureError::Truncated(at))?;
            if kind == 0x0a0d_0d0a {
                // Section header: the byte-order magic decides the endianness.
                let bom = read_u32(self.data, at + 8, true).ok_or(CaptureError::Truncated(at))?;
                let big_endian = bom != 0x1a2b_3c4d;
                self.format = Format::PcapNg { big_endian };
                self.interfaces.clear();
            }
            let Format::PcapNg { big_endian } = self.format else {
                return Ok(None);
            };
            let little = !big_endian;
            let len = read_u32(self.data, at + 4, little).ok_or(CaptureError::Truncated(at))?;
            let len = len as usize;
            if len < 12 || !len.is_multiple_of(4) {
                return Err(CaptureError::BadBlock(at));
            }
            let block = self
                .data
                .get(at..at.saturating_add(len))
                .ok_or(CaptureError::Truncated(at))?;
            self.pos = at + len;
            let body = &block[8..len - 4];
            match kind {
                1 => {
                    // Interface description: link type, then options.
                    let linktype = read_u16(body, 0, little).ok_or(CaptureError::BadBlock(at))?;
                    let per_sec = if_tsresol(body.get(8..).unwrap_or(&[]), little);
                    self.interfaces.push((u32::from(linktype), per_sec));
                }
                6 => {
                    let bad = CaptureError::BadBlock(at);
                    let iface = read_u32(body, 0, little).ok_or(bad.clone())? as usize;
                    let high = read_u32(body, 4, little).ok_or(bad.clone())?;
                    let low = read_u32(body, 8, little).ok_or(bad.clone())?;
                    let caplen = read_u32(body, 12, little).ok_or(bad.clone())? as usize;
                    let data = body
                        .get(20..20usize.saturating_add(caplen))
                        .ok_or(bad.clone())?;
                    let &(linktype, per_sec) = self.interfaces.get(iface).ok_or(bad)?;
                    let ts = (u64::from(high) << 32) | u64::from(low);
                    let time = Duration::from_secs(ts / per_sec)
                        + Duration::from_nanos((ts % per_sec) * 1_000_000_000 / per_sec);
                    return Ok(Some(Frame {
                        time,
                        linktype,
                        data,
                    }));
                }
                3 => {
                    let bad = CaptureError::BadBlock(at);
                    let &(linktype, _) = self.interfaces.first().ok_or(bad.clone())?;
                    let orig = read_u32(body, 0, little).ok_or(bad)? as usize;
                    let data = &body[4..body.len().min(4 + orig)];
                    return Ok(Some(Frame {
                        time: Duration::ZERO,
                        linktype,
                        data,
                    }));
                }
                _ => {}
            }
        }
    }
}

/// The `if_tsresol` option of an interface description (units per second;
/// default microseconds).
fn if_tsresol(mut opts: &[u8], little: bool) -> u64 {
    while let (Some(code), Some(len)) = (read_u16(opts, 0, little), read_u16(opts, 2, little)) {
        let len = usize::from(len);
        if code == 0 {
            break;
        }
        if let (9, 1, Some(&r)) = (code, len, opts.get(4)) {
            let exp = u32::from(r & 0x7f);
            let base: u64 = if r & 0x80 != 0 { 2 } else { 10 };
            return base
                .checked_pow(exp)
                .filter(|&v| v > 0)
                .unwrap_or(1_000_000);
        }
        opts = opts.get(4 + len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    1_000_000
}

/// Link types we can take apart.
mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const RAW_OLD: u32 = 12;
    pub const RAW: u32 = 101;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
}

/// The UDP datagram carried by a frame, if any (first IP fragment only).
pub fn udp_datagram<'a>(frame: &Frame<'a>) -> Option<Datagram<'a>> {
    let d = frame.data;
    let (ethertype, ip) = match frame.linktype {
        linktype::ETHERNET => {
            let mut off = 12;
            let mut ethertype = read_u16(d, off, false)?;
            // 802.1Q and 802.1ad tags.
            while matches!(ethertype, 0x8100 | 0x88a8) {
                off += 4;
                ethertype = read_u16(d, off, false)?;
            }
            (Some(ethertype), d.get(off + 2..)?)
        }
        linktype::LINUX_SLL => (Some(read_u16(d, 14, false)?), d.get(16..)?),
        linktype::LINUX_SLL2 => (Some(read_u16(d, 0, false)?), d.get(20..)?),
        linktype::NULL => (None, d.get(4..)?),
        linktype::RAW | linktype::RAW_OLD | linktype::IPV4 | linktype::IPV6 => (None, d),
        _ => return None,
    };
    match ethertype {
        Some(0x0800) => ipv4(ip),
        Some(0x86dd) => ipv6(ip),
        Some(_) => None,
        None => match ip.first()? >> 4 {
            4 => ipv4(ip),
            6 => ipv6(ip),
            _ => None,
        },
    }
}

fn ipv4(p: &[u8]) -> Option<Datagram<'_>> {
    let ihl = usize::from(p.first()? & 0x0f) * 4;
    let total = usize::from(read_u16(p, 2, false)?);
    let frag = read_u16(p, 6, false)? & 0x1fff;
    if p[0] >> 4 != 4 || ihl < 20 || frag != 0 || *p.get(9)? != 17 {
        return None;
    }
    let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let end = total.clamp(ihl, p.len());
    udp(IpAddr::V4(src), IpAddr::V4(dst), p.get(ihl..end)?)
}

fn ipv6(p: &[u8]) -> Option<Datagram<'_>> {
    if p.first()? >> 4 != 6 || p.len() < 40 {
        return None;
    }
    let payload_len = usize::from(read_u16(p, 4, false)?);
    let mut next = p[6];
    let src: [u8; 16] = p[8..24].try_into().ok()?;
    let dst: [u8; 16] = p[24..40].try_into().ok()?;
    let end = (40 + payload_len).min(p.len());
    let mut off = 40;
    // Hop-by-hop, routing and destination options; a fragment header is
    // followed only when it is the first fragment.
    loop {
        match next {
            17 => break,
            0 | 43 | 60 => {
                next = *p.get(off)?;
                off += (usize::from(*p.get(off + 1)?) + 1) * 8;
            }
            44 => {
                let offset = read_u16(p, off + 2, false)? & 0xfff8;
                if offset != 0 {
                    return None;
                }
                next = *p.get(off)?;
                off += 8;
            }
            _ => return None,
        }
    }
    udp(
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
        p.get(off..end)?,
    )
}

fn udp(src: IpAddr, dst: IpAddr, u: &[u8]) -> Option<Datagram<'_>> {
    let sport = read_u16(u, 0, false)?;
    let dport = read_u16(u, 2, false)?;
    let len = usize::from(read_u16(u, 4, false)?);
    let end = len.clamp(8, u.len().max(8));
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        payload: u.get(8..end.min(u.len()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic little-endian pcap with one raw-IPv6 UDP frame.
    fn pcap(linktype: u32, frame: &[u8]) -> Vec<u8> {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&65535u32.to_le_bytes());
        f.extend_from_slice(&linktype.to_le_bytes());
        f.extend_from_slice(&7u32.to_le_bytes());
        f.extend_from_slice(&500u32.to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(frame);
        f
    }

    fn ipv6_udp(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[17, 1]);
        p.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"ff02::1:6".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&[0x1a, 0x28, 0x1a, 0x28]);
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn raw_ipv6_and_sll2() {
        let payload = [42u8, 2, 0, 0];
        let ip = ipv6_udp(&payload);
        let file = pcap(101, &ip);
        let all: Vec<_> = frames(&file).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].time, Duration::new(7, 500_000));
        let d = udp_datagram(&all[0]).unwrap();
        assert_eq!(d.src, "[fe80::1]:6696".parse().unwrap());
        assert_eq!(d.dst, "[ff02::1:6]:6696".parse().unwrap());
        assert_eq!(d.payload, payload);
        let mut sll2 = vec![0x86, 0xdd];
        sll2.extend_from_slice(&[0; 18]);
        sll2.extend_from_slice(&ip);
        let file = pcap(276, &sll2);
        let f = frames(&file).unwrap().next().unwrap().unwrap();
        assert_eq!(udp_datagram(&f).unwrap().payload, payload);
    }

    #[test]
    fn truncated_and_foreign_files() {
        assert_eq!(
            frames(b"hello world").err(),
            Some(CaptureError::NotACapture(0x6865_6c6c))
        );
        let mut file = pcap(101, &ipv6_udp(&[1, 2, 3]));
        file.truncate(file.len() - 1);
        let r: Vec<_> = frames(&file).unwrap().collect();
        assert_eq!(r, [Err(CaptureError::Truncated(24))]);
    }

    #[test]
    fn pcapng_enhanced_packets() {
        let ip = ipv6_udp(&[42, 2, 0, 0]);
        let mut f = Vec::new();
        // Section header block.
        f.extend_from_slice(&0x0a0d_0d0au32.to_le_bytes());
        f.extend_from_slice(&28u32.to_le_bytes());
        f.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        f.extend_from_slice(&[1, 0, 0, 0]);
        f.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend_from_slice(&28u32.to_le_bytes());
        // Interface description: raw IP, tsresol 10^-9.
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&32u32.to_le_bytes());
        f.extend_from_slice(&101u16.to_le_bytes());
        f.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        f.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&32u32.to_le_bytes());
        // Enhanced packet block.
        let padded = ip.len().next_multiple_of(4);
        let len = (32 + padded) as u32;
        f.extend_from_slice(&6u32.to_le_bytes());
        f.extend_from_slice(&len.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&1_500_000_000u32.to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&(ip.len() as u32).to_le_bytes());
        f.extend_from_slice(&ip);
        f.resize(f.len() + padded - ip.len(), 0);
        f.extend_from_slice(&len.to_le_bytes());
        let all: Vec<_> = frames(&f).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].time, Duration::from_millis(1500));
        assert_eq!(udp_datagram(&all[0]).unwrap().payload, [42, 2, 0, 0]);
    }
}
