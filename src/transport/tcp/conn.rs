//! One TCP tunnel connection inside the engine: its TLS session (rustls,
//! sans-IO), the plaintext frames in and out, the ciphertext waiting for
//! the socket, and where it stands in a tunnel's life.
//!
//! Output is bounded in bytes ([`MAX_TX`]): frames wait as plaintext until
//! the socket takes the previous bytes, and a packet or Babel frame that
//! would go above the bound is dropped and counted, as a full QUIC
//! datagram queue drops. Control frames may use twice the bound; beyond,
//! the peer does not read and the tunnel is closed.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::wire::{self, Frame, HEADER_LEN, Repr};
use crate::identity::{Crl, NodeCert};
use crate::node::core::boundary::{ConnId, Handshake, NextHopId, TunnelId, canonical};
use crate::transport::engine::LinkStats;

/// Bytes (plaintext frames and ciphertext) waiting for a tunnel's socket,
/// beyond which packets are dropped.
pub const MAX_TX: usize = 512 * 1024;
/// Plaintext received and not yet cut into frames, at most: one frame
/// and one TLS record.
const MAX_RX: usize = HEADER_LEN + wire::MAX_PAYLOAD + 16 * 1024 + 256;
/// How long a closing connection may take to write its close.
pub const CLOSE_LINGER: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The socket is connecting (dials).
    Connecting,
    /// TLS handshake.
    Handshake,
    /// `Open`/`Accept`.
    Exchange,
    /// Waiting for NodeCore's `Up`/`Accept`.
    Answer,
    Up {
        tunnel: TunnelId,
        hop: NextHopId,
    },
    /// Writing its close; the socket goes once it is written.
    Closing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Dial { tunnel: TunnelId },
    Accept { id: ConnId },
}

/// What kind of frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// A packet or Babel frame, dropped.
    Dropped,
    /// A control frame: the peer does not read.
    Stuck,
}

pub struct TcpConn {
    pub tls: rustls::Connection,
    pub role: Role,
    pub stage: Stage,
    pub remote: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub peer: Option<NodeCert>,
    pub peer_crl: u64,
    pub deadline: Option<Instant>,
    /// When the socket was opened (connect started, or accepted).
    pub started: Instant,
    pub rtt: Duration,
    pub ping_sent: Option<Instant>,
    pub link: LinkStats,
    /// Control-stream bytes received, cut into `Control` frames.
    pub ctl_rx: Vec<u8>,
    /// A frame of any kind arrived since the engine last looked.
    pub heard: bool,
    /// The last RTT told to NodeCore.
    pub reported_rtt: Duration,
    /// Ciphertext read while the plaintext buffer was full and nothing
    /// could take frames (waiting for NodeCore's answer); the socket is
    /// not read until it is decrypted.
    pub stashed: Vec<u8>,
    rx: BytesMut,
    ptx: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
}

impl TcpConn {
    pub fn new(
        tls: rustls::Connection,
        role: Role,
        stage: Stage,
        remote: SocketAddr,
        now: Instant,
        deadline: Instant,
    ) -> Self {
        Self {
            tls,
            role,
            stage,
            remote: canonical(remote),
            local_ip: None,
            peer: None,
            peer_crl: 0,
            deadline: Some(deadline),
            started: now,
            rtt: Duration::ZERO,
            ping_sent: None,
            link: LinkStats::default(),
            ctl_rx: Vec::new(),
            heard: false,
            reported_rtt: Duration::ZERO,
            stashed: Vec::new(),
            rx: BytesMut::new(),
            ptx: Vec::new(),
            out: Vec::new(),
            out_at: 0,
        }
    }

    /// Bytes waiting to go out, plaintext and ciphertext.
    pub fn backlog(&self) -> usize {
        self.ptx.len() + self.out.len() - self.out_at
    }

    /// Queues one frame, within the bound.
    pub fn send(&mut self, repr: &Repr<'_>) -> Result<(), Full> {
        let control = matches!(repr, Repr::Control(_) | Repr::Close { .. } | Repr::Pong);
        let limit = if control { 2 * MAX_TX } else { MAX_TX };
        if self.backlog() + repr.buffer_len() > limit {
            return Err(if control { Full::Stuck } else { Full::Dropped });
        }
        repr.emit_to(&mut self.ptx).map_err(|_| Full::Dropped)
    }

    /// Queues `stream` (control-stream bytes) as control frames.
    pub fn send_control(&mut self, stream: &[u8]) -> Result<(), Full> {
        for chunk in stream.chunks(wire::MAX_PAYLOAD) {
            self.send(&Repr::Control(chunk))?;
        }
        Ok(())
    }

    /// Decrypts some of what the socket gave (`data` is advanced past
    /// what TLS took) into the plaintext buffer; `Ok(true)`: the buffer is
    /// full, take frames out and call again. A TLS error ends the
    /// connection (the alert is queued for the socket).
    pub fn receive(&mut self, data: &mut &[u8]) -> Result<bool, String> {
        if self.read_plaintext()? {
            return Ok(true);
        }
        while !data.is_empty() {
            match self.tls.read_tls(data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => return Err(format!("TLS: {e}")),
            }
            if let Err(e) = self.tls.process_new_packets() {
                self.seal();
                return Err(format!("TLS: {e}"));
            }
            if self.read_plaintext()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Moves TLS's plaintext into the buffer; `Ok(true)` when it is full.
    fn read_plaintext(&mut self) -> Result<bool, String> {
        loop {
            let at = self.rx.len();
            if at >= MAX_RX {
                return Ok(true);
            }
            self.rx.resize(MAX_RX.min(at + 16 * 1024 + 256), 0);
            let r = self.tls.reader().read(&mut self.rx[at..]);
            match r {
                Ok(0) => {
                    self.rx.truncate(at);
                    return Err("closed by the peer's TLS".into());
                }
                Ok(n) => self.rx.truncate(at + n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.rx.truncate(at);
                    return Ok(false);
                }
                Err(e) => {
                    self.rx.truncate(at);
                    return Err(format!("TLS: {e}"));
                }
            }
        }
    }

    /// The next whole frame received (type, whole frame bytes).
    pub fn next_frame(&mut self) -> Option<Bytes> {
        let total = Frame::new_checked(&self.rx[..]).ok()?.total_len();
        Some(self.rx.split_to(total).freeze())
    }

    /// Moves the queued plaintext into TLS records for the socket.
    pub fn seal(&mut self) {
        if !self.ptx.is_empty() && !self.tls.is_handshaking() {
            let mut at = 0;
            while at < self.ptx.len() {
                match self.tls.writer().write(&self.ptx[at..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => at += n,
                }
            }
            self.ptx.drain(..at);
        }
        while self.tls.wants_write() {
            if self.out_at > 0 && self.out_at == self.out.len() {
                self.out.clear();
                self.out_at = 0;
            }
            match self.tls.write_tls(&mut self.out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Ciphertext for the socket.
    pub fn transmit(&mut self) -> &[u8] {
        self.seal();
        &self.out[self.out_at..]
    }

    /// The socket took `n` bytes of [`TcpConn::transmit`].
    pub fn consume(&mut self, n: usize) {
        self.out_at = (self.out_at + n).min(self.out.len());
        if self.out_at == self.out.len() {
            self.out.clear();
            self.out_at = 0;
        } else if self.out_at > 64 * 1024 {
            self.out.drain(..self.out_at);
            self.out_at = 0;
        }
    }

    /// Sends a close frame and TLS's close; the connection is closing.
    pub fn close(&mut self, now: Instant, code: u32, reason: &str) {
        if self.stage == Stage::Closing {
            return;
        }
        let mut cut = reason.len().min(wire::MAX_REASON);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        if !self.tls.is_handshaking() {
            let _ = self.send(&Repr::Close {
                code,
                reason: &reason.as_bytes()[..cut],
            });
            self.seal();
            self.tls.send_close_notify();
        }
        self.stage = Stage::Closing;
        self.deadline = Some(now + CLOSE_LINGER);
    }

    /// Whether the socket can go: closing and everything written.
    pub fn finished(&mut self) -> bool {
        self.stage == Stage::Closing && self.transmit().is_empty()
    }

    /// The handshake as NodeCore sees it.
    pub fn handshake(&self) -> Option<Handshake> {
        Some(Handshake {
            peer: self.peer.clone()?,
            peer_crl: self.peer_crl,
            remote: self.remote,
            local_ip: self.local_ip,
            // The peer sees our TCP source port, which says nothing of
            // where we listen.
            observed: None,
            rtt: self.rtt,
            max_datagram: Some(wire::MAX_PAYLOAD),
        })
    }

    /// The peer's node certificate after the handshake, checked against
    /// `crl` again.
    pub fn peer_cert(&self, crl: Option<&Crl>) -> Result<NodeCert, String> {
        let leaf = self
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .ok_or_else(|| "no peer certificate".to_string())?;
        let cert = NodeCert::from_der(leaf).map_err(|e| e.to_string())?;
        if crl.is_some_and(|c| c.is_revoked(cert.serial)) {
            return Err(format!("certificate serial {} is revoked", cert.serial));
        }
        Ok(cert)
    }
}
