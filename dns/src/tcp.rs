//! DNS over TCP on one address of one network (RFC 7766): messages with a
//! two-byte length prefix, any number of queries per connection answered
//! in order, connections closed after an idle timeout, and a cap on
//! connections (beyond it new ones are closed at once). A connection holds
//! one of the capped slots, so none may keep it without making progress:
//! an answer the client does not take within [`WRITE_TIMEOUT`] closes it,
//! and no connection lives longer than [`MAX_LIFETIME`] (a client that
//! reads just fast enough is still bounded).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::wire::Transport;
use super::{client_ip, Resolver};

/// Open connections per address.
pub const MAX_CONNECTIONS: usize = 64;
/// A connection without a complete query for this long is closed
/// (RFC 7766 §6.2.3 asks for seconds, not minutes).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// An answer (at most 64 KiB) not taken by the client within this long
/// closes the connection: a client that never reads would otherwise hold
/// its slot for good once the socket buffers are full.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(4);
/// Send buffer of a connection (the kernel doubles it): room for the
/// largest answer, not the megabytes autotuning grows to for a client
/// that does not read, times every slot.
pub const SEND_BUFFER: usize = 64 * 1024;
/// Longest life of a connection, however busy: clients reconnect
/// (RFC 7766 §6.2.3 lets servers close), slots turn over.
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);

/// Serves DNS over TCP for `network` on `listener` until aborted.
pub async fn serve(resolver: Arc<Resolver>, network: String, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(network = %network, "DNS TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            debug!(network = %network, %from, "too many DNS TCP connections, closing");
            continue;
        };
        tokio::spawn(connection(
            resolver.clone(),
            network.clone(),
            stream,
            client_ip(from),
            slot,
        ));
    }
}

async fn connection(
    resolver: Arc<Resolver>,
    network: String,
    mut stream: TcpStream,
    client: IpAddr,
    _slot: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER) {
        debug!("DNS TCP send buffer: {e}");
    }
    let end = tokio::time::Instant::now() + MAX_LIFETIME;
    loop {
        let idle = tokio::time::Instant::now() + IDLE_TIMEOUT;
        let request = match tokio::time::timeout_at(idle.min(end), read_message(&mut stream)).await
        {
            Ok(Ok(Some(m))) => m,
            // Closed by the client, idle, or broken.
            _ => return,
        };
        let Some(resp) = resolver
            .respond(&network, &request, client, Transport::Tcp)
            .await
        else {
            // Not a query we can even reply to: the stream is out of step.
            return;
        };
        let write = tokio::time::timeout(WRITE_TIMEOUT, write_message(&mut stream, &resp));
        match write.await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return,
            Err(_) => {
                debug!(network = %network, %client, "DNS TCP client does not read its answers, closing");
                return;
            }
        }
        if tokio::time::Instant::now() >= end {
            return;
        }
    }
}

/// One length-prefixed message, or None at a clean end of stream.
pub async fn read_message(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 2];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(Some(buf))
}

/// Writes the prefix and message in one go (RFC 7766 §8).
pub async fn write_message(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}
