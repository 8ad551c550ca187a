//! Persistent devices made for another user: what `ip tuntap add dev NAME
//! mode tun user USER` plus `ip addr` and `ip link` do, without the `ip`
//! tool (a container image of one static binary has none). A privileged
//! helper (an init container, a systemd `ExecStartPre=+`) makes the device
//! once; the node then attaches to it as USER with no capability.

use std::os::fd::{AsRawFd, RawFd};

use ipnet::Ipv6Net;
use tun_rs::DeviceBuilder;

use super::TunError;
use super::error::{Doing, classify, interface_exists};

/// A persistent device to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentConfig {
    /// Device name (`re6st0`).
    pub name: String,
    /// Address and prefix length. With the overlay network's length (a
    /// /48), the kernel's on-link route covers the whole network, so no
    /// separate route is needed.
    pub address: Ipv6Net,
    /// MTU (at least 1280).
    pub mtu: u16,
    /// The user that may attach (TUNSETOWNER).
    pub owner: u32,
    /// Several queues (the node's `--queues` above 1 needs it).
    pub multi_queue: bool,
}

/// Makes the device, owned by `config.owner`, with its address and MTU,
/// up, and persistent (it outlives this process). A device of that name
/// that exists already is an error: its owner and mode cannot be checked
/// from here.
pub fn make_persistent(config: &PersistentConfig) -> Result<(), TunError> {
    if interface_exists(&config.name) {
        return Err(TunError::Exists {
            name: config.name.clone(),
        });
    }
    let classify = |e| classify(Doing::Create, &config.name, false, e);
    let dev = DeviceBuilder::new()
        .name(&config.name)
        .mtu(config.mtu)
        .ipv6(config.address.addr(), config.address.prefix_len())
        .multi_queue(config.multi_queue)
        .build_sync()
        .map_err(classify)?;
    let fd = dev.as_raw_fd();
    tun_ioctl(fd, TUNSETOWNER, config.owner.into()).map_err(classify)?;
    tun_ioctl(fd, TUNSETPERSIST, 1).map_err(classify)?;
    Ok(())
}

/// `_IOW('T', 204, int)`: the device's owner.
const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
/// `_IOW('T', 203, int)`: the device outlives its last descriptor.
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;

/// These two TUN ioctls take the value itself as the argument, not a
/// pointer to it (tun-rs 2.8's `user()` and `persist()` pass a pointer: the
/// kernel then records part of a stack address as the owner).
fn tun_ioctl(fd: RawFd, request: libc::c_ulong, value: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: an ioctl on an open TUN descriptor with an integer argument;
    // no memory is passed.
    let r = unsafe { libc::ioctl(fd, request as _, value) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
