//! The map as SVG, readable at 500 nodes and more.
//!
//! A random overlay has no geometry a force layout could reveal (it draws
//! a uniform ball where labels overlap), so nodes sit on a circle in
//! prefix order, LAN neighbours next to each other, each labelled with its
//! prefix along the radius (labels never overlap: the circle grows with
//! the node count). Tunnels are faint chords, LAN links short green arcs;
//! hovering a node in a browser highlights its links, and every node and
//! link has a tooltip (version, gateway, RTT, when it was announced).
//! Colour is the version, so a rolling upgrade is visible at a glance.

use std::collections::{BTreeMap, HashMap};
use std::f64::consts::TAU;
use std::fmt::Write as _;

use ipnet::Ipv6Net;

use super::Map;

/// Arc length per node, pixels (room for an 11 px label).
const SPACING: f64 = 14.0;
/// Room for the radial labels around the circle.
const LABEL: f64 = 190.0;
/// Version colours (Tableau 10), then grey for nodes that did not report.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
const UNKNOWN: &str = "#bbbbbb";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Positions on the circle: prefix order, but a LAN group together.
fn order(map: &Map) -> Vec<usize> {
    // Union-find over LAN links.
    let idx: HashMap<Ipv6Net, usize> = map
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.prefix, i))
        .collect();
    let mut parent: Vec<usize> = (0..map.nodes.len()).collect();
    fn find(p: &mut [usize], mut x: usize) -> usize {
        while p[x] != x {
            p[x] = p[p[x]];
            x = p[x];
        }
        x
    }
    for l in map.links.iter().filter(|l| l.kind == "lan") {
        if let (Some(&a), Some(&b)) = (idx.get(&l.a), idx.get(&l.b)) {
            let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
            parent[ra.max(rb)] = ra.min(rb);
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for i in 0..map.nodes.len() {
        let r = find(&mut parent, i);
        groups.entry(r).or_default().push(i);
    }
    groups.into_values().flatten().collect()
}

/// SVG text of `map`.
pub fn render(map: &Map) -> String {
    let n = map.nodes.len().max(1);
    let radius = (n as f64 * SPACING / TAU).max(120.0);
    let size = 2.0 * (radius + LABEL) + 40.0;
    let (cx, cy) = (size / 2.0, size / 2.0 + 30.0);
    let height = size + 90.0;
    let mut pos = vec![(0.0, 0.0, 0.0); map.nodes.len()];
    for (slot, i) in order(map).into_iter().enumerate() {
        let a = TAU * slot as f64 / n as f64 - TAU / 4.0;
        pos[i] = (cx + radius * a.cos(), cy + radius * a.sin(), a);
    }
    let idx: HashMap<Ipv6Net, usize> = map
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.prefix, i))
        .collect();
    let mut versions: Vec<&str> = map
        .nodes
        .iter()
        .filter_map(|n| n.version.as_deref())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let colour = |v: Option<&str>| {
        v.and_then(|v| versions.iter().position(|x| *x == v))
            .map_or(UNKNOWN, |i| PALETTE[i % (PALETTE.len() - 1)])
    };
    let (nodes, tunnels, lan) = map.counts();
    let mut s = String::with_capacity(200 * (map.nodes.len() + map.links.len()));
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{size:.0}" height="{height:.0}" viewBox="0 0 {size:.0} {height:.0}" font-family="DejaVu Sans, Verdana, sans-serif">"#
    );
    let network = map.network.map(|n| n.to_string()).unwrap_or_default();
    let when = humantime::format_rfc3339_seconds(crate::identity::from_unix_secs(map.generated));
    let _ = writeln!(
        s,
        "<title>re6st {network}: {nodes} nodes, {tunnels} tunnels, {lan} LAN links ({when})</title>"
    );
    // Hover: a node's links stand out (one rule per node).
    s.push_str("<style>\n.t{fill:none;stroke:#4e79a7;stroke-opacity:.16;stroke-width:.8}\n.lan{fill:none;stroke:#2ca02c;stroke-opacity:.9;stroke-width:2.5}\n.u{stroke-dasharray:5 3}\n.n text{font-size:11px;fill:#333}\n.n:hover text{font-weight:bold;fill:#000}\n");
    for i in 0..map.nodes.len() {
        let _ = writeln!(
            s,
            "svg:has(#n{i}:hover) .e{i}{{stroke:#d62728;stroke-opacity:1;stroke-width:1.6}}"
        );
    }
    s.push_str("</style>\n<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n");
    let _ = writeln!(
        s,
        r##"<text x="20" y="32" font-size="22">re6st {network}</text><text x="20" y="56" font-size="14" fill="#555">{nodes} nodes, {tunnels} tunnels, {lan} LAN links, as reported by the nodes ({when}){}</text>"##,
        if map.truncated > 0 {
            format!("; {} more nodes not drawn", map.truncated)
        } else {
            String::new()
        }
    );
    s.push_str("<g id=\"links\">\n");
    for l in &map.links {
        let (Some(&a), Some(&b)) = (idx.get(&l.a), idx.get(&l.b)) else {
            continue;
        };
        let ((x1, y1, _), (x2, y2, _)) = (pos[a], pos[b]);
        // A chord bent toward the centre, more for far ends (neighbours on
        // the circle, such as a LAN group, get a short, nearly straight one).
        let (mx, my) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let chord = ((x2 - x1).powi(2) + (y2 - y1).powi(2)).sqrt();
        let mut pull = 0.4 * chord / (2.0 * radius);
        if l.kind == "lan" {
            // A visible bow for neighbours: about 25 px inward.
            let to_centre = ((cx - mx).powi(2) + (cy - my).powi(2)).sqrt().max(1.0);
            pull = pull.max(25.0 / to_centre);
        }
        let (qx, qy) = (mx + (cx - mx) * pull, my + (cy - my) * pull);
        let class = if l.kind == "lan" { "lan" } else { "t" };
        let dashed = if l.confirmed { "" } else { " u" };
        let rtt = l.rtt_ms.map(|r| format!(", {r} ms")).unwrap_or_default();
        let _ = writeln!(
            s,
            r#"<path class="{class}{dashed} e{a} e{b}" d="M{x1:.1} {y1:.1}Q{qx:.1} {qy:.1} {x2:.1} {y2:.1}"><title>{} {} {}{rtt}{}</title></path>"#,
            l.a,
            if l.kind == "lan" { "LAN" } else { "→" },
            l.b,
            if l.confirmed {
                ""
            } else {
                " (one end reports it)"
            },
        );
    }
    s.push_str("</g>\n<g id=\"nodes\">\n");
    for (i, node) in map.nodes.iter().enumerate() {
        let (x, y, a) = pos[i];
        let fill = colour(node.version.as_deref());
        let degree = map
            .links
            .iter()
            .filter(|l| l.a == node.prefix || l.b == node.prefix)
            .count();
        let mut tip = format!(
            "{}\nversion {}\n{degree} links",
            node.prefix,
            node.version.as_deref().unwrap_or("unknown")
        );
        for g in &node.gateways {
            let _ = write!(tip, "\ngateway for {g}");
        }
        match node.announced {
            Some(t) => {
                let ago = map.generated.saturating_sub(t);
                let _ = write!(
                    tip,
                    "\nannounced {} ago",
                    humantime::format_duration(std::time::Duration::from_secs(ago))
                );
            }
            None => tip.push_str("\nnot announced (seen as a peer)"),
        }
        let shape = if node.gateways.is_empty() {
            format!(
                r##"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{fill}" stroke="#333" stroke-width=".6"/>"##
            )
        } else {
            format!(
                r##"<rect x="{:.1}" y="{:.1}" width="11" height="11" fill="{fill}" stroke="#000" stroke-width="2"/>"##,
                x - 5.5,
                y - 5.5
            )
        };
        let shape = if node.reported {
            shape
        } else {
            shape.replace(&format!("fill=\"{fill}\""), "fill=\"#fff\"")
        };
        // Radial label, flipped on the left so it reads left to right.
        let deg = a.to_degrees();
        let flip = a.cos() < 0.0;
        let (lx, ly) = (x + 9.0 * a.cos(), y + 9.0 * a.sin());
        let (rot, anchor) = if flip {
            (deg + 180.0, "end")
        } else {
            (deg, "start")
        };
        let _ = writeln!(
            s,
            r#"<g class="n" id="n{i}">{shape}<text x="{lx:.1}" y="{ly:.1}" dy=".35em" text-anchor="{anchor}" transform="rotate({rot:.2} {lx:.1} {ly:.1})">{}</text><title>{}</title></g>"#,
            node.prefix,
            esc(&tip)
        );
    }
    s.push_str("</g>\n");
    // Legend.
    let mut y = height - 40.0;
    let _ = write!(
        s,
        r##"<g font-size="12"><line x1="20" y1="{y}" x2="50" y2="{y}" class="t" style="stroke-opacity:.8"/><text x="56" y="{}">tunnel</text><line x1="120" y1="{y}" x2="150" y2="{y}" class="lan"/><text x="156" y="{}">LAN link</text><line x1="230" y1="{y}" x2="260" y2="{y}" class="t u" style="stroke-opacity:.8"/><text x="266" y="{}">one end reports it</text><rect x="400" y="{}" width="11" height="11" fill="#fff" stroke="#000" stroke-width="2"/><text x="417" y="{}">gateway</text><circle cx="495" cy="{y}" r="5" fill="#fff" stroke="#333"/><text x="505" y="{}">did not report</text>"##,
        y + 4.0,
        y + 4.0,
        y + 4.0,
        y - 5.5,
        y + 4.0,
        y + 4.0
    );
    y += 22.0;
    let mut x = 20.0;
    for v in &versions {
        let _ = write!(
            s,
            r#"<circle cx="{x}" cy="{y}" r="5" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            colour(Some(v)),
            x + 9.0,
            y + 4.0,
            esc(v)
        );
        x += 20.0 + 8.0 * v.len() as f64;
    }
    s.push_str("</g>\n</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_500_node_map_is_well_formed_and_labels_do_not_overlap() {
        let m = super::super::tests::synthetic(500, 10);
        let svg = render(&m);
        // To look at it: RE6ST_WRITE_MAP=/tmp/map.svg cargo test --lib svg
        if let Some(p) = std::env::var_os("RE6ST_WRITE_MAP") {
            std::fs::write(p, &svg).unwrap();
        }
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<g class=\"n\"").count(), 500);
        assert_eq!(svg.matches("<path class=").count(), m.links.len());
        // Every node has its hover rule and a tooltip with its prefix.
        assert!(svg.contains("svg:has(#n499:hover) .e499"));
        assert!(svg.contains("<title>fd00:5:0:1f3::/64\nversion 0.1.0"));
        assert!(svg.contains("gateway for ::/0"));
        // Labels sit SPACING apart along the circle: at least 12 px
        // between neighbouring node centres.
        let centres: Vec<(f64, f64)> = svg
            .lines()
            .filter(|l| l.starts_with("<g class=\"n\""))
            .filter_map(|l| {
                let f = |k: &str| -> Option<f64> {
                    let i = l.find(k)? + k.len();
                    l[i..].split('"').next()?.parse().ok()
                };
                f(" cx=\"")
                    .zip(f(" cy=\""))
                    .or_else(|| f(" x=\"").zip(f(" y=\"")).map(|(x, y)| (x + 5.5, y + 5.5)))
            })
            .collect();
        assert_eq!(centres.len(), 500);
        let mut closest = f64::MAX;
        for (i, a) in centres.iter().enumerate() {
            for b in &centres[i + 1..] {
                closest = closest.min(((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt());
            }
        }
        assert!(closest >= 12.0, "nodes {closest:.1} px apart");
        // Text is escaped.
        assert_eq!(esc("<a&\"b>"), "&lt;a&amp;&quot;b&gt;");
    }
}
