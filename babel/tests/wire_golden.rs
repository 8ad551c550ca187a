//! Golden tests: every Babel packet of the tcpdump test captures in
//! the repository's `data/babel-pcaps/` is decoded and compared, TLV by TLV and field
//! by field, with tcpdump's own decode in the matching `.out` file; then the
//! parsed messages are re-encoded and parsed again (same messages).
//!

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use re6st_babel::capture::{frames, udp_datagram};
use re6st_babel::describe::{Status, TlvDescription, describe};
use re6st_babel::fuzzing::{babel_packet, encode_all};
use re6st_babel::wire::{MAX_PACKET_LEN, ParseError, parse_packet};

fn pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/babel-pcaps")
}

/// One packet of a tcpdump `.out` file: its header line and TLV lines.
#[derive(Debug)]
struct Record {
    number: usize,
    header: String,
    lines: Vec<String>,
}

fn read_out(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut records: Vec<Record> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix('\t') {
            if let Some(r) = records.last_mut() {
                r.lines.push(rest.to_string());
            }
            continue;
        }
        let trimmed = line.trim_start();
        let Some((num, header)) = trimmed.split_once(' ') else {
            continue;
        };
        if let Ok(number) = num.parse() {
            records.push(Record {
                number,
                header: header.trim_start().to_string(),
                lines: Vec::new(),
            });
        }
    }
    records
}

/// The "src > dst:" addresses of a tcpdump header line.
fn endpoints(header: &str) -> (SocketAddr, SocketAddr) {
    let (before, after) = header.split_once(" > ").unwrap();
    let src = before.rsplit(' ').next().unwrap();
    let dst = after.split(' ').next().unwrap().trim_end_matches(':');
    let parse = |s: &str| {
        let (addr, port) = s.rsplit_once('.').unwrap();
        SocketAddr::new(addr.parse().unwrap(), port.parse().unwrap())
    };
    (parse(src), parse(dst))
}

/// tcpdump's non-verbose name of a TLV.
fn compact(d: &TlvDescription) -> String {
    let name = match d.kind {
        "padn" => "padN",
        "ack-request" => "ack-req",
        "next-hop" => "nh",
        "ts-pc" => "tspc",
        other => other,
    };
    let mut s = name.to_string();
    if d.kind == "update" {
        let f = d.flags.unwrap_or(0);
        if f & 0x80 != 0 {
            s.push_str("/prefix");
        }
        if f & 0x40 != 0 {
            s.push_str("/id");
        }
    }
    s
}

#[derive(Default, Debug)]
struct Counts {
    packets: usize,
    tlv_lines: usize,
    invalid: usize,
    identical: usize,
    ignored_mandatory: usize,
}

fn check_capture(pcap: &Path, out: &Path, counts: &mut Counts) {
    let data = std::fs::read(pcap).unwrap();
    let records = read_out(out);
    let all: Vec<_> = frames(&data).unwrap().collect::<Result<_, _>>().unwrap();
    let name = pcap.file_name().unwrap().to_string_lossy();
    for record in records {
        let Some(at) = record.header.find(" babel 2 (") else {
            continue;
        };
        let ctx = format!("{name} packet {}", record.number);
        let frame = &all[record.number - 1];
        let dgram = udp_datagram(frame).unwrap_or_else(|| panic!("{ctx}: no UDP datagram"));
        assert_eq!(dgram.src, endpoints(&record.header).0, "{ctx}: source");
        assert_eq!(dgram.dst, endpoints(&record.header).1, "{ctx}: destination");
        let rest = &record.header[at + " babel 2 (".len()..];
        let (body_len, tail) = rest.split_once(')').unwrap();
        if tail.contains("(invalid)") && record.lines.is_empty() {
            // tcpdump rejects the whole packet: so must we.
            let err = parse_packet(dgram.payload).err();
            assert!(
                matches!(err, Some(ParseError::Truncated { .. })),
                "{ctx}: expected a rejected packet, got {err:?}"
            );
            counts.invalid += 1;
            continue;
        }
        let packet = parse_packet(dgram.payload).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(
            packet.body().len().to_string(),
            body_len,
            "{ctx}: body length"
        );
        let described = describe(&packet);
        if record.lines.is_empty() {
            // Non-verbose: "babel 2 (9) hello pad1".
            let ours: Vec<String> = described.tlvs.iter().map(compact).collect();
            let theirs: Vec<&str> = tail.split_whitespace().collect();
            assert_eq!(ours, theirs, "{ctx}: TLV list");
            counts.tlv_lines += ours.len();
        } else {
            let ours = described.text_lines();
            // tcpdump before 4.99.4 does not know AE 4 (RFC 9229): it prints
            // "Update (invalid)" and gives up on the rest of the packet.
            let cut = record.lines.iter().position(|l| l == "Update (invalid)");
            if cut.is_none() {
                assert_eq!(ours.len(), record.lines.len(), "{ctx}: {ours:#?}");
            }
            for (i, (a, b)) in ours.iter().zip(&record.lines).enumerate() {
                if Some(i) == cut {
                    assert!(a.contains("(v4-via-v6)"), "{ctx}, TLV {i}: ours `{a}`");
                    break;
                }
                // tcpdump does not say which TLVs a router ignores; we do.
                let a = a.split(" [malformed: ").next().unwrap_or(a);
                // Field by field: the same words in the same order.
                let aw: Vec<&str> = a.split_whitespace().collect();
                let bw: Vec<&str> = b.split_whitespace().collect();
                assert_eq!(aw, bw, "{ctx}, TLV {i}: ours `{a}`, tcpdump `{b}`");
                counts.tlv_lines += 1;
            }
        }
        // Every TLV that tcpdump decoded is one we understood or skipped on
        // purpose (obsolete and MAC TLVs), or one with a mandatory sub-TLV
        // we do not implement (source-specific routes, RFC 9079).
        for t in &described.tlvs {
            let mandatory = t.sub_tlvs.iter().any(|s| s.mandatory);
            assert!(
                t.error.is_none() || t.status == Some(Status::Skipped) || mandatory,
                "{ctx}: {t:?}"
            );
            counts.ignored_mandatory += usize::from(mandatory);
        }
        // Re-encode what was parsed and parse it again: same messages.
        babel_packet(dgram.payload);
        counts.packets += 1;
        // Where babeld sent only TLVs we re-emit (no pads, sub-TLVs but
        // timestamps, or
        // authentication TLVs, no meaningless flags on AE 0), our builder
        // reproduces its bytes exactly: same compression, same Router-Id
        // and Next Hop placement, same flags.
        let plain = described.trailer.is_empty()
            && described.tlvs.iter().all(|t| {
                t.status == Some(Status::Ok)
                    && t.sub_tlvs.iter().all(|s| s.kind == "timestamp")
                    && t.kind != "pad1"
                    && t.kind != "padn"
                    && !(t.ae == Some(0) && t.flags.unwrap_or(0) != 0)
            });
        if plain {
            let msgs: Vec<_> = packet.messages().collect::<Result<_, _>>().unwrap();
            let (_, packets) = encode_all(&msgs, MAX_PACKET_LEN);
            assert_eq!(packets.len(), 1, "{ctx}");
            assert_eq!(&packets[0][4..], packet.body(), "{ctx}: re-encoded bytes");
            counts.identical += 1;
        }
    }
}

#[test]
fn tcpdump_captures_match_tcpdump_decodes() {
    let dir = pcaps();
    let mut counts = Counts::default();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let pcap = entry.unwrap().path();
        if pcap.extension().is_none_or(|e| e != "pcap") {
            continue;
        }
        let stem = pcap.file_stem().unwrap().to_string_lossy().to_string();
        let out = if stem == "babel" {
            dir.join("babel1v.out")
        } else {
            dir.join(format!("{stem}.out"))
        };
        check_capture(&pcap, &out, &mut counts);
        files += 1;
    }
    eprintln!("{counts:?}");
    assert_eq!(files, 6);
    // Figures of the captures: every Babel packet was compared.
    assert_eq!(
        counts.invalid, 1,
        "babel_update_oobr has one malformed packet"
    );
    assert_eq!(counts.packets, 158, "{counts:?}");
    assert_eq!(counts.tlv_lines, 849, "{counts:?}");
    assert_eq!(counts.identical, 90, "{counts:?}");
}

/// babeld 1.12 between two namespaces (babel/tests/data/, made by
/// make-babeld-capture.sh): RFC 8966 unicast Hellos, RTT timestamps,
/// IHUs, wildcard requests and retractions, AE 4 and a source-specific
/// route whose mandatory sub-TLV makes us ignore it.
#[test]
fn modern_babeld_capture_matches_tcpdump() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut counts = Counts::default();
    check_capture(
        &dir.join("babeld-1.12.pcap"),
        &dir.join("babeld-1.12.out"),
        &mut counts,
    );
    eprintln!("{counts:?}");
    assert_eq!(counts.packets, 53, "{counts:?}");
    assert_eq!(counts.tlv_lines, 111, "{counts:?}");
    assert_eq!(counts.ignored_mandatory, 9, "{counts:?}");
    assert_eq!(counts.identical, 44, "{counts:?}");
}
