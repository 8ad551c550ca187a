//! A tunnel's control stream on quinn-proto: length-prefixed
//! [`Control`] frames read from and written to one bidirectional stream,
//! with both directions buffered and bounded.
//!
//! Reading stops once a whole frame is buffered and not yet taken, so a
//! peer that floods the stream meets QUIC flow control, not our memory.
//! Writing keeps what quinn did not take yet; a backlog above
//! [`MAX_BACKLOG`] means the peer stopped reading, and the caller closes
//! the tunnel.

use quinn_proto::{Connection, ReadError, ReadableError, StreamId, WriteError};

use crate::transport::control::{Control, ControlError, MAX_FRAME};

/// Bytes of control messages waiting for quinn, at most.
pub const MAX_BACKLOG: usize = 2 * (MAX_FRAME + 4);

/// What the stream gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// One message.
    Message(Control),
    /// A bad frame: the stream is dead from now on.
    Bad(ControlError),
    /// The peer finished or reset the stream (or the connection is gone).
    End,
}

/// The backlog grew past [`MAX_BACKLOG`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("control stream backlog above {MAX_BACKLOG} bytes: the peer does not read")]
pub struct Backlog;

/// One direction pair of the control stream.
#[derive(Debug, Default)]
pub struct ControlStream {
    id: Option<StreamId>,
    rx: Vec<u8>,
    tx: Vec<u8>,
    /// Nothing more to read from quinn.
    ended: bool,
    /// [`Received::End`] or [`Received::Bad`] was given.
    done: bool,
}

impl ControlStream {
    /// The stream, once opened or accepted.
    pub fn id(&self) -> Option<StreamId> {
        self.id
    }

    /// Uses stream `id` from now on.
    pub fn attach(&mut self, id: StreamId) {
        self.id = Some(id);
    }

    /// Whether reading is over (end, reset, bad frame).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Queues `msg` and writes what quinn takes.
    pub fn send(&mut self, conn: &mut Connection, msg: &Control) -> Result<(), Backlog> {
        msg.emit_frame(&mut self.tx);
        if self.tx.len() > MAX_BACKLOG {
            return Err(Backlog);
        }
        self.flush(conn);
        Ok(())
    }

    /// Writes the backlog (after a `Writable` event).
    pub fn flush(&mut self, conn: &mut Connection) {
        let Some(id) = self.id else { return };
        while !self.tx.is_empty() {
            match conn.send_stream(id).write(&self.tx) {
                Ok(n) => {
                    self.tx.drain(..n);
                }
                Err(WriteError::Blocked) => return,
                // Stopped or closed: nothing will be read any more.
                Err(_) => {
                    self.tx.clear();
                    return;
                }
            }
        }
    }

    /// The next message, reading from quinn when no whole frame is
    /// buffered; `None` when nothing more is there now.
    pub fn poll_read(&mut self, conn: &mut Connection) -> Option<Received> {
        if self.done {
            return None;
        }
        if let Some(r) = self.take_frame() {
            return Some(r);
        }
        if !self.ended {
            self.fill(conn);
            if let Some(r) = self.take_frame() {
                return Some(r);
            }
        }
        if self.ended {
            self.done = true;
            return Some(Received::End);
        }
        None
    }

    /// Reads what quinn has, up to one whole frame beyond what is
    /// buffered.
    fn fill(&mut self, conn: &mut Connection) {
        let Some(id) = self.id else { return };
        let mut recv = conn.recv_stream(id);
        let mut chunks = match recv.read(true) {
            Ok(c) => c,
            Err(ReadableError::ClosedStream | ReadableError::IllegalOrderedRead) => {
                self.ended = true;
                return;
            }
        };
        loop {
            let limit = self.wanted();
            if self.rx.len() >= limit {
                break;
            }
            match chunks.next(limit - self.rx.len()) {
                Ok(Some(chunk)) => self.rx.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(ReadError::Reset(_)) => {
                    self.ended = true;
                    break;
                }
                Err(ReadError::Blocked) => break,
            }
        }
        // Flow-control credit goes out with the connection's next transmit.
        let _ = chunks.finalize();
    }

    /// Bytes to hold to complete the frame at the front.
    fn wanted(&self) -> usize {
        match self.rx.get(..4) {
            Some(l) => 4 + (u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize).min(MAX_FRAME),
            None => 4,
        }
    }

    fn take_frame(&mut self) -> Option<Received> {
        let l = self.rx.get(..4)?;
        let len = match Control::check_length(u32::from_be_bytes([l[0], l[1], l[2], l[3]])) {
            Ok(len) => len,
            Err(e) => return Some(self.bad(e)),
        };
        let frame = self.rx.get(4..4 + len)?;
        let parsed = Control::parse(frame);
        self.rx.drain(..4 + len);
        Some(match parsed {
            Ok(m) => Received::Message(m),
            Err(e) => self.bad(e),
        })
    }

    fn bad(&mut self, e: ControlError) -> Received {
        self.ended = true;
        self.done = true;
        self.rx = Vec::new();
        Received::Bad(e)
    }
}
