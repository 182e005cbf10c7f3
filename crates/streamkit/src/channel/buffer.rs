//! A queue of byte chunks that hands out copies or zero-copy slices.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Received bytes, in arrival order.
#[derive(Debug, Default)]
pub(crate) struct ByteQueue {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl ByteQueue {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.chunks.push_back(b);
        }
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
            dst[n..n + take].copy_from_slice(&front[..take]);
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

    /// The first four bytes as a big-endian u32, if buffered.
    pub(crate) fn peek_u32(&self) -> Option<u32> {
        if self.len < 4 {
            return None;
        }
        let mut b = [0u8; 4];
        let mut i = 0;
        for c in &self.chunks {
            for &x in c.iter() {
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
                out.extend_from_slice(&front[..take]);
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
            dst.extend_from_slice(&front[..take]);
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
            q.push(Bytes::from_static(p));
        }
        q
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
