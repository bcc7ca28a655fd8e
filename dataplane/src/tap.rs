//! TAP device (IFF_TAP | IFF_NO_PI) through `tun-rs` with `Layer::L2`.
//!
//! We only open (or create) the device: the daemon enslaves it to its bridge
//! and sets MTU and link state over netlink, so nothing here touches those.

use std::io;

use tun_rs::{AsyncDevice, DeviceBuilder, Layer};

/// Largest frame read from or written to a TAP: a 9000-byte jumbo MTU plus
/// Ethernet and VLAN headers, rounded up. Bounds per-network buffer memory.
pub const MAX_TAP_FRAME: usize = 9216 + 32;

/// Opens `name` as a multi-queue TAP (so more queues can be attached later for
/// parallel readers), falling back to single-queue if the device already
/// exists without IFF_MULTI_QUEUE. Must run inside a tokio runtime.
pub fn open(name: &str) -> io::Result<AsyncDevice> {
    let builder = || DeviceBuilder::new().name(name).layer(Layer::L2);
    match builder().multi_queue(true).build_async() {
        Ok(device) => Ok(device),
        Err(multi_queue_error) => builder().multi_queue(false).build_async().inspect_err(|_| {
            tracing::debug!(%multi_queue_error, "multi-queue TAP open failed too");
        }),
    }
}
