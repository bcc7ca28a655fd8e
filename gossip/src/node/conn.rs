//! What the connection code needs of a transport, for QUIC and for the TCP
//! fallback alike (`crate::tcp`): close with a code, an id, the remote
//! address, the TLS exporter, byte counters, and one control stream.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::tcp::{ControlRx, TcpConn};
use crate::transport::{self, ReadError};
use crate::wire::{self, FRAME_HEADER_LEN};
use crate::Error;

/// A live connection to a peer.
#[derive(Clone, Debug)]
pub(crate) enum Conn {
    Quic(quinn::Connection),
    Tcp(Arc<TcpConn>),
}

impl Conn {
    pub fn close(&self, code: u32, reason: &str) {
        match self {
            Conn::Quic(c) => transport::close(c, code, reason),
            Conn::Tcp(c) => c.close(code, reason),
        }
    }

    pub fn stable_id(&self) -> usize {
        match self {
            Conn::Quic(c) => c.stable_id(),
            Conn::Tcp(c) => c.stable_id(),
        }
    }

    pub fn remote_address(&self) -> SocketAddr {
        match self {
            Conn::Quic(c) => c.remote_address(),
            Conn::Tcp(c) => c.remote_address(),
        }
    }

    pub fn exported_secret(&self, label: &[u8]) -> Result<[u8; 32], Error> {
        match self {
            Conn::Quic(c) => transport::exported_secret(c, label),
            Conn::Tcp(c) => c.exported_secret(label),
        }
    }

    /// Bytes sent and received on the underlay so far.
    pub fn bytes(&self) -> (u64, u64) {
        match self {
            Conn::Quic(c) => {
                let stats = c.stats();
                (stats.udp_tx.bytes, stats.udp_rx.bytes)
            }
            Conn::Tcp(c) => (
                c.stats.tx_bytes.load(Ordering::Relaxed),
                c.stats.rx_bytes.load(Ordering::Relaxed),
            ),
        }
    }

    /// QUIC's smoothed RTT (TCP's is the kernel's business: not shown).
    pub fn rtt(&self) -> Option<Duration> {
        match self {
            Conn::Quic(c) => Some(c.rtt()),
            Conn::Tcp(_) => None,
        }
    }

    /// The dialer's hello was verified: larger handshake frames may follow
    /// (QUIC's stream reads are bounded per read instead).
    pub fn hello_proven(&self) {
        if let Conn::Tcp(c) = self {
            c.hello_proven();
        }
    }

    pub fn is_tcp(&self) -> bool {
        matches!(self, Conn::Tcp(_))
    }
}

/// The sending half of a connection's control stream.
pub(crate) enum ControlSend {
    Quic(quinn::SendStream),
    Tcp(Arc<TcpConn>),
}

/// The receiving half of a connection's control stream.
pub(crate) enum ControlRecv {
    Quic(quinn::RecvStream),
    Tcp(ControlRx),
}

impl ControlSend {
    /// Writes one already-encoded frame.
    pub async fn write_raw(&mut self, frame: Bytes) -> Result<(), Error> {
        match self {
            ControlSend::Quic(send) => send
                .write_chunk(frame)
                .await
                .map_err(|e| Error::protocol(format!("write failed: {e}"))),
            ControlSend::Tcp(conn) => conn.send_control(frame).await,
        }
    }

    pub async fn write_frame<T: serde::Serialize>(&mut self, message: &T) -> Result<(), Error> {
        let frame = wire::encode_frame(message).map_err(|e| Error::protocol(e.to_string()))?;
        self.write_raw(Bytes::from(frame)).await
    }

    pub fn finish(&mut self) {
        if let ControlSend::Quic(send) = self {
            let _ = send.finish();
        }
    }
}

impl ControlRecv {
    /// One frame's body, undecoded, of at most `limit` bytes; `Ok(None)`
    /// when the peer finished the stream cleanly.
    pub async fn read_body(&mut self, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
        match self {
            ControlRecv::Quic(recv) => transport::read_body(recv, limit).await,
            ControlRecv::Tcp(rx) => {
                // The reader task checked the length against the
                // connection's limit already; this one is the caller's.
                let body = rx.recv().await?;
                if body.len() > limit {
                    return Err(wire::FrameError::Oversized(body.len()).into());
                }
                Ok(Some(body))
            }
        }
    }

    /// Reads and decodes one frame of at most `limit` bytes.
    pub async fn read_frame_within<T: serde::de::DeserializeOwned>(
        &mut self,
        limit: usize,
    ) -> Result<Option<(T, usize)>, ReadError> {
        let Some(body) = self.read_body(limit).await? else {
            return Ok(None);
        };
        let value = wire::decode_body(&body)?;
        Ok(Some((value, FRAME_HEADER_LEN + body.len())))
    }
}
