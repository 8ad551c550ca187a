//! The soak's verdict and report: outages grouped by the fault before
//! them and checked against that fault's bar, reachability, round trips,
//! memory and descriptors, exits and panics, revocations, and the last
//! line.
//!
//! The bars come from the node's default timers. A path broken by a
//! fault (a node killed, frozen, cut off; a link dropped) must be rerouted
//! within the reroute time: the suspicion of a silent tunnel (600 ms plus
//! two round trips) and Babel's triggered retraction, 1 s in all. A
//! revocation breaks many paths at once (the CRL flood cuts every tunnel
//! of the revoked node within a second, while its carrier restarts): a
//! seqno request lost on a path that breaks is resent after Babel's
//! resend delay (2 s), which its bar adds. A node
//! that comes back must be reachable again within the reroute time plus
//! what its return needs: dialling its tunnels and one Babel update
//! interval for its route to spread (16 s), plus, after a freeze or an
//! isolation, the idle timeout after which its peers dropped it (10 s).
//! Degraded links (netem) may lose a probe now and then; the RTT metric
//! moves routes away within a few Hello intervals (4 s each). Healing a
//! link or restarting the registry must not break anything. Each bar
//! allows one more probe period (and a quarter): that is the resolution.
//!
//! Faults overlap: an outage longer than the bar of the event it is
//! blamed on is still within bounds when an earlier fault of one of its
//! ends, still recovering when the outage began, allows it (a link of a
//! node that is still rejoining is cut). Those are counted apart, as
//! compound, and do not fail the soak.

use std::collections::BTreeMap;
use std::time::Duration;

use re6st::control::table::Table;
use serde_json::json;

use super::analysis::{allowed_by_earlier_fault, blame, quantile};
use super::chaos::EventKind;
use super::{Soak, SoakArgs};

/// Reroute time of the node's defaults: suspicion (600 ms + 2 RTT) and a
/// triggered retraction.
const REROUTE: Duration = Duration::from_secs(1);
/// Babel's default resend delay (of a seqno request that got no answer).
const RESEND: Duration = Duration::from_secs(2);
/// Babel's default update interval (a new route reaches every node by then).
const UPDATE: Duration = Duration::from_secs(16);
/// Babel's default Hello interval.
const HELLO: Duration = Duration::from_secs(4);
/// The node's default idle timeout.
const IDLE: Duration = Duration::from_secs(10);
/// A revoked node must be cut off this long after its revocation (the
/// carrier restarts a second later, fetches the CRL and floods it).
const REVOKED_CUT_OFF: Duration = Duration::from_secs(15);

/// The longest outage allowed after an event of `kind` (`None`: after no
/// fault), before the probe period is added.
pub(crate) fn bar(kind: Option<EventKind>) -> Duration {
    match kind {
        Some(
            EventKind::Kill
            | EventKind::Wipe
            | EventKind::Freeze
            | EventKind::Isolate
            | EventKind::LinkDown,
        ) => REROUTE,
        Some(EventKind::Restart | EventKind::Revoke) => REROUTE + RESEND,
        Some(EventKind::Start) => REROUTE + UPDATE,
        Some(EventKind::Thaw | EventKind::Rejoin) => REROUTE + IDLE + UPDATE,
        Some(EventKind::NetemOn) => REROUTE + 2 * HELLO,
        Some(
            EventKind::LinkUp
            | EventKind::NetemOff
            | EventKind::RegistryKill
            | EventKind::RegistryStart,
        )
        | None => Duration::ZERO,
    }
}

/// The bar of `kind` with the resolution of probes `period` apart: one
/// period and a quarter more (probes leave a few milliseconds late on a
/// busy machine).
fn measured_bar(kind: Option<EventKind>, period: Duration) -> Duration {
    bar(kind) + period + period / 4
}

/// How long after an event of `kind` an outage of a pair with one of its
/// nodes is still blamed on it: its bar, but a netem is blamed until it
/// ends (or another event hits the node).
fn recovery(kind: EventKind) -> Duration {
    match kind {
        EventKind::NetemOn => Duration::from_secs(24 * 3600),
        k => bar(Some(k)),
    }
}

/// Outages after one kind of event.
#[derive(Debug, Clone)]
pub(crate) struct KindStats {
    /// The kind (`None`: outages no event explains).
    pub kind: Option<EventKind>,
    /// Events of that kind.
    pub events: usize,
    /// Lengths of the pair outages blamed on them, sorted.
    pub outages: Vec<Duration>,
    /// Per event with an outage, from the event to the end of its last
    /// outage: how long reachability stayed broken after it, sorted.
    pub broken: Vec<Duration>,
    /// The bar, with the resolution of the probes: one period and a
    /// quarter (probes leave a few milliseconds late on a busy machine).
    pub bar: Duration,
    /// Outages longer than the bar.
    pub over: usize,
    /// Outages longer than the bar but within the allowance of an earlier
    /// fault of one of their ends that was still recovering (compound
    /// faults: a link of a rejoining node cut).
    pub compound: usize,
}

/// A revocation and when the revoked node stopped answering.
#[derive(Debug, Clone)]
pub(crate) struct Revocation {
    /// Node index.
    pub node: usize,
    /// When it was revoked.
    pub at: Duration,
    /// From the revocation to the last probe it answered (zero: none).
    pub answered_for: Duration,
}

/// What the soak concludes.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// Why it failed (empty: it passed).
    pub failures: Vec<String>,
    /// Per kind of event.
    pub kinds: Vec<KindStats>,
    /// The longest outage.
    pub max_outage: Duration,
    /// Largest resident-memory growth of a witness after the warm-up, %.
    pub rss_growth: f64,
    /// Largest descriptor growth of a witness after the warm-up.
    pub fd_growth: i64,
    /// Panic lines, with the process name.
    pub panics: Vec<(String, String)>,
    /// Error lines in all logs.
    pub error_lines: usize,
    /// Revocations.
    pub revocations: Vec<Revocation>,
    /// Round trips of answered probes: p50, p99, max (ms).
    pub rtt_ms: [f64; 3],
    /// The last line.
    pub last_line: String,
}

/// Judges the soak that ended at `end`.
pub(crate) fn verdict(soak: &Soak, end: Duration) -> Verdict {
    let a = &soak.analyzer;
    let mut failures = Vec::new();
    // Outages by the kind of event they follow.
    let mut by_kind: BTreeMap<Option<EventKind>, KindStats> = BTreeMap::new();
    let mut broken: BTreeMap<usize, Duration> = BTreeMap::new();
    for o in &a.outages {
        let cause = blame(o, &soak.events, soak.period, soak.timeout, recovery);
        let kind = cause.map(|i| soak.events[i].kind);
        let e = by_kind
            .entry(kind)
            .or_insert_with(|| empty(kind, soak.period));
        e.outages.push(o.length());
        if o.length() > e.bar {
            let allowed = |k| measured_bar(Some(k), soak.period);
            match cause {
                Some(i)
                    if allowed_by_earlier_fault(
                        o,
                        &soak.events,
                        i,
                        soak.period,
                        allowed,
                        recovery,
                    ) =>
                {
                    e.compound += 1
                }
                _ => e.over += 1,
            }
        }
        if let Some(i) = cause {
            let b = broken.entry(i).or_default();
            *b = (*b).max(o.end.saturating_sub(soak.events[i].at));
        }
    }
    for ev in &soak.events {
        by_kind
            .entry(Some(ev.kind))
            .or_insert_with(|| empty(Some(ev.kind), soak.period))
            .events += 1;
    }
    for (i, b) in broken {
        if let Some(e) = by_kind.get_mut(&Some(soak.events[i].kind)) {
            e.broken.push(b);
        }
    }
    let mut kinds: Vec<KindStats> = by_kind.into_values().collect();
    for k in &mut kinds {
        k.outages.sort();
        k.broken.sort();
        if k.over > 0 {
            failures.push(format!(
                "{} outage{} after {} longer than its bar of {:.1} s (longest {:.1} s)",
                k.over,
                if k.over == 1 { "" } else { "s" },
                k.kind.map_or("no fault", EventKind::name),
                k.bar.as_secs_f64(),
                k.outages.last().copied().unwrap_or_default().as_secs_f64()
            ));
        }
    }
    let max_outage = a
        .outages
        .iter()
        .map(|o| o.length())
        .max()
        .unwrap_or_default();

    // Memory and descriptors of the witnesses, from the warm-up's end.
    let (mut rss_growth, mut fd_growth) = (0.0f64, 0i64);
    for s in soak
        .series
        .iter()
        .filter(|s| s.node.is_some_and(|n| n < soak.witnesses))
    {
        if let Some((rss, fds)) = s.growth(soak.warmup) {
            rss_growth = rss_growth.max(rss);
            fd_growth = fd_growth.max(fds);
        }
    }

    // Logs: panics and errors.
    let mut panics = Vec::new();
    let mut error_lines = 0;
    for p in &soak.net.procs {
        for line in super::watch::panics(&p.log) {
            panics.push((p.name.clone(), line));
        }
        error_lines += super::watch::errors(&p.log);
    }
    if !panics.is_empty() {
        failures.push(format!("{} panic(s) in the logs", panics.len()));
    }
    if !soak.exits.is_empty() {
        failures.push(format!(
            "{} process(es) exited on their own: {}",
            soak.exits.len(),
            soak.exits
                .iter()
                .map(|e| format!("{} ({})", e.name, e.status))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !soak.fault_errors.is_empty() {
        failures.push(format!(
            "{} fault(s) could not be injected or healed: {}",
            soak.fault_errors.len(),
            soak.fault_errors.join("; ")
        ));
    }

    // Revocations.
    let mut revocations = Vec::new();
    for ev in soak.events.iter().filter(|e| e.kind == EventKind::Revoke) {
        let node = ev.nodes[0];
        let last = a
            .revoked_answers
            .iter()
            .filter(|(n, t)| *n == node && *t >= ev.at && *t <= ev.at + Duration::from_secs(60))
            .map(|(_, t)| *t)
            .max();
        let answered_for = last.map_or(Duration::ZERO, |t| t - ev.at);
        if answered_for > REVOKED_CUT_OFF {
            failures.push(format!(
                "{} still answered {:.1} s after its revocation",
                soak.net.nodes[node].name,
                answered_for.as_secs_f64()
            ));
        }
        revocations.push(Revocation {
            node,
            at: ev.at,
            answered_for,
        });
    }

    let mut rtts = a.rtts_us.clone();
    rtts.sort_unstable();
    let ms = |q| quantile(&rtts, q).map_or(0.0, |us| f64::from(us) / 1000.0);
    let rtt_ms = [ms(0.5), ms(0.99), ms(1.0)];

    if a.counted == 0 {
        failures.push("no probe of a live pair was counted".into());
    }
    let warmed = end > soak.warmup + Duration::from_secs(60);
    if warmed && rss_growth > soak.max_rss_growth {
        failures.push(format!(
            "a witness's resident memory grew {rss_growth:.1} % after the warm-up (more than {:.0} %)",
            soak.max_rss_growth
        ));
    }

    let last_line = format!(
        "soak: {} nodes, {} min, {} faults, reachability {:.3} % (among live pairs), \
         max outage {:.1} s, panics {}, RSS growth {:.1} %, fd growth {}",
        soak.net.nodes.len(),
        fmt_minutes(end),
        soak.planner.faults(),
        a.reachability(),
        max_outage.as_secs_f64(),
        panics.len(),
        rss_growth,
        fd_growth
    );
    Verdict {
        failures,
        kinds,
        max_outage,
        rss_growth,
        fd_growth,
        panics,
        error_lines,
        revocations,
        rtt_ms,
        last_line,
    }
}

fn empty(kind: Option<EventKind>, period: Duration) -> KindStats {
    KindStats {
        kind,
        events: 0,
        outages: Vec::new(),
        broken: Vec::new(),
        bar: measured_bar(kind, period),
        over: 0,
        compound: 0,
    }
}

fn fmt_minutes(d: Duration) -> String {
    let m = d.as_secs_f64() / 60.0;
    if (m - m.round()).abs() < 0.05 {
        format!("{:.0}", m.round())
    } else {
        format!("{m:.1}")
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// Prints the report (everything but the last line).
pub(crate) fn print(soak: &Soak, v: &Verdict, args: &SoakArgs) {
    let a = &soak.analyzer;
    println!();
    println!(
        "soak: {} probes of live pairs, {} answered ({:.3} %); round trips p50 {:.2} ms, \
         p99 {:.2} ms, max {:.1} ms; {} answers came after the {} timeout; the prober skipped {} \
         probes (machine too busy to keep the schedule) and woke {} times for {} probes",
        a.counted,
        a.answered,
        a.reachability(),
        v.rtt_ms[0],
        v.rtt_ms[1],
        v.rtt_ms[2],
        soak.prober_stats.late,
        humantime::format_duration(soak.timeout),
        soak.prober_stats.skipped,
        soak.prober_stats.wakeups,
        soak.prober_stats.sent,
    );
    if let Some(c) = soak.converged_after {
        println!(
            "soak: every live pair answered within {:.1} s of the start",
            c.as_secs_f64()
        );
    }
    println!("\noutages (runs of lost probes of one live pair) by the event before them:");
    let mut t = Table::new(&[
        "after",
        "events",
        "outages",
        "p50 s",
        "p90 s",
        "max s",
        "broken p50 s",
        "broken max s",
        "bar s",
        "over",
        "compound",
    ]);
    for k in &v.kinds {
        t.row(vec![
            k.kind.map_or("no fault", EventKind::name).into(),
            k.events.to_string(),
            k.outages.len().to_string(),
            secs(quantile(&k.outages, 0.5)),
            secs(quantile(&k.outages, 0.9)),
            secs(k.outages.last().copied()),
            secs(quantile(&k.broken, 0.5)),
            secs(k.broken.last().copied()),
            format!("{:.1}", k.bar.as_secs_f64()),
            k.over.to_string(),
            k.compound.to_string(),
        ]);
    }
    print!("{t}");
    let joins = |wiped: bool| {
        let mut v: Vec<Duration> = soak
            .joins
            .iter()
            .filter(|j| j.wiped == wiped)
            .map(|j| j.took)
            .collect();
        v.sort();
        v
    };
    for (what, v) in [
        ("with its state", joins(false)),
        ("wiped (enrols anew)", joins(true)),
    ] {
        if !v.is_empty() {
            println!(
                "node start {what}: control socket answers after p50 {} s, max {} s ({} starts)",
                secs(quantile(&v, 0.5)),
                secs(v.last().copied()),
                v.len()
            );
        }
    }
    for r in &v.revocations {
        println!(
            "revocation of {} at {:.0} s: {}",
            soak.net.nodes[r.node].name,
            r.at.as_secs_f64(),
            if r.answered_for.is_zero() {
                "never answered after it".to_string()
            } else {
                format!("last answer {:.1} s after it", r.answered_for.as_secs_f64())
            }
        );
    }
    if let Some((_, last)) = soak.shape.last() {
        let tunnels: Vec<usize> = last.iter().map(|s| s.0).collect();
        let routes: Vec<usize> = last.iter().map(|s| s.1).collect();
        println!(
            "at the end: tunnels per node {}..{}, routes per node {}..{}",
            tunnels.iter().min().unwrap_or(&0),
            tunnels.iter().max().unwrap_or(&0),
            routes.iter().min().unwrap_or(&0),
            routes.iter().max().unwrap_or(&0),
        );
    }
    println!("\nmemory and descriptors (from the end of the warm-up to the end):");
    let mut t = Table::new(&[
        "process",
        "RSS MiB",
        "RSS growth %",
        "fds",
        "fd growth",
        "CPU s",
    ]);
    let hz = clock_ticks();
    for s in soak
        .series
        .iter()
        .filter(|s| s.node.is_none_or(|n| n < soak.witnesses) || s.samples.len() > 30)
    {
        let Some(last) = s.samples.last() else {
            continue;
        };
        let growth = s.growth(soak.warmup);
        t.row(vec![
            format!(
                "{}{}",
                s.name,
                if s.node.is_some_and(|n| n < soak.witnesses) {
                    " (witness)"
                } else {
                    ""
                }
            ),
            format!("{:.1}", last.rss_kib as f64 / 1024.0),
            growth.map_or("-".into(), |g| format!("{:.1}", g.0)),
            last.fds.to_string(),
            growth.map_or("-".into(), |g| g.1.to_string()),
            format!("{:.1}", last.cpu_ticks as f64 / hz),
        ]);
    }
    print!("{t}");
    println!(
        "logs: {} error lines, {} panics; process exits on their own: {}",
        v.error_lines,
        v.panics.len(),
        soak.exits.len()
    );
    for (name, line) in v.panics.iter().take(10) {
        println!("  panic in {name}: {line}");
    }
    if v.failures.is_empty() {
        println!("\nsoak: PASSED");
    } else {
        println!(
            "\nsoak: FAILED (logs and state kept in {}):",
            soak.net.dir().display()
        );
        for f in &v.failures {
            println!("  - {f}");
        }
    }
    let _ = args;
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Every figure, for `--json`.
pub(crate) fn json(soak: &Soak, v: &Verdict, args: &SoakArgs) -> serde_json::Value {
    let a = &soak.analyzer;
    let d = |d: Duration| d.as_secs_f64();
    json!({
        "nodes": soak.net.nodes.len(),
        "minutes": args.minutes,
        "seed": args.seed,
        "tunnels": args.tunnels,
        "refresh_s": d(args.refresh),
        "probe_every_s": d(soak.period),
        "probe_timeout_s": d(soak.timeout),
        "warmup_s": d(soak.warmup),
        "witnesses": soak.witnesses,
        "netem": soak.net.netem,
        "faults": soak.planner.faults(),
        "faults_by_kind": soak.planner.started.iter()
            .map(|(k, n)| (format!("{k:?}").to_lowercase(), *n)).collect::<BTreeMap<_, _>>(),
        "probes_counted": a.counted,
        "probes_answered": a.answered,
        "reachability_pct": a.reachability(),
        "rtt_ms": {"p50": v.rtt_ms[0], "p99": v.rtt_ms[1], "max": v.rtt_ms[2]},
        "prober": {"sent": soak.prober_stats.sent, "send_errors": soak.prober_stats.send_errors,
                   "late": soak.prober_stats.late, "skipped": soak.prober_stats.skipped,
                   "wakeups": soak.prober_stats.wakeups},
        "max_outage_s": d(v.max_outage),
        "kinds": v.kinds.iter().map(|k| json!({
            "after": k.kind.map_or("no fault", EventKind::name),
            "events": k.events,
            "outages_s": k.outages.iter().map(|x| d(*x)).collect::<Vec<_>>(),
            "broken_s": k.broken.iter().map(|x| d(*x)).collect::<Vec<_>>(),
            "bar_s": d(k.bar),
            "over": k.over,
            "compound": k.compound,
        })).collect::<Vec<_>>(),
        "events": soak.events.iter().map(|e| json!({
            "at_s": d(e.at), "kind": e.kind.name(), "nodes": e.nodes,
        })).collect::<Vec<_>>(),
        "outages": a.outages.iter().map(|o| json!({
            "src": o.src, "dst": o.dst, "start_s": d(o.start), "end_s": d(o.end),
            "lost": o.lost, "cut": o.cut,
        })).collect::<Vec<_>>(),
        "reachability_10s": a.buckets.iter().map(|b| [b.counted, b.answered]).collect::<Vec<_>>(),
        "joins": soak.joins.iter().map(|j| json!({"wiped": j.wiped, "s": d(j.took)})).collect::<Vec<_>>(),
        "revocations": v.revocations.iter().map(|r| json!({
            "node": r.node, "at_s": d(r.at), "answered_for_s": d(r.answered_for),
        })).collect::<Vec<_>>(),
        "processes": soak.series.iter().map(|s| json!({
            "name": s.name, "node": s.node, "witness": s.node.is_some_and(|n| n < soak.witnesses),
            "samples": s.samples.iter().map(|x| [d(x.at), x.rss_kib as f64, f64::from(x.fds), x.cpu_ticks as f64]).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "shape": soak.shape.iter().map(|(t, s)| json!({"at_s": d(*t), "nodes": s})).collect::<Vec<_>>(),
        "rss_growth_pct": v.rss_growth,
        "fd_growth": v.fd_growth,
        "panics": v.panics,
        "error_lines": v.error_lines,
        "exits": soak.exits.iter().map(|e| json!({"name": e.name, "at_s": d(e.at), "status": e.status})).collect::<Vec<_>>(),
        "fault_errors": soak.fault_errors,
        "failures": v.failures,
        "last_line": v.last_line,
    })
}
