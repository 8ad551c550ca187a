//! The map as Graphviz DOT (`re6st registry topology --dot | neato -Tpng`).

use std::fmt::Write as _;

use super::Map;

/// DOT text of `map`: one vertex per node (gateways as boxes, nodes that
/// did not report dashed), tunnels as edges from the dialler (`->` when
/// known), LAN links bold green, edges only one end reported dashed.
pub fn render(map: &Map) -> String {
    let mut out = String::from("digraph re6st {\n");
    let _ = writeln!(
        out,
        "  graph [overlap=false, splines=true, label=\"re6st {}: {} nodes\"];",
        map.network.map(|n| n.to_string()).unwrap_or_default(),
        map.nodes.len()
    );
    out.push_str("  node [shape=circle, fontsize=9, width=0.3];\n  edge [arrowsize=0.4];\n");
    for n in &map.nodes {
        let mut attrs = vec![format!(
            "tooltip=\"{} {}\"",
            n.prefix,
            n.version.as_deref().unwrap_or("?")
        )];
        if !n.gateways.is_empty() {
            attrs.push("shape=box".into());
        }
        if !n.reported {
            attrs.push("style=dashed".into());
        }
        let _ = writeln!(out, "  \"{}\" [{}];", n.prefix, attrs.join(", "));
    }
    for l in &map.links {
        let mut attrs = vec![];
        if l.kind == "lan" {
            attrs.push("color=green, penwidth=2, dir=none".to_string());
        }
        if !l.confirmed {
            attrs.push("style=dashed".into());
        }
        if let Some(r) = l.rtt_ms {
            attrs.push(format!("label=\"{r} ms\", fontsize=7"));
        }
        let _ = writeln!(out, "  \"{}\" -> \"{}\" [{}];", l.a, l.b, attrs.join(", "));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_and_link_once() {
        let m = super::super::tests::synthetic(30, 3);
        let d = render(&m);
        assert!(d.starts_with("digraph re6st {") && d.ends_with("}\n"));
        assert_eq!(d.matches(" -> ").count(), m.links.len());
        assert_eq!(d.matches("tooltip=").count(), m.nodes.len());
        assert!(d.contains("shape=box"), "the gateway");
    }
}
