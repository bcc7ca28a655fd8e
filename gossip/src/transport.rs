//! QUIC endpoint setup (rustls on ring) and frame I/O.
//!
//! TLS here only does two things: encrypt, and prove each side holds the
//! private key of the Ed25519 certificate it presents (the peer id). Whether
//! that key belongs to the mesh is decided afterwards by the secret-bound
//! MAC exchange (`auth`), so the verifier accepts any well-formed Ed25519
//! certificate but still checks the handshake signatures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{RecvStream, SendStream, VarInt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::identity::peer_id_from_cert;
use crate::wire::{self, FrameError, FRAME_HEADER_LEN};
use crate::{Error, Identity, PeerId, ALPN};

/// SNI sent by dialers; ignored by the verifier (peers are known by key, not name).
pub const SERVER_NAME: &str = "mesh";

/// Application close codes: the reason string says more.
pub mod close_code {
    pub const NORMAL: u32 = 0;
    /// The peer did not prove the mesh secret.
    pub const AUTH_FAILED: u32 = 1;
    /// Malformed, oversized or unexpected message.
    pub const PROTOCOL_ERROR: u32 = 2;
    /// No common protocol version.
    pub const VERSION_MISMATCH: u32 = 3;
    /// A second connection between the same two hosts lost the tie-break.
    pub const DUPLICATE: u32 = 4;
    /// Traffic with this peer is administratively blocked.
    pub const BLOCKED: u32 = 5;
    /// No heartbeat within `dead_after`.
    pub const DEAD: u32 = 6;
    /// The node shuts down.
    pub const SHUTDOWN: u32 = 7;
}

pub(crate) fn close(conn: &quinn::Connection, code: u32, reason: &str) {
    conn.close(VarInt::from_u32(code), reason.as_bytes());
}

#[derive(Debug)]
struct MeshCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

fn check_cert(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    peer_id_from_cert(cert)
        .map(|_| ())
        .ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))
}

impl ServerCertVerifier for MeshCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_cert(end_entity).map(|_| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // QUIC and the TCP fallback are TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

impl ClientCertVerifier for MeshCertVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_cert(end_entity).map(|_| ClientCertVerified::assertion())
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls12_signature(self, message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        ServerCertVerifier::verify_tls13_signature(self, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ED25519]
    }
}

/// Timers the QUIC layer enforces on its own.
#[derive(Clone, Copy, Debug)]
pub struct TransportTimers {
    pub keep_alive: Duration,
    pub idle_timeout: Duration,
}

fn transport_config(timers: TransportTimers) -> Result<Arc<quinn::TransportConfig>, Error> {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(timers.keep_alive));
    transport.max_idle_timeout(Some(
        timers
            .idle_timeout
            .try_into()
            .map_err(|_| Error::Tls("idle timeout out of range".into()))?,
    ));
    // Exactly one control stream per connection, opened by the dialer.
    transport.max_concurrent_bidi_streams(VarInt::from_u32(1));
    transport.max_concurrent_uni_streams(VarInt::from_u32(0));
    transport.datagram_receive_buffer_size(None);
    Ok(Arc::new(transport))
}

/// The host's TLS 1.3 configurations (same identity and verifier for QUIC
/// and for the TCP fallback, so TCP adds no new trust).
pub(crate) struct TlsConfigs {
    pub server: rustls::ServerConfig,
    pub client: rustls::ClientConfig,
}

pub(crate) fn tls_configs(identity: &Identity) -> Result<TlsConfigs, Error> {
    let (cert, key) = identity.tls_credentials()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(MeshCertVerifier {
        algorithms: provider.signature_verification_algorithms,
    });
    let tls_err = |e: rustls::Error| Error::Tls(e.to_string());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(vec![cert.clone()], key.clone_key())
        .map_err(tls_err)?;
    server.alpn_protocols = vec![ALPN.to_vec()];
    let mut client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![cert], key)
        .map_err(tls_err)?;
    client.alpn_protocols = vec![ALPN.to_vec()];
    Ok(TlsConfigs { server, client })
}

/// Binds the host's one QUIC endpoint: it both accepts and dials.
pub fn bind_endpoint(
    identity: &Identity,
    listen: SocketAddr,
    timers: TransportTimers,
) -> Result<quinn::Endpoint, Error> {
    let TlsConfigs {
        server: server_tls,
        client: client_tls,
    } = tls_configs(identity)?;
    let transport = transport_config(timers)?;
    let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
    server_config.transport_config(transport.clone());
    let client_crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| Error::Tls(e.to_string()))?;
    let mut client_config = quinn::ClientConfig::new(Arc::new(client_crypto));
    client_config.transport_config(transport);

    let mut endpoint = quinn::Endpoint::server(server_config, listen)?;
    endpoint.set_default_client_config(client_config);
    Ok(endpoint)
}

/// The peer id proven by the TLS handshake of `conn`.
pub fn remote_peer_id(conn: &quinn::Connection) -> Option<PeerId> {
    let identity = conn.peer_identity()?;
    let certs = identity.downcast::<Vec<CertificateDer<'static>>>().ok()?;
    peer_id_from_cert(certs.first()?)
}

/// 32 bytes of TLS exporter output under `label`.
pub fn exported_secret(conn: &quinn::Connection, label: &[u8]) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, label, b"")
        .map_err(|_| Error::protocol("TLS exporter unavailable"))?;
    Ok(out)
}

/// Why reading a frame stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream finished in the middle of a frame")]
    Truncated,
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
    #[error("stream error: {0}")]
    Stream(String),
    /// The TCP fallback connection was closed (by the peer, with its code
    /// and reason, or locally).
    #[error("connection closed ({code}): {reason}")]
    Closed { code: u32, reason: String },
}

impl From<quinn::ReadExactError> for ReadError {
    fn from(e: quinn::ReadExactError) -> Self {
        match e {
            quinn::ReadExactError::FinishedEarly(_) => ReadError::Truncated,
            quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
                ReadError::Connection(c)
            }
            quinn::ReadExactError::ReadError(other) => ReadError::Stream(other.to_string()),
        }
    }
}

/// Reads one frame; `Ok(None)` when the peer finished the stream cleanly.
/// The length is checked before the body buffer is allocated.
pub async fn read_frame<T: DeserializeOwned>(
    recv: &mut RecvStream,
) -> Result<Option<(T, usize)>, ReadError> {
    read_frame_within(recv, wire::MAX_FRAME_LEN).await
}

/// [`read_frame`] with a smaller body limit (e.g. a hello, read before the
/// peer proved anything): a longer prefix is refused before any allocation.
pub async fn read_frame_within<T: DeserializeOwned>(
    recv: &mut RecvStream,
    limit: usize,
) -> Result<Option<(T, usize)>, ReadError> {
    let Some(body) = read_body(recv, limit).await? else {
        return Ok(None);
    };
    let value = wire::decode_body(&body)?;
    Ok(Some((value, FRAME_HEADER_LEN + body.len())))
}

/// Reads one frame's body, undecoded; `Ok(None)` when the peer finished the
/// stream cleanly.
pub async fn read_body(recv: &mut RecvStream, limit: usize) -> Result<Option<Vec<u8>>, ReadError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    match recv.read_exact(&mut header).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(0)) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = wire::frame_body_len(header)?;
    if len > limit {
        return Err(wire::FrameError::Oversized(len).into());
    }
    let mut body = vec![0u8; len];
    recv.read_exact(&mut body).await?;
    Ok(Some(body))
}

/// Writes one already-encoded frame.
pub async fn write_raw(send: &mut SendStream, frame: &[u8]) -> Result<(), Error> {
    send.write_all(frame)
        .await
        .map_err(|e| Error::protocol(format!("write failed: {e}")))
}

/// Encodes and writes one message.
pub async fn write_frame<T: Serialize>(send: &mut SendStream, message: &T) -> Result<(), Error> {
    let frame = wire::encode_frame(message).map_err(|e| Error::protocol(e.to_string()))?;
    write_raw(send, &frame).await
}
