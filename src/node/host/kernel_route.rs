//! The kernel side of the TUN device: the route that sends the network's
//! traffic into it, and the node address on it.
//!
//! On Linux the node reads `/proc/self/net/ipv6_route` and `if_inet6` (no
//! privilege needed; `self`, so that a systemd unit's `ProcSubset=pid`
//! leaves them visible) to say what is in place, and installs the route
//! with `ip -6 route replace` when it may; when it may not, the operator
//! gets the exact command to run. macOS does the same with `route` and
//! `ifconfig` (`kernel_route/macos.rs`).

#[cfg(not(target_os = "macos"))]
use std::net::Ipv6Addr;
#[cfg(not(target_os = "macos"))]
use std::process::Command;

#[cfg(not(target_os = "macos"))]
use ipnet::Ipv6Net;

#[cfg(any(test, target_os = "macos"))]
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub mod macos;
#[cfg(target_os = "macos")]
pub use macos::{
    address_command, address_command_v4, has_address, has_route, install, install_address_v4,
    install_v4, remove, remove_address_v4, remove_v4, route_command, route_command_v4,
};

#[cfg(not(target_os = "macos"))]
/// The `ip` command that routes `network` into `dev`.
pub fn route_command(network: Ipv6Net, dev: &str) -> String {
    format!("ip -6 route replace {network} dev {dev}")
}

#[cfg(not(target_os = "macos"))]
/// The `ip` command that puts `address/len` on `dev`.
pub fn address_command(address: Ipv6Net, dev: &str) -> String {
    format!("ip -6 addr add {address} dev {dev}")
}

#[cfg(not(target_os = "macos"))]
/// Whether the kernel routes `network` (exactly that prefix) into `dev`.
pub fn has_route(network: Ipv6Net, dev: &str) -> bool {
    std::fs::read_to_string("/proc/self/net/ipv6_route")
        .map(|t| routes_contain(&t, network, dev))
        .unwrap_or(false)
}

#[cfg(not(target_os = "macos"))]
/// Whether `dev` has `address`.
pub fn has_address(address: Ipv6Addr, dev: &str) -> bool {
    std::fs::read_to_string("/proc/self/net/if_inet6")
        .map(|t| addresses_contain(&t, address, dev))
        .unwrap_or(false)
}

#[cfg(not(target_os = "macos"))]
fn hex_addr(a: Ipv6Addr) -> String {
    a.octets().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(not(target_os = "macos"))]
/// `/proc/net/ipv6_route`: dest plen src splen nexthop metric refcnt use
/// flags device, addresses as 32 hex digits.
fn routes_contain(table: &str, network: Ipv6Net, dev: &str) -> bool {
    let dest = hex_addr(network.network());
    let plen = format!("{:02x}", network.prefix_len());
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 10 && f[0] == dest && f[1] == plen && f[9] == dev
    })
}

#[cfg(not(target_os = "macos"))]
/// `/proc/net/if_inet6`: address ifindex plen scope flags device.
fn addresses_contain(table: &str, address: Ipv6Addr, dev: &str) -> bool {
    let want = hex_addr(address);
    table.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 6 && f[0] == want && f[5] == dev
    })
}

#[cfg(not(target_os = "macos"))]
/// Routes `network` into `dev` with `ip`; the error is `ip`'s message.
pub fn install(network: Ipv6Net, dev: &str) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["-6", "route", "replace", &network.to_string(), "dev", dev])
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(not(target_os = "macos"))]
/// Removes the route installed by [`install`] (errors ignored: the device
/// may be gone already, taking its routes with it).
pub fn remove(network: Ipv6Net, dev: &str) {
    let _ = Command::new("ip")
        .args(["-6", "route", "del", &network.to_string(), "dev", dev])
        .output();
}

#[cfg(not(target_os = "macos"))]
/// The `ip` command that routes the IPv4 `network` into `dev`.
pub fn route_command_v4(network: ipnet::Ipv4Net, dev: &str) -> String {
    format!("ip -4 route replace {network} dev {dev}")
}

#[cfg(not(target_os = "macos"))]
/// The `ip` command that puts the IPv4 `address` (a /32) on `dev`.
pub fn address_command_v4(address: std::net::Ipv4Addr, dev: &str) -> String {
    format!("ip -4 addr replace {address}/32 dev {dev}")
}

#[cfg(not(target_os = "macos"))]
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[cfg(not(target_os = "macos"))]
/// Routes the IPv4 `network` into `dev` with `ip`.
pub fn install_v4(network: ipnet::Ipv4Net, dev: &str) -> Result<(), String> {
    ip(&["-4", "route", "replace", &network.to_string(), "dev", dev])
}

#[cfg(not(target_os = "macos"))]
/// Removes the route installed by [`install_v4`] (errors ignored).
pub fn remove_v4(network: ipnet::Ipv4Net, dev: &str) {
    let _ = ip(&["-4", "route", "del", &network.to_string(), "dev", dev]);
}

#[cfg(not(target_os = "macos"))]
/// Puts the IPv4 `address` on `dev` as a /32 (idempotent).
pub fn install_address_v4(address: std::net::Ipv4Addr, dev: &str) -> Result<(), String> {
    ip(&[
        "-4",
        "addr",
        "replace",
        &format!("{address}/32"),
        "dev",
        dev,
    ])
}

#[cfg(not(target_os = "macos"))]
/// Removes the address put by [`install_address_v4`] (errors ignored).
pub fn remove_address_v4(address: std::net::Ipv4Addr, dev: &str) {
    let _ = ip(&["-4", "addr", "del", &format!("{address}/32"), "dev", dev]);
}

#[cfg(all(test, not(target_os = "macos")))]
mod tests {
    use super::*;

    const ROUTES: &str = "\
fd7a1b2c3d4e00000000000000000000 30 00000000000000000000000000000000 00 00000000000000000000000000000000 00000400 00000001 00000000 00000001   re6st0
fd7a1b2c3d4e00010000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001   eth0
";

    #[test]
    fn finds_the_exact_route_on_the_device() {
        let net: Ipv6Net = "fd7a:1b2c:3d4e::/48".parse().unwrap();
        assert!(routes_contain(ROUTES, net, "re6st0"));
        assert!(!routes_contain(ROUTES, net, "eth0"));
        let other: Ipv6Net = "fd7a:1b2c:3d4e:1::/64".parse().unwrap();
        assert!(routes_contain(ROUTES, other, "eth0"));
        assert!(!routes_contain(
            ROUTES,
            "fd7a:1b2c:3d4e::/56".parse().unwrap(),
            "re6st0"
        ));
        assert!(!routes_contain("garbage\n\n1 2 3", net, "re6st0"));
    }

    #[test]
    fn finds_the_address_on_the_device() {
        let t = "fd7a1b2c3d4e00010000000000000001 05 40 00 80   re6st0\n\
                 fe800000000000000000000000000001 05 40 20 80   re6st0\n";
        let a: Ipv6Addr = "fd7a:1b2c:3d4e:1::1".parse().unwrap();
        assert!(addresses_contain(t, a, "re6st0"));
        assert!(!addresses_contain(t, a, "re6st1"));
        assert!(!addresses_contain(
            t,
            "fd7a:1b2c:3d4e:1::2".parse().unwrap(),
            "re6st0"
        ));
    }

    #[test]
    fn commands_name_prefix_and_device() {
        let net: Ipv6Net = "fd00:1::/48".parse().unwrap();
        assert_eq!(
            route_command(net, "re6st0"),
            "ip -6 route replace fd00:1::/48 dev re6st0"
        );
    }
}
