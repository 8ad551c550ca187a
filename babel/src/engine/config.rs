//! Engine parameters (RFC 8966 Appendix B, RFC 9616 §4; the defaults are
//! explained in docs/design.md).

use std::time::Duration;

use crate::metric::RttParams;

/// How one kind of interface measures its links.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkParams {
    /// Nominal cost of receiving on a good link (babeld `rxcost`, 96 wired
    /// and tunnel).
    pub rxcost: u16,
    /// RTT penalty parameters; `max_penalty` 0 turns the RTT metric off
    /// (timestamps are still exchanged so `neighbours()` shows the RTT).
    pub rtt: RttParams,
    /// Split horizon (RFC 8966 §3.7.4): do not announce a route on the
    /// interface it was learned from. Only safe on symmetric, transitive
    /// links such as point-to-point tunnels.
    pub split_horizon: bool,
}

/// Engine configuration. [`Config::default`] is ours (docs/design.md): Hello 4 s, IHU
/// 3× Hello, updates every 16 s, tunnels costed as babeld `type tunnel`,
/// triggered updates coalesced over a few milliseconds.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Interval between scheduled multicast Hellos on each interface.
    pub hello_interval: Duration,
    /// IHU interval we advertise (3× Hello). On tunnels an IHU rides with
    /// every Hello anyway so that each Hello round gives an RTT sample.
    pub ihu_interval: Duration,
    /// Interval between full dumps on each interface; receivers expire our
    /// routes after 3.5× this.
    pub update_interval: Duration,
    /// Tunnel (point-to-point QUIC connection) parameters.
    pub tunnel: LinkParams,
    /// LAN (multicast, several neighbours) parameters.
    pub lan: LinkParams,
    /// Delay before an urgent triggered message (retraction, router-id
    /// switch, answer to a request) is flushed; coalesces bursts.
    pub urgent_delay: Duration,
    /// Delay before other triggered updates are flushed.
    pub triggered_delay: Duration,
    /// First resend delay of seqno requests and urgent updates (doubles).
    pub resend_delay: Duration,
    /// How many times a seqno request or an urgent update is resent.
    pub resend_count: u8,
    /// Hop count of the seqno requests we originate (babeld 127).
    pub request_hop_count: u8,
    /// Pending forwarded seqno requests are forgotten after this long;
    /// a duplicate arriving earlier is dropped (RFC 8966 §3.8.1.2).
    pub request_hold: Duration,
    /// A source-table entry unrefreshed this long is discarded (RFC 8966
    /// Appendix B: 3 min).
    pub source_gc: Duration,
    /// How long a retracted or expired route lingers (with an infinite
    /// metric) before it is flushed.
    pub route_gc: Duration,
    /// Half-life of the smoothed metric used for route selection.
    pub smoothing_half_life: Duration,
    /// A better route replaces the selected one only if its smoothed metric
    /// is lower by more than this (and its current metric is lower too):
    /// RTT noise does not make routes flap.
    pub hysteresis: u16,
    /// How often a prefix whose best route is held back by hysteresis is
    /// looked at again.
    pub reselect_interval: Duration,
    /// Metric changes smaller than this are not announced by a triggered
    /// update (they wait for the periodic one).
    pub trivial_change: u16,
    /// Improvements smaller than this are not announced early: announcing
    /// them would lower neighbours' feasibility distances and make later
    /// routes unfeasible (babeld's 1024, rescaled to a 96 hop).
    pub minor_improvement: u16,
    /// A route getting this much worse is announced urgently.
    pub major_worsening: u16,
    /// Bound on routes held (all neighbours); beyond it new routes from
    /// neighbours are dropped and counted.
    pub max_routes: usize,
    /// Bound on neighbours per interface.
    pub max_neighbours: usize,
    /// Bound on pending seqno requests.
    pub max_pending_requests: usize,
    /// Our seqno moves at most once per this interval in answer to seqno
    /// requests (a request within it is answered at its end): a neighbour
    /// flooding requests cannot make us re-announce, and re-prove, our
    /// prefixes more often.
    pub seqno_bump_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            hello_interval: Duration::from_secs(4),
            ihu_interval: Duration::from_secs(12),
            update_interval: Duration::from_secs(16),
            tunnel: LinkParams {
                rxcost: 96,
                rtt: RttParams::TUNNEL,
                split_horizon: true,
            },
            lan: LinkParams {
                rxcost: 96,
                rtt: RttParams {
                    max_penalty: 0,
                    ..RttParams::TUNNEL
                },
                split_horizon: false,
            },
            urgent_delay: Duration::from_millis(2),
            triggered_delay: Duration::from_millis(10),
            resend_delay: Duration::from_secs(2),
            resend_count: 3,
            request_hop_count: 127,
            request_hold: Duration::from_secs(65),
            source_gc: Duration::from_secs(180),
            route_gc: Duration::from_secs(60),
            smoothing_half_life: Duration::from_secs(4),
            hysteresis: 24,
            reselect_interval: Duration::from_secs(1),
            trivial_change: 48,
            minor_improvement: 96,
            major_worsening: 192,
            max_routes: 1 << 16,
            max_neighbours: 256,
            max_pending_requests: 1024,
            seqno_bump_interval: Duration::from_secs(1),
        }
    }
}

impl Config {
    /// Checks the values the engine relies on: intervals that are not zero
    /// (a zero Hello interval would make the timers spin) and fit the
    /// 16-bit centisecond fields of the wire format, an RTT decay within
    /// 1..=256, a non-zero hop count.
    pub fn validate(&self) -> Result<(), &'static str> {
        let wire_max = Duration::from_millis(655_350);
        let min = Duration::from_millis(10);
        for (d, what) in [
            (self.hello_interval, "hello_interval must be 10 ms to 655 s"),
            (self.ihu_interval, "ihu_interval must be 10 ms to 655 s"),
            (
                self.update_interval,
                "update_interval must be 10 ms to 655 s",
            ),
        ] {
            if d < min || d > wire_max {
                return Err(what);
            }
        }
        if self.resend_delay.is_zero() || self.reselect_interval.is_zero() {
            return Err("resend_delay and reselect_interval must not be zero");
        }
        for p in [&self.tunnel, &self.lan] {
            if !(1..=256).contains(&p.rtt.decay) {
                return Err("rtt decay must be within 1..=256");
            }
            if p.rxcost == 0 || p.rxcost == crate::wire::INFINITY {
                return Err("rxcost must be finite and non-zero");
            }
        }
        if self.request_hop_count == 0 {
            return Err("request_hop_count must not be zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_bad_values_are_refused() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = [
            Config {
                hello_interval: Duration::ZERO,
                ..Config::default()
            },
            Config {
                update_interval: Duration::from_secs(1000),
                ..Config::default()
            },
            Config {
                resend_delay: Duration::ZERO,
                ..Config::default()
            },
            Config {
                request_hop_count: 0,
                ..Config::default()
            },
            Config {
                tunnel: LinkParams {
                    rxcost: 0,
                    ..Config::default().tunnel
                },
                ..Config::default()
            },
            Config {
                lan: LinkParams {
                    rtt: RttParams {
                        decay: 0,
                        ..RttParams::TUNNEL
                    },
                    ..Config::default().lan
                },
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
