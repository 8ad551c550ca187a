//! macOS: there is no `/proc` and no `ip`; routes go through `route` and
//! addresses are read with `ifconfig`. Built (and its parsers tested) on
//! every platform, used on macOS.

use std::net::Ipv6Addr;
use std::process::Command;

use ipnet::Ipv6Net;

/// The `route` command that routes `network` into `dev`.
pub fn route_command(network: Ipv6Net, dev: &str) -> String {
    format!("route -n add -inet6 -net {network} -interface {dev}")
}

/// The `ifconfig` command that puts `address/len` on `dev`.
pub fn address_command(address: Ipv6Net, dev: &str) -> String {
    format!(
        "ifconfig {dev} inet6 {} prefixlen {} alias",
        address.addr(),
        address.prefix_len()
    )
}

/// Whether the kernel routes `network` into `dev` (`route -n get`).
pub fn has_route(network: Ipv6Net, dev: &str) -> bool {
    let net = network.to_string();
    output("route", &["-n", "get", "-inet6", "-net", &net])
        .is_some_and(|o| route_get_matches(&o, network, dev))
}

/// Whether `dev` has `address` (`ifconfig DEV`).
pub fn has_address(address: Ipv6Addr, dev: &str) -> bool {
    output("ifconfig", &[dev]).is_some_and(|o| ifconfig_has(&o, address))
}

/// Routes `network` into `dev`, replacing a route that was there.
pub fn install(network: Ipv6Net, dev: &str) -> Result<(), String> {
    let net = network.to_string();
    let _ = Command::new("route")
        .args(["-n", "delete", "-inet6", "-net", &net])
        .output();
    let out = Command::new("route")
        .args(["-n", "add", "-inet6", "-net", &net, "-interface", dev])
        .output()
        .map_err(|e| format!("cannot run route: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Removes the route installed by [`install`] (errors ignored).
pub fn remove(network: Ipv6Net, dev: &str) {
    let _ = Command::new("route")
        .args([
            "-n",
            "delete",
            "-inet6",
            "-net",
            &network.to_string(),
            "-interface",
            dev,
        ])
        .output();
}

/// The `route` command that routes the IPv4 `network` into `dev`.
pub fn route_command_v4(network: ipnet::Ipv4Net, dev: &str) -> String {
    format!("route -n add -inet -net {network} -interface {dev}")
}

/// The `ifconfig` command that puts the IPv4 `address` on `dev` (a utun
/// is point-to-point: the address is its own destination).
pub fn address_command_v4(address: std::net::Ipv4Addr, dev: &str) -> String {
    format!("ifconfig {dev} inet {address} {address} netmask 255.255.255.255 alias")
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Routes the IPv4 `network` into `dev`, replacing a route that was there.
pub fn install_v4(network: ipnet::Ipv4Net, dev: &str) -> Result<(), String> {
    let net = network.to_string();
    let _ = run("route", &["-n", "delete", "-inet", "-net", &net]);
    run(
        "route",
        &["-n", "add", "-inet", "-net", &net, "-interface", dev],
    )
}

/// Removes the route installed by [`install_v4`] (errors ignored).
pub fn remove_v4(network: ipnet::Ipv4Net, dev: &str) {
    let net = network.to_string();
    let _ = run(
        "route",
        &["-n", "delete", "-inet", "-net", &net, "-interface", dev],
    );
}

/// Puts the IPv4 `address` on `dev`.
pub fn install_address_v4(address: std::net::Ipv4Addr, dev: &str) -> Result<(), String> {
    let a = address.to_string();
    run(
        "ifconfig",
        &[dev, "inet", &a, &a, "netmask", "255.255.255.255", "alias"],
    )
}

/// Removes the address put by [`install_address_v4`] (errors ignored).
pub fn remove_address_v4(address: std::net::Ipv4Addr, dev: &str) {
    let _ = run("ifconfig", &[dev, "inet", &address.to_string(), "-alias"]);
}

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `route -n get` prints `destination: ADDR`, `mask: MASK` (or a prefix
/// length) and `interface: DEV` for the route a destination takes.
fn route_get_matches(text: &str, network: Ipv6Net, dev: &str) -> bool {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let dest_ok = field("destination")
        .and_then(|d| d.parse::<Ipv6Addr>().ok())
        .is_some_and(|d| d == network.network());
    dest_ok && field("interface") == Some(dev)
}

/// `ifconfig DEV` lists `inet6 ADDR[%scope] prefixlen N ...` lines.
fn ifconfig_has(text: &str, address: Ipv6Addr) -> bool {
    text.lines().any(|l| {
        let mut f = l.split_whitespace();
        f.next() == Some("inet6")
            && f.next()
                .and_then(|a| a.split('%').next()?.parse::<Ipv6Addr>().ok())
                == Some(address)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_route_get() {
        let net: Ipv6Net = "fd7a:1b2c:3d4e::/48".parse().unwrap();
        let out = "   route to: fd7a:1b2c:3d4e::\ndestination: fd7a:1b2c:3d4e::\n       mask: ffff:ffff:ffff::\n  interface: utun3\n      flags: <UP,DONE,STATIC>\n";
        assert!(route_get_matches(out, net, "utun3"));
        assert!(!route_get_matches(out, net, "utun4"));
        let default = "   route to: fd7a:1b2c:3d4e::\ndestination: default\n  interface: en0\n";
        assert!(!route_get_matches(default, net, "en0"));
        assert!(!route_get_matches("", net, "utun3"));
    }

    #[test]
    fn reads_ifconfig() {
        let out = "utun3: flags=8051<UP,POINTOPOINT,RUNNING,MULTICAST> mtu 1400\n\
                   \tinet6 fe80::1%utun3 prefixlen 64 scopeid 0x12\n\
                   \tinet6 fd7a:1b2c:3d4e:1::1 prefixlen 64\n";
        assert!(ifconfig_has(out, "fd7a:1b2c:3d4e:1::1".parse().unwrap()));
        assert!(ifconfig_has(out, "fe80::1".parse().unwrap()));
        assert!(!ifconfig_has(out, "fd7a:1b2c:3d4e:1::2".parse().unwrap()));
        assert_eq!(
            address_command("fd00::1/48".parse().unwrap(), "utun3"),
            "ifconfig utun3 inet6 fd00::1 prefixlen 48 alias"
        );
    }
}
