//! The network configuration every node follows, signed by the CA.
//!
//! Nodes get it from the registry at join time and may pass newer copies to
//! each other; [`SignedNetworkConfig::verify`] checks the CA's signature so
//! a copy that came through other nodes is as good as the registry's. A
//! node keeps the copy with the highest `version`.

use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::tunnels::policy::Replacement;

use super::signed::{SignatureContext, sign_payload, verify_payload};
use super::{Ca, IdentityError, PublicKey};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Parameters shared by every node of a network. Durations are in
/// milliseconds or seconds as the field name says. Unknown fields are
/// ignored so that older nodes accept configurations from newer registries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Grows by one every time the registry changes the configuration.
    pub version: u64,
    /// When this version was made (UNIX seconds).
    pub issued_at: u64,
    /// The overlay prefix (e.g. a ULA /48).
    pub network: Ipv6Net,
    /// Default length of a node prefix (e.g. 64).
    pub node_prefix_len: u8,
    /// Outgoing tunnels each node keeps (k).
    pub tunnels: u16,
    /// Most tunnels (in + out) a node accepts (3k by default).
    pub max_tunnels: u16,
    /// How often a node replaces its least useful tunnel.
    pub tunnel_refresh_secs: u64,
    /// How each refresh replaces a tunnel: `least-used` (the report's
    /// policy, the default) or `least-used-best-of-N` (the same victim, but
    /// the new peer is the lowest-RTT of N probed ones; see
    /// `docs/results.md`, "Beyond the report"). A name this build does not
    /// know (a newer registry's) falls back to `least-used`, so the rest of
    /// the configuration still applies.
    #[serde(
        default = "default_replacement",
        with = "replacement_name",
        skip_serializing_if = "is_default_replacement"
    )]
    pub tunnel_replacement: Replacement,
    /// Babel Hello interval.
    pub babel_hello_ms: u64,
    /// Babel IHU interval.
    pub babel_ihu_ms: u64,
    /// Babel periodic update interval.
    pub babel_update_ms: u64,
    /// Largest RTT penalty added to a tunnel's cost (babeld
    /// `max-rtt-penalty`, in metric units where a hop costs 96). New
    /// networks get [`RTT_PENALTY`] (1000): latency outweighs hops, so
    /// routes follow low latency as the report's optimisation needs.
    /// babeld's `type tunnel` value, 96, is one hop: a slow direct tunnel
    /// can at best tie with a fast two-hop path. A configuration signed
    /// without this field meant babeld's values and still gets them.
    #[serde(default = "babeld_tunnel_rtt_penalty")]
    pub babel_rtt_max_penalty: u16,
    /// RTT at which the penalty reaches its maximum (babeld `rtt-max`; new
    /// networks [`RTT_MAX_MS`], 300 ms; babeld's 120 ms when absent).
    #[serde(default = "babeld_tunnel_rtt_max_ms")]
    pub babel_rtt_max_ms: u64,
    /// Nodes older than this protocol version must not join.
    pub min_protocol: u32,
    /// The registry's HTTPS URL.
    pub registry_url: String,
    /// Gateway authorisations: which node may originate which prefix
    /// outside the overlay (`re6st registry gateway add`). Every other
    /// node's routes to such prefixes are refused by the whole network.
    /// Absent when empty, so configurations from before it verify the
    /// same.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<GatewayGrant>,
    /// IPv4 inside the overlay: the network every node's IPv4 subnet (in
    /// its certificate) is taken from, routed into the overlay by every
    /// node. Absent: the overlay carries IPv6 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Net>,
}

/// Most gateway authorisations one network configuration holds.
pub const MAX_GATEWAY_GRANTS: usize = 1024;

/// The node holding `node` (its certificate's prefix, which survives
/// renewals) may originate `prefix` and the prefixes inside it. `prefix`
/// lies outside the overlay (`::/0`, a site's prefix, an IPv4 range): the
/// overlay's own space is only ever announced by the node it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GatewayGrant {
    /// The authorised node's prefix.
    pub node: Ipv6Net,
    /// What it may announce.
    pub prefix: IpNet,
}

impl std::fmt::Display for GatewayGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} via {}", self.prefix, self.node)
    }
}

fn default_replacement() -> Replacement {
    Replacement::LeastUsed
}

fn is_default_replacement(r: &Replacement) -> bool {
    *r == default_replacement()
}

/// `tunnel_replacement` as its name (`least-used-best-of-5`).
mod replacement_name {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{Replacement, default_replacement};

    pub fn serialize<S: Serializer>(r: &Replacement, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(r)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Replacement, D::Error> {
        let name = String::deserialize(d)?;
        Ok(name.parse().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "network configuration: using least-used");
            default_replacement()
        }))
    }
}

/// RTT penalty of new networks. Measured against babeld's 96 / 120 ms and
/// re6stnet's 5000 / 500 ms on simulated 24-router networks
/// (`babel/tests/engine_rtt_metric.rs`, three seeds): with 1000 / 300 ms the
/// selected paths are within 0.6 % of the latency-optimal ones (96 / 120 ms:
/// 7-13 % above, no better than hop-count routing; 5000 / 500 ms: optimal),
/// and routes change 2.6-5.5x less often than with 5000 / 500 ms under
/// 20 ms of RTT jitter (1.5-2.2x under 50 ms). A saturated hop costs 1096,
/// so paths of up to 59 such hops stay below infinity (5000 allows 12).
pub const RTT_PENALTY: u16 = 1000;

/// `rtt-max` of new networks, in milliseconds: see [`RTT_PENALTY`].
pub const RTT_MAX_MS: u64 = 300;

/// What a configuration signed before the RTT fields existed meant.
fn babeld_tunnel_rtt_penalty() -> u16 {
    96
}

fn babeld_tunnel_rtt_max_ms() -> u64 {
    120
}

impl NetworkConfig {
    /// The default parameters (docs/design.md) for a network `network` served at `registry_url`.
    pub fn defaults(network: Ipv6Net, registry_url: String) -> Self {
        let tunnels = 10;
        Self {
            version: 1,
            issued_at: 0,
            network,
            node_prefix_len: 64,
            tunnels,
            max_tunnels: 3 * tunnels,
            tunnel_refresh_secs: 300,
            tunnel_replacement: default_replacement(),
            babel_hello_ms: 4_000,
            babel_ihu_ms: 12_000,
            babel_update_ms: 16_000,
            babel_rtt_max_penalty: RTT_PENALTY,
            babel_rtt_max_ms: RTT_MAX_MS,
            min_protocol: 1,
            registry_url,
            gateways: Vec::new(),
            ipv4: None,
        }
    }

    /// Tunnel refresh period.
    pub fn tunnel_refresh(&self) -> Duration {
        Duration::from_secs(self.tunnel_refresh_secs)
    }

    /// Whether the parameters (everything but `version` and `issued_at`)
    /// are the same.
    pub fn same_parameters(&self, other: &Self) -> bool {
        Self {
            version: 0,
            issued_at: 0,
            ..self.clone()
        } == Self {
            version: 0,
            issued_at: 0,
            ..other.clone()
        }
    }

    /// Checks the values are usable.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let bad = |field, detail: String| Err(IdentityError::Invalid { field, detail });
        if self.node_prefix_len <= self.network.prefix_len() || self.node_prefix_len > 127 {
            return bad(
                "node_prefix_len",
                format!(
                    "/{} must be longer than the network's /{} and at most /127",
                    self.node_prefix_len,
                    self.network.prefix_len()
                ),
            );
        }
        if self.tunnels == 0 || self.max_tunnels < self.tunnels {
            return bad(
                "max_tunnels",
                format!(
                    "{} < tunnels {} (or tunnels is 0)",
                    self.max_tunnels, self.tunnels
                ),
            );
        }
        if let Some(net) = self.ipv4
            && (net != net.trunc() || net.prefix_len() > 30)
        {
            return bad(
                "ipv4",
                format!("{net} must be a network (no host bits) of at most /30"),
            );
        }
        if self.tunnel_refresh_secs == 0
            || self.babel_hello_ms == 0
            || self.babel_update_ms == 0
            || self.babel_ihu_ms == 0
        {
            return bad("timers", "intervals must be positive".into());
        }
        if self.gateways.len() > MAX_GATEWAY_GRANTS {
            return bad(
                "gateways",
                format!(
                    "{} authorisations (at most {MAX_GATEWAY_GRANTS})",
                    self.gateways.len()
                ),
            );
        }
        for g in &self.gateways {
            if !self.network.contains(&g.node) || g.node.prefix_len() <= self.network.prefix_len() {
                return bad(
                    "gateways",
                    format!("{}: {} is not a node prefix of {}", g, g.node, self.network),
                );
            }
            if let IpNet::V6(p) = g.prefix
                && self.network.contains(&p)
            {
                return bad(
                    "gateways",
                    format!("{g}: {p} lies inside the overlay, which only its owners announce"),
                );
            }
        }
        Ok(())
    }

    /// Signs this configuration with the CA.
    pub fn sign(&self, ca: &Ca) -> Result<SignedNetworkConfig, IdentityError> {
        let payload =
            serde_json::to_string(self).map_err(|e| IdentityError::Internal(e.to_string()))?;
        let signature = sign_payload(SignatureContext::NetworkConfig, &payload, |m| ca.sign(m))?;
        Ok(SignedNetworkConfig { payload, signature })
    }
}

/// A [`NetworkConfig`] as JSON text plus the CA's signature over it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedNetworkConfig {
    /// The configuration's JSON text, exactly as signed.
    pub payload: String,
    /// Base64 CA signature (context "re6st network config v1").
    pub signature: String,
}

impl SignedNetworkConfig {
    /// Checks the CA signature (`ca_key` from the pinned CA certificate) and
    /// parses the configuration.
    pub fn verify(&self, ca_key: &PublicKey) -> Result<NetworkConfig, IdentityError> {
        verify_payload(
            SignatureContext::NetworkConfig,
            &self.payload,
            &self.signature,
            ca_key,
            "network configuration",
        )?;
        let config: NetworkConfig =
            serde_json::from_str(&self.payload).map_err(|e| IdentityError::Malformed {
                what: "network configuration",
                detail: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    #[test]
    fn sign_verify_and_tamper() {
        let now = SystemTime::now();
        let net: Ipv6Net = "fd00:5::/48".parse().unwrap();
        let ca = Ca::generate(net, 1, now, Duration::from_secs(1000)).unwrap();
        let cfg = NetworkConfig::defaults(net, "https://r.example:8443".into());
        let signed = cfg.sign(&ca).unwrap();
        assert_eq!(signed.verify(ca.public_key()).unwrap(), cfg);
        let mut bad = signed.clone();
        bad.payload = bad.payload.replace("\"tunnels\":10", "\"tunnels\":11");
        assert!(matches!(
            bad.verify(ca.public_key()),
            Err(IdentityError::BadSignature { .. })
        ));
        let other = Ca::generate(net, 1, now, Duration::from_secs(1000)).unwrap();
        assert!(signed.verify(other.public_key()).is_err());
    }

    #[test]
    fn golden_json() {
        let cfg = NetworkConfig::defaults("fd00:5::/48".parse().unwrap(), "https://r:1".into());
        assert_eq!(
            serde_json::to_string(&cfg).unwrap(),
            r#"{"version":1,"issued_at":0,"network":"fd00:5::/48","node_prefix_len":64,"tunnels":10,"max_tunnels":30,"tunnel_refresh_secs":300,"babel_hello_ms":4000,"babel_ihu_ms":12000,"babel_update_ms":16000,"babel_rtt_max_penalty":1000,"babel_rtt_max_ms":300,"min_protocol":1,"registry_url":"https://r:1"}"#
        );
        // A configuration from before the RTT fields keeps what it meant
        // then: babeld's `type tunnel` values, not today's defaults.
        let old = r#"{"version":1,"issued_at":0,"network":"fd00:5::/48","node_prefix_len":64,"tunnels":10,"max_tunnels":30,"tunnel_refresh_secs":300,"babel_hello_ms":4000,"babel_ihu_ms":12000,"babel_update_ms":16000,"min_protocol":1,"registry_url":"https://r:1"}"#;
        let babeld = NetworkConfig {
            babel_rtt_max_penalty: 96,
            babel_rtt_max_ms: 120,
            ..cfg.clone()
        };
        assert_eq!(serde_json::from_str::<NetworkConfig>(old).unwrap(), babeld);
        // And one signed with babeld's values explicitly, too.
        let explicit = serde_json::to_string(&babeld).unwrap();
        assert!(explicit.contains(r#""babel_rtt_max_penalty":96,"babel_rtt_max_ms":120"#));
        assert_eq!(
            serde_json::from_str::<NetworkConfig>(&explicit).unwrap(),
            babeld
        );
    }

    #[test]
    fn tunnel_replacement_is_named_and_optional() {
        let mut cfg = NetworkConfig::defaults("fd00:5::/48".parse().unwrap(), "https://r:1".into());
        // The default is not written: configurations signed before the
        // field existed and those signed now with the default are the same.
        assert!(!serde_json::to_string(&cfg).unwrap().contains("replacement"));
        cfg.tunnel_replacement = Replacement::LeastUsedBestOf { probes: 5 };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            json.contains(r#""tunnel_replacement":"least-used-best-of-5""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<NetworkConfig>(&json).unwrap(), cfg);
        // A newer registry's policy this build does not know: least-used,
        // and the rest of the configuration still applies.
        let future = json.replace("least-used-best-of-5", "latency-aware-v2");
        let parsed: NetworkConfig = serde_json::from_str(&future).unwrap();
        assert_eq!(parsed.tunnel_replacement, Replacement::LeastUsed);
        assert_eq!(parsed.tunnels, 10);
        // Still a string, or the configuration is malformed.
        let number = json.replace(r#""least-used-best-of-5""#, "5");
        assert!(serde_json::from_str::<NetworkConfig>(&number).is_err());
    }

    #[test]
    fn gateway_grants_are_optional_and_checked() {
        let net: Ipv6Net = "fd00:5::/48".parse().unwrap();
        let mut cfg = NetworkConfig::defaults(net, "https://r:1".into());
        assert!(!serde_json::to_string(&cfg).unwrap().contains("gateways"));
        let node: Ipv6Net = "fd00:5:0:7::/64".parse().unwrap();
        cfg.gateways = vec![
            GatewayGrant {
                node,
                prefix: "::/0".parse().unwrap(),
            },
            GatewayGrant {
                node,
                prefix: "10.0.0.0/8".parse().unwrap(),
            },
        ];
        cfg.validate().unwrap();
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            json.contains(r#""gateways":[{"node":"fd00:5:0:7::/64","prefix":"::/0"}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<NetworkConfig>(&json).unwrap(), cfg);
        // Overlay space, a node outside the network, the network itself:
        // refused.
        for (node, prefix) in [
            ("fd00:5:0:7::/64", "fd00:5:0:8::/64"),
            ("fd00:5:0:7::/64", "fd00:5::/48"),
            ("fd00:6:0:7::/64", "::/0"),
            ("fd00:5::/48", "::/0"),
        ] {
            let mut bad = cfg.clone();
            bad.gateways = vec![GatewayGrant {
                node: node.parse().unwrap(),
                prefix: prefix.parse().unwrap(),
            }];
            assert!(bad.validate().is_err(), "{node} {prefix}");
        }
    }

    #[test]
    fn validation() {
        let mut cfg = NetworkConfig::defaults("fd00:5::/48".parse().unwrap(), String::new());
        cfg.validate().unwrap();
        cfg.node_prefix_len = 48;
        assert!(cfg.validate().is_err());
        cfg.node_prefix_len = 64;
        cfg.max_tunnels = 5;
        assert!(cfg.validate().is_err());
        cfg.max_tunnels = 30;
        cfg.ipv4 = Some("10.42.0.0/16".parse().unwrap());
        cfg.validate().unwrap();
        cfg.ipv4 = Some("10.42.0.1/16".parse().unwrap());
        assert!(cfg.validate().is_err());
        cfg.ipv4 = Some("10.42.0.0/31".parse().unwrap());
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn ipv4_is_optional() {
        let mut cfg = NetworkConfig::defaults("fd00:5::/48".parse().unwrap(), "https://r:1".into());
        // Not written when absent: configurations signed before IPv4
        // existed and IPv6-only ones now are the same.
        assert!(!serde_json::to_string(&cfg).unwrap().contains("ipv4"));
        cfg.ipv4 = Some("10.42.0.0/16".parse().unwrap());
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(json.ends_with(r#","ipv4":"10.42.0.0/16"}"#), "{json}");
        assert_eq!(serde_json::from_str::<NetworkConfig>(&json).unwrap(), cfg);
    }
}
