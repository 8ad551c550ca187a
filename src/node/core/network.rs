//! Live reconfiguration: a newer network configuration from the registry,
//! applied where it can be without a restart.

use super::{NodeCore, Now};
use crate::identity::{NetworkConfig, PROTOCOL_VERSION};
use crate::node::config::babel_config;

impl NodeCore {
    /// A newer network configuration, applied live where it can be (the
    /// registry has saved it already):
    /// - `tunnel_replacement` from the next refresh (unless this node
    ///   overrides it);
    /// - `tunnels` (k), `max_tunnels`, `tunnel_refresh_secs`: a larger k
    ///   opens tunnels at once, a smaller one drains one surplus tunnel per
    ///   refresh, a lower maximum refuses new incoming tunnels and cuts
    ///   none ([`crate::tunnels::policy::Policy::set_limits`]);
    /// - the Babel intervals and RTT metric: every tunnel, existing or new,
    ///   from now on ([`re6st_babel::engine::Engine::reconfigure`]);
    /// - `gateways` (the gateway grants): checked from now on; routes of
    ///   withdrawn grants are dropped at once;
    /// - `min_protocol`: a node older than it says so loudly and keeps
    ///   running (its peers decide whether to talk to it).
    ///
    /// The overlay prefix, the node prefix length and the registry URL are
    /// built into the certificate, the FIB and the registry task: they wait
    /// for a restart, and the log names them.
    pub(super) fn adopt_network(&mut self, cfg: NetworkConfig, now: Now) {
        let replacement = cfg.tunnel_replacement;
        if self.config.replacement.is_none() && replacement != self.network.tunnel_replacement {
            match self.driver.set_replacement(replacement) {
                Ok(()) => {
                    tracing::info!(%replacement, "the network changed the tunnel replacement");
                    self.network.tunnel_replacement = replacement;
                }
                Err(e) => {
                    tracing::warn!(%replacement, error = %e, "cannot use the network's tunnel replacement")
                }
            }
        }
        let limits = |n: &NetworkConfig| (n.tunnels, n.max_tunnels, n.tunnel_refresh_secs);
        if limits(&cfg) != limits(&self.network) {
            let (k, max, refresh) = limits(&cfg);
            match self.driver.set_limits(
                usize::from(k),
                usize::from(max),
                cfg.tunnel_refresh(),
                now.mono,
            ) {
                Ok(()) => {
                    tracing::info!(
                        k,
                        max,
                        refresh_secs = refresh,
                        "the network changed its tunnel limits"
                    );
                    self.network.tunnels = k;
                    self.network.max_tunnels = max;
                    self.network.tunnel_refresh_secs = refresh;
                }
                Err(e) => {
                    tracing::warn!(k, max, error = %e, "cannot use the network's tunnel limits")
                }
            }
        }
        let babel = |n: &NetworkConfig| {
            (
                n.babel_hello_ms,
                n.babel_ihu_ms,
                n.babel_update_ms,
                n.babel_rtt_max_penalty,
                n.babel_rtt_max_ms,
            )
        };
        if babel(&cfg) != babel(&self.network) {
            match self.engine.reconfigure(babel_config(&cfg), now.mono) {
                Ok(()) => {
                    tracing::info!(
                        hello_ms = cfg.babel_hello_ms,
                        update_ms = cfg.babel_update_ms,
                        rtt_max_penalty = cfg.babel_rtt_max_penalty,
                        rtt_max_ms = cfg.babel_rtt_max_ms,
                        "the network changed its Babel parameters"
                    );
                    self.network.babel_hello_ms = cfg.babel_hello_ms;
                    self.network.babel_ihu_ms = cfg.babel_ihu_ms;
                    self.network.babel_update_ms = cfg.babel_update_ms;
                    self.network.babel_rtt_max_penalty = cfg.babel_rtt_max_penalty;
                    self.network.babel_rtt_max_ms = cfg.babel_rtt_max_ms;
                }
                Err(e) => tracing::warn!(error = %e, "cannot use the network's Babel parameters"),
            }
        }
        if cfg.gateways != self.network.gateways {
            self.set_grants(cfg.gateways.clone(), now);
            self.network.gateways = cfg.gateways.clone();
        }
        if cfg.min_protocol > PROTOCOL_VERSION {
            tracing::error!(
                min_protocol = cfg.min_protocol,
                ours = PROTOCOL_VERSION,
                "the network requires a newer protocol than this node speaks: upgrade re6st"
            );
        }
        if cfg.ipv4 != self.network.ipv4 {
            tracing::info!(old = ?self.network.ipv4, new = ?cfg.ipv4, "the network changed its IPv4 network");
            self.network.ipv4 = cfg.ipv4;
            self.fib_dirty = true;
            self.push_ipv4();
        }
        self.network.min_protocol = cfg.min_protocol;
        self.network.version = cfg.version;
        let waiting: Vec<&str> = [
            ("network", cfg.network != self.network.network),
            (
                "node_prefix_len",
                cfg.node_prefix_len != self.network.node_prefix_len,
            ),
            (
                "registry_url",
                cfg.registry_url != self.network.registry_url,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect();
        if !waiting.is_empty() {
            tracing::warn!(
                version = cfg.version,
                parameters = waiting.join(", "),
                "the network configuration changed parameters that apply only at the next start; restart the node to apply them"
            );
        }
    }
}
