//! Fragmentation tests: framing, the 1280-over-1162 case, loss,
//! duplication, reordering, timeout and the memory cap.

use std::sync::Mutex;

use proptest::prelude::*;

use super::*;

fn datagram(len: usize) -> Vec<u8> {
    let mut d: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    if let Some(first) = d.first_mut() {
        *first = 0x60;
    }
    d
}

fn fragments(d: &[u8], ident: u32, max: usize) -> Vec<Bytes> {
    let mut out = Vec::new();
    split(d, ident, max, |f| {
        out.push(f);
        Ok(())
    })
    .unwrap();
    out
}

const NH: NextHopId = NextHopId(1);

#[test]
fn test_parse_and_emit() {
    static FRAME: [u8; 12] = [0x01, 0, 0, 1, 2, 0x01, 0x00, 0x05, 0x00, 7, 8, 9];
    let repr = FragmentRepr::parse(&FRAME).unwrap();
    assert_eq!(
        repr,
        FragmentRepr {
            ident: 0x102,
            offset: 256,
            total: 1280,
            bytes: &[7, 8, 9]
        }
    );
    let mut out = Vec::new();
    repr.emit(&mut out);
    assert_eq!(out.len(), repr.buffer_len());
    assert_eq!(out, FRAME);
}

#[test]
fn parse_rejects_bad_frames() {
    assert_eq!(
        FragmentRepr::parse(&[1, 0, 0]),
        Err(FragmentError::Truncated { len: 3 })
    );
    assert_eq!(
        FragmentRepr::parse(&[0x60, 0, 0, 0, 0, 0, 0, 0, 1, 1]),
        Err(FragmentError::NotFragment(0x60))
    );
    assert_eq!(
        FragmentRepr::parse(&[1, 0, 0, 0, 0, 0, 0, 0, 1]),
        Err(FragmentError::Empty)
    );
    assert_eq!(
        FragmentRepr::parse(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 5]),
        Err(FragmentError::Empty)
    );
    assert_eq!(
        FragmentRepr::parse(&[1, 0, 0, 0, 0, 0, 2, 0, 3, 5, 5]),
        Err(FragmentError::OutOfBounds {
            offset: 2,
            len: 2,
            total: 3
        })
    );
    assert_eq!(
        FragmentRepr::parse(&[1, 0, 0, 0, 0, 0, 0, 0, 3, 1, 5]),
        Err(FragmentError::Nested)
    );
}

#[test]
fn ipv6_minimum_mtu_packet_over_the_smallest_quic_datagram() {
    // quinn's default initial MTU gives max_datagram_size 1162
    // before path MTU discovery: 1280 must still get through.
    let d = datagram(1280);
    let frames = fragments(&d, 7, 1162);
    assert_eq!(frames.len(), 2);
    assert!(frames.iter().all(|f| f.len() <= 1162));
    assert_eq!(frames[0].len(), HEADER_LEN + 640, "balanced pieces");
    let mut r = Reassembler::default();
    let t = Instant::now();
    assert_eq!(r.handle_fragment(NH, &frames[0], t), Ok(None));
    let whole = r.handle_fragment(NH, &frames[1], t).unwrap().unwrap();
    assert_eq!(&whole[..], &d[..]);
    assert_eq!(r.pending(), 0);
    assert_eq!(r.memory_used(), 0);
}

#[test]
fn split_limits() {
    assert_eq!(
        split(&datagram(2000), 1, MIN_DATAGRAM_SIZE - 1, |_| Ok(())),
        Err(NextHopError::DatagramSizeTooSmall {
            max: MIN_DATAGRAM_SIZE - 1,
            min: MIN_DATAGRAM_SIZE
        })
    );
    assert!(matches!(
        split(&datagram(70_000), 1, 1200, |_| Ok(())),
        Err(NextHopError::TooLarge { .. })
    ));
    // The largest datagram at the smallest fragment size: 128 pieces.
    let frames = fragments(&datagram(65535), 1, MIN_DATAGRAM_SIZE);
    assert_eq!(frames.len(), 128);
    let mut r = Reassembler::default();
    let t = Instant::now();
    let mut out = None;
    for f in frames.iter().rev() {
        out = r.handle_fragment(NH, f, t).unwrap();
    }
    assert_eq!(out.unwrap().len(), 65535);
}

#[test]
fn interleaved_datagrams_and_senders_do_not_mix() {
    let (a, b) = (datagram(3000), datagram(2500));
    let fa = fragments(&a, 5, 1200);
    let fb = fragments(&b, 5, 1200); // same ident, other sender
    let fc = fragments(&b, 6, 1200); // other ident, same sender
    let mut r = Reassembler::default();
    let t = Instant::now();
    let mut done = Vec::new();
    for i in 0..3 {
        for (from, frames) in [(NH, &fa), (NextHopId(2), &fb), (NH, &fc)] {
            if let Some(f) = frames.get(i)
                && let Some(d) = r.handle_fragment(from, f, t).unwrap()
            {
                done.push((from, d));
            }
        }
    }
    assert_eq!(done.len(), 3);
    let find = |from: NextHopId, d: &[u8]| done.iter().any(|(f, x)| *f == from && x[..] == *d);
    assert!(find(NH, &a), "datagram a from nh1");
    assert!(find(NextHopId(2), &b), "datagram b from nh2");
    assert!(find(NH, &b), "datagram b from nh1");
}

#[test]
fn duplicates_are_ignored_and_counted() {
    let d = datagram(3000);
    let f = fragments(&d, 1, 1200);
    let mut r = Reassembler::default();
    let t = Instant::now();
    assert_eq!(r.handle_fragment(NH, &f[0], t), Ok(None));
    assert_eq!(r.handle_fragment(NH, &f[0], t), Ok(None));
    assert_eq!(r.handle_fragment(NH, &f[1], t), Ok(None));
    assert!(r.handle_fragment(NH, &f[2], t).unwrap().is_some());
    // A late duplicate after completion starts a new partial that times out.
    assert_eq!(r.handle_fragment(NH, &f[1], t), Ok(None));
    assert_eq!(r.stats().duplicates, 1);
    r.handle_timeout(t + Duration::from_secs(3));
    assert_eq!(r.pending(), 0);
    assert_eq!(r.stats().timed_out, 1);
}

#[test]
fn loss_times_out_and_frees_memory() {
    let d = datagram(3000);
    let f = fragments(&d, 1, 1200);
    let mut r = Reassembler::new(ReassemblyConfig {
        timeout: Duration::from_secs(2),
        memory_cap: 1 << 20,
    });
    let t = Instant::now();
    r.handle_fragment(NH, &f[0], t).unwrap();
    r.handle_fragment(NH, &f[2], t).unwrap();
    assert_eq!(r.memory_used(), 3000);
    assert_eq!(r.poll_timeout(), Some(t + Duration::from_secs(2)));
    r.handle_timeout(t + Duration::from_millis(1999));
    assert_eq!(r.pending(), 1);
    r.handle_timeout(t + Duration::from_secs(2));
    assert_eq!(r.pending(), 0);
    assert_eq!(r.memory_used(), 0);
    assert_eq!(r.poll_timeout(), None);
    // The missing piece arrives too late: it alone cannot complete.
    assert_eq!(
        r.handle_fragment(NH, &f[1], t + Duration::from_secs(3)),
        Ok(None)
    );
}

#[test]
fn expired_partial_is_replaced_without_handle_timeout() {
    let d = datagram(2000);
    let f = fragments(&d, 9, 1200);
    let mut r = Reassembler::default();
    let t = Instant::now();
    r.handle_fragment(NH, &f[0], t).unwrap();
    // Much later the same ident is reused: the stale piece must not be
    // combined with the new datagram's.
    let later = t + Duration::from_secs(10);
    let d2 = datagram(2000).iter().map(|b| b ^ 0x0f).collect::<Vec<_>>();
    let f2 = fragments(&d2, 9, 1200);
    assert_eq!(r.handle_fragment(NH, &f2[1], later), Ok(None));
    assert_eq!(r.stats().timed_out, 1);
    assert_eq!(r.handle_fragment(NH, &f2[0], later).unwrap().unwrap(), d2);
}

#[test]
fn memory_cap_evicts_the_oldest() {
    let mut r = Reassembler::new(ReassemblyConfig {
        timeout: Duration::from_secs(3),
        memory_cap: 10_000,
    });
    let t = Instant::now();
    let frames: Vec<Vec<Bytes>> = (0..4)
        .map(|i| fragments(&datagram(4000), i, 1200))
        .collect();
    for (i, f) in frames.iter().enumerate() {
        r.handle_fragment(NH, &f[0], t + Duration::from_millis(i as u64))
            .unwrap();
        assert!(r.memory_used() <= 10_000);
    }
    assert_eq!(r.pending(), 2);
    assert_eq!(r.stats().evicted, 2);
    // The oldest (0, 1) are gone; 3 completes.
    for f in &frames[3][1..] {
        r.handle_fragment(NH, f, t).unwrap();
    }
    assert_eq!(r.stats().reassembled, 1);
    assert_eq!(r.pending(), 1);
    // A datagram above the cap is refused outright.
    let big = fragments(&datagram(20_000), 50, 1200);
    assert_eq!(
        r.handle_fragment(NH, &big[0], t),
        Err(FragmentError::TooLarge {
            total: 20_000,
            limit: 10_000
        })
    );
    assert_eq!(r.stats().rejected, 1);
}

#[test]
fn total_mismatch_drops_the_partial() {
    let mut r = Reassembler::default();
    let t = Instant::now();
    let a = fragments(&datagram(3000), 4, 1200);
    let b = fragments(&datagram(3001), 4, 1200);
    r.handle_fragment(NH, &a[0], t).unwrap();
    assert_eq!(
        r.handle_fragment(NH, &b[1], t),
        Err(FragmentError::TotalMismatch {
            expected: 3000,
            got: 3001
        })
    );
    assert_eq!(r.pending(), 0);
    assert_eq!(r.memory_used(), 0);
}

#[test]
fn too_many_pieces_is_rejected() {
    let mut r = Reassembler::default();
    let t = Instant::now();
    let mut frame = vec![1, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0xaa];
    let mut result = Ok(None);
    for i in 0..=MAX_HOLES {
        let offset = (i * 2 + 1) as u16;
        frame[5..7].copy_from_slice(&offset.to_be_bytes());
        result = r.handle_fragment(NH, &frame, t);
    }
    assert_eq!(result, Err(FragmentError::TooManyPieces));
    assert_eq!(r.pending(), 0);
}

#[test]
fn forget_drops_a_tunnel_partials() {
    let mut r = Reassembler::default();
    let t = Instant::now();
    let f = fragments(&datagram(3000), 1, 1200);
    r.handle_fragment(NH, &f[0], t).unwrap();
    r.handle_fragment(NextHopId(2), &f[0], t).unwrap();
    r.forget(NH);
    assert_eq!(r.pending(), 1);
    assert_eq!(r.memory_used(), 3000);
}

/// A next hop recording what it is given.
struct Recorder {
    max: Option<usize>,
    sent: Mutex<Vec<Bytes>>,
}

impl NextHop for Recorder {
    fn max_datagram_size(&self) -> Option<usize> {
        self.max
    }
    fn send_datagram(&self, datagram: Bytes) -> Result<(), NextHopError> {
        self.sent.lock().unwrap().push(datagram);
        Ok(())
    }
}

#[test]
fn fragmenter_sends_whole_when_it_fits() {
    let hop = Recorder {
        max: Some(1414),
        sent: Mutex::new(Vec::new()),
    };
    let f = Fragmenter::new(100);
    let d = Bytes::from(datagram(1400));
    assert_eq!(f.send(&hop, d.clone()), Ok(Sent::Whole));
    assert_eq!(
        f.send(&hop, Bytes::from(datagram(1500))),
        Ok(Sent::Fragments(2))
    );
    assert_eq!(
        f.send(&hop, Bytes::from(datagram(1500))),
        Ok(Sent::Fragments(2))
    );
    let sent = hop.sent.lock().unwrap();
    assert_eq!(sent[0], d);
    // Whole datagrams are passed through without a copy.
    assert_eq!(sent[0].as_ptr(), d.as_ptr());
    let idents: Vec<u32> = sent[1..]
        .iter()
        .map(|f| FragmentRepr::parse(f).unwrap().ident)
        .collect();
    assert_eq!(idents, [100, 100, 101, 101]);
    let none = Recorder {
        max: None,
        sent: Mutex::new(Vec::new()),
    };
    assert_eq!(f.send(&none, d), Err(NextHopError::Unsupported));
}

proptest! {
    /// Any subset-with-duplicates in any order: reassembly yields the
    /// datagram exactly when every piece arrived, exactly once, and never
    /// anything else.
    #[test]
    fn loss_duplication_reordering(
        len in 1usize..9000,
        max in MIN_DATAGRAM_SIZE..1500,
        picks in proptest::collection::vec((0usize..64, any::<bool>()), 0..64),
    ) {
        let d = datagram(len);
        let frames = fragments(&d, 3, max);
        prop_assert!(frames.iter().all(|f| f.len() <= max));
        let mut r = Reassembler::default();
        let t = Instant::now();
        let mut seen = vec![false; frames.len()];
        let mut done = 0;
        for (i, dup) in picks {
            let i = i % frames.len();
            for _ in 0..(1 + usize::from(dup)) {
                let out = r.handle_fragment(NH, &frames[i], t).unwrap();
                seen[i] = true;
                if let Some(whole) = out {
                    prop_assert!(seen.iter().all(|s| *s));
                    prop_assert_eq!(&whole[..], &d[..]);
                    done += 1;
                    seen.iter_mut().for_each(|s| *s = false);
                }
            }
        }
        prop_assert!(done <= 128);
        prop_assert!(r.memory_used() <= len);
        prop_assert!(r.pending() <= 1);
    }
}
