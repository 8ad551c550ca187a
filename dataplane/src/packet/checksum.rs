//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624),
//! shared by the IPv4 header, ICMPv4 and ICMPv6.

/// Adds `data` as big-endian 16-bit words to `sum` (an odd tail is padded
/// with a zero byte). Fold with [`finish`].
pub fn add_words(mut sum: u64, data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    sum
}

/// Folds a sum of words to 16 bits and complements it: the value to write
/// in a checksum field, or 0 when the summed bytes carry a correct one.
pub fn finish(mut sum: u64) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The checksum of `data` alone (IPv4 header, ICMPv4 message).
pub fn of(data: &[u8]) -> u16 {
    finish(add_words(0, data))
}

/// The checksum after one 16-bit word of the covered data changed from
/// `old` to `new` (RFC 1624 equation 3: `HC' = ~(~HC + ~m + m')`), without
/// summing the data again.
pub fn update(checksum: u16, old: u16, new: u16) -> u16 {
    let sum = u64::from(!checksum) + u64::from(!old) + u64::from(new);
    finish(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(of(&data), !0xddf2);
    }

    #[test]
    fn odd_tail_is_zero_padded() {
        assert_eq!(of(&[0xab]), of(&[0xab, 0x00]));
    }

    #[test]
    fn incremental_matches_full() {
        let mut data = [
            0x45u8, 0, 0, 0x54, 0x12, 0x34, 0x40, 0, 0x40, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ];
        let sum = of(&data);
        data[10..12].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(of(&data), 0);
        for ttl in [63u8, 1, 0, 255] {
            let old = u16::from_be_bytes([data[8], data[9]]);
            data[8] = ttl;
            let new = u16::from_be_bytes([data[8], data[9]]);
            let before = u16::from_be_bytes([data[10], data[11]]);
            data[10..12].copy_from_slice(&update(before, old, new).to_be_bytes());
            assert_eq!(of(&data), 0, "ttl {ttl}");
        }
    }
}
