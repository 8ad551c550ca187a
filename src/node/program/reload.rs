//! `re6st node` on SIGHUP (`systemctl reload re6st-node`): read the
//! configuration file again, apply the options that can change while the
//! node runs, and name those that need a restart; then run a registry
//! round at once (network configuration, CRL, certificate renewal), so a
//! change made at the registry (`--ipv4` added, say) is taken now rather
//! than at the next round (every 12 h). The tunnels stay up.
//!
//! Live: `tunnel-replacement` (from the next refresh), `gateway` and
//! `gateway-metric` (announced or retracted at once), `metrics` (the
//! server moves). The rest is fixed at start: the TUN device, the socket,
//! the threads, the liveness timers of the QUIC connections, the edges'
//! tasks and the registry URL. Flags given on the command line still win
//! over the file, as at start; `registry`, `token` and `ca-fingerprint`
//! only matter for enrolling, which is done.

use std::path::PathBuf;

use super::options::{CONFIG_FILE, NodeArgs, NodeOptions};
use crate::gateway::GatewayConfig;
use crate::node::LiveOptions;

/// The options in force: the file under the command-line flags, checked.
pub(super) fn read(args: &NodeArgs) -> anyhow::Result<NodeOptions> {
    let file = match config_file(args) {
        Some(p) => {
            tracing::info!(file = %p.display(), "reading the configuration file");
            NodeOptions::from_file(&p)?
        }
        None => NodeOptions::default(),
    };
    let opts = args.options.clone().merge(file);
    opts.validate()?;
    Ok(opts)
}

/// `--config`, else `DIR/node.toml` when it exists.
fn config_file(args: &NodeArgs) -> Option<PathBuf> {
    args.config.clone().or_else(|| {
        let p = args.dir.join(CONFIG_FILE);
        p.exists().then_some(p)
    })
}

/// What the running node takes from `opts`.
pub(super) fn live(opts: &NodeOptions) -> LiveOptions {
    LiveOptions {
        tunnel_replacement: opts.tunnel_replacement,
        gateway: if opts.gateway.is_empty() {
            GatewayConfig::default()
        } else {
            GatewayConfig::new(&opts.gateway, opts.gateway_metric.unwrap_or(0))
        },
    }
}

/// The options that differ between `old` and `new` and apply only at the
/// next start.
pub(super) fn restart_needed(old: &NodeOptions, new: &NodeOptions) -> Vec<&'static str> {
    let tun = |o: &NodeOptions| o.tun_choice().ok();
    let transport = |o: &NodeOptions| {
        let t = o.transport();
        (t.keep_alive, t.suspect_after, t.idle_timeout)
    };
    [
        ("listen", old.listen() != new.listen()),
        ("advertise", old.advertise != new.advertise),
        ("tun, tun-attach, tun-fd, no-tun", tun(old) != tun(new)),
        ("mtu", old.mtu != new.mtu),
        ("queues", old.queues != new.queues),
        ("no-offload", old.no_offload != new.no_offload),
        ("no-route", old.no_route != new.no_route),
        ("control", old.control != new.control),
        ("threads", old.threads != new.threads),
        (
            "keep-alive, suspect-after, idle-timeout",
            transport(old) != transport(new),
        ),
        ("routable", old.routable != new.routable),
        ("no-upnp", old.no_upnp != new.no_upnp),
        ("lan", old.lan != new.lan),
        (
            "registry",
            old.registry.as_deref().filter(|r| !r.is_empty())
                != new.registry.as_deref().filter(|r| !r.is_empty()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::super::options::tests::flags;
    use super::*;

    fn file(text: &str) -> NodeOptions {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn live_options_are_not_restart_options() {
        let old = flags(&["--no-tun"]).merge(file("mtu = 1400"));
        let new = flags(&["--no-tun"]).merge(file(
            r#"
            mtu = 1400
            tunnel-replacement = "least-used-best-of-3"
            gateway = ["2001:db8::/32"]
            gateway-metric = 7
            metrics = "127.0.0.1:9470"
            token = "changed"
            "#,
        ));
        assert!(restart_needed(&old, &new).is_empty());
        let l = live(&new);
        assert_eq!(l.gateway.metric, 7);
        assert_eq!(
            l.gateway.prefixes,
            vec!["2001:db8::/32".parse::<ipnet::Ipv6Net>().unwrap()]
        );
        assert!(l.tunnel_replacement.is_some());
        assert_eq!(live(&old), LiveOptions::default());
    }

    #[test]
    fn fixed_options_are_named() {
        let old = flags(&[]).merge(file("mtu = 1400\nkeep-alive = \"200ms\""));
        let new = flags(&[]).merge(file(
            "mtu = 1300\nkeep-alive = \"300ms\"\ntun-attach = \"re6st0\"\nlan = [\"eth0\"]",
        ));
        assert_eq!(
            restart_needed(&old, &new),
            [
                "tun, tun-attach, tun-fd, no-tun",
                "mtu",
                "keep-alive, suspect-after, idle-timeout",
                "lan"
            ]
        );
        // A flag on the command line wins over the file at reload too.
        let pinned = flags(&["--mtu", "1400"]);
        let a = pinned.clone().merge(file("mtu = 1400"));
        let b = pinned.merge(file("mtu = 1300"));
        assert!(restart_needed(&a, &b).is_empty());
    }
}
