//! Group commit: the one thread of a registry process that writes.
//!
//! Requests queue their write operations (enrol, renew, announce, sweep,
//! CRL); the writer takes whatever is queued (up to [`MAX_BATCH`]), runs
//! each operation in a savepoint of one write transaction, commits once,
//! and only then answers every request of the batch. A failed operation
//! rolls back to its savepoint (and undoes its allocator changes) without
//! touching the others; a failed commit fails them all, and the allocator
//! is rebuilt from the database.
//!
//! Durability is unchanged: every answer still waits for the commit (and
//! its fsync), so a certificate a client holds is on disk. Throughput is
//! what changes: one fsync (and, on PostgreSQL, one advisory lock round
//! trip) per batch instead of per request, and a batch is larger exactly
//! when requests wait, so the cost per request falls as load rises.
//!
//! The queue is bounded ([`QUEUE`]): past it a request gets "busy" (503)
//! at once instead of waiting without end.

use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, atomic::AtomicUsize, atomic::Ordering};
use std::time::Duration;

use ipnet::Ipv6Net;
use tokio::sync::oneshot;

use super::metrics::RegistryMetrics;
use super::store::{Conn, Prefixes, Store, StoreError, Tx, TxKind};

/// Most operations committed together.
pub const MAX_BATCH: usize = 256;
/// Most operations waiting for the writer.
pub const QUEUE: usize = 4096;

/// What an operation gets: the transaction and the allocator.
pub type OpFn<T> = Box<dyn FnOnce(&mut dyn Tx, &mut Prefixes) -> Result<T, StoreError> + Send>;

trait Job: Send {
    /// Runs the operation; true if it succeeded (its savepoint is kept).
    fn run(&mut self, tx: &mut dyn Tx, prefixes: &mut Prefixes) -> bool;
    /// Answers the request once the batch's fate is known.
    fn finish(self: Box<Self>, commit: &Result<(), StoreError>);
}

struct Typed<T> {
    op: Option<OpFn<T>>,
    out: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
}

impl<T: Send> Job for Typed<T> {
    fn run(&mut self, tx: &mut dyn Tx, prefixes: &mut Prefixes) -> bool {
        let out = match self.op.take() {
            Some(op) => op(tx, prefixes),
            None => Err(StoreError::Internal("operation run twice".into())),
        };
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, commit: &Result<(), StoreError>) {
        let out = match (commit, self.out) {
            (_, None) => Err(commit.as_ref().err().map_or_else(
                || StoreError::Internal("not run".into()),
                StoreError::duplicate,
            )),
            (Err(e), Some(Ok(_))) => Err(e.duplicate()),
            (_, Some(out)) => out,
        };
        let _ = self.reply.send(out);
    }
}

/// The handle requests use to queue writes.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Box<dyn Job>>,
    queued: Arc<AtomicUsize>,
    max_batch: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer thread on its own connection to `store`, with an
    /// allocator for `network`.
    pub fn start(
        store: &Store,
        network: Ipv6Net,
        metrics: Arc<RegistryMetrics>,
    ) -> Result<Self, StoreError> {
        let (tx, rx) = sync_channel(QUEUE);
        let queued = Arc::new(AtomicUsize::new(0));
        let max_batch = Arc::new(AtomicUsize::new(MAX_BATCH));
        let conn = store.connect()?;
        let location = store.location().clone();
        let (q, mb) = (queued.clone(), max_batch.clone());
        std::thread::Builder::new()
            .name("registry-writer".into())
            .spawn(move || {
                let mut w = Loop {
                    conn: Some(conn),
                    location,
                    prefixes: Prefixes::new(network),
                    queued: q,
                    max_batch: mb,
                    metrics,
                };
                w.run(&rx);
            })
            .map_err(|e| StoreError::Internal(format!("starting the writer thread: {e}")))?;
        Ok(Self {
            tx,
            queued,
            max_batch,
        })
    }

    /// Commits at most `n` operations together (1: one commit per request,
    /// the baseline `benches/registry_enrol.rs` compares with).
    pub fn set_max_batch(&self, n: usize) {
        self.max_batch
            .store(n.clamp(1, MAX_BATCH), Ordering::Relaxed);
    }

    /// Queues `op` and waits for its committed result.
    pub async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx, &mut Prefixes) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rx = self.submit(Box::new(op))?;
        rx.await
            .unwrap_or_else(|_| Err(StoreError::Internal("the writer thread stopped".into())))
    }

    /// Queues `op` and blocks until its committed result (outside the
    /// async executor only: startup, tests).
    pub fn run_blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut dyn Tx, &mut Prefixes) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rx = self.submit(Box::new(op))?;
        rx.blocking_recv()
            .unwrap_or_else(|_| Err(StoreError::Internal("the writer thread stopped".into())))
    }

    fn submit<T: Send + 'static>(
        &self,
        op: OpFn<T>,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(Typed {
            op: Some(op),
            out: None,
            reply,
        });
        self.queued.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(e) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Err(match e {
                    TrySendError::Full(_) => StoreError::Busy(QUEUE),
                    TrySendError::Disconnected(_) => {
                        StoreError::Internal("the writer thread stopped".into())
                    }
                })
            }
        }
    }

    /// Operations waiting or running.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

struct Loop {
    conn: Option<Box<dyn Conn>>,
    location: super::store::Location,
    prefixes: Prefixes,
    queued: Arc<AtomicUsize>,
    max_batch: Arc<AtomicUsize>,
    metrics: Arc<RegistryMetrics>,
}

impl Loop {
    fn run(&mut self, rx: &Receiver<Box<dyn Job>>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            let max = self.max_batch.load(Ordering::Relaxed);
            while batch.len() < max {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let result = self.commit(&mut batch);
            if let Err(e) = &result {
                self.metrics.database_error("commit");
                tracing::warn!(operations = n, "write batch failed: {e}");
            }
            self.metrics.batch(n);
            for j in batch {
                j.finish(&result);
            }
            self.queued.fetch_sub(n, Ordering::Relaxed);
        }
    }

    fn commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        let res = self.try_commit(batch);
        if res.is_err() {
            self.prefixes.invalidate();
            if let Some(c) = self.conn.as_mut() {
                c.rollback();
            }
            // Do not spin on a database that is down.
            if matches!(res, Err(StoreError::Unavailable(_))) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        res
    }

    fn try_commit(&mut self, batch: &mut [Box<dyn Job>]) -> Result<(), StoreError> {
        // A connection that broke (the database restarted) is opened again.
        if self.conn.as_ref().is_none_or(|c| c.is_broken()) {
            self.conn = None;
            self.prefixes.invalidate();
            self.conn = Some(self.location.connect()?);
        }
        let (Some(conn), prefixes) = (self.conn.as_mut(), &mut self.prefixes) else {
            return Err(StoreError::Internal("no connection".into()));
        };
        conn.begin(TxKind::Write)?;
        prefixes.sync(conn.as_mut())?;
        for job in batch.iter_mut() {
            conn.batch("SAVEPOINT op")?;
            prefixes.begin_op();
            if job.run(conn.as_mut(), prefixes) {
                conn.batch("RELEASE SAVEPOINT op")?;
            } else {
                prefixes.undo_op();
                conn.batch("ROLLBACK TO SAVEPOINT op; RELEASE SAVEPOINT op")?;
            }
        }
        conn.commit()
    }
}
