//! Exported routes: the prefixes this router originates (RFC 8966 §3.7,
//! babeld's xroutes). They are announced with our router-id and seqno and
//! always win over routes learned for the same prefix.

use std::collections::BTreeMap;

use ipnet::IpNet;

/// Our own prefixes and the metric we announce them with.
#[derive(Debug, Default)]
pub(crate) struct XrouteTable {
    routes: BTreeMap<IpNet, u16>,
}

impl XrouteTable {
    /// Adds or changes a prefix; returns the previous metric.
    pub(crate) fn insert(&mut self, prefix: IpNet, metric: u16) -> Option<u16> {
        self.routes.insert(prefix, metric)
    }

    pub(crate) fn remove(&mut self, prefix: &IpNet) -> Option<u16> {
        self.routes.remove(prefix)
    }

    pub(crate) fn get(&self, prefix: &IpNet) -> Option<u16> {
        self.routes.get(prefix).copied()
    }

    pub(crate) fn contains(&self, prefix: &IpNet) -> bool {
        self.routes.contains_key(prefix)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (IpNet, u16)> + '_ {
        self.routes.iter().map(|(p, m)| (*p, *m))
    }
}
