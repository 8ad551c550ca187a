//! `re6st babel-dump` run as a binary on the tcpdump captures of data/babel-pcaps and on
//! a capture of modern babeld traffic (babel/tests/data/).

use std::path::{Path, PathBuf};
use std::process::Command;

fn pcap(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/babel-pcaps")
        .join(name)
}

fn dump(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_re6st"))
        .arg("babel-dump")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The text output's TLV lines are tcpdump's, and only Babel is shown
/// (babel.pcap also holds AHCP and MLD packets).
#[test]
fn text_matches_tcpdump() {
    for (file, out) in [
        ("babel.pcap", "babel1v.out"),
        ("babel_rtt.pcap", "babel_rtt.out"),
    ] {
        let (ok, stdout, _) = dump(&[pcap(file).to_str().unwrap()]);
        assert!(ok);
        let expected = std::fs::read_to_string(pcap(out)).unwrap();
        // tcpdump's TLV lines of the Babel packets only.
        let mut theirs = Vec::new();
        let mut in_babel = false;
        for line in expected.lines() {
            if let Some(tlv) = line.strip_prefix('\t') {
                if in_babel {
                    theirs.push(tlv);
                }
            } else {
                in_babel = line.contains(" babel 2 (");
            }
        }
        let ours: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix('\t'))
            .collect();
        assert_eq!(ours, theirs, "{file}");
        let records = expected
            .lines()
            .filter(|l| l.contains(" babel 2 ("))
            .count();
        let headers = stdout.lines().filter(|l| !l.starts_with('\t')).count();
        assert_eq!(headers, records, "{file}");
    }
}

#[test]
fn json_has_every_field() {
    let (ok, stdout, _) = dump(&["--json", pcap("babel_rfc6126bis.pcap").to_str().unwrap()]);
    assert!(ok);
    let packets: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(packets.len(), 130);
    let first = &packets[0];
    assert_eq!(first["src"], "[fe80::8d84:d538:a212:c6dd]:6696");
    assert_eq!(first["dst"], "[ff02::1:6]:6696");
    assert_eq!(first["time"], "2019-06-05T16:32:33.277870Z");
    assert_eq!(first["tlvs"][0]["type"], "hello");
    assert_eq!(first["tlvs"][0]["seqno"], 56843);
    assert_eq!(first["tlvs"][0]["interval"], 4.0);
    assert_eq!(first["tlvs"][1]["type"], "pc");
    assert_eq!(first["tlvs"][1]["status"], "skipped");
    assert_eq!(first["trailer"][0]["type"], "mac");
    // Packet 4: updates with their router-id, next hop and AE resolved.
    let update = packets[3]["tlvs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["prefix"] == "192.168.1.31/32")
        .unwrap()
        .clone();
    assert_eq!(update["ae"], 1);
    assert_eq!(update["router_id"], "e2:91:f5:ff:fe:cc:7a:01");
    assert_eq!(update["next_hop"], "192.168.1.30");
    assert_eq!(update["metric"], 341);
    assert_eq!(update["seqno"], 31397);
    assert_eq!(update["status"], "ok");
}

#[test]
fn malformed_and_foreign_traffic() {
    // One Babel-port packet with a body length past the datagram; the
    // other frames (random ports, garbage) are not shown.
    let file = pcap("babel_update_oobr.pcap");
    let (ok, stdout, _) = dump(&[file.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("(invalid: truncated: need 2060 bytes, have 27)"));
    let (ok, stdout, _) = dump(&["--json", file.to_str().unwrap()]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["frame"], 52);
    assert!(v["error"].as_str().unwrap().starts_with("truncated"));
}

#[test]
fn bad_files_are_clear_errors() {
    let (ok, _, stderr) = dump(&["/nonexistent/x.pcap"]);
    assert!(!ok);
    assert!(
        stderr.contains("reading capture /nonexistent/x.pcap"),
        "{stderr}"
    );
    let (ok, _, stderr) = dump(&[pcap("babel1v.out").to_str().unwrap()]);
    assert!(!ok);
    assert!(stderr.contains("not a pcap or pcapng file"), "{stderr}");
}

/// Modern babeld traffic (babel/tests/data/babeld-1.12.pcap): unicast
/// Hellos, RTT timestamps, AE 4, and a source-specific Update we ignore.
#[test]
fn modern_babeld_capture() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("babel/tests/data/babeld-1.12.pcap");
    let (ok, text, _) = dump(&[file.to_str().unwrap()]);
    assert!(ok);
    assert_eq!(text.lines().filter(|l| !l.starts_with('\t')).count(), 53);
    assert!(text.contains("\tHello (Unicast) seqno "), "{text}");
    assert!(text.contains(" (v4-via-v6)"), "{text}");
    assert!(text.contains("Update/prefix fd00:77:5::/48 metric 0 seqno"));
    assert!(text.contains("[malformed: update with unknown mandatory sub-TLV 128]"));
    let (ok, json, _) = dump(&["--json", file.to_str().unwrap()]);
    assert!(ok);
    let packets: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let tlvs: Vec<&serde_json::Value> = packets
        .iter()
        .flat_map(|p| p["tlvs"].as_array().unwrap())
        .collect();
    let ihu = tlvs
        .iter()
        .find(|t| t["type"] == "ihu" && !t["sub_tlvs"].is_null())
        .unwrap();
    assert_eq!(ihu["sub_tlvs"][0]["type"], "timestamp");
    assert_eq!(
        ihu["sub_tlvs"][0]["timestamps"].as_array().unwrap().len(),
        2
    );
    assert!(ihu["address"].as_str().unwrap().starts_with("fe80::"));
    let v4 = tlvs.iter().find(|t| t["ae"] == 4).unwrap();
    assert_eq!(v4["prefix"], "198.18.77.1/32");
    assert_eq!(v4["status"], "ok");
    let ss = tlvs
        .iter()
        .find(|t| t["prefix"] == "fd00:77:5::/48")
        .unwrap();
    assert_eq!(ss["status"], "malformed");
    assert_eq!(ss["sub_tlvs"][0]["mandatory"], true);
    assert_eq!(ss["sub_tlvs"][0]["type"], "source-prefix");
}

/// The link types tcpdump writes for `-i lo` (Ethernet) and `-i any` (Linux
/// cooked v1 and v2), over IPv6 and IPv4 (babel/tests/data, made by
/// make-linktype-captures.sh): the same packets come out of each.
#[test]
fn ethernet_and_linux_cooked_captures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("babel/tests/data");
    let mut tlv_lines = Vec::new();
    for name in ["lo-ethernet.pcap", "any-sll.pcap", "any-sll2.pcap"] {
        let (ok, text, _) = dump(&[dir.join(name).to_str().unwrap()]);
        assert!(ok, "{name}");
        let headers: Vec<&str> = text.lines().filter(|l| !l.starts_with('\t')).collect();
        assert_eq!(headers.len(), 4, "{name}: {text}");
        assert!(
            headers[0].ends_with(" ::1.6696 > ::1.6696: babel 2 (14)"),
            "{name}"
        );
        assert!(
            headers[3].ends_with(" 127.0.0.1.6696 > 127.0.0.1.6696: babel 2 (40)"),
            "{name}"
        );
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with('\t'))
            .map(String::from)
            .collect();
        assert_eq!(
            lines[2],
            "\tUpdate/prefix fd00:77:b::1/128 metric 0 seqno 2540 interval 4.00s"
        );
        tlv_lines.push(lines);
    }
    assert_eq!(tlv_lines[0], tlv_lines[1]);
    assert_eq!(tlv_lines[0], tlv_lines[2]);
}
