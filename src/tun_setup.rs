//! `re6st tun-setup`: the privileged half of running a node without any
//! capability. Run once as root (or with CAP_NET_ADMIN) in the node's
//! network namespace, after enrolment: it makes the persistent TUN device
//! the node attaches to, owned by the node's user, with the node's address
//! and an on-link route for the whole overlay network. An init container,
//! a sidecar or a systemd `ExecStartPre=+` runs it; the node then runs with
//! `--tun-attach NAME` as that user. It needs no `ip` tool, so it works
//! from the single-binary container image.

use std::path::PathBuf;

use anyhow::Context;
use re6st::node::program::options::{DEFAULT_MTU, DEFAULT_TUN};
use re6st::state_dir::StateDir;

/// Arguments of `re6st tun-setup`.
#[derive(Debug, clap::Args)]
pub struct TunSetupArgs {
    /// State directory of the enrolled node: its address and network come
    /// from there.
    #[arg(long, env = "RE6ST_DIR", default_value = re6st::join::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// The user the node runs as, by name or number; only it may attach.
    #[arg(long)]
    pub user: String,
    /// Device name.
    #[arg(long, default_value = DEFAULT_TUN)]
    pub name: String,
    /// Device MTU.
    #[arg(long, default_value_t = DEFAULT_MTU, value_parser = clap::value_parser!(u16).range(1280..))]
    pub mtu: u16,
    /// Make a multi-queue device, for a node run with --queues above 1.
    #[arg(long)]
    pub multi_queue: bool,
}

/// Makes the device.
pub fn run(args: TunSetupArgs) -> anyhow::Result<()> {
    let identity = StateDir::new(&args.dir).load_identity().map_err(|e| {
        let denied = e.chain().any(|c| {
            c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied)
        });
        let hint = if denied {
            // Root without CAP_DAC_OVERRIDE cannot enter the node's 0700
            // directory.
            "run tun-setup as the node's user with CAP_NET_ADMIN, or give it \
             CAP_DAC_READ_SEARCH too"
        } else {
            "enrol first: re6st join"
        };
        e.context(format!(
            "reading the node's identity in {} ({hint})",
            args.dir.display()
        ))
    })?;
    let network = identity
        .network
        .as_ref()
        .context("no network configuration in the state directory (run `re6st join` again)")?
        .verify(&identity.ca_key)
        .context("the network configuration does not verify against the CA")?
        .network;
    let address = ipnet::Ipv6Net::new(identity.cert.address, network.prefix_len())
        .context("the node address")?;
    let owner = uid_of(&args.user)?;
    make(&args, address, owner)?;
    println!(
        "made TUN device {} for user {} (uid {owner}): address {address}, MTU {}; \
         run the node as that user with --tun-attach {0}",
        args.name, args.user, args.mtu
    );
    Ok(())
}

#[cfg(target_os = "linux")]
fn make(args: &TunSetupArgs, address: ipnet::Ipv6Net, owner: u32) -> anyhow::Result<()> {
    use re6st_dataplane::tun::{PersistentConfig, make_persistent};
    make_persistent(&PersistentConfig {
        name: args.name.clone(),
        address,
        mtu: args.mtu,
        owner,
        multi_queue: args.multi_queue,
    })?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn make(_args: &TunSetupArgs, _address: ipnet::Ipv6Net, _owner: u32) -> anyhow::Result<()> {
    anyhow::bail!(
        "re6st tun-setup makes Linux persistent TUN devices; on this system pass the node a \
         TUN descriptor (--tun-fd) or run it as root"
    )
}

/// A user name or number to a uid.
fn uid_of(user: &str) -> anyhow::Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let name = std::ffi::CString::new(user).context("a user name has no NUL byte")?;
    // SAFETY: `name` is a valid C string; getpwnam returns NULL or a
    // pointer to a static entry that we read at once, before any other
    // call could overwrite it (this command is single-threaded here).
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        anyhow::bail!("no user {user} (give a name from /etc/passwd or a number)");
    }
    // SAFETY: checked non-null above.
    Ok(unsafe { (*entry).pw_uid })
}
