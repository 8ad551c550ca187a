//! macOS utun: creation (root) and the 4-byte address-family header, which
//! this crate handles itself ([`super::af_header`], tested on every
//! platform) so that callers always see bare IPv6 packets.
//!
//! macOS has no persistent user-owned utun: an unprivileged node gets its
//! fd from a privileged helper (or a NetworkExtension) and adopts it.
//! Type-checked on Linux with `cargo check --target x86_64-apple-darwin`.

use std::io::{self, IoSlice, IoSliceMut};

use tun_rs::{AsyncDevice, DeviceBuilder, SyncDevice};

use super::CreateConfig;
use super::af_header::{AF_HEADER_LEN, header_for, strip};

/// Why attaching by name is impossible here.
pub(super) const NO_ATTACH: &str = "macOS has no persistent user-owned utun device to attach to: \
     run as root to create one, or have a privileged helper pass its fd (--tun-fd N)";

pub(super) fn create(config: &CreateConfig) -> io::Result<SyncDevice> {
    let mut b = DeviceBuilder::new().mtu(config.mtu);
    // The system names utun devices (utunN); any other name, such as the
    // node's default re6st0, lets it pick the next free one.
    if is_utun_name(&config.name) {
        b = b.name(&config.name);
    }
    if let Some(net) = config.address {
        b = b.ipv6(net.addr(), net.prefix_len());
    }
    let dev = b.packet_information(true).build_sync()?;
    take_af_header(&dev);
    Ok(dev)
}

/// `utun` followed by a unit number.
pub(super) fn is_utun_name(name: &str) -> bool {
    name.strip_prefix("utun")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Makes tun-rs pass the address-family header through to us.
pub(super) fn take_af_header(dev: &SyncDevice) {
    dev.set_ignore_packet_info(false);
}

/// Reads one packet into `buf` (header stripped); returns its length.
pub(super) async fn recv(dev: &AsyncDevice, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut header = [0u8; AF_HEADER_LEN];
        let n = {
            let mut bufs = [IoSliceMut::new(&mut header), IoSliceMut::new(buf)];
            dev.recv_vectored(&mut bufs).await?
        };
        let Some(len) = n.checked_sub(AF_HEADER_LEN) else {
            continue;
        };
        // Runt frames and other families are skipped.
        if strip(&header).is_ok() {
            return Ok(len);
        }
    }
}

/// [`recv`] without waiting: `WouldBlock` when nothing is there.
pub(super) fn try_recv(dev: &AsyncDevice, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut header = [0u8; AF_HEADER_LEN];
        let n = {
            let mut bufs = [IoSliceMut::new(&mut header), IoSliceMut::new(buf)];
            dev.try_recv_vectored(&mut bufs)?
        };
        let Some(len) = n.checked_sub(AF_HEADER_LEN) else {
            continue;
        };
        if strip(&header).is_ok() {
            return Ok(len);
        }
    }
}

/// Writes one IPv6 or IPv4 packet behind its header.
pub(super) async fn send(dev: &AsyncDevice, packet: &[u8]) -> io::Result<()> {
    let header = header_for(packet);
    let bufs = [IoSlice::new(&header), IoSlice::new(packet)];
    dev.send_vectored(&bufs).await?;
    Ok(())
}
