//! Network namespaces for the edge tests (UPnP, LAN, gateway): creation,
//! veth links, running code or processes inside, and cleanup by `Drop`
//! even when a test fails. Addresses are 198.18.0.0/15 and fd00::/8 only.
//!
//! Code runs "inside" a namespace on a thread that entered it with
//! `setns(2)`: a socket keeps the namespace it was created in, so sockets
//! (and tokio runtimes that create them) made on such a thread live there.

#![allow(dead_code)] // each test binary uses a part

pub mod igd;
pub mod overlay;
#[path = "../registry_support/mod.rs"]
pub mod registry_support;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when we are root; otherwise prints why the test is skipped.
pub fn root_or_skip(test: &str) -> bool {
    if !re6st::netns::is_root() {
        eprintln!("SKIPPED {test}: needs root for network namespaces");
        return false;
    }
    true
}

/// Runs a command, which must succeed; its stdout (the lab's runner, with
/// the command and its stderr in the panic message).
pub fn must(cmd: &[&str]) -> String {
    re6st::netns::run(cmd).unwrap_or_else(|e| panic!("{e:#}"))
}

/// A network namespace, deleted with the processes started in it on drop.
pub struct Netns {
    pub name: String,
    pub dir: PathBuf,
    children: Vec<Child>,
}

impl Netns {
    /// `re6st-e-<tag>-<pid>`, with `lo` up and forwarding on (routers).
    pub fn new(tag: &str) -> Netns {
        let name = format!("re6st-e-{tag}-{}", std::process::id());
        let _ = re6st::netns::run(&["ip", "netns", "del", &name]);
        must(&["ip", "netns", "add", &name]);
        let dir = std::env::temp_dir().join(&name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ns = Netns {
            name,
            dir,
            children: Vec::new(),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: addresses (link-local ones too)
        // are usable at once instead of after a second.
        ns.sysctl("net.ipv6.conf.all.accept_dad=0");
        ns.sysctl("net.ipv6.conf.default.accept_dad=0");
        ns
    }

    /// `ip -n NAME args...`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        must(&full)
    }

    /// Runs a command inside; its output.
    pub fn exec_output(&self, cmd: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .unwrap_or_else(|e| panic!("running {cmd:?} in {}: {e}", self.name))
    }

    /// Runs a command inside, which must succeed; its stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(cmd);
        must(&full)
    }

    pub fn sysctl(&self, kv: &str) {
        self.exec(&["sysctl", "-qw", kv]);
    }

    /// Starts a long-running process inside (killed on drop), its stdout
    /// and stderr going to `DIR/<log>`.
    pub fn spawn(&mut self, cmd: &[&str], log: &str) -> PathBuf {
        let path = self.dir.join(log);
        let out = File::create(&path).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
        self.children.push(child);
        path
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.thread(f).join().expect("namespace thread panicked")
    }

    /// Starts `f` on a thread inside this namespace.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Runs an async block on a current-thread tokio runtime on a thread
    /// inside this namespace (every socket it opens is in here).
    pub fn block_on<T: Send + 'static, F: Future<Output = T> + 'static>(
        &self,
        make: impl FnOnce() -> F + Send + 'static,
    ) -> T {
        self.run(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(make())
        })
    }
}

/// A tokio runtime whose threads are inside a namespace: tasks spawned on
/// it (and the sockets they open) live there for as long as it does.
pub struct NsRuntime {
    rt: Option<tokio::runtime::Runtime>,
}

impl NsRuntime {
    pub fn new(ns: &Netns) -> NsRuntime {
        let rt = ns.run(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap()
        });
        NsRuntime { rt: Some(rt) }
    }

    /// Runs `fut` on the runtime's threads (inside the namespace) and
    /// waits for it.
    pub fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> T {
        let rt = self.rt.as_ref().unwrap();
        rt.block_on(rt.spawn(fut)).expect("namespace task panicked")
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.rt.as_ref().unwrap().handle()
    }
}

impl Drop for NsRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

/// Moves the calling thread into the namespace at `path`.
pub fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's
    // network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = re6st::netns::run(&["ip", "netns", "del", &self.name]);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A veth pair `a_if` in `a` and `b_if` in `b`, both up.
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    must(&[
        "ip", "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

/// A bridge `br0` in `switch` with one veth port per host, the host side
/// named `eth0` (up, link-local address only).
pub fn bridge(switch: &Netns, hosts: &[&Netns]) {
    switch.ip(&["link", "add", "br0", "type", "bridge"]);
    switch.ip(&["link", "set", "br0", "up"]);
    for (i, h) in hosts.iter().enumerate() {
        let port = format!("p{i}");
        veth(switch, &port, h, "eth0");
        switch.ip(&["link", "set", &port, "master", "br0"]);
    }
}

/// Polls `f` every 50 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` in async code every 50 ms until it returns `Some` or
/// `timeout` passes.
pub async fn wait_for_async<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if tokio::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
