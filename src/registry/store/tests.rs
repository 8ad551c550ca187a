//! Store unit tests: the transactional rules, with time as a parameter.

use std::time::{Duration, SystemTime};

use super::*;
use crate::identity::{Crl, NodeCert, NodeKey, PublicKey};

pub(crate) struct Fx {
    pub store: Store,
    pub prefixes: Prefixes,
    pub ca: Ca,
    pub policy: Policy,
    pub now: SystemTime,
    _dir: tempfile::TempDir,
}

const DAY: Duration = Duration::from_secs(86_400);

pub(crate) fn fx(network: &str, open: bool) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&Location::Sqlite(dir.path().join("r.db"))).unwrap();
    let network: Ipv6Net = network.parse().unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let ca = Ca::generate(network, 1, now, 3650 * DAY).unwrap();
    store.set_meta(META_NEXT_SERIAL, "2").unwrap();
    let policy = Policy {
        open,
        node_prefix_len: 64,
        cert_lifetime: 365 * DAY,
        renew_window: 30 * DAY,
        grace_period: 30 * DAY,
        ipv4: None,
    };
    Fx {
        store,
        prefixes: Prefixes::new(network),
        ca,
        policy,
        now,
        _dir: dir,
    }
}

fn key() -> PublicKey {
    NodeKey::generate().unwrap().public_key().unwrap()
}

impl Fx {
    /// Runs `f` as the writer does: a write transaction, the allocator
    /// synced first and its changes undone when `f` fails.
    pub fn w<T>(
        &mut self,
        f: impl FnOnce(&mut dyn Tx, &mut Prefixes, &Ca, &Policy, SystemTime) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Self {
            store,
            prefixes,
            ca,
            policy,
            now,
            ..
        } = self;
        store.write(|tx| {
            prefixes.sync(tx)?;
            prefixes.begin_op();
            let out = f(tx, prefixes, ca, policy, *now);
            if out.is_err() {
                prefixes.undo_op();
            }
            out
        })
    }

    pub fn enrol(&mut self, k: &PublicKey, token: Option<&str>) -> Result<Issued, StoreError> {
        self.w(|tx, p, ca, pol, now| issue::enrol(tx, p, ca, pol, k, token, now))
    }

    pub fn renew(
        &mut self,
        serial: u64,
        k: Option<&PublicKey>,
    ) -> Result<RenewOutcome, StoreError> {
        self.w(|tx, p, ca, pol, now| issue::renew(tx, p, ca, pol, serial, k, now))
    }

    pub fn sweep(&mut self) -> Result<Vec<Ipv6Net>, StoreError> {
        self.w(|tx, p, _, pol, now| revoke::sweep(tx, p, pol.grace_period, now))
    }
}

#[test]
fn tokens_are_single_use_and_failures_change_nothing() {
    let mut f = fx("fd00:1::/48", false);
    assert!(matches!(
        f.enrol(&key(), None),
        Err(StoreError::TokenRequired)
    ));
    assert!(matches!(
        f.enrol(&key(), Some("nope")),
        Err(StoreError::UnknownToken)
    ));
    let toks = f
        .store
        .create_tokens(2, Some(DAY), None, "t", f.now)
        .unwrap();
    let k1 = key();
    let a = f.enrol(&k1, Some(&toks[0])).unwrap();
    assert!(a.new);
    assert_eq!(a.prefix.to_string(), "fd00:1::/64");
    assert_eq!(a.serial, 2);
    // Same key again: same certificate, no token consumed.
    let again = f.enrol(&k1, Some(&toks[1])).unwrap();
    assert_eq!(again.serial, a.serial);
    assert!(!again.new);
    // Reused token with another key.
    assert!(matches!(
        f.enrol(&key(), Some(&toks[0])),
        Err(StoreError::TokenUsed)
    ));
    // Failed attempts consumed neither prefix nor serial.
    let b = f.enrol(&key(), Some(&toks[1])).unwrap();
    assert_eq!(b.prefix.to_string(), "fd00:1:0:1::/64");
    assert_eq!(b.serial, 3);
    // Expired token.
    let old = f
        .store
        .create_tokens(1, Some(Duration::from_secs(10)), None, "", f.now)
        .unwrap();
    f.now += Duration::from_secs(11);
    assert!(matches!(
        f.enrol(&key(), Some(&old[0])),
        Err(StoreError::TokenExpired)
    ));
    let list = f.store.list_tokens().unwrap();
    assert_eq!(list.iter().filter(|t| t.used_by.is_some()).count(), 2);
}

#[test]
fn exhaustion_is_clean() {
    let mut f = fx("fd00:1::/63", true);
    f.enrol(&key(), None).unwrap();
    f.enrol(&key(), None).unwrap();
    assert!(matches!(
        f.enrol(&key(), None),
        Err(StoreError::Exhausted(_))
    ));
    assert_eq!(f.store.counts().unwrap(), (2, 0, 2));
    // A token with its own prefix length.
    let mut f = fx("fd00:1::/48", false);
    let t = f.store.create_tokens(1, None, Some(56), "", f.now).unwrap();
    let c = f.enrol(&key(), Some(&t[0])).unwrap();
    assert_eq!(c.prefix.prefix_len(), 56);
    assert_eq!(NodeCert::from_der(&c.der).unwrap().prefix, c.prefix);
}

#[test]
fn renewal_keeps_prefix() {
    let mut f = fx("fd00:1::/48", true);
    let k = key();
    let a = f.enrol(&k, None).unwrap();
    let r = f.renew(a.serial, None).unwrap();
    assert!(!r.renewed, "not due");
    assert_eq!(r.cert.serial, a.serial);
    f.now += 340 * DAY;
    let r = f.renew(a.serial, None).unwrap();
    assert!(r.renewed);
    assert_eq!(r.cert.prefix, a.prefix);
    assert!(r.cert.serial > a.serial);
    // The old certificate renews to the newest.
    let r2 = f.renew(a.serial, None).unwrap();
    assert_eq!(r2.cert.serial, r.cert.serial);
    // Key rotation issues at once.
    let k2 = key();
    let r3 = f.renew(r.cert.serial, Some(&k2)).unwrap();
    assert!(r3.renewed);
    assert_eq!(NodeCert::from_der(&r3.cert.der).unwrap().public_key, k2);
    // Past expiry + grace: refused.
    f.now += 400 * DAY;
    assert!(matches!(
        f.renew(r3.cert.serial, None),
        Err(StoreError::Expired(_))
    ));
    assert!(matches!(f.renew(999, None), Err(StoreError::Unknown(_))));
}

#[test]
fn revoke_updates_crl_and_frees_prefix_after_expiry() {
    let mut f = fx("fd00:1::/48", true);
    let a = f.enrol(&key(), None).unwrap();
    let b = f.enrol(&key(), None).unwrap();
    let crl0 = Crl::from_der(&f.store.crl(&f.ca, f.now).unwrap(), f.ca.cert_der()).unwrap();
    assert_eq!(crl0.entries().count(), 0);
    let out = f
        .store
        .revoke(&f.ca, RevokeTarget::Serial(a.serial), f.now)
        .unwrap();
    assert_eq!(
        (out.prefix, out.serials.clone(), out.newly),
        (a.prefix, vec![a.serial], true)
    );
    let crl = Crl::from_der(&f.store.crl(&f.ca, f.now).unwrap(), f.ca.cert_der()).unwrap();
    assert!(crl.is_revoked(a.serial) && !crl.is_revoked(b.serial));
    assert!(crl.number > crl0.number);
    assert!(
        !f.store
            .revoke(&f.ca, RevokeTarget::Prefix(a.prefix), f.now)
            .unwrap()
            .newly
    );
    assert!(matches!(
        f.renew(a.serial, None),
        Err(StoreError::Revoked(_))
    ));
    // Still reserved before expiry.
    assert!(f.sweep().unwrap().is_empty());
    let c = f.enrol(&key(), None).unwrap();
    assert_ne!(c.prefix, a.prefix);
    // After expiry the revoked prefix is released and the CRL drops it;
    // active nodes keep theirs until expiry + grace.
    f.now += 366 * DAY;
    let released = f.sweep().unwrap();
    assert_eq!(released, vec![a.prefix]);
    let crl = Crl::from_der(&f.store.crl(&f.ca, f.now).unwrap(), f.ca.cert_der()).unwrap();
    assert_eq!(crl.entries().count(), 0);
    let d = f.enrol(&key(), None).unwrap();
    assert_eq!(d.prefix, a.prefix, "released prefix is reused");
    f.now += 31 * DAY;
    let mut released = f.sweep().unwrap();
    released.sort();
    assert_eq!(released, vec![b.prefix, c.prefix]);
    let rows = f.store.list_nodes(true).unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(f.store.list_nodes(false).unwrap().len(), 1);
    // The allocator matches a rebuild from the store.
    let mut rebuilt = Prefixes::new("fd00:1::/48".parse().unwrap());
    f.store.write(|tx| rebuilt.sync(tx)).unwrap();
    assert_eq!(
        rebuilt.allocator().free_count(64),
        f.prefixes.allocator().free_count(64)
    );
}

#[test]
fn revoke_unknown_is_an_error() {
    let f = fx("fd00:1::/48", true);
    assert!(matches!(
        f.store.revoke(&f.ca, RevokeTarget::Serial(77), f.now),
        Err(StoreError::Unknown(_))
    ));
    assert!(matches!(
        f.store.revoke(
            &f.ca,
            RevokeTarget::Prefix("fd00:1:0:9::/64".parse().unwrap()),
            f.now
        ),
        Err(StoreError::Unknown(_))
    ));
    assert_eq!(
        "42".parse::<RevokeTarget>().unwrap(),
        RevokeTarget::Serial(42)
    );
    assert!("x".parse::<RevokeTarget>().is_err());
}

fn ipv4_of(der: &[u8]) -> Option<String> {
    NodeCert::from_der(der).unwrap().ipv4.map(|n| n.to_string())
}

#[test]
fn ipv4_subnets_are_given_with_certificates_and_freed_with_prefixes() {
    let mut f = fx("fd00:1::/48", true);
    // A node enrolled before the network had IPv4 has none.
    let k0 = key();
    let old = f.enrol(&k0, None).unwrap();
    assert_eq!(ipv4_of(&old.der), None);
    // Not due: the same certificate back, still without a subnet.
    assert!(!f.renew(old.serial, None).unwrap().renewed);
    f.policy.ipv4 = Some(("10.42.0.0/30".parse().unwrap(), 31));
    // New nodes get the lowest free subnet with their certificate.
    let a = f.enrol(&key(), None).unwrap();
    assert_eq!(ipv4_of(&a.der).as_deref(), Some("10.42.0.0/31"));
    // The old node gets one at its next renewal, due for that alone.
    let out = f.renew(old.serial, None).unwrap();
    assert!(out.renewed);
    assert_eq!(out.cert.prefix, old.prefix);
    assert_eq!(ipv4_of(&out.cert.der).as_deref(), Some("10.42.0.2/31"));
    // And keeps it: renewing again issues nothing.
    let again = f.renew(out.cert.serial, None).unwrap();
    assert!(!again.renewed);
    assert_eq!(again.cert.serial, out.cert.serial);
    // The IPv4 network is full: enrolment fails cleanly, taking no prefix.
    let k = key();
    assert!(matches!(f.enrol(&k, None), Err(StoreError::Exhausted(_))));
    assert_eq!(f.store.live_prefixes().unwrap().len(), 2);
    let rows = f.store.list_nodes(false).unwrap();
    let mut subnets: Vec<_> = rows.iter().filter_map(|r| r.ipv4.clone()).collect();
    subnets.sort();
    assert_eq!(subnets, ["10.42.0.0/31", "10.42.0.2/31"]);
    // Revoked, expired and swept: the subnet is free again for a new node
    // (the other one, renewed a year ago, is within its grace period), on
    // this replica and on one rebuilding its allocators from the store.
    f.store
        .revoke(&f.ca, RevokeTarget::Prefix(a.prefix), f.now)
        .unwrap();
    f.now += 366 * DAY;
    f.sweep().unwrap();
    let mut other = Prefixes::new("fd00:1::/48".parse().unwrap());
    let b = f.enrol(&key(), None).unwrap();
    assert_eq!(ipv4_of(&b.der).as_deref(), Some("10.42.0.0/31"));
    let taken = f.store.write(|tx| {
        other.sync(tx)?;
        other.allocate_v4(tx, "10.42.0.0/30".parse().unwrap(), 31)
    });
    assert!(matches!(taken, Err(StoreError::Exhausted(_))), "{taken:?}");
}
