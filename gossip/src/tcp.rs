//! The TCP fallback transport: TLS 1.3 over one TCP connection, for hosts
//! with no working UDP path between them.
//!
//! TLS is set up exactly like QUIC's ([`crate::transport::tls_configs`]:
//! same identity, same verifier, TLS 1.3 only), and the same handshake
//! messages (hello, proof of the secret bound to the TLS exporter, member
//! records) run on it, so TCP adds no new trust. The stream carries
//! records, each a one-byte kind and its body:
//! - [`KIND_CONTROL`]: one control frame exactly as on the QUIC stream
//!   (4-byte length, body);
//! - [`KIND_DATAGRAM`]: a 2-byte length and one sealed data-plane datagram,
//!   as it would go on UDP (end-to-end keys do not change; the data plane
//!   opens it with its own replay window);
//! - [`KIND_CLOSE`]: a 4-byte close code, a 2-byte length and the reason
//!   (QUIC's application close).
//!
//! A length is checked before its buffer is allocated; before the peer
//! proved the secret only a handshake-sized control frame is accepted, and
//! anything malformed closes the connection. Datagrams are queued with
//! `try_send` in a bounded queue: a slow peer costs dropped datagrams
//! (counted), never a blocked data-plane worker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::auth::EKM_AUTH_LABEL;
use crate::identity::peer_id_from_cert;
use crate::keyexchange::EKM_KEYS_LABEL;
use crate::transport::{close_code, ReadError, SERVER_NAME};
use crate::wire::{self, FRAME_HEADER_LEN};
use crate::{Error, PeerId};

pub const KIND_CONTROL: u8 = 0;
pub const KIND_DATAGRAM: u8 = 1;
pub const KIND_CLOSE: u8 = 2;
/// Largest datagram a record carries (UDP's own limit).
pub const MAX_DATAGRAM: usize = u16::MAX as usize;
const MAX_REASON: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Control frames queued for the writer (each already bounded by the
/// connection's outbound queue, `node/outbound.rs`).
const CONTROL_QUEUE: usize = 1;
/// Datagrams queued for the writer; more are dropped and counted.
const DATAGRAM_QUEUE: usize = 2048;
/// Control frames read but not yet taken by the handshake or the driver:
/// one, so an unauthenticated peer makes this host hold at most one frame
/// (the connection's reader task queues further, `node/connection.rs`).
const INBOUND_CONTROL: usize = 1;
/// Records written before a flush, at most.
const WRITE_BATCH: usize = 256;

/// Where the datagrams of an authenticated connection go.
pub type DatagramSink = Arc<dyn Fn(Bytes) + Send + Sync>;

/// The data plane's handle to a peer's TCP fallback link: sealed datagrams
/// go out on it ([`DatagramLink::send`]); those arriving come to
/// [`crate::PeerObserver::datagram`].
#[derive(Clone, Debug)]
pub struct DatagramLink(Arc<TcpConn>);

impl DatagramLink {
    /// Queues one sealed datagram; false when it was dropped (queue full,
    /// link closed, or over [`MAX_DATAGRAM`]).
    pub fn send(&self, datagram: Bytes) -> bool {
        !self.0.is_closed() && self.0.send_datagram(datagram)
    }

    /// Datagrams dropped because the TCP writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.0.stats.datagrams_dropped.load(Ordering::Relaxed)
    }

    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.0.remote
    }
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1 << 40);

/// Over the life of the process (all connections), for the metrics.
static DATAGRAMS_DROPPED: AtomicU64 = AtomicU64::new(0);
static DATAGRAMS_REFUSED: AtomicU64 = AtomicU64::new(0);
static MALFORMED: AtomicU64 = AtomicU64::new(0);

/// Datagrams not queued on any TCP connection because its writer fell behind.
pub fn datagrams_dropped_total() -> u64 {
    DATAGRAMS_DROPPED.load(Ordering::Relaxed)
}

/// Datagrams received on a TCP connection before its peer proved the secret.
pub fn datagrams_refused_total() -> u64 {
    DATAGRAMS_REFUSED.load(Ordering::Relaxed)
}

/// TCP connections closed for a malformed record.
pub fn malformed_total() -> u64 {
    MALFORMED.load(Ordering::Relaxed)
}

/// Counters of one TCP connection.
#[derive(Debug, Default)]
pub struct TcpStats {
    pub tx_bytes: AtomicU64,
    pub rx_bytes: AtomicU64,
    /// Datagrams not queued because the writer fell behind.
    pub datagrams_dropped: AtomicU64,
    /// Datagrams received before the peer was authenticated (dropped).
    pub datagrams_refused: AtomicU64,
}

/// One TLS-over-TCP connection: a reader and a writer task own the stream;
/// this is the handle the node holds.
pub struct TcpConn {
    id: usize,
    remote: SocketAddr,
    peer: PeerId,
    ekm_auth: [u8; 32],
    ekm_keys: [u8; 32],
    control_tx: mpsc::Sender<Bytes>,
    datagram_tx: mpsc::Sender<Bytes>,
    close_tx: watch::Sender<Option<(u32, String)>>,
    /// Largest control body the reader accepts now: a hello's on the
    /// accepting side until it is verified, a member record's until the
    /// peer is authenticated.
    limit: AtomicUsize,
    sink: OnceLock<DatagramSink>,
    pub stats: TcpStats,
}

impl std::fmt::Debug for TcpConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpConn")
            .field("id", &self.id)
            .field("remote", &self.remote)
            .finish()
    }
}

/// The control frames read from a connection (bodies, undecoded).
pub struct ControlRx {
    rx: mpsc::Receiver<Vec<u8>>,
    conn: Arc<TcpConn>,
}

impl ControlRx {
    /// The next control body; `Closed` once the connection ended.
    pub async fn recv(&mut self) -> Result<Vec<u8>, ReadError> {
        match self.rx.recv().await {
            Some(body) => Ok(body),
            None => {
                let (code, reason) = self
                    .conn
                    .close_tx
                    .borrow()
                    .clone()
                    .unwrap_or((close_code::NORMAL, "connection lost".into()));
                Err(ReadError::Closed { code, reason })
            }
        }
    }
}

impl TcpConn {
    pub fn stable_id(&self) -> usize {
        self.id
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.remote
    }

    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// The TLS exporter output under `label` (computed at the handshake).
    pub fn exported_secret(&self, label: &[u8]) -> Result<[u8; 32], Error> {
        if label == EKM_AUTH_LABEL {
            Ok(self.ekm_auth)
        } else if label == EKM_KEYS_LABEL {
            Ok(self.ekm_keys)
        } else {
            Err(Error::protocol("TLS exporter label not kept"))
        }
    }

    /// Closes with `code`; the writer sends it to the peer. The first
    /// close wins.
    pub fn close(&self, code: u32, reason: &str) {
        self.close_tx.send_if_modified(|state| {
            if state.is_some() {
                return false;
            }
            *state = Some((code, reason.chars().take(200).collect()));
            true
        });
    }

    pub fn is_closed(&self) -> bool {
        self.close_tx.borrow().is_some()
    }

    /// Queues one control frame (waits while the writer is behind).
    pub async fn send_control(&self, frame: Bytes) -> Result<(), Error> {
        self.control_tx
            .send(frame)
            .await
            .map_err(|_| Error::protocol("connection closed"))
    }

    /// Queues one sealed datagram; false (and counted) when the queue is
    /// full or the connection closed.
    pub fn send_datagram(&self, datagram: Bytes) -> bool {
        if datagram.len() > MAX_DATAGRAM {
            return false;
        }
        if self.datagram_tx.try_send(datagram).is_err() {
            self.stats.datagrams_dropped.fetch_add(1, Ordering::Relaxed);
            DATAGRAMS_DROPPED.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The dialer's hello proved the secret: full-size frames from now on.
    /// The dialer registers (and may send a channel delta of up to
    /// `MAX_FRAME_LEN`) before this side does; the reader reads ahead, so a
    /// smaller limit here would close a proven link. The member record's
    /// own limit is the handshake's (`read_frame_within`).
    pub fn hello_proven(&self) {
        self.limit.store(wire::MAX_FRAME_LEN, Ordering::Release);
    }

    /// The peer proved the secret: full-size control frames, and datagrams
    /// go to `sink` from now on. Returns the data plane's handle.
    pub fn authenticated(self: &Arc<Self>, sink: DatagramSink) -> DatagramLink {
        self.limit.store(wire::MAX_FRAME_LEN, Ordering::Release);
        let _ = self.sink.set(sink);
        DatagramLink(self.clone())
    }

    async fn closed(close: &mut watch::Receiver<Option<(u32, String)>>) {
        let _ = close.wait_for(|c| c.is_some()).await;
    }
}

fn ekm<T>(conn: &rustls::ConnectionCommon<T>, label: &[u8]) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, label, Some(b""))
        .map_err(|_| Error::protocol("TLS exporter unavailable"))?;
    Ok(out)
}

fn peer_of(certs: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Result<PeerId, Error> {
    certs
        .and_then(|c| c.first())
        .and_then(peer_id_from_cert)
        .ok_or_else(|| Error::protocol("peer certificate carries no Ed25519 key"))
}

/// Dials `addr` over TCP and runs the TLS handshake (`timeout` for both).
pub(crate) async fn connect(
    client: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<TcpConn>, ControlRx), Error> {
    let unreachable = |e: crate::error::BoxError| Error::Unreachable {
        addr: addr.to_string(),
        source: e,
    };
    let setup = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(Box::new(e)))?;
        let _ = stream.set_nodelay(true);
        let name = ServerName::try_from(SERVER_NAME).map_err(|e| Error::Tls(e.to_string()))?;
        tokio_rustls::TlsConnector::from(client)
            .connect(name, stream)
            .await
            .map_err(|e| unreachable(Box::new(e)))
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, setup)
        .await
        .map_err(|_| unreachable("TCP/TLS handshake timed out".into()))??;
    let session = tls.get_ref().1;
    let peer = peer_of(session.peer_certificates())?;
    let (ekm_auth, ekm_keys) = (ekm(session, EKM_AUTH_LABEL)?, ekm(session, EKM_KEYS_LABEL)?);
    // The acceptor's ack carries its member record.
    let limit = wire::MAX_RECORD_FRAME_LEN;
    Ok(start(
        tls,
        addr,
        peer,
        (ekm_auth, ekm_keys),
        limit,
        idle,
        shutdown,
    ))
}

/// Runs the server side of the TLS handshake on an accepted stream.
pub(crate) async fn accept(
    server: Arc<rustls::ServerConfig>,
    stream: TcpStream,
    remote: SocketAddr,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
) -> Result<(Arc<TcpConn>, ControlRx), Error> {
    let _ = stream.set_nodelay(true);
    let tls = tokio_rustls::TlsAcceptor::from(server)
        .accept(stream)
        .await
        .map_err(|e| Error::Tls(e.to_string()))?;
    let session = tls.get_ref().1;
    let peer = peer_of(session.peer_certificates())?;
    let (ekm_auth, ekm_keys) = (ekm(session, EKM_AUTH_LABEL)?, ekm(session, EKM_KEYS_LABEL)?);
    // First a hello, nothing larger.
    let limit = wire::MAX_HELLO_LEN;
    Ok(start(
        tls,
        remote,
        peer,
        (ekm_auth, ekm_keys),
        limit,
        idle,
        shutdown,
    ))
}

fn start<S>(
    stream: S,
    remote: SocketAddr,
    peer: PeerId,
    (ekm_auth, ekm_keys): ([u8; 32], [u8; 32]),
    limit: usize,
    idle: Duration,
    shutdown: watch::Receiver<bool>,
) -> (Arc<TcpConn>, ControlRx)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (control_tx, control_out) = mpsc::channel(CONTROL_QUEUE);
    let (datagram_tx, datagram_out) = mpsc::channel(DATAGRAM_QUEUE);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_CONTROL);
    let conn = Arc::new(TcpConn {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        remote,
        peer,
        ekm_auth,
        ekm_keys,
        control_tx,
        datagram_tx,
        close_tx: watch::channel(None).0,
        limit: AtomicUsize::new(limit),
        sink: OnceLock::new(),
        stats: TcpStats::default(),
    });
    let (read, write) = tokio::io::split(stream);
    let peer_closed = Arc::new(Mutex::new(false));
    tokio::spawn(reader(
        conn.clone(),
        read,
        inbound_tx,
        idle,
        peer_closed.clone(),
    ));
    tokio::spawn(writer(
        conn.clone(),
        write,
        control_out,
        datagram_out,
        shutdown,
        peer_closed,
    ));
    let rx = ControlRx {
        rx: inbound_rx,
        conn: conn.clone(),
    };
    (conn, rx)
}

/// Why the reader stopped.
enum Stop {
    /// The peer closed with a code.
    PeerClosed(u32, String),
    /// The stream ended or failed (nothing to tell the peer).
    Lost(String),
    /// The peer broke the framing: close with a protocol error.
    Malformed(String),
    /// Nothing heard within the idle timeout.
    Idle,
    /// The handshake or driver stopped taking frames.
    Done,
}

async fn read_record<R: AsyncRead + Unpin>(
    conn: &TcpConn,
    read: &mut R,
    inbound: &mpsc::Sender<Vec<u8>>,
) -> Result<(), Stop> {
    let lost = |e: std::io::Error| Stop::Lost(e.to_string());
    let kind = read.read_u8().await.map_err(lost)?;
    match kind {
        KIND_CONTROL => {
            let mut header = [0u8; FRAME_HEADER_LEN];
            read.read_exact(&mut header).await.map_err(lost)?;
            let len = wire::frame_body_len(header).map_err(|e| Stop::Malformed(e.to_string()))?;
            if len > conn.limit.load(Ordering::Acquire) {
                return Err(Stop::Malformed(format!("control frame of {len} bytes")));
            }
            let mut body = vec![0u8; len];
            read.read_exact(&mut body).await.map_err(lost)?;
            conn.stats
                .rx_bytes
                .fetch_add((1 + FRAME_HEADER_LEN + len) as u64, Ordering::Relaxed);
            inbound.send(body).await.map_err(|_| Stop::Done)
        }
        KIND_DATAGRAM => {
            let len = read.read_u16().await.map_err(lost)? as usize;
            let mut buf = BytesMut::zeroed(len);
            read.read_exact(&mut buf).await.map_err(lost)?;
            conn.stats
                .rx_bytes
                .fetch_add((3 + len) as u64, Ordering::Relaxed);
            match conn.sink.get() {
                Some(sink) => {
                    sink(buf.freeze());
                    Ok(())
                }
                // Before the peer proved the secret (or in the moment
                // between its proof and this side's registration): dropped.
                None => {
                    conn.stats.datagrams_refused.fetch_add(1, Ordering::Relaxed);
                    DATAGRAMS_REFUSED.fetch_add(1, Ordering::Relaxed);
                    Ok(())
                }
            }
        }
        KIND_CLOSE => {
            let code = read.read_u32().await.map_err(lost)?;
            let len = read.read_u16().await.map_err(lost)? as usize;
            if len > MAX_REASON {
                return Err(Stop::Malformed("close reason too long".into()));
            }
            let mut reason = vec![0u8; len];
            read.read_exact(&mut reason).await.map_err(lost)?;
            Err(Stop::PeerClosed(
                code,
                String::from_utf8_lossy(&reason).into_owned(),
            ))
        }
        other => Err(Stop::Malformed(format!("unknown record kind {other}"))),
    }
}

async fn reader<R: AsyncRead + Unpin>(
    conn: Arc<TcpConn>,
    mut read: R,
    inbound: mpsc::Sender<Vec<u8>>,
    idle: Duration,
    peer_closed: Arc<Mutex<bool>>,
) {
    let mut close = conn.close_tx.subscribe();
    let stop = loop {
        let record = tokio::time::timeout(idle, read_record(&conn, &mut read, &inbound));
        tokio::select! {
            _ = TcpConn::closed(&mut close) => return,
            read = record => match read {
                Ok(Ok(())) => {}
                Ok(Err(stop)) => break stop,
                Err(_) => break Stop::Idle,
            },
        }
    };
    match stop {
        Stop::PeerClosed(code, reason) => {
            *peer_closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
            conn.close(code, &reason);
        }
        Stop::Lost(e) => {
            debug!(peer = %conn.peer, error = %e, "TCP connection lost");
            *peer_closed.lock().unwrap_or_else(|p| p.into_inner()) = true;
            conn.close(close_code::NORMAL, "connection lost");
        }
        Stop::Malformed(e) => {
            MALFORMED.fetch_add(1, Ordering::Relaxed);
            debug!(peer = %conn.peer, error = %e, "closing TCP connection: bad record");
            conn.close(close_code::PROTOCOL_ERROR, &format!("protocol error: {e}"));
        }
        Stop::Idle => conn.close(close_code::DEAD, "idle timeout"),
        Stop::Done => conn.close(close_code::NORMAL, "connection closed"),
    }
}

async fn write_record<W: AsyncWrite + Unpin>(
    write: &mut W,
    kind: u8,
    body: &[u8],
) -> std::io::Result<usize> {
    write.write_u8(kind).await?;
    if kind == KIND_DATAGRAM {
        write.write_u16(body.len() as u16).await?;
        write.write_all(body).await?;
        return Ok(3 + body.len());
    }
    write.write_all(body).await?;
    Ok(1 + body.len())
}

async fn writer<W: AsyncWrite + Unpin>(
    conn: Arc<TcpConn>,
    write: W,
    mut control: mpsc::Receiver<Bytes>,
    mut datagrams: mpsc::Receiver<Bytes>,
    mut shutdown: watch::Receiver<bool>,
    peer_closed: Arc<Mutex<bool>>,
) {
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    let mut close = conn.close_tx.subscribe();
    loop {
        let first = tokio::select! {
            biased;
            _ = TcpConn::closed(&mut close) => break,
            _ = shutdown.wait_for(|down| *down) => {
                conn.close(close_code::SHUTDOWN, "host shutting down");
                break;
            }
            Some(frame) = control.recv() => (KIND_CONTROL, frame),
            Some(datagram) = datagrams.recv() => (KIND_DATAGRAM, datagram),
            else => break,
        };
        // Whatever else is queued goes out in the same flush.
        let batch = async {
            let mut written = write_record(&mut write, first.0, &first.1).await?;
            for _ in 0..WRITE_BATCH {
                let next = match control.try_recv() {
                    Ok(frame) => (KIND_CONTROL, frame),
                    Err(_) => match datagrams.try_recv() {
                        Ok(datagram) => (KIND_DATAGRAM, datagram),
                        Err(_) => break,
                    },
                };
                written += write_record(&mut write, next.0, &next.1).await?;
            }
            write.flush().await?;
            Ok::<usize, std::io::Error>(written)
        };
        tokio::select! {
            _ = TcpConn::closed(&mut close) => break,
            done = batch => match done {
                Ok(n) => {
                    conn.stats.tx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    debug!(peer = %conn.peer, error = %e, "TCP write failed");
                    conn.close(close_code::NORMAL, "connection lost");
                    return;
                }
            },
        }
    }
    let told = *peer_closed.lock().unwrap_or_else(|p| p.into_inner());
    let state = conn.close_tx.borrow().clone();
    if let (false, Some((code, reason))) = (told, state) {
        let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
        let mut record = Vec::with_capacity(7 + reason.len());
        record.push(KIND_CLOSE);
        record.extend_from_slice(&code.to_be_bytes());
        record.extend_from_slice(&(reason.len() as u16).to_be_bytes());
        record.extend_from_slice(reason);
        let goodbye = async {
            write.write_all(&record).await?;
            write.flush().await?;
            write.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), goodbye).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::tls_configs;
    use crate::Identity;

    async fn pair() -> ((Arc<TcpConn>, ControlRx), (Arc<TcpConn>, ControlRx)) {
        let a = tls_configs(&Identity::generate().unwrap()).unwrap();
        let b = tls_configs(&Identity::generate().unwrap()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_keep, shutdown) = watch::channel(false);
        let server = Arc::new(b.server);
        let shut = shutdown.clone();
        let acceptor = tokio::spawn(async move {
            let (stream, remote) = listener.accept().await.unwrap();
            accept(server, stream, remote, Duration::from_secs(5), shut)
                .await
                .unwrap()
        });
        let dialer = connect(Arc::new(a.client), addr, Duration::from_secs(5), shutdown)
            .await
            .unwrap();
        let accepted = acceptor.await.unwrap();
        std::mem::forget(_keep);
        (dialer, accepted)
    }

    #[tokio::test]
    async fn both_ends_agree_on_the_exporter_and_carry_frames_and_datagrams() {
        let ((a, _a_rx), (b, mut b_rx)) = pair().await;
        assert_eq!(
            a.exported_secret(EKM_AUTH_LABEL).unwrap(),
            b.exported_secret(EKM_AUTH_LABEL).unwrap()
        );
        assert_ne!(a.ekm_auth, a.ekm_keys);
        let frame = wire::encode_frame(&wire::Message::Heartbeat).unwrap();
        a.send_control(Bytes::from(frame.clone())).await.unwrap();
        assert_eq!(b_rx.recv().await.unwrap(), frame[FRAME_HEADER_LEN..]);

        let (tx, mut rx) = mpsc::unbounded_channel();
        b.authenticated(Arc::new(move |d| {
            let _ = tx.send(d);
        }));
        assert!(a.send_datagram(Bytes::from_static(b"sealed")));
        assert_eq!(&rx.recv().await.unwrap()[..], b"sealed");

        a.close(close_code::AUTH_FAILED, "no proof");
        match b_rx.recv().await {
            Err(ReadError::Closed { code, reason }) => {
                assert_eq!(code, close_code::AUTH_FAILED);
                assert_eq!(reason, "no proof");
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_datagram_before_authentication_is_dropped() {
        let ((a, _a_rx), (b, mut b_rx)) = pair().await;
        assert!(a.send_datagram(Bytes::from_static(b"too early")));
        let frame = wire::encode_frame(&wire::Message::Heartbeat).unwrap();
        a.send_control(Bytes::from(frame)).await.unwrap();
        // Records arrive in order: the datagram was read (and dropped) first.
        b_rx.recv().await.unwrap();
        assert_eq!(b.stats.datagrams_refused.load(Ordering::Relaxed), 1);
    }

    /// A frame header announcing `len` body bytes (the body never comes:
    /// the length alone must close the connection).
    fn announcing(len: usize) -> Bytes {
        Bytes::copy_from_slice(&(len as u32).to_be_bytes())
    }

    async fn expect_protocol_close(rx: &mut ControlRx) {
        match rx.recv().await {
            Err(ReadError::Closed { code, .. }) => assert_eq!(code, close_code::PROTOCOL_ERROR),
            other => panic!("expected a protocol close, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_acceptor_takes_only_a_hello_sized_first_frame() {
        let ((a, _a_rx), (_b, mut b_rx)) = pair().await;
        a.send_control(announcing(wire::MAX_HELLO_LEN + 1))
            .await
            .unwrap();
        expect_protocol_close(&mut b_rx).await;
    }

    #[tokio::test]
    async fn a_proven_hello_allows_full_size_frames_and_nothing_larger() {
        let ((a, _a_rx), (b, mut b_rx)) = pair().await;
        b.hello_proven();
        let record = vec![7u8; wire::MAX_HELLO_LEN * 4];
        let mut frame = (record.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&record);
        a.send_control(Bytes::from(frame)).await.unwrap();
        assert_eq!(b_rx.recv().await.unwrap(), record);
        a.send_control(announcing(wire::MAX_FRAME_LEN + 1))
            .await
            .unwrap();
        expect_protocol_close(&mut b_rx).await;
    }
}
