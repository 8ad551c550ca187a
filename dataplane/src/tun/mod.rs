//! The TUN device: the only I/O of this crate.
//!
//! Three ways to get the device, all first-class ([`TunSource`]):
//! - **Create** it (root or CAP_NET_ADMIN): name, IPv6 address, MTU, up.
//! - **Attach** by name to a device an admin prepared with
//!   `ip tuntap add dev NAME mode tun user USER` (plus `ip` for address, MTU
//!   and `up`), running as USER with no capability: no address, MTU or
//!   state calls are made (tun-rs `inherit_enable_state()`).
//! - **Adopt** an inherited file descriptor (`--tun-fd N`): container
//!   runtimes, a privileged helper, macOS.
//!
//! On Linux the device is opened with offload (`IFF_VNET_HDR`) when asked
//! and allowed: the kernel then hands over TCP/UDP GSO super-packets, which
//! [`Tun::recv_batch`] splits into IP packets (`recv_multiple`), and
//! [`Tun::send_batch`] coalesces consecutive TCP segments back (GRO,
//! `send_multiple`), so per-packet syscalls become per-64-KiB syscalls. If
//! offload cannot be enabled the device is opened without it, and the same
//! calls move one packet per syscall. Adopted fds never have offload (tun-rs
//! rejects `IFF_VNET_HDR` fds).
//!
//! A device is opened detached ([`Tun::open_detached`], no runtime needed)
//! and registered with the Tokio runtime that will poll it
//! ([`DetachedTun::attach`]); [`Tun::open`] does both in the current one.

mod af_header;
mod batch;
mod error;
#[cfg(target_os = "macos")]
mod macos;
#[cfg(target_os = "linux")]
mod persistent;

use std::io;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};

use ipnet::Ipv6Net;
#[cfg(not(target_os = "macos"))]
use tun_rs::DeviceBuilder;
use tun_rs::{AsyncDevice, SyncDevice};

pub use af_header::{
    AF_HEADER_LEN, AfHeaderError, header_for as af_header_for, ipv6_header,
    strip as strip_af_header,
};
pub use batch::{BATCH_SIZE, RecvBatch, SendBatch};
pub use error::TunError;
#[cfg(target_os = "linux")]
pub use persistent::{PersistentConfig, make_persistent};

#[cfg(not(target_os = "macos"))]
use error::interface_exists;
use error::{Doing, classify};

/// Largest IPv6 packet without a Jumbo Payload option.
pub const MAX_PACKET_LEN: usize = 65535;

/// How to get the device.
#[derive(Debug)]
pub enum TunSource {
    /// Create and configure a device (root or CAP_NET_ADMIN).
    Create(CreateConfig),
    /// Attach to an existing device owned by this user; no capability
    /// needed. Its address, MTU and state are the admin's.
    Attach {
        /// Device name (`re6st0`).
        name: String,
    },
    /// Adopt an inherited descriptor. On Linux it must be a TUN fd opened
    /// with `IFF_TUN | IFF_NO_PI` and without `IFF_VNET_HDR`; on macOS a utun
    /// control socket.
    Fd(OwnedFd),
}

/// How to open the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunOptions {
    /// Ask for Linux GSO/GRO offload; used when the kernel accepts it,
    /// silently left off otherwise (see [`Tun::offload`]).
    pub offload: bool,
    /// Open a multi-queue device (Linux), so that [`Tun::clone_queue`] can
    /// give each packet task its own queue. When attaching, it must match
    /// how the admin created the device (`ip tuntap add ... multi_queue`).
    pub multi_queue: bool,
}

impl Default for TunOptions {
    /// Offload on, single queue.
    fn default() -> Self {
        TunOptions {
            offload: true,
            multi_queue: false,
        }
    }
}

/// Settings of a device the node creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateConfig {
    /// Device name; on macOS a `utunN` name, or any other to let the
    /// system pick the next free utun.
    pub name: String,
    /// Address and prefix length to assign (the node's overlay address).
    pub address: Option<Ipv6Net>,
    /// MTU (at least 1280).
    pub mtu: u16,
}

/// A TUN device opened but not yet registered with a runtime: its name,
/// MTU and offload can be read, and [`DetachedTun::attach`] registers it
/// with the runtime it runs in. A program opens the device early (to
/// check it, to route into it) and hands it to the thread that will poll
/// it, so that its readiness wakes that thread and no other.
pub struct DetachedTun {
    dev: SyncDevice,
    name: String,
    offload: bool,
}

impl std::fmt::Debug for DetachedTun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        describe(f, "DetachedTun", &self.name, self.offload)
    }
}

fn describe(
    f: &mut std::fmt::Formatter<'_>,
    what: &str,
    name: &str,
    offload: bool,
) -> std::fmt::Result {
    f.debug_struct(what)
        .field("name", &name)
        .field("offload", &offload)
        .finish()
}

impl DetachedTun {
    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is Linux offload (GSO super-packets in, GRO out) on?
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The device's MTU as the kernel has it now.
    pub fn mtu(&self) -> io::Result<u16> {
        self.dev.mtu()
    }

    /// Opens another queue of a multi-queue device (opened with
    /// [`TunOptions::multi_queue`]), with the same offload setting.
    #[cfg(target_os = "linux")]
    pub fn clone_queue(&self) -> Result<DetachedTun, TunError> {
        let dev = self.dev.try_clone().map_err(|source| TunError::Io {
            context: "opening another queue of the TUN device (it must be multi-queue)",
            source,
        })?;
        Ok(DetachedTun {
            dev,
            name: self.name.clone(),
            offload: self.offload,
        })
    }

    /// Registers the device with the current Tokio runtime.
    pub fn attach(self) -> Result<Tun, TunError> {
        let dev = AsyncDevice::new(self.dev).map_err(|source| TunError::Io {
            context: "registering the TUN device with the runtime",
            source,
        })?;
        Ok(Tun {
            dev,
            name: self.name,
            offload: self.offload,
        })
    }
}

/// An open TUN device.
pub struct Tun {
    dev: AsyncDevice,
    name: String,
    offload: bool,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        describe(f, "Tun", &self.name, self.offload)
    }
}

impl Tun {
    /// Opens the device, registered with the current Tokio runtime.
    pub fn open(source: TunSource, options: TunOptions) -> Result<Tun, TunError> {
        Self::open_detached(source, options)?.attach()
    }

    /// Opens the device without registering it ([`DetachedTun::attach`]
    /// does, on the thread that will poll it). Needs no runtime.
    pub fn open_detached(source: TunSource, options: TunOptions) -> Result<DetachedTun, TunError> {
        match source {
            TunSource::Create(config) => Self::create(config, options),
            TunSource::Attach { name } => Self::attach_to(name, options),
            TunSource::Fd(fd) => Self::adopt(fd),
        }
    }

    #[cfg(not(target_os = "macos"))]
    fn create(config: CreateConfig, options: TunOptions) -> Result<DetachedTun, TunError> {
        let build = |offload: bool| {
            let mut b = DeviceBuilder::new().name(&config.name).mtu(config.mtu);
            if let Some(net) = config.address {
                b = b.ipv6(net.addr(), net.prefix_len());
            }
            linux_options(b, offload, options.multi_queue).build_sync()
        };
        let exists = interface_exists(&config.name);
        let dev = open_with_fallback(options.offload, build)
            .map_err(|e| classify(Doing::Create, &config.name, exists, e))?;
        Ok(Self::wrap(dev, config.name))
    }

    #[cfg(target_os = "macos")]
    fn create(config: CreateConfig, _options: TunOptions) -> Result<DetachedTun, TunError> {
        let dev =
            macos::create(&config).map_err(|e| classify(Doing::Create, &config.name, false, e))?;
        let name = dev.name().unwrap_or(config.name);
        Ok(Self::wrap(dev, name))
    }

    #[cfg(not(target_os = "macos"))]
    fn attach_to(name: String, options: TunOptions) -> Result<DetachedTun, TunError> {
        // As root, TUNSETIFF would silently create a new, unconfigured
        // device: attaching means an existing one.
        if !interface_exists(&name) {
            return Err(TunError::NotFound { name });
        }
        let build = |offload: bool| {
            let b = DeviceBuilder::new().name(&name).inherit_enable_state();
            linux_options(b, offload, options.multi_queue).build_sync()
        };
        let exists = interface_exists(&name);
        let dev = open_with_fallback(options.offload, build)
            .map_err(|e| classify(Doing::Attach, &name, exists, e))?;
        Ok(Self::wrap(dev, name))
    }

    #[cfg(target_os = "macos")]
    fn attach_to(_name: String, _options: TunOptions) -> Result<DetachedTun, TunError> {
        Err(TunError::Unsupported(macos::NO_ATTACH))
    }

    fn adopt(fd: OwnedFd) -> Result<DetachedTun, TunError> {
        let raw = fd.as_raw_fd();
        // SAFETY: `OwnedFd` proves we own an open descriptor; ownership
        // passes to the device, which closes it on drop. tun-rs checks with
        // TUNGETIFF that it is a TUN device in the supported mode.
        let dev = unsafe { SyncDevice::from_fd(fd.into_raw_fd()) }
            .map_err(|source| TunError::BadFd { fd: raw, source })?;
        #[cfg(target_os = "macos")]
        macos::take_af_header(&dev);
        let name = dev.name().unwrap_or_else(|_| format!("fd{raw}"));
        Ok(Self::wrap(dev, name))
    }

    fn wrap(dev: SyncDevice, name: String) -> DetachedTun {
        #[cfg(target_os = "linux")]
        let offload = dev.tcp_gso();
        #[cfg(not(target_os = "linux"))]
        let offload = false;
        tracing::info!(tun = %name, offload, "TUN device open");
        DetachedTun { dev, name, offload }
    }

    /// Opens another queue of a multi-queue device (opened with
    /// [`TunOptions::multi_queue`]), with the same offload setting: one per
    /// packet task, so that tasks on different cores never share a queue.
    /// The kernel spreads flows over the queues.
    #[cfg(target_os = "linux")]
    pub fn clone_queue(&self) -> Result<Tun, TunError> {
        let dev = self.dev.try_clone().map_err(|source| TunError::Io {
            context: "opening another queue of the TUN device (it must be multi-queue)",
            source,
        })?;
        Ok(Tun {
            dev,
            name: self.name.clone(),
            offload: self.offload,
        })
    }

    /// The device name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Is Linux offload (GSO super-packets in, GRO out) on?
    pub fn offload(&self) -> bool {
        self.offload
    }

    /// The device's MTU as the kernel has it now.
    pub fn mtu(&self) -> io::Result<u16> {
        self.dev.mtu()
    }

    /// Waits for packets and reads a batch into `batch` (one packet
    /// without offload, up to a GSO super-packet's worth with it). Returns
    /// the number of packets; see [`RecvBatch::packet_mut`].
    pub async fn recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.recv(&self.dev, self.offload).await
    }

    /// Waits until the device may have packets (a false alarm is
    /// possible: [`Tun::try_recv_batch`] then reads nothing). For a loop
    /// that waits on several sources and then reads each without waiting.
    pub async fn readable(&self) -> io::Result<()> {
        self.dev.readable().await
    }

    /// [`Tun::recv_batch`] without waiting: `Ok(0)` when no packet is
    /// there.
    pub fn try_recv_batch(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        batch.try_recv(&self.dev)
    }

    /// Writes one IPv6 packet.
    pub async fn send(&self, packet: &[u8]) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        if self.offload {
            // A zero virtio header: no GSO, no checksum offload.
            let header = [0u8; tun_rs::VIRTIO_NET_HDR_LEN];
            let bufs = [io::IoSlice::new(&header), io::IoSlice::new(packet)];
            self.dev.send_vectored(&bufs).await?;
            return Ok(());
        }
        #[cfg(target_os = "macos")]
        return macos::send(&self.dev, packet).await;
        #[cfg(not(target_os = "macos"))]
        {
            self.dev.send(packet).await?;
            Ok(())
        }
    }

    /// Writes every packet of `batch`, coalescing TCP segments when
    /// offload is on, and clears it.
    pub async fn send_batch(&self, batch: &mut SendBatch) -> io::Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if self.offload {
            let result = batch.send_offload(&self.dev).await;
            batch.clear();
            return result;
        }
        let mut result = Ok(());
        for i in 0..batch.len() {
            if let Err(e) = self.send(batch.packet(i)).await {
                result = Err(e);
            }
        }
        batch.clear();
        result
    }

    /// The underlying tun-rs device (for multi-queue or platform calls).
    pub fn device(&self) -> &AsyncDevice {
        &self.dev
    }
}

#[cfg(target_os = "linux")]
fn linux_options(b: DeviceBuilder, offload: bool, multi_queue: bool) -> DeviceBuilder {
    b.offload(offload).multi_queue(multi_queue)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn linux_options(b: DeviceBuilder, _offload: bool, _multi_queue: bool) -> DeviceBuilder {
    b
}

/// Opens with offload if asked, and again without it if that failed for a
/// reason other than permissions (an old kernel, a device that refuses
/// `TUNSETOFFLOAD`).
#[cfg(not(target_os = "macos"))]
fn open_with_fallback(
    offload: bool,
    build: impl Fn(bool) -> io::Result<SyncDevice>,
) -> io::Result<SyncDevice> {
    match build(offload) {
        Err(e) if offload && !is_permission(&e) && e.raw_os_error() != Some(libc::EBUSY) => {
            tracing::warn!(error = %e, "TUN offload unavailable, opening without it");
            build(false)
        }
        other => other,
    }
}

#[cfg(not(target_os = "macos"))]
fn is_permission(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EPERM | libc::EACCES))
}
