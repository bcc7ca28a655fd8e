//! One connection (QUIC, or the TCP fallback: `node/conn.rs`) from
//! handshake to close: both sides of the handshake
//! (judged by [`handshake::check`]), admission as the peer's link, and the
//! tasks that carry it — a reader and a writer doing framing only, and a
//! driver feeding the [`Link`] and carrying out its [`Action`]s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::admission::{Slot, Verdict};
use super::conn::{Conn, ControlRecv, ControlSend};
use super::outbound::{self, Outbound, OutboundRx};
use super::PeerInfo;
use super::{lock, Inner};
use crate::auth::EKM_AUTH_LABEL;
use crate::cipher::CipherOffer;
use crate::error::BoxError;
use crate::handshake::{self, CloseReason, Parties, Side};
use crate::keyexchange::EKM_KEYS_LABEL;
use crate::link::{Action, Link, LinkParams};
use crate::membership::MemberRecord;
use crate::peers::{Candidate, Refusal};
use crate::transport::{self, close_code, ReadError};
use crate::wire::{self, Hello, HelloAck, HelloRecord, Message};
use crate::{Error, PeerId};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a dialer that proved nothing yet may take to send its hello.
const UNAUTHENTICATED_TIMEOUT: Duration = Duration::from_secs(5);
/// Small on purpose: each queued message may be up to 4 MiB.
const INBOUND_QUEUE: usize = 16;

/// The node's handle to a peer's live connection.
#[derive(Clone)]
pub(crate) struct LinkHandle {
    pub conn: Conn,
    /// Encoded frames for the writer task.
    pub outbound: Outbound,
}

/// Maps the error that ended a handshake to what `join()` reports.
fn handshake_error(addr: std::net::SocketAddr, error: ReadError) -> Error {
    match error {
        ReadError::Connection(quinn::ConnectionError::ApplicationClosed(close)) => {
            let reason = String::from_utf8_lossy(&close.reason).into_owned();
            let code = close.error_code.into_inner();
            if code == close_code::AUTH_FAILED as u64 {
                Error::AuthRejected { reason }
            } else {
                Error::Refused { code, reason }
            }
        }
        ReadError::Closed { code, reason } => {
            if code == close_code::AUTH_FAILED {
                Error::AuthRejected { reason }
            } else {
                Error::Refused {
                    code: code as u64,
                    reason,
                }
            }
        }
        ReadError::Connection(e) => Error::Unreachable {
            addr: addr.to_string(),
            source: Box::new(e),
        },
        other => Error::Protocol(other.to_string()),
    }
}

fn refuse(conn: &Conn, refusal: &CloseReason) {
    conn.close(refusal.code(), refusal.wire_reason());
}

impl Inner {
    /// Dials one address and runs the handshake; registers the connection.
    pub(super) async fn dial_addr(
        self: Arc<Self>,
        addr: std::net::SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, Error> {
        let unreachable = |e: BoxError| Error::Unreachable {
            addr: addr.to_string(),
            source: e,
        };
        let connecting = self
            .endpoint
            .connect(addr, transport::SERVER_NAME)
            .map_err(|e| unreachable(Box::new(e)))?;
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => return Err(unreachable(Box::new(e))),
            Err(_) => return Err(unreachable("QUIC handshake timed out".into())),
        };
        let remote = transport::remote_peer_id(&conn)
            .ok_or_else(|| Error::protocol("peer certificate carries no Ed25519 key"))?;
        let (send, recv) = match tokio::time::timeout(HANDSHAKE_TIMEOUT, conn.open_bi()).await {
            Ok(Ok(streams)) => streams,
            Ok(Err(e)) => return Err(unreachable(Box::new(e))),
            Err(_) => return Err(unreachable("QUIC stream not opened in time".into())),
        };
        let streams = (ControlSend::Quic(send), ControlRecv::Quic(recv));
        self.dial_handshake(Conn::Quic(conn), streams, remote, addr, expected)
            .await
    }

    /// Dials one address over the TCP fallback and runs the same handshake.
    pub(super) async fn dial_tcp(
        self: Arc<Self>,
        addr: std::net::SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, Error> {
        let (conn, rx) = crate::tcp::connect(
            self.tls.client.clone(),
            addr,
            self.link_timers.dead_after,
            self.shutdown.subscribe(),
        )
        .await?;
        let remote = conn.peer();
        let streams = (ControlSend::Tcp(conn.clone()), ControlRecv::Tcp(rx));
        self.dial_handshake(Conn::Tcp(conn), streams, remote, addr, expected)
            .await
    }

    /// The dialer's side of the handshake on an established connection;
    /// the connection is closed on any failure (a dropped QUIC handle closes
    /// by itself, a TCP connection's tasks would keep it to the idle timeout).
    async fn dial_handshake(
        self: Arc<Self>,
        conn: Conn,
        streams: (ControlSend, ControlRecv),
        remote: PeerId,
        addr: std::net::SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, Error> {
        let closer = conn.clone();
        let result = self
            .dial_handshake_inner(conn, streams, remote, addr, expected)
            .await;
        if result.is_err() {
            // A no-op where a refusal already closed it with its reason.
            closer.close(close_code::PROTOCOL_ERROR, "handshake failed");
        }
        result
    }

    async fn dial_handshake_inner(
        self: Arc<Self>,
        conn: Conn,
        (mut send, mut recv): (ControlSend, ControlRecv),
        remote: PeerId,
        addr: std::net::SocketAddr,
        expected: Option<PeerId>,
    ) -> Result<PeerId, Error> {
        if let Some(expected) = expected.filter(|e| *e != remote) {
            debug!(expected = %expected, got = %remote, %addr, "address now belongs to another member");
        }
        if let Err(refusal) = handshake::check_peer(self.id, remote, self.is_blocked(&remote)) {
            refuse(&conn, &refusal);
            return Err(refusal.into_error());
        }
        let secret = self.secret();
        let parties = Parties {
            local: self.id,
            remote,
            side: Side::Dialer,
            secret: &secret,
            ekm: conn.exported_secret(EKM_AUTH_LABEL)?,
        };
        let hello = handshake::hello(&parties, addr);
        let exchange = async {
            send.write_frame(&hello).await?;
            match recv
                .read_frame_within::<HelloAck>(wire::MAX_FRAME_LEN)
                .await
            {
                Ok(Some((ack, _))) => Ok(ack),
                Ok(None) => Err(Error::protocol(
                    "peer closed the stream during the handshake",
                )),
                Err(e) => Err(handshake_error(addr, e)),
            }
        };
        let ack = match tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange).await {
            Ok(Ok(ack)) => ack,
            Ok(Err(e)) => {
                if matches!(e, Error::Protocol(_)) {
                    conn.close(close_code::PROTOCOL_ERROR, "bad handshake");
                }
                if let Error::AuthRejected { reason } = &e {
                    warn!(peer = %remote, %addr, reason = %reason, "peer refused our membership proof");
                }
                return Err(e);
            }
            Err(_) => {
                conn.close(close_code::PROTOCOL_ERROR, "handshake timed out");
                return Err(Error::Unreachable {
                    addr: addr.to_string(),
                    source: "mesh handshake timed out".into(),
                });
            }
        };
        let admitted = match handshake::check(&parties, self.is_blocked(&remote), ack.into()) {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if matches!(refusal, CloseReason::BadProof { .. }) {
                    warn!(peer = %remote, %addr, "peer failed to prove the mesh secret; closing");
                }
                refuse(&conn, &refusal);
                return Err(refusal.into_error());
            }
        };
        let Some(record) = admitted.record else {
            return Err(Error::protocol("acceptor sent no member record"));
        };
        // A dial loop's dial (to this member, or to one whose address it
        // took over) that finished after a link from the member came up:
        // dropped before the acceptor admits it (see `crossed_dial`).
        // `meshctl join` (no expected peer) to a linked seed goes on.
        if expected.is_some()
            && lock(&self.peers).crossed_dial(&remote, conn.is_tcp(), record.incarnation)
        {
            conn.close(close_code::DUPLICATE, "duplicate connection");
            return Err(Error::Refused {
                code: close_code::DUPLICATE as u64,
                reason: "a link from the peer came up meanwhile".into(),
            });
        }
        // The acceptor proved the secret: now it may learn who we are.
        let third = HelloRecord {
            record: self.own_record(),
            last_key_generation: self.last_key_generation(&remote),
        };
        send.write_frame(&third).await?;
        self.learn_own_address(admitted.observed);
        self.register(
            conn,
            send,
            recv,
            remote,
            Side::Dialer,
            record,
            admitted.last_key_generation,
            Instant::now(),
        )?;
        Ok(remote)
    }

    pub(super) async fn accept(self: Arc<Self>, incoming: quinn::Incoming) {
        let remote_addr = incoming.remote_address();
        // Held until the dialer proved the secret: bounds what strangers
        // can make this host keep (see `admission.rs`).
        let permit = match Slot::take(
            &self.unauthenticated,
            remote_addr.ip(),
            incoming.remote_address_validated(),
            incoming.may_retry(),
        ) {
            Ok(slot) => slot,
            Err(Verdict::Retry) => {
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                return;
            }
            Err(verdict) => {
                debug!(addr = %remote_addr, ?verdict, "refusing a connection");
                incoming.refuse();
                return;
            }
        };
        let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                debug!(addr = %remote_addr, error = %e, "incoming QUIC handshake failed");
                return;
            }
            Err(_) => return,
        };
        let deadline = tokio::time::Instant::now() + UNAUTHENTICATED_TIMEOUT;
        let Some(remote) = transport::remote_peer_id(&conn) else {
            transport::close(
                &conn,
                close_code::PROTOCOL_ERROR,
                "certificate carries no Ed25519 key",
            );
            return;
        };
        let Ok(Ok((send, recv))) = tokio::time::timeout_at(deadline, conn.accept_bi()).await else {
            transport::close(&conn, close_code::PROTOCOL_ERROR, "no valid hello");
            return;
        };
        let streams = (ControlSend::Quic(send), ControlRecv::Quic(recv));
        self.accept_handshake(Conn::Quic(conn), streams, remote, deadline, permit)
            .await;
    }

    /// Accepts one TCP connection: TLS, then the same handshake as QUIC's
    /// under the same limits (a TCP peer's address is validated by the
    /// TCP handshake itself).
    pub(super) async fn accept_tcp(
        self: Arc<Self>,
        stream: tokio::net::TcpStream,
        remote_addr: std::net::SocketAddr,
    ) {
        let permit = match Slot::take(&self.unauthenticated_tcp, remote_addr.ip(), true, false) {
            Ok(slot) => slot,
            Err(verdict) => {
                debug!(addr = %remote_addr, ?verdict, "refusing a TCP connection");
                return;
            }
        };
        let deadline = tokio::time::Instant::now() + UNAUTHENTICATED_TIMEOUT;
        let tls = crate::tcp::accept(
            self.tls.server.clone(),
            stream,
            remote_addr,
            self.link_timers.dead_after,
            self.shutdown.subscribe(),
        );
        let (conn, rx) = match tokio::time::timeout_at(deadline, tls).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => {
                debug!(addr = %remote_addr, error = %e, "incoming TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let remote = conn.peer();
        let streams = (ControlSend::Tcp(conn.clone()), ControlRecv::Tcp(rx));
        self.accept_handshake(Conn::Tcp(conn), streams, remote, deadline, permit)
            .await;
    }

    /// The acceptor's side of the handshake; `permit` is held until the
    /// dialer proved the secret, and its hello must come by `deadline`.
    async fn accept_handshake(
        self: Arc<Self>,
        conn: Conn,
        (mut send, mut recv): (ControlSend, ControlRecv),
        remote: PeerId,
        deadline: tokio::time::Instant,
        permit: Slot,
    ) {
        let started = Instant::now();
        let remote_addr = conn.remote_address();
        if let Err(refusal) = handshake::check_peer(self.id, remote, self.is_blocked(&remote)) {
            refuse(&conn, &refusal);
            return;
        }
        let hello = match tokio::time::timeout_at(
            deadline,
            recv.read_frame_within::<Hello>(wire::MAX_HELLO_LEN),
        )
        .await
        {
            Ok(Ok(Some((hello, _)))) => hello,
            Ok(Err(e)) => {
                debug!(peer = %remote, error = %e, "bad hello");
                conn.close(close_code::PROTOCOL_ERROR, "no valid hello");
                return;
            }
            _ => {
                conn.close(close_code::PROTOCOL_ERROR, "no valid hello");
                return;
            }
        };
        let secrets = self.secrets();
        let Ok(ekm) = conn.exported_secret(EKM_AUTH_LABEL) else {
            conn.close(close_code::PROTOCOL_ERROR, "TLS exporter unavailable");
            return;
        };
        let blocked = self.is_blocked(&remote);
        let mut parties = Parties {
            local: self.id,
            remote,
            side: Side::Acceptor,
            secret: &secrets.current,
            ekm,
        };
        let mut verdict = handshake::check(&parties, blocked, hello.clone().into());
        // A known member that was down during a rotation proves an older
        // secret: admitted, and the link sends it the current one.
        let known = lock(&self.peers).table.get(&remote).is_some();
        if matches!(verdict, Err(CloseReason::BadProof { .. })) && known {
            for old in secrets.previous.iter().rev() {
                let stale = Parties {
                    secret: old,
                    ..parties
                };
                if let Ok(admitted) = handshake::check(&stale, blocked, hello.clone().into()) {
                    info!(peer = %remote, "member proved a retired mesh secret; sending it the current one");
                    parties = stale;
                    verdict = Ok(admitted);
                    break;
                }
            }
        }
        let admitted = match verdict {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if matches!(refusal, CloseReason::BadProof { .. }) {
                    warn!(peer = %remote, addr = %remote_addr, "refused connection: peer did not prove the mesh secret");
                }
                refuse(&conn, &refusal);
                return;
            }
        };
        drop(permit);
        conn.hello_proven();
        let ack = handshake::ack(
            &parties,
            &admitted,
            self.own_record(),
            self.last_key_generation(&remote),
            remote_addr,
        );
        if send.write_frame(&ack).await.is_err() {
            return;
        }
        let third = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            recv.read_frame_within::<HelloRecord>(wire::MAX_RECORD_FRAME_LEN),
        )
        .await;
        let (record, last_key_generation) = match third {
            Ok(Ok(Some((frame, _)))) => match handshake::check_record(&parties, frame) {
                Ok(admitted) => admitted,
                Err(refusal) => {
                    refuse(&conn, &refusal);
                    return;
                }
            },
            _ => {
                conn.close(close_code::PROTOCOL_ERROR, "no valid member record");
                return;
            }
        };
        self.learn_own_address(admitted.observed);
        if let Err(e) = self.register(
            conn,
            send,
            recv,
            remote,
            Side::Acceptor,
            record,
            last_key_generation,
            started,
        ) {
            debug!(peer = %remote, error = %e, "connection not kept");
        }
    }

    /// Installs an authenticated connection as the peer's link (or drops
    /// it after the tie-break) and starts its tasks.
    #[allow(clippy::too_many_arguments)]
    fn register(
        &self,
        conn: Conn,
        send: ControlSend,
        recv: ControlRecv,
        remote: PeerId,
        side: Side,
        record: MemberRecord,
        remote_last_generation: u64,
        started: Instant,
    ) -> Result<(), Error> {
        let dialer = match side {
            Side::Dialer => self.id,
            Side::Acceptor => remote,
        };
        // The advertisements of the records just exchanged in the handshake.
        let ciphers = (
            CipherOffer::of_meta(&self.own_record().meta),
            CipherOffer::of_meta(&record.meta),
        );
        let (out_tx, out_rx) = outbound::queue();
        let admission = {
            let mut peers = lock(&self.peers);
            if self.is_shutting_down() {
                conn.close(close_code::SHUTDOWN, "host shutting down");
                return Err(Error::Shutdown);
            }
            let candidate = Candidate {
                id: conn.stable_id(),
                handle: LinkHandle {
                    conn: conn.clone(),
                    outbound: out_tx.clone(),
                },
                dialer,
                record,
                remote_addr: conn.remote_address(),
                last_key_generation: remote_last_generation,
                tcp: conn.is_tcp(),
                started,
            };
            match peers.admit(remote, candidate, Instant::now()) {
                Ok(admission) => {
                    // Under the same lock as the admission, so a `peer_down`
                    // for the link this one replaces (also sent under it)
                    // can never land after this `peer_up`.
                    let info = PeerInfo {
                        id: remote,
                        name: admission
                            .record
                            .as_ref()
                            .map(|r| r.name.clone())
                            .unwrap_or_default(),
                        remote: conn.remote_address(),
                        meta: admission
                            .record
                            .as_ref()
                            .map(|r| r.meta.clone())
                            .unwrap_or_default(),
                        relay: None,
                    };
                    info!(peer = %remote, addr = %info.remote, name = %info.name, ?side, tcp = conn.is_tcp(), "peer up");
                    self.observer.peer_up(&info);
                    self.observer
                        .tcp_link(&remote, self.tcp_datagrams(&conn, remote));
                    admission
                }
                Err(Refusal::Blocked) => {
                    let refusal = CloseReason::Blocked;
                    refuse(&conn, &refusal);
                    return Err(Error::Refused {
                        code: refusal.code() as u64,
                        reason: "blocked".into(),
                    });
                }
                Err(Refusal::Duplicate) => {
                    conn.close(close_code::DUPLICATE, "duplicate connection");
                    return Err(Error::Refused {
                        code: close_code::DUPLICATE as u64,
                        reason: "duplicate connection".into(),
                    });
                }
            }
        };
        if let Some(old) = &admission.replaced {
            old.conn
                .close(close_code::DUPLICATE, "replaced by a newer connection");
        }
        self.direct_link_up(remote);
        self.after_merge(admission.changed, Some(remote));

        let (in_tx, in_rx) = mpsc::channel::<Message>(INBOUND_QUEUE);
        self.spawn(writer_task(send, out_rx));
        self.spawn(reader_task(conn.clone(), recv, in_tx, remote));
        if conn.is_tcp() {
            if let Some(this) = self.this.upgrade() {
                self.spawn(super::dial::udp_retry_loop(this, remote, conn.stable_id()));
            }
        }
        if let Some(this) = self.this.upgrade() {
            let driver = Driver {
                node: this,
                conn,
                peer: remote,
                outbound: out_tx,
            };
            let initiator = side == Side::Dialer;
            self.spawn(driver.run(initiator, admission.last_key_generation, ciphers, in_rx));
        }
        Ok(())
    }
}

async fn writer_task(mut send: ControlSend, mut outbound: OutboundRx) {
    while let Some(frame) = outbound.recv().await {
        let len = frame.len();
        let written = send.write_raw(frame).await;
        outbound.written(len);
        if written.is_err() {
            return;
        }
    }
    send.finish();
}

/// Framing only: anything malformed or oversized closes the connection.
async fn reader_task(
    conn: Conn,
    mut recv: ControlRecv,
    inbound: mpsc::Sender<Message>,
    peer: PeerId,
) {
    loop {
        let read = recv
            .read_body(wire::MAX_FRAME_LEN)
            .await
            .and_then(|body| Ok(body.map(|b| wire::decode_message(&b)).transpose()?));
        match read {
            Ok(Some(Some(message))) => {
                if inbound.send(message).await.is_err() {
                    return;
                }
            }
            // A kind a newer peer added: skipped (PROTOCOL.md).
            Ok(Some(None)) => debug!(peer = %peer, "skipped a message of an unknown kind"),
            Ok(None) => {
                conn.close(close_code::NORMAL, "control stream finished");
                return;
            }
            Err(ReadError::Connection(e)) => {
                debug!(peer = %peer, error = %e, "connection closed");
                return;
            }
            Err(e @ ReadError::Closed { .. }) => {
                debug!(peer = %peer, error = %e, "connection closed");
                return;
            }
            Err(e) => {
                warn!(peer = %peer, error = %e, "closing connection: bad frame");
                let reason = format!("protocol error: {e}");
                conn.close(
                    close_code::PROTOCOL_ERROR,
                    &reason[..reason.floor_char_boundary(200)],
                );
                return;
            }
        }
    }
}

/// Moves one connection's messages and timer ticks into its [`Link`] and
/// carries out what the link asks for.
struct Driver {
    node: Arc<Inner>,
    conn: Conn,
    peer: PeerId,
    outbound: Outbound,
}

impl Driver {
    async fn run(
        self,
        initiator: bool,
        last_key_generation: u64,
        (local_ciphers, remote_ciphers): (Option<CipherOffer>, Option<CipherOffer>),
        mut inbound: mpsc::Receiver<Message>,
    ) {
        let Ok(connection_secret) = self.conn.exported_secret(EKM_KEYS_LABEL) else {
            warn!(peer = %self.peer, "closing connection: TLS exporter unavailable");
            self.conn
                .close(close_code::PROTOCOL_ERROR, "TLS exporter unavailable");
            self.node
                .connection_lost(self.peer, &self.conn, "no exporter");
            return;
        };
        let params = LinkParams {
            local: self.node.id,
            remote: self.peer,
            initiator,
            connection_secret,
            last_key_generation,
            local_ciphers,
            remote_ciphers,
            timers: self.node.link_timers(),
        };
        let mut link = Link::new(params, Instant::now());
        let mut shutdown = self.node.shutdown.subscribe();
        let mut replica: &Inner = &self.node;
        let secrets = self.node.secrets();
        self.send(&Message::Secret {
            epoch: secrets.epoch,
            token: wire::SecretToken(secrets.current.to_token()),
        });
        let mut ended = self.execute(link.open(&replica, Instant::now()));
        let timer = tokio::time::sleep_until(link.poll_timeout().into());
        tokio::pin!(timer);
        let reason = loop {
            if let Some(reason) = ended {
                break reason;
            }
            let actions = tokio::select! {
                _ = shutdown.changed() => break "shutdown",
                message = inbound.recv() => match message {
                    Some(message @ (Message::Relay { .. } | Message::Relayed { .. })) => {
                        self.node.on_relay_message(self.peer, message);
                        Vec::new()
                    }
                    Some(message) => link.handle(message, Instant::now(), &mut replica),
                    None => break "connection closed",
                },
                _ = &mut timer => {
                    // Ticks come at least every heartbeat: a reloaded
                    // rekey period reaches every link within one.
                    link.set_rekey(self.node.rekey_interval(), Instant::now());
                    link.tick(Instant::now())
                }
            };
            ended = self.execute(actions);
            timer.as_mut().reset(link.poll_timeout().into());
        };
        self.node.connection_lost(self.peer, &self.conn, reason);
    }

    fn send(&self, message: &Message) {
        match wire::encode_frame(message) {
            Ok(frame) => {
                if self.outbound.try_send(Bytes::from(frame)).is_err() {
                    debug!(peer = %self.peer, "outbound queue full; message dropped");
                }
            }
            Err(e) => warn!(peer = %self.peer, error = %e, "not sending message"),
        }
    }

    /// Carries out `actions` in order; returns why the link ended, if it did.
    /// Keys go to the data plane only from the peer's current link; when
    /// this one was replaced, the rest of the batch (the reply that would
    /// make the peer use those keys) is dropped too.
    fn execute(&self, actions: Vec<Action>) -> Option<&'static str> {
        let node = &self.node;
        for action in actions {
            match action {
                Action::Send(message) => self.send(&message),
                Action::InstallKeys { keys, send_now } => {
                    if !node.is_current(&self.peer, &self.conn) {
                        return None;
                    }
                    let generation = keys.generation;
                    node.observer.install_keys(&self.peer, keys, send_now);
                    lock(&node.peers).keys_installed(self.peer, generation, Instant::now());
                }
                Action::ConfirmKeys { generation } => {
                    if node.is_current(&self.peer, &self.conn) {
                        node.observer.confirm_keys(&self.peer, generation);
                    }
                }
                Action::Close { code, reason } => {
                    self.conn.close(code, reason);
                    return Some(if code == close_code::DEAD {
                        "heartbeat timeout"
                    } else {
                        warn!(peer = %self.peer, reason, "closing connection: protocol violation");
                        "protocol violation"
                    });
                }
            }
        }
        None
    }
}
