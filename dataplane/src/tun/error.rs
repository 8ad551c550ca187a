//! Why a TUN device could not be had, with what to run to fix it.

use std::io;

/// Opening the TUN device failed. Each variant says what is missing and
/// how an operator fixes it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TunError {
    /// Creating or configuring a device needs root or CAP_NET_ADMIN.
    #[error(
        "no permission to create TUN device {name}: run as root or with CAP_NET_ADMIN \
         (setcap cap_net_admin+ep BINARY), or have an admin create it once with \
         `ip tuntap add dev {name} mode tun user $USER && ip -6 addr add ADDR/LEN dev {name} \
         && ip link set {name} mtu MTU up` and attach to it (--tun-attach {name})"
    )]
    CreatePermission {
        /// Device name.
        name: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Attaching needs the device to exist, owned by this user.
    #[error(
        "TUN device {name} does not exist: create it with \
         `ip tuntap add dev {name} mode tun user $USER` (as root), then set its address, \
         MTU and state with `ip`"
    )]
    NotFound {
        /// Device name.
        name: String,
    },
    /// The device exists but belongs to another user or group.
    #[error(
        "no permission to attach to TUN device {name}: it is owned by another user; \
         recreate it with `ip tuntap del dev {name} mode tun && \
         ip tuntap add dev {name} mode tun user $USER` (as root)"
    )]
    AttachPermission {
        /// Device name.
        name: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// `/dev/net/tun` cannot be opened.
    #[error(
        "cannot open /dev/net/tun: load the driver (`modprobe tun`), or in a container \
         pass the device (`--device /dev/net/tun`) and make it readable and writable \
         by this user"
    )]
    NoDriver {
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// Another process holds the device (single-queue devices accept one).
    #[error("TUN device {name} is busy: another process is attached to it")]
    Busy {
        /// Device name.
        name: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The inherited descriptor is not an open TUN device in the expected
    /// mode.
    #[error(
        "file descriptor {fd} is not a usable TUN device (it must be an open Linux TUN \
         fd with IFF_TUN|IFF_NO_PI and without IFF_VNET_HDR, or a macOS utun socket)"
    )]
    BadFd {
        /// The descriptor.
        fd: i32,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// A device to make exists already.
    #[error(
        "TUN device {name} exists already: remove it with `ip link del {name}` to make it again, \
         or attach to it as its owner"
    )]
    Exists {
        /// Device name.
        name: String,
    },
    /// This platform cannot open a device this way.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Another system error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The system error.
        #[source]
        source: io::Error,
    },
}

/// How a failed open is classified: what the caller was doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(target_os = "macos", allow(dead_code))]
pub(crate) enum Doing {
    Create,
    Attach,
}

/// Maps a system error to the variant that tells the operator what to do.
/// `exists` says whether `/sys/class/net/NAME` exists.
pub(crate) fn classify(doing: Doing, name: &str, exists: bool, source: io::Error) -> TunError {
    let name = name.to_owned();
    let raw = source.raw_os_error();
    match (doing, raw) {
        (_, Some(libc::ENOENT | libc::ENODEV | libc::ENXIO)) if !tun_node_present() => {
            TunError::NoDriver { source }
        }
        (_, Some(libc::EBUSY)) => TunError::Busy { name, source },
        (Doing::Attach, _) if !exists => TunError::NotFound { name },
        (Doing::Attach, Some(libc::EPERM | libc::EACCES)) => {
            TunError::AttachPermission { name, source }
        }
        (Doing::Create, Some(libc::EPERM | libc::EACCES)) => {
            TunError::CreatePermission { name, source }
        }
        _ => TunError::Io {
            context: match doing {
                Doing::Create => "creating the TUN device",
                Doing::Attach => "attaching to the TUN device",
            },
            source,
        },
    }
}

fn tun_node_present() -> bool {
    std::path::Path::new("/dev/net/tun").exists() || cfg!(not(target_os = "linux"))
}

/// Does a network interface of this name exist?
#[cfg_attr(target_os = "macos", allow(dead_code))]
pub(crate) fn interface_exists(name: &str) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new("/sys/class/net").join(name).exists()
    } else {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn messages_name_the_fix() {
        let e = classify(Doing::Create, "re6st0", false, err(libc::EPERM));
        assert!(matches!(e, TunError::CreatePermission { .. }));
        let msg = e.to_string();
        assert!(
            msg.contains("ip tuntap add dev re6st0 mode tun user"),
            "{msg}"
        );
        assert!(msg.contains("CAP_NET_ADMIN"), "{msg}");

        let e = classify(Doing::Attach, "re6st0", false, err(libc::EPERM));
        assert!(matches!(e, TunError::NotFound { .. }));
        assert!(e.to_string().contains("ip tuntap add dev re6st0"));

        let e = classify(Doing::Attach, "re6st0", true, err(libc::EPERM));
        assert!(matches!(e, TunError::AttachPermission { .. }));
        assert!(e.to_string().contains("user $USER"));

        let e = classify(Doing::Attach, "re6st0", true, err(libc::EBUSY));
        assert!(matches!(e, TunError::Busy { .. }));

        let e = classify(Doing::Create, "re6st0", false, err(libc::EINVAL));
        assert!(matches!(e, TunError::Io { .. }));
    }
}
