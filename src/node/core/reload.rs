//! NodeCore's side of a configuration reload: the local options a running
//! node takes without a restart and without dropping a tunnel. The shell
//! (`re6st node` on SIGHUP) reads the file and gives [`LiveOptions`]; this
//! applies what differs from what is in force.

use super::{NodeCore, Now};
use crate::gateway::GatewayConfig;
use crate::tunnels::policy::Replacement;

/// The local options that apply live.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveOptions {
    /// This node's tunnel replacement (`None`: the network's), from the
    /// next refresh.
    pub tunnel_replacement: Option<Replacement>,
    /// The prefixes offered as a gateway and their metric: announced or
    /// retracted in Babel at once, the FIB follows.
    pub gateway: GatewayConfig,
}

impl NodeCore {
    /// Applies `live`; the names of the options that changed, or why it
    /// was refused (nothing is applied then).
    pub fn handle_reconfigure(
        &mut self,
        live: LiveOptions,
        now: Now,
    ) -> Result<Vec<&'static str>, String> {
        let now = self.clamp(now);
        let changed = self.reconfigure(live, now);
        self.settle(now);
        changed
    }

    fn reconfigure(&mut self, live: LiveOptions, now: Now) -> Result<Vec<&'static str>, String> {
        live.gateway
            .validate(self.network.network)
            .map_err(|e| format!("gateway: {e}"))?;
        let mut changed = Vec::new();
        if live.tunnel_replacement != self.config.replacement {
            let replacement = live
                .tunnel_replacement
                .unwrap_or(self.network.tunnel_replacement);
            self.driver
                .set_replacement(replacement)
                .map_err(|e| format!("tunnel-replacement: {e}"))?;
            tracing::info!(%replacement, "tunnel replacement changed by the configuration file");
            self.config.replacement = live.tunnel_replacement;
            changed.push("tunnel-replacement");
        }
        if live.gateway != self.config.gateway {
            for (prefix, _) in self.config.gateway.xroutes() {
                self.engine.remove_xroute(prefix, now.mono);
            }
            for (prefix, metric) in live.gateway.xroutes() {
                if let Err(e) = self.engine.add_xroute(prefix, metric, now.mono) {
                    tracing::warn!(%prefix, error = %e, "cannot announce a gateway prefix");
                }
            }
            tracing::info!(prefixes = ?live.gateway.prefixes, metric = live.gateway.metric, "gateway changed by the configuration file");
            self.config.gateway = live.gateway;
            self.fib_dirty = true;
            changed.push("gateway");
        }
        Ok(changed)
    }
}
