//! `re6st registry` admin commands and `re6st join`, end to end through the
//! binary.

mod registry_support;

use std::path::Path;

use re6st::identity::Crl;
use re6st::identity::tls::Trust;
use re6st::registry::client::RegistryClient;
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
