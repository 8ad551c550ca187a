//! The 4-byte address-family header of BSD and macOS utun devices: each
//! packet read from or written to a utun is preceded by the protocol family
//! in network byte order (`AF_INET6` = 30 on Darwin). Platform-independent
//! so that it is tested everywhere; only `tun/macos.rs` uses it at run time.

/// Length of the header.
pub const AF_HEADER_LEN: usize = 4;

/// `AF_INET6` on Darwin.
pub const AF_INET6_DARWIN: u32 = 30;

/// `AF_INET` (IPv4 inside the overlay).
pub const AF_INET_DARWIN: u32 = 2;

/// The header to prepend to an IPv6 packet written to a utun.
pub const fn ipv6_header() -> [u8; AF_HEADER_LEN] {
    AF_INET6_DARWIN.to_be_bytes()
}

/// The header to prepend to `packet`, by its version nibble (IPv4 or, for
/// anything else, IPv6).
pub fn header_for(packet: &[u8]) -> [u8; AF_HEADER_LEN] {
    match packet.first().map(|b| b >> 4) {
        Some(4) => AF_INET_DARWIN.to_be_bytes(),
        _ => ipv6_header(),
    }
}

/// Why a frame read from a utun was not an IPv6 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AfHeaderError {
    /// Shorter than the header.
    #[error("utun frame of {0} bytes has no address-family header")]
    Truncated(usize),
    /// Another family than IPv6 and IPv4.
    #[error("utun frame of address family {0}, expected AF_INET6 or AF_INET")]
    Family(u32),
}

/// Strips the header of a frame read from a utun and returns the IPv6 or
/// IPv4 packet.
pub fn strip(frame: &[u8]) -> Result<&[u8], AfHeaderError> {
    let Some((header, packet)) = frame.split_first_chunk::<AF_HEADER_LEN>() else {
        return Err(AfHeaderError::Truncated(frame.len()));
    };
    match u32::from_be_bytes(*header) {
        AF_INET6_DARWIN | AF_INET_DARWIN => Ok(packet),
        family => Err(AfHeaderError::Family(family)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let mut frame = ipv6_header().to_vec();
        assert_eq!(frame, [0, 0, 0, 30]);
        frame.extend([0x60, 1, 2, 3]);
        assert_eq!(strip(&frame), Ok(&[0x60, 1, 2, 3][..]));
    }

    #[test]
    fn rejects() {
        assert_eq!(strip(&[0, 0, 0]), Err(AfHeaderError::Truncated(3)));
        assert_eq!(strip(&[0, 0, 0, 2, 0x45]), Ok(&[0x45][..]));
        assert_eq!(strip(&[0, 0, 0, 7, 0x45]), Err(AfHeaderError::Family(7)));
        assert_eq!(header_for(&[0x45, 0]), [0, 0, 0, 2]);
        assert_eq!(header_for(&[0x60, 0]), [0, 0, 0, 30]);
        assert_eq!(header_for(&[]), [0, 0, 0, 30]);
        // Host byte order (little-endian 30) is not network byte order.
        assert_eq!(
            strip(&[30, 0, 0, 0, 0x60]),
            Err(AfHeaderError::Family(0x1e00_0000))
        );
        assert_eq!(strip(&[0, 0, 0, 30]), Ok(&[][..]));
    }
}
