//! The CLI side of the control API: `re6st status`, `re6st peers`,
//! `re6st tunnels`, `re6st routes`, each with `--json`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::api::{Request, Response, SOCKET_FILE};
use super::table;

/// What a control command asks a node for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Query {
    /// `re6st status`.
    Status,
    /// `re6st peers`.
    Peers,
    /// `re6st tunnels`.
    Tunnels,
    /// `re6st routes`.
    Routes,
}

impl Query {
    fn request(self) -> Request {
        match self {
            Query::Status => Request::Status,
            Query::Peers => Request::Peers,
            Query::Tunnels => Request::Tunnels,
            Query::Routes => Request::Routes,
        }
    }
}

/// Arguments shared by `re6st status/peers/tunnels/routes`.
#[derive(Debug, clap::Args)]
pub struct ClientArgs {
    /// State directory of the node to ask (its control socket is
    /// `DIR/control.sock`).
    #[arg(long, env = "RE6ST_DIR", default_value = crate::join::DEFAULT_DIR)]
    pub dir: PathBuf,
    /// The control socket, when the node was started with `--control`.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Print the control API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// How long the CLI waits for the node.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `req` to the node listening on `socket` and returns its answer.
/// A [`Response::Error`] becomes an error.
pub async fn query(socket: &Path, req: Request) -> anyhow::Result<Response> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| explain(socket, e))?;
        let (read, mut write) = stream.into_split();
        let mut line = serde_json::to_vec(&req)?;
        line.push(b'\n');
        write.write_all(&line).await?;
        let mut answer = Vec::new();
        BufReader::new(read).read_until(b'\n', &mut answer).await?;
        if answer.is_empty() {
            bail!("the node closed the control connection without answering");
        }
        let resp: Response =
            serde_json::from_slice(&answer).context("the node's answer is not control API JSON")?;
        match resp {
            Response::Error(e) => bail!("the node answered: {e}"),
            r => Ok(r),
        }
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| format!("no answer on {} within {TIMEOUT:?}", socket.display()))?
}

/// Turns a connect error into what the operator should do.
fn explain(socket: &Path, e: io::Error) -> anyhow::Error {
    let p = socket.display();
    match e.kind() {
        io::ErrorKind::NotFound => anyhow::anyhow!(
            "no control socket at {p}: is `re6st node` running with this state directory? (give it with --dir or RE6ST_DIR)"
        ),
        io::ErrorKind::PermissionDenied => anyhow::anyhow!(
            "permission denied on {p}: the control socket is private to the node's user; run this command as that user or as root"
        ),
        io::ErrorKind::ConnectionRefused => {
            anyhow::anyhow!("{p} does not answer: the node that made it is not running")
        }
        _ => anyhow::Error::new(e).context(format!("connecting to {p}")),
    }
}

/// Runs a control command: prints the answer as a table, or as JSON.
pub fn run(q: Query, args: ClientArgs) -> anyhow::Result<()> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| args.dir.join(SOCKET_FILE));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let resp = rt.block_on(query(&socket, q.request()))?;
    let text = if args.json {
        let mut s = match &resp {
            Response::Status(x) => serde_json::to_string_pretty(x),
            Response::Tunnels(x) => serde_json::to_string_pretty(x),
            Response::Routes(x) => serde_json::to_string_pretty(x),
            Response::Peers(x) => serde_json::to_string_pretty(x),
            Response::Metrics(x) => serde_json::to_string_pretty(x),
            Response::Joining(x) => serde_json::to_string_pretty(x),
            Response::Error(x) => serde_json::to_string_pretty(x),
        }?;
        s.push('\n');
        s
    } else {
        match &resp {
            Response::Status(x) => table::status(x),
            Response::Tunnels(x) => table::tunnels(x),
            Response::Routes(x) => table::routes(x),
            Response::Peers(x) => table::peers(x),
            Response::Metrics(x) => x.clone(),
            Response::Joining(x) => table::joining(x),
            Response::Error(x) => x.clone(),
        }
    };
    print!("{text}");
    Ok(())
}
