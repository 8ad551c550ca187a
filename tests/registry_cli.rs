//! `re6st registry` admin commands and `re6st join`, end to end through the
//! binary.

mod registry_support;

use std::path::Path;

use re6st::identity::Crl;
use re6st::identity::tls::Trust;
use re6st::registry::client::RegistryClient;
use re6st::registry::store::Location;
use re6st::state_dir::{StateDir, files};
use registry_support::{run, spawn_registry};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tokens_join_list_revoke() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let (ok, _, err) = run(&["registry", "list", "--dir", s(&dir)]);
    assert!(!ok && err.contains("no registry"), "{err}");
    let reg = spawn_registry(&dir, &["--network", "fd00:42::/48"]);

    let (ok, info, _) = run(&["registry", "info", "--dir", s(&dir)]);
    assert!(ok);
    assert!(info.contains("fd00:42::/48"), "{info}");
    let fp = info
        .lines()
        .find(|l| l.starts_with("CA fingerprint:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();

    let (ok, toks, _) = run(&[
        "registry",
        "token",
        "--dir",
        s(&dir),
        "-n",
        "2",
        "--comment",
        "alice",
    ]);
    assert!(ok);
    let toks: Vec<&str> = toks.lines().collect();
    assert_eq!(toks.len(), 2);

    // Pinned join.
    let n1 = tmp.path().join("n1");
    let (ok, out, err) = run(&[
        "join",
        "--registry",
        &reg.url,
        "--token",
        toks[0],
        "--ca-fingerprint",
        &fp,
        "--dir",
        s(&n1),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("enrolled") && out.contains("fd00:42::/64"),
        "{out}"
    );
    assert!(!err.contains("warning"), "{err}");
    let st = StateDir::new(&n1);
    let id = st.load_identity().unwrap();
    assert_eq!(id.cert.prefix.to_string(), "fd00:42::/64");
    assert!(id.crl.is_some());
    let cfg = id.network.as_ref().unwrap().verify(&id.ca_key).unwrap();
    assert_eq!(cfg.registry_url, reg.url);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(st.path(files::KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Again on the enrolled directory: says so, does not renew (not due).
    let cert_before = st.read(files::CERT).unwrap();
    let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n1)]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("already enrolled") && out.contains("not due"),
        "{out}"
    );
    assert_eq!(st.read(files::CERT).unwrap(), cert_before);

    // Wrong pin: refused, nothing enrolled.
    let n2 = tmp.path().join("n2");
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (ok, _, err) = run(&[
        "join",
        "--registry",
        &reg.url,
        "--token",
        toks[1],
        "--ca-fingerprint",
        &wrong,
        "--dir",
        s(&n2),
    ]);
    assert!(!ok && err.contains("not the pinned"), "{err}");
    assert!(!n2.join(files::CERT).exists());

    // Reused token: refused with the registry's reason.
    let (ok, _, err) = run(&[
        "join",
        "--registry",
        &reg.url,
        "--token",
        toks[0],
        "--dir",
        s(&n2),
    ]);
    assert!(!ok && err.contains("token already used"), "{err}");
    assert!(!n2.join(files::CERT).exists());

    // Unpinned join with the second token: works, with a warning.
    let (ok, out, err) = run(&[
        "join",
        "--registry",
        &reg.url,
        "--token",
        toks[1],
        "--dir",
        s(&n2),
    ]);
    assert!(ok, "{out}{err}");
    assert!(
        err.contains("warning: the CA was not pinned") && err.contains(&fp),
        "{err}"
    );
    let id2 = StateDir::new(&n2).load_identity().unwrap();

    let (ok, list, _) = run(&["registry", "list", "--dir", s(&dir), "--json"]);
    assert!(ok);
    let rows: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    let (ok, toks_json, _) = run(&["registry", "tokens", "--dir", s(&dir), "--json"]);
    assert!(ok);
    let t: serde_json::Value = serde_json::from_str(&toks_json).unwrap();
    assert!(
        t.as_array()
            .unwrap()
            .iter()
            .all(|t| t["used_by"].is_string() && t["comment"] == "alice")
    );

    // Delete an unused token; used ones stay.
    let (ok, extra, _) = run(&["registry", "token", "--dir", s(&dir)]);
    assert!(ok);
    let (ok, _, _) = run(&[
        "registry",
        "token",
        "--dir",
        s(&dir),
        "--delete",
        extra.trim(),
    ]);
    assert!(ok);
    let (ok, _, err) = run(&["registry", "token", "--dir", s(&dir), "--delete", toks[0]]);
    assert!(!ok && err.contains("no unused token"), "{err}");
    let (_, toks_json, _) = run(&["registry", "tokens", "--dir", s(&dir), "--json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&toks_json)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Revoke n1 by prefix, n2 by serial, while the server runs.
    let (ok, out, err) = run(&["registry", "revoke", "--dir", s(&dir), "fd00:42::/64"]);
    assert!(ok && out.contains("revoked fd00:42::/64"), "{out}{err}");
    let (ok, _, _) = run(&[
        "registry",
        "revoke",
        "--dir",
        s(&dir),
        &id2.cert.serial.to_string(),
    ]);
    assert!(ok);
    let (ok, out, _) = run(&["registry", "revoke", "--dir", s(&dir), "fd00:42::/64"]);
    assert!(ok && out.contains("already revoked"), "{out}");
    let (ok, _, err) = run(&["registry", "revoke", "--dir", s(&dir), "fd00:42:0:99::/64"]);
    assert!(!ok && err.contains("no live node"), "{err}");

    // The running server serves the new CRL.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = RegistryClient::new(&reg.url, &Trust::new(&id.ca_der, None), None).unwrap();
    let crl = Crl::from_pem(&rt.block_on(client.crl()).unwrap(), &id.ca_der).unwrap();
    assert!(crl.is_revoked(id.cert.serial) && crl.is_revoked(id2.cert.serial));
    let (_, list, _) = run(&["registry", "list", "--dir", s(&dir)]);
    assert_eq!(list.matches("revoked").count(), 2, "{list}");

    // An enrolled node whose registry is unreachable: says so, succeeds.
    let (ok, out, err) = run(&["join", "--registry", "https://127.0.0.1:1", "--dir", s(&n2)]);
    assert!(
        ok && out.contains("already enrolled") && err.contains("could not reach"),
        "{out}{err}"
    );

    // A revoked node's join (renewal) fails and says why.
    let (ok, _, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n1)]);
    assert!(!ok && err.contains("revoked"), "{err}");
}

#[test]
fn join_renews_when_due_and_settings_persist() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let n = tmp.path().join("node");
    {
        let reg = spawn_registry(
            &dir,
            &[
                "--enrolment",
                "open",
                "--cert-lifetime",
                "1h",
                "--renew-window",
                "2h",
                "--tunnels",
                "4",
            ],
        );
        let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n)]);
        assert!(ok, "{out}{err}");
        let serial = StateDir::new(&n).load_identity().unwrap().cert.serial;
        let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n)]);
        assert!(ok && out.contains("renewed"), "{out}{err}");
        let id = StateDir::new(&n).load_identity().unwrap();
        assert!(id.cert.serial > serial);
        assert_eq!(
            id.network.unwrap().verify(&id.ca_key).unwrap().max_tunnels,
            12
        );
    }
    // Restart without options: open enrolment and k=4 are kept.
    let reg = spawn_registry(&dir, &[]);
    let n2 = tmp.path().join("node2");
    let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n2)]);
    assert!(ok, "{out}{err}");
    let id = StateDir::new(&n2).load_identity().unwrap();
    let cfg = id.network.unwrap().verify(&id.ca_key).unwrap();
    assert_eq!((cfg.tunnels, cfg.max_tunnels), (4, 12));
    // The URL changed (new port), so the configuration version went up.
    assert!(cfg.version >= 2, "{}", cfg.version);
    // A second server on the same directory is refused.
    let (ok, _, err) = run(&[
        "registry",
        "run",
        "--dir",
        s(&dir),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!ok && err.contains("another registry is running"), "{err}");
}

/// An admin command never initialises a registry: not on an empty
/// directory, and not on one whose first `registry run` has made the
/// database but not yet its network and CA (one racing that start must not
/// make a CA of its own, nor pick the network).
#[test]
fn admin_commands_never_initialise_a_registry() {
    use re6st::registry::core::{CA_CERT, CA_KEY, DB};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    for cmd in ["info", "list", "tokens"] {
        let (ok, out, err) = run(&["registry", cmd, "--dir", s(&dir)]);
        assert!(!ok && err.contains("not initialised"), "{cmd}: {out}{err}");
        assert!(!dir.exists(), "{cmd} created {}", dir.display());
    }

    // What a first start has done when it is between opening the database
    // and recording the network.
    std::fs::create_dir(&dir).unwrap();
    drop(re6st::registry::store::Store::open(&Location::Sqlite(dir.join(DB))).unwrap());
    for cmd in [
        vec!["info"],
        vec!["list"],
        vec!["token", "-n", "1"],
        vec!["revoke", "2"],
    ] {
        let mut args = vec!["registry"];
        args.extend(&cmd);
        args.extend(["--dir", s(&dir)]);
        let (ok, out, err) = run(&args);
        assert!(
            !ok && err.contains("not initialised"),
            "{cmd:?}: {out}{err}"
        );
        assert!(
            !dir.join(CA_KEY).exists() && !dir.join(CA_CERT).exists(),
            "{cmd:?} made a CA"
        );
    }

    // The server's first start then initialises it with the network asked
    // for, and the commands work.
    let _reg = spawn_registry(&dir, &["--network", "fd00:43::/48"]);
    let (ok, info, err) = run(&["registry", "info", "--dir", s(&dir)]);
    assert!(ok && info.contains("fd00:43::/48"), "{info}{err}");
}

#[test]
fn gateway_authorisations_are_signed_into_the_configuration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let reg = spawn_registry(
        &dir,
        &[
            "--network",
            "fd00:43::/48",
            "--enrolment",
            "open",
            "--sweep-every",
            "200ms",
        ],
    );
    let mut nodes = vec![];
    for name in ["a", "b"] {
        let n = tmp.path().join(name);
        let (ok, out, err) = run(&["join", "--registry", &reg.url, "--dir", s(&n)]);
        assert!(ok, "{out}{err}");
        nodes.push(StateDir::new(&n).load_identity().unwrap());
    }
    let (a, b) = (&nodes[0], &nodes[1]);
    let a_prefix = a.cert.prefix.to_string();
    let served = || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = RegistryClient::new(&reg.url, &Trust::new(&a.ca_der, None), None).unwrap();
        rt.block_on(client.network())
            .unwrap()
            .verify(&a.ca_key)
            .unwrap()
    };
    let before = served();
    assert!(before.gateways.is_empty());

    // Add by prefix and by serial; again is a no-op.
    let gw = |args: &[&str]| {
        let mut v = vec!["registry", "gateway"];
        v.extend_from_slice(&args[..1]);
        v.extend_from_slice(&["--dir", s(&dir)]);
        v.extend_from_slice(&args[1..]);
        run(&v)
    };
    let (ok, out, err) = gw(&["add", &a_prefix, "::/0"]);
    assert!(ok && out.contains("authorised: ::/0 via"), "{out}{err}");
    let (ok, out, _) = gw(&["add", &a.cert.serial.to_string(), "::/0"]);
    assert!(ok && out.contains("already authorised"), "{out}");
    let (ok, _, err) = gw(&["add", &b.cert.prefix.to_string(), "10.0.0.0/8"]);
    assert!(ok, "{err}");
    // Overlay space, unknown nodes: refused with a reason.
    let (ok, _, err) = gw(&["add", &a_prefix, "fd00:43:0:99::/64"]);
    assert!(!ok && err.contains("inside the overlay"), "{err}");
    let (ok, _, err) = gw(&["add", "fd00:43:0:99::/64", "::/0"]);
    assert!(!ok && err.contains("no live node"), "{err}");
    let (ok, list, _) = gw(&["list", "--json"]);
    assert!(ok);
    let grants: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 2, "{list}");

    // The running registry serves them, signed, within a sweep.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let cfg = loop {
        let cfg = served();
        if cfg.gateways.len() == 2 || std::time::Instant::now() > deadline {
            break cfg;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(cfg.gateways.len(), 2, "{cfg:?}");
    assert!(cfg.version >= before.version + 2);
    assert!(
        cfg.gateways
            .iter()
            .any(|g| g.node == a.cert.prefix && g.prefix.to_string() == "::/0")
    );

    // Remove one; revoking b withdraws its own.
    let (ok, out, _) = gw(&["remove", &a_prefix, "::/0"]);
    assert!(ok && out.contains("withdrawn: ::/0"), "{out}");
    let (ok, _, err) = gw(&["remove", &a_prefix, "::/0"]);
    assert!(!ok && err.contains("no such authorisation"), "{err}");
    let (ok, out, err) = run(&[
        "registry",
        "revoke",
        "--dir",
        s(&dir),
        &b.cert.prefix.to_string(),
    ]);
    assert!(ok && out.contains("withdrew its 1 gateway"), "{out}{err}");
    let (_, list, _) = gw(&["list", "--json"]);
    assert_eq!(list.trim(), "[]");
}

/// `re6st join` takes its registry, token and CA pin from the environment
/// too (a Kubernetes Secret's keys, and no token on a command line).
#[test]
fn join_takes_its_settings_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("registry");
    let reg = spawn_registry(&dir, &["--network", "fd00:44::/48"]);
    let (ok, info, _) = run(&["registry", "info", "--dir", s(&dir)]);
    assert!(ok);
    let fp = info
        .lines()
        .find(|l| l.starts_with("CA fingerprint:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    let (ok, tok, _) = run(&["registry", "token", "--dir", s(&dir)]);
    assert!(ok);
    let join = |node: &Path, pin: &str| {
        let out = registry_support::re6st()
            .args(["join", "--dir", s(node)])
            .env("RE6ST_REGISTRY", &reg.url)
            .env("RE6ST_TOKEN", tok.trim())
            .env("RE6ST_CA_FINGERPRINT", pin)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    // A wrong pin is refused, as on the command line.
    let wrong = format!("sha256:{}", "ab".repeat(32));
    let (ok, _, err) = join(&tmp.path().join("n0"), &wrong);
    assert!(!ok && err.contains("not the pinned"), "{err}");
    let node = tmp.path().join("node");
    let (ok, out, err) = join(&node, &fp);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("matches the pinned fingerprint") && out.contains("fd00:44::/64"),
        "{out}"
    );
    assert!(node.join(files::CERT).exists());
}
