use std::time::Duration;

use super::*;
use crate::identity::{PeerAnnouncement, unix_secs};
use crate::peers::PeerStore;
use crate::test_pki::Pki;

const HOUR: Duration = Duration::from_secs(3600);

fn mem_db(pki: &Pki, capacity: usize) -> PeerDb {
    let (me, _) = pki.node(100);
    PeerDb::new(
        me.prefix,
        PeerDbConfig {
            capacity,
            max_age: 24 * HOUR,
        },
    )
}

#[test]
fn newer_replaces_older_and_nothing_else_does() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let mut db = mem_db(&pki, 10);
    let (c, k) = pki.node(2);
    let old = pki.announce(&c, &k, "192.0.2.1:1", HOUR);
    let new = pki.announce(&c, &k, "192.0.2.2:2", Duration::ZERO);
    assert_eq!(db.insert(&old, &v, pki.now).unwrap(), Inserted::New);
    assert_eq!(db.insert(&old, &v, pki.now).unwrap(), Inserted::Unchanged);
    assert_eq!(db.insert(&new, &v, pki.now).unwrap(), Inserted::Updated);
    assert_eq!(db.insert(&old, &v, pki.now).unwrap(), Inserted::Unchanged);
    let e = db.get(&c.prefix).unwrap();
    assert_eq!(e.addresses, vec!["192.0.2.2:2".parse().unwrap()]);
    assert_eq!(e.serial, 2);
    assert_eq!(
        (
            db.stats().inserted,
            db.stats().updated,
            db.stats().unchanged
        ),
        (1, 1, 2)
    );
}

#[test]
fn forged_revoked_stale_and_own_announcements_are_refused_and_counted() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let mut db = mem_db(&pki, 10);
    let (c2, k2) = pki.node(2);
    let (c3, _) = pki.node(3);

    // Tampered payload: the signature no longer matches.
    let mut bad = pki.announce(&c2, &k2, "192.0.2.1:1", Duration::ZERO);
    bad.payload = bad.payload.replace("192.0.2.1", "192.0.2.9");
    assert!(matches!(
        db.insert(&bad, &v, pki.now),
        Err(PeerDbError::Rejected(IdentityError::BadSignature { .. }))
    ));

    // Node 2 signs an announcement for node 3's prefix with its own cert.
    let payload = serde_json::to_string(&PeerAnnouncement {
        prefix: c3.prefix,
        addresses: vec!["192.0.2.1:1".parse().unwrap()],
        timestamp: unix_secs(pki.now),
        tcp_port: None,
        topology: None,
    })
    .unwrap();
    let good = pki.announce(&c2, &k2, "192.0.2.1:1", Duration::ZERO);
    let signature = crate::test_pki::sign_raw(&payload, &k2);
    let lie = SignedAnnouncement {
        payload,
        signature,
        certificate: good.certificate.clone(),
    };
    assert!(matches!(
        db.insert(&lie, &v, pki.now),
        Err(PeerDbError::Rejected(IdentityError::PrefixMismatch { .. }))
    ));

    // Too old.
    let stale = pki.announce(&c2, &k2, "192.0.2.1:1", 25 * HOUR);
    assert!(db.insert(&stale, &v, pki.now).is_err());

    // Revoked signer.
    let crl = pki.crl(1, &[2]);
    assert!(
        db.insert(&good, &pki.verifier(Some(&crl)), pki.now)
            .is_err()
    );

    // Another network's CA.
    let other = Pki::new();
    let (c9, k9) = other.node(9);
    let foreign = other.announce(&c9, &k9, "192.0.2.1:1", Duration::ZERO);
    assert!(db.insert(&foreign, &v, pki.now).is_err());

    // Our own announcement, relayed back to us.
    let (me, _) = pki.node(100);
    let mut own_db = PeerDb::new(c2.prefix, PeerDbConfig::default());
    assert!(matches!(
        own_db.insert(&good, &v, pki.now),
        Err(PeerDbError::Own)
    ));
    assert_eq!(own_db.stats().rejected_own, 1);
    assert_ne!(me.prefix, c2.prefix);

    let s = db.stats();
    assert_eq!(
        (
            s.rejected_invalid,
            s.rejected_prefix,
            s.rejected_stale,
            s.rejected_revoked,
            s.rejected_certificate
        ),
        (1, 1, 1, 1, 1),
        "{s:?}"
    );
    assert!(db.is_empty());
    // And the good one still goes in.
    assert_eq!(db.insert(&good, &v, pki.now).unwrap(), Inserted::New);
}

#[test]
fn bounded_by_evicting_the_oldest() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let mut db = mem_db(&pki, 3);
    for (serial, age) in [(2, 5), (3, 1), (4, 9), (5, 2)] {
        let (c, k) = pki.node(serial);
        let a = pki.announce(&c, &k, "192.0.2.1:1", Duration::from_secs(age * 60));
        assert_eq!(db.insert(&a, &v, pki.now).unwrap(), Inserted::New);
    }
    assert_eq!(db.len(), 3);
    assert_eq!(db.stats().evicted, 1);
    let serials: Vec<u64> = db.iter().map(|e| e.serial).collect();
    assert!(
        !serials.contains(&4),
        "the oldest (9 min) went: {serials:?}"
    );
}

#[test]
fn the_durable_copy_follows_the_changes_and_is_verified_again_when_restored() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(crate::peers::store::FILE);
    let (me, _) = pki.node(100);
    let cfg = PeerDbConfig::default();
    let restore = |now| {
        let (store, rows) = PeerStore::open(&path).unwrap();
        let mut db = PeerDb::new(me.prefix, cfg);
        db.restore(rows, &v, now);
        (store, db)
    };
    let save = |store: &mut PeerStore, db: &mut PeerDb| {
        for c in db.take_changes() {
            store.apply(&c).unwrap();
        }
    };
    {
        let (mut store, mut db) = restore(pki.now);
        for serial in [2, 3, 4] {
            let (c, k) = pki.node(serial);
            db.insert(
                &pki.announce(&c, &k, "192.0.2.1:1", Duration::ZERO),
                &v,
                pki.now,
            )
            .unwrap();
        }
        let changes: Vec<PeerChange> = db.take_changes().collect();
        assert_eq!(changes.len(), 3);
        assert!(
            changes
                .iter()
                .all(|c| matches!(c, PeerChange::Store { timestamp, .. } if *timestamp > 0))
        );
        for c in &changes {
            store.apply(c).unwrap();
        }
        assert_eq!(db.take_changes().count(), 0, "taken once");
    }
    // Tamper with one row behind the DB's back.
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "UPDATE peer SET payload = replace(payload, '192.0.2.1', '192.0.2.66') WHERE rowid = 1",
        [],
    )
    .unwrap();
    drop(conn);
    let (mut store, mut db) = restore(pki.now);
    assert_eq!(db.len(), 2);
    assert_eq!(db.stats().purged, 1);
    // The bad row's removal is a change, like any other.
    save(&mut store, &mut db);
    // Revoke one of the two left: purge drops it, in memory and on disk.
    let left: Vec<u64> = db.iter().map(|e| e.serial).collect();
    let crl = pki.crl(1, &[left[0]]);
    let dropped = db.purge(&pki.verifier(Some(&crl)), pki.now);
    assert_eq!(dropped.len(), 1);
    save(&mut store, &mut db);
    drop((store, db));
    let (_, db) = restore(pki.now);
    assert_eq!(
        (db.len(), db.stats().purged),
        (1, 0),
        "nothing bad left on disk"
    );
    // The certificates expire after an hour: nothing survives two days.
    let (_, later) = restore(pki.now + Duration::from_secs(2 * 86_400));
    assert_eq!(later.len(), 0);
}

#[test]
fn changes_keep_the_latest_per_prefix() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let mut db = mem_db(&pki, 10);
    let (c, k) = pki.node(2);
    db.insert(&pki.announce(&c, &k, "192.0.2.1:1", HOUR), &v, pki.now)
        .unwrap();
    db.insert(
        &pki.announce(&c, &k, "192.0.2.2:2", Duration::ZERO),
        &v,
        pki.now,
    )
    .unwrap();
    assert!(db.remove(c.prefix));
    assert!(!db.remove(c.prefix));
    let changes: Vec<PeerChange> = db.take_changes().collect();
    assert_eq!(changes, vec![PeerChange::Remove(c.prefix)]);
}

#[test]
fn a_replaced_node_is_forgotten_and_its_old_copies_refused() {
    let pki = Pki::new();
    let v = pki.verifier(None);
    let mut db = mem_db(&pki, 10);
    let (c, k) = pki.node(2);
    let seen = pki.announce(&c, &k, "192.0.2.1:1", HOUR / 2);
    let older = pki.announce(&c, &k, "192.0.2.1:1", HOUR);
    let newest_before = pki.announce(&c, &k, "192.0.2.1:1", Duration::from_secs(60));
    db.insert(&seen, &v, pki.now).unwrap();
    // Another serial for the prefix: not the entry dialled, kept.
    assert!(!db.forget_replaced(c.prefix, 99, pki.now));
    assert!(db.get(&c.prefix).is_some());
    assert!(db.forget_replaced(c.prefix, 2, pki.now));
    assert!(db.get(&c.prefix).is_none());
    assert!(!db.forget_replaced(c.prefix, 2, pki.now), "once");
    // Copies signed before it was found replaced come back from peers and
    // the registry: refused, counted.
    for a in [&seen, &older, &newest_before] {
        assert!(matches!(
            db.insert(a, &v, pki.now),
            Err(PeerDbError::Replaced)
        ));
    }
    assert_eq!(
        (db.stats().forgotten_replaced, db.stats().rejected_replaced),
        (1, 3)
    );
    // The node moved and announces itself again: newer, accepted.
    let later = pki.now + Duration::from_secs(5);
    let moved = PeerAnnouncement {
        prefix: c.prefix,
        addresses: vec!["192.0.2.7:7".parse().unwrap()],
        timestamp: unix_secs(later),
        tcp_port: None,
        topology: None,
    }
    .sign(&c, &k)
    .unwrap();
    assert_eq!(db.insert(&moved, &v, later).unwrap(), Inserted::New);
}

#[test]
fn replaced_identities_are_bounded_and_expire() {
    let pki = Pki::new();
    let mut db = mem_db(&pki, 3);
    for serial in 10..20 {
        let p: Ipv6Net = format!("fd00:77:0:{serial}::/64").parse().unwrap();
        let t = pki.now + Duration::from_secs(serial);
        db.forget_replaced(p, serial, t);
    }
    assert_eq!(db.replaced.len(), 3);
    assert!(db.replaced.contains_key(&19), "the newest are kept");
    // A day later (max_age) they are useless: dropped at the next purge.
    db.purge(&pki.verifier(None), pki.now + 25 * HOUR);
    assert!(db.replaced.is_empty());
}
