//! A queue of byte chunks that hands out copies or zero-copy slices.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Chunks smaller than this are merged, so that a peer sending tiny packets cannot
/// make per-chunk overhead dwarf the bytes it is credited for.
const MERGE_BELOW: usize = 16 * 1024;

/// Received bytes, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct ByteQueue {
    chunks: VecDeque<Chunk>,
    len: usize,
}

/// One chunk: small arrivals merged into a buffer of ours, or a large one kept
/// as it came (a slice of the transport's packet, not copied).
#[derive(Debug)]
enum Chunk {
    Merged(BytesMut),
    Kept(Bytes),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Merged(b) => b,
            Chunk::Kept(b) => b,
        }
    }

    fn len(&self) -> usize {
        self.bytes().len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Merged(b) => b.advance(n),
            Chunk::Kept(b) => b.advance(n),
        }
    }

    fn split_to(&mut self, n: usize) -> Bytes {
        match self {
            Chunk::Merged(b) => b.split_to(n).freeze(),
            Chunk::Kept(b) => b.split_to(n),
        }
    }
}

impl ByteQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a copy of `data`, merged into the last chunk when both are small.
    pub(crate) fn push_slice(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if let Some(Chunk::Merged(back)) = self.chunks.back_mut()
            && back.len() + data.len() <= MERGE_BELOW
        {
            back.extend_from_slice(data);
            return;
        }
        self.chunks.push_back(Chunk::Merged(BytesMut::from(data)));
    }

    /// Appends `data`: a large chunk as it is, without a copy (it may share the
    /// transport's packet: it holds no more than that packet); a small one is
    /// merged.
    pub(crate) fn push_bytes(&mut self, data: Bytes) {
        if data.len() < MERGE_BELOW {
            return self.push_slice(&data);
        }
        self.len += data.len();
        self.chunks.push_back(Chunk::Kept(data));
    }

    pub(crate) fn clear(&mut self) {
        self.chunks = VecDeque::new();
        self.len = 0;
    }

    /// Copies up to `dst.len()` bytes out; returns how many.
    pub(crate) fn copy_out(&mut self, dst: &mut [u8]) -> usize {
        let mut n = 0;
        while n < dst.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let take = front.len().min(dst.len() - n);
            dst[n..n + take].copy_from_slice(&front.bytes()[..take]);
            front.advance(take);
            n += take;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.len -= n;
        if self.chunks.is_empty() {
            // Give the ring's memory back when idle: idle channels must stay small.
            self.chunks = VecDeque::new();
        }
        n
    }

    /// Takes up to `max` bytes out of the first chunk, without copying.
    pub(crate) fn take_front(&mut self, max: usize) -> Bytes {
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        let b = front.split_to(front.len().min(max));
        if front.is_empty() {
            self.chunks.pop_front();
        }
        self.len -= b.len();
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        b
    }

    /// The first four bytes as a big-endian u32, if buffered.
    pub(crate) fn peek_u32(&self) -> Option<u32> {
        if self.len < 4 {
            return None;
        }
        let mut b = [0u8; 4];
        let mut i = 0;
        for c in &self.chunks {
            for &x in c.bytes() {
                b[i] = x;
                i += 1;
                if i == 4 {
                    return Some(u32::from_be_bytes(b));
                }
            }
        }
        None
    }

    /// Removes `n` bytes (at most `len`) and returns them, without copying when they
    /// lie in one chunk.
    pub(crate) fn take(&mut self, n: usize) -> Bytes {
        let n = n.min(self.len);
        let Some(front) = self.chunks.front_mut() else {
            return Bytes::new();
        };
        let out = if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            out
        } else {
            let mut out = BytesMut::with_capacity(n);
            while out.len() < n {
                let Some(front) = self.chunks.front_mut() else {
                    break;
                };
                let take = front.len().min(n - out.len());
                out.extend_from_slice(&front.bytes()[..take]);
                front.advance(take);
                if front.is_empty() {
                    self.chunks.pop_front();
                }
            }
            out.freeze()
        };
        self.len -= out.len();
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        out
    }

    /// Moves up to `n` bytes onto the end of `dst`; returns how many.
    pub(crate) fn move_into(&mut self, dst: &mut BytesMut, n: usize) -> usize {
        let mut moved = 0;
        while moved < n {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let take = front.len().min(n - moved);
            dst.extend_from_slice(&front.bytes()[..take]);
            front.advance(take);
            moved += take;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        self.len -= moved;
        if self.chunks.is_empty() {
            self.chunks = VecDeque::new();
        }
        moved
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(parts: &[&'static [u8]]) -> ByteQueue {
        let mut q = ByteQueue::default();
        for p in parts {
            q.push_slice(p);
        }
        q
    }

    #[test]
    fn tiny_pushes_merge() {
        let mut q = ByteQueue::default();
        for _ in 0..10_000 {
            q.push_slice(b"x");
        }
        assert_eq!(q.len(), 10_000);
        assert_eq!(q.chunks.len(), 1);
        q.push_slice(&[0u8; 20_000]);
        assert_eq!(q.chunks.len(), 2);
    }

    #[test]
    fn take_spans_chunks() {
        let mut q = queue(&[b"ab", b"", b"cde", b"f"]);
        assert_eq!(q.len(), 6);
        assert_eq!(q.peek_u32(), Some(u32::from_be_bytes(*b"abcd")));
        assert_eq!(&q.take(1)[..], b"a");
        assert_eq!(&q.take(3)[..], b"bcd");
        let mut buf = [0u8; 8];
        assert_eq!(q.copy_out(&mut buf), 2);
        assert_eq!(&buf[..2], b"ef");
        assert!(q.is_empty());
        assert_eq!(q.peek_u32(), None);
    }

    #[test]
    fn move_into_is_bounded() {
        let mut q = queue(&[b"abc", b"def"]);
        let mut dst = BytesMut::new();
        assert_eq!(q.move_into(&mut dst, 4), 4);
        assert_eq!(&dst[..], b"abcd");
        assert_eq!(q.len(), 2);
    }
}
