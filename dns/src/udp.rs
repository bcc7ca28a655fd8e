//! DNS over UDP on one address of one network. Our own names are answered
//! inline; a forwarded name gets a task only while a slot for an upstream
//! query is free (see [`super::upstream`]), so datagrams never pile up
//! tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tracing::warn;

use super::answers::Answers;
use super::snapshot::MAX_AGE;
use super::wire::Transport;
use super::{client_ip, Resolver, Step};

/// Larger than any query we answer: EDNS clients may send up to their
/// advertised size.
const RECV_BUFFER: usize = 4096;
/// Datagrams handled per wake-up before yielding to other tasks.
const BATCH: usize = 64;

/// Serves DNS for `network` on `sock` until the task is aborted.
pub async fn serve(resolver: Arc<Resolver>, network: String, sock: UdpSocket) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; RECV_BUFFER];
    let mut answers = Answers::new(MAX_AGE);
    let mut out = Vec::with_capacity(RECV_BUFFER);
    loop {
        let mut next = match sock.recv_from(&mut buf).await {
            Ok(x) => Some(x),
            Err(e) => {
                warn!(network = %network, "DNS socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Under load, take what is queued without parking in between.
        let mut handled = 0;
        while let Some((n, from)) = next {
            let (answers, out) = (&mut answers, &mut out);
            handle(&resolver, &network, &sock, answers, out, &buf[..n], from).await;
            handled += 1;
            next = if handled < BATCH {
                sock.try_recv_from(&mut buf).ok()
            } else {
                None
            };
        }
    }
}

async fn handle(
    resolver: &Arc<Resolver>,
    network: &str,
    sock: &Arc<UdpSocket>,
    answers: &mut Answers,
    out: &mut Vec<u8>,
    request: &[u8],
    from: SocketAddr,
) {
    let client = client_ip(from);
    answers.follow_upstreams(resolver.upstreams_generation());
    if answers.get(Instant::now(), client, request, out) {
        return reply(sock, out, from).await;
    }
    match resolver.step(network, request, client, Transport::Udp) {
        Step::Reply(resp) => {
            answers.put(client, request, &resp);
            reply(sock, &resp, from).await;
        }
        Step::Forward(fwd) => {
            let (resolver, sock) = (resolver.clone(), sock.clone());
            tokio::spawn(async move {
                let resp = resolver.forward(fwd).await;
                let _ = sock.send_to(&resp, from).await;
            });
        }
        Step::Ignore => {}
    }
}

async fn reply(sock: &UdpSocket, resp: &[u8], to: SocketAddr) {
    if sock.try_send_to(resp, to).is_err() {
        let _ = sock.send_to(resp, to).await;
    }
}
