//! IPv4 inside the overlay, on the TUN device: the node's IPv4 address
//! (a /32: the rest of its subnet stays free for a LAN behind it) and the
//! route of the overlay's IPv4 network into the device. NodeCore says what
//! they are ([`HostIpv4`]) at start and whenever a renewed certificate or
//! a newer network configuration changes them; this keeps the kernel in
//! line and undoes what it installed when dropped.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::kernel_route;
use crate::node::core::HostIpv4;

/// Which TUN device to configure, and whether routes may be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunIpv4Config {
    /// The device's name.
    pub dev: String,
    /// `--no-route`: say which command to run instead of routing.
    pub no_route: bool,
}

/// What the node installed on the device.
#[derive(Debug)]
pub struct TunIpv4 {
    config: TunIpv4Config,
    address: Option<Ipv4Addr>,
    route: Option<Ipv4Net>,
}

impl TunIpv4 {
    /// Nothing installed yet.
    pub fn new(config: TunIpv4Config) -> Self {
        Self {
            config,
            address: None,
            route: None,
        }
    }

    /// Puts `want` in place: the old address or route goes when it
    /// changed, the new one comes. Failures are logged with the command an
    /// admin can run (the node forwards IPv4 for others regardless).
    pub fn apply(&mut self, want: HostIpv4) {
        let dev = self.config.dev.clone();
        let address = want.address();
        if self.address != address {
            if let Some(old) = self.address.take() {
                kernel_route::remove_address_v4(old, &dev);
            }
            if let Some(a) = address {
                match kernel_route::install_address_v4(a, &dev) {
                    Ok(()) => {
                        tracing::info!(address = %a, device = %dev, "IPv4 address on the TUN");
                        self.address = Some(a);
                    }
                    Err(e) => tracing::warn!(
                        "cannot put the node's IPv4 address {a} on {dev} ({e}): run `{}`",
                        kernel_route::address_command_v4(a, &dev)
                    ),
                }
            }
        }
        let network = want.network.map(|n| n.trunc());
        if self.route != network {
            if let Some(old) = self.route.take() {
                kernel_route::remove_v4(old, &dev);
            }
            if let Some(n) = network {
                let cmd = kernel_route::route_command_v4(n, &dev);
                if self.config.no_route {
                    tracing::warn!(
                        "no route to the overlay's IPv4 {n} through {dev} (--no-route): run `{cmd}`"
                    );
                } else {
                    match kernel_route::install_v4(n, &dev) {
                        Ok(()) => {
                            tracing::info!(network = %n, device = %dev, "IPv4 overlay routed into the TUN");
                            self.route = Some(n);
                        }
                        Err(e) => tracing::warn!(
                            "cannot route the overlay's IPv4 {n} into {dev} ({e}): run `{cmd}`"
                        ),
                    }
                }
            }
        }
    }
}

impl Drop for TunIpv4 {
    fn drop(&mut self) {
        if let Some(n) = self.route.take() {
            kernel_route::remove_v4(n, &self.config.dev);
        }
        if let Some(a) = self.address.take() {
            kernel_route::remove_address_v4(a, &self.config.dev);
        }
    }
}
