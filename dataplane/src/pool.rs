//! Packet buffers with headroom for the wire header and tailroom for the tag,
//! so a frame read from the TAP is sealed in place and sent from the same
//! memory. Pools are per task (no lock): buffers are allocated once and reused.

use crate::wire::{HEADER_LEN, MAX_FRAME_LEN, TAG_LEN};

/// One frame/datagram buffer: `[header | frame | tag]`.
pub struct PacketBuf {
    storage: Box<[u8]>,
    /// Length of the frame at `storage[HEADER_LEN..]`.
    frame_len: usize,
    /// True once sealed: then the datagram is `storage[..HEADER_LEN + frame_len + TAG_LEN]`.
    sealed: bool,
}

impl std::fmt::Debug for PacketBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketBuf")
            .field("frame_len", &self.frame_len)
            .field("sealed", &self.sealed)
            .finish()
    }
}

impl PacketBuf {
    /// A buffer able to hold frames up to `max_frame` bytes.
    pub fn with_frame_capacity(max_frame: usize) -> PacketBuf {
        let max_frame = max_frame.min(MAX_FRAME_LEN);
        PacketBuf {
            storage: vec![0u8; HEADER_LEN + max_frame + TAG_LEN].into_boxed_slice(),
            frame_len: 0,
            sealed: false,
        }
    }

    /// Largest frame this buffer holds.
    pub fn frame_capacity(&self) -> usize {
        self.storage.len() - HEADER_LEN - TAG_LEN
    }

    /// The whole frame area, to read a frame into (then call [`set_frame_len`](Self::set_frame_len)).
    pub fn frame_space(&mut self) -> &mut [u8] {
        let end = self.storage.len() - TAG_LEN;
        &mut self.storage[HEADER_LEN..end]
    }

    /// Declares the first `len` bytes of the frame area as the frame.
    pub fn set_frame_len(&mut self, len: usize) {
        self.frame_len = len.min(self.frame_capacity());
        self.sealed = false;
    }

    /// Copies `frame` in (used for flooding and tests).
    pub fn fill_frame(&mut self, frame: &[u8]) -> bool {
        if frame.len() > self.frame_capacity() {
            return false;
        }
        self.storage[HEADER_LEN..HEADER_LEN + frame.len()].copy_from_slice(frame);
        self.set_frame_len(frame.len());
        true
    }

    pub fn frame(&self) -> &[u8] {
        &self.storage[HEADER_LEN..HEADER_LEN + self.frame_len]
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.storage[HEADER_LEN..HEADER_LEN + self.frame_len]
    }

    /// The frame with `prefix` bytes of the headroom before it (at most
    /// the wire header's length), e.g. for a `virtio_net_hdr`.
    pub fn frame_with_prefix_mut(&mut self, prefix: usize) -> &mut [u8] {
        let start = HEADER_LEN - prefix.min(HEADER_LEN);
        &mut self.storage[start..HEADER_LEN + self.frame_len]
    }

    /// Header slot, frame (to encrypt) and tag slot, split for in-place sealing.
    pub(crate) fn seal_parts(&mut self) -> (&mut [u8; HEADER_LEN], &mut [u8], &mut [u8; TAG_LEN]) {
        let (header, rest) = self.storage.split_at_mut(HEADER_LEN);
        let (frame, rest) = rest.split_at_mut(self.frame_len);
        let header: &mut [u8; HEADER_LEN] = header.try_into().expect("HEADER_LEN split");
        let tag: &mut [u8; TAG_LEN] = (&mut rest[..TAG_LEN])
            .try_into()
            .expect("tailroom reserved");
        (header, frame, tag)
    }

    pub(crate) fn mark_sealed(&mut self) {
        self.sealed = true;
    }

    /// The sealed datagram, mutable, e.g. to open it in place in a loopback
    /// test or benchmark (empty if not sealed; `len` caps it).
    pub fn datagram_mut(&mut self, len: usize) -> &mut [u8] {
        if !self.sealed {
            return &mut [];
        }
        let end = (HEADER_LEN + self.frame_len + TAG_LEN).min(len);
        &mut self.storage[..end]
    }

    /// The whole buffer, to build a datagram of another layout in (a relay
    /// envelope); then [`Self::set_datagram_len`].
    pub(crate) fn raw_mut(&mut self) -> &mut [u8] {
        &mut self.storage
    }

    /// Declares the first `len` bytes of the buffer a finished datagram.
    pub(crate) fn set_datagram_len(&mut self, len: usize) {
        let len = len.clamp(HEADER_LEN + TAG_LEN, self.storage.len());
        self.frame_len = len - HEADER_LEN - TAG_LEN;
        self.sealed = true;
    }

    /// The sealed datagram (empty if not sealed).
    pub fn datagram(&self) -> &[u8] {
        if !self.sealed {
            return &[];
        }
        &self.storage[..HEADER_LEN + self.frame_len + TAG_LEN]
    }
}

/// A free list of equally sized buffers owned by one task.
#[derive(Debug)]
pub struct BufPool {
    free: Vec<PacketBuf>,
    max_frame: usize,
}

impl BufPool {
    pub fn new(max_frame: usize, preallocate: usize) -> BufPool {
        BufPool {
            free: (0..preallocate)
                .map(|_| PacketBuf::with_frame_capacity(max_frame))
                .collect(),
            max_frame,
        }
    }

    /// A buffer from the free list; allocates only when the list is empty
    /// (warm-up, or an unusually wide flood).
    pub fn get(&mut self) -> PacketBuf {
        let mut buf = self
            .free
            .pop()
            .unwrap_or_else(|| PacketBuf::with_frame_capacity(self.max_frame));
        buf.set_frame_len(0);
        buf
    }

    pub fn put(&mut self, buf: PacketBuf) {
        self.free.push(buf);
    }
}
