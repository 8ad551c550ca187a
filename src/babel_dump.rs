//! `re6st babel-dump`: decode the Babel packets of a pcap capture.
//!
//! Reads classic pcap and pcapng files (tcpdump, Wireshark, `tcpdump -i
//! any`), with Ethernet, Linux cooked (SLL/SLL2), raw IP or loopback
//! framing, IPv4 or IPv6. A UDP datagram is taken as Babel when either port
//! is 6696 (or 6697, the pre-RFC port); on other ports only when it has a
//! valid Babel header and a body that walks cleanly (so tunnelled or
//! non-standard deployments still show up, but random traffic does not).
//!
//! Text output follows `tcpdump -v`'s Babel decoder, with decoder verdicts
//! appended as `[malformed: ...]`; `--json` prints one JSON object per
//! packet (see `re6st_babel::describe` for the fields).

use std::io::{BufWriter, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use re6st_babel::capture::{Datagram, frames, udp_datagram};
use re6st_babel::describe::{PacketDescription, Status, describe};
use re6st_babel::wire::{PORT, parse_packet};
use serde::Serialize;

/// Arguments of `re6st babel-dump`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Capture with e.g. `tcpdump -i any -w babel.pcap udp port 6696`.\n\
    Text lines follow tcpdump -v; TLVs the decoder ignores are marked\n\
    [malformed: why] or [fatal: why] (the rest of the packet is dropped)."
)]
pub struct BabelDumpArgs {
    /// The capture to read (pcap or pcapng).
    pub file: PathBuf,
    /// One JSON object per packet (one per line) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The pre-RFC 6126 port, still used by old captures.
const OLD_PORT: u16 = 6697;

/// One Babel packet of the capture, as printed with `--json`.
#[derive(Debug, Serialize)]
struct DumpRecord<'a> {
    /// Frame number in the capture, from 1.
    frame: usize,
    /// Capture time, RFC 3339 UTC.
    time: String,
    src: SocketAddr,
    dst: SocketAddr,
    /// UDP payload length.
    length: usize,
    /// Why the whole packet was rejected (bad header, truncated).
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    packet: Option<&'a PacketDescription>,
}

/// Runs `re6st babel-dump`.
pub fn run(args: BabelDumpArgs) -> anyhow::Result<()> {
    let data = std::fs::read(&args.file)
        .with_context(|| format!("reading capture {}", args.file.display()))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = dump(&data, args.json, &mut out);
    let flushed = out.flush();
    match result.and_then(|n| flushed.map(|()| n).map_err(DumpError::Io)) {
        Ok((shown, seen)) => {
            if shown == 0 {
                eprintln!(
                    "re6st: no Babel packets in {} ({seen} frames)",
                    args.file.display()
                );
            }
            Ok(())
        }
        // `re6st babel-dump x.pcap | head` is not an error.
        Err(DumpError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(DumpError::Io(e)) => Err(e).context("writing output"),
        Err(DumpError::Capture(e)) => {
            Err(e).with_context(|| format!("reading capture {}", args.file.display()))
        }
    }
}

#[derive(Debug)]
enum DumpError {
    Io(std::io::Error),
    Capture(re6st_babel::capture::CaptureError),
}

impl From<std::io::Error> for DumpError {
    fn from(e: std::io::Error) -> Self {
        DumpError::Io(e)
    }
}

/// Whether a datagram is shown as Babel.
fn is_babel(d: &Datagram<'_>) -> bool {
    let ports = [d.src.port(), d.dst.port()];
    if ports.contains(&PORT) || ports.contains(&OLD_PORT) {
        return true;
    }
    parse_packet(d.payload).is_ok_and(|p| {
        p.decode()
            .all(|t| !t.result.as_ref().is_err_and(|e| e.is_fatal()))
    })
}

/// Prints every Babel packet of `data`; returns (packets shown, frames).
fn dump(data: &[u8], json: bool, out: &mut impl Write) -> Result<(usize, usize), DumpError> {
    let mut shown = 0;
    let mut seen = 0;
    for (i, frame) in frames(data).map_err(DumpError::Capture)?.enumerate() {
        let frame = frame.map_err(DumpError::Capture)?;
        seen += 1;
        let Some(d) = udp_datagram(&frame).filter(is_babel) else {
            continue;
        };
        shown += 1;
        let (packet, error) = match parse_packet(d.payload) {
            Ok(p) => (Some(describe(&p)), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let record = DumpRecord {
            frame: i + 1,
            time: rfc3339(frame.time),
            src: d.src,
            dst: d.dst,
            length: d.payload.len(),
            error,
            packet: packet.as_ref(),
        };
        if json {
            serde_json::to_writer(&mut *out, &record).map_err(std::io::Error::from)?;
            writeln!(out)?;
        } else {
            write_text(out, &record)?;
        }
    }
    Ok((shown, seen))
}

/// `ip.port` as tcpdump prints it.
fn endpoint(a: &SocketAddr) -> String {
    format!("{}.{}", a.ip(), a.port())
}

fn write_text(out: &mut impl Write, r: &DumpRecord<'_>) -> std::io::Result<()> {
    let time = r.time.replacen('T', " ", 1);
    let time = time.trim_end_matches('Z');
    write!(
        out,
        "{:5}  {time} {} > {}: babel",
        r.frame,
        endpoint(&r.src),
        endpoint(&r.dst)
    )?;
    match (&r.error, r.packet) {
        (Some(e), _) => writeln!(out, " (invalid: {e})"),
        (None, Some(p)) => {
            let fatal = p.tlvs.iter().any(|t| t.status == Some(Status::Fatal));
            writeln!(
                out,
                " 2 ({}){}",
                p.body_len,
                if fatal { " (truncated body)" } else { "" }
            )?;
            for line in p.text_lines() {
                writeln!(out, "\t{line}")?;
            }
            Ok(())
        }
        (None, None) => writeln!(out),
    }
}

/// A time since the epoch as `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC).
fn rfc3339(t: Duration) -> String {
    let secs = t.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        t.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(Duration::new(1_302_205_459, 518_440_000)),
            "2011-04-07T19:44:19.518440Z"
        );
        assert_eq!(
            rfc3339(Duration::new(951_782_400, 0)),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
