//! Entry points for the fuzz targets in `fuzz/` (every parser of untrusted bytes that
//! is not already public) and for the micro-benchmarks in `benches/`. Not part of
//! the API.

use bytes::Bytes;

use crate::channel::{ChannelState, Config, Step, Transmit, Wake};
use crate::error::ChannelError;
use crate::wire::{EXT_CONTROL, EXT_ERROR};

/// Parses `authorized_keys` text.
pub fn authorized_keys(text: &str) -> usize {
    crate::trust::Trust::new()
        .with_authorized_keys(text)
        .map_or(0, |_| 1)
}

/// Parses `known_hosts` text.
pub fn known_hosts(text: &str) -> usize {
    crate::trust::Trust::new()
        .with_known_hosts(text)
        .map_or(0, |_| 1)
}

/// Drives one channel's state machine with hostile input: each op is one byte of
/// kind and a run of bytes. Panics if an invariant breaks.
pub fn channel_state(input: &[u8]) {
    const WINDOW: u32 = 64 * 1024;
    let mut s = ChannelState::native(Config {
        window: WINDOW,
        max_window: 4 * WINDOW,
        max_frame: 32 * 1024,
        send_buffer: 16 * 1024,
        max_trailer_bytes: 1024,
    });
    let _ = s.open_window();
    let mut rest = input;
    let mut buf = [0u8; 512];
    while let Some((&op, tail)) = rest.split_first() {
        // A length byte, then that many bytes (the length is not part of the chunk,
        // so a control or error stream can start with any byte).
        let Some((&len, body)) = tail.split_first() else {
            break;
        };
        let (chunk, next) = body.split_at(usize::from(len).min(body.len()));
        rest = next;
        let _ = match op % 12 {
            0 => s.on_data(Bytes::copy_from_slice(chunk)),
            1 => s.on_extended(EXT_ERROR, chunk),
            2 => s.on_extended(EXT_CONTROL, chunk),
            3 => s.on_extended(u32::from(op), chunk),
            4 => s.read(&mut buf).1,
            5 => s.read_frame().1,
            6 => s.read_error().1,
            7 => s.write(chunk).1,
            8 => s.write_frame(chunk, op & 0x80 != 0).1,
            9 => s.close_write().1,
            10 => s.poll_transmit(1024).1,
            _ => match op % 5 {
                0 => s.on_close(),
                4 if op & 0x40 != 0 => {
                    s.on_connection_lost(&ChannelError::ConnectionLost("fuzzed".into()))
                }
                1 => s.reset(),
                2 => s.on_eof(),
                3 => s.close().1,
                _ => s.reader_dropped(),
            },
        };
        assert!(
            s.buffered() <= 4 * WINDOW as usize,
            "buffered {} over the largest window",
            s.buffered()
        );
        assert!(
            s.send_buffered() <= 16 * 1024 + 32 * 1024 + 4,
            "send buffer over its bound"
        );
        if let (Step::Ready(n), _) = s.read(&mut [0u8; 0]) {
            assert_eq!(n, 0);
        }
    }
    // Whatever happened, draining the transmit side terminates.
    for _ in 0..100_000 {
        if s.poll_transmit(1024).0.is_none() {
            return;
        }
    }
    panic!("poll_transmit never ran dry");
}

/// Moves `count` frames of `size` bytes from one channel state machine to another,
/// as a connection would (write, transmit in packets of up to 64 KiB, receive, read),
/// with no I/O; returns the payload bytes read. The micro-benchmarks time it.
pub fn frames_through_states(count: usize, size: usize) -> usize {
    let cfg = Config {
        window: 1024 * 1024,
        max_window: 8 * 1024 * 1024,
        max_frame: 16 * 1024 * 1024,
        send_buffer: 256 * 1024,
        max_trailer_bytes: 16 * 1024,
    };
    let mut tx = ChannelState::native(cfg.clone());
    let mut rx = ChannelState::native(cfg);
    let _ = tx.open_window();
    let _ = rx.open_window();
    let payload = vec![7u8; size];
    let (mut sent, mut read) = (0, 0);
    while read < count * size {
        while sent < count && matches!(tx.write_frame(&payload, false).0, Step::Ready(())) {
            sent += 1;
        }
        // One direction carries data, the other credit.
        deliver(&mut tx, &mut rx);
        deliver(&mut rx, &mut tx);
        while let (Step::Ready(Some(f)), _) = rx.read_frame() {
            read += f.len();
        }
    }
    read
}

/// Hands everything `from` has to send to `to`.
fn deliver(from: &mut ChannelState, to: &mut ChannelState) {
    while let (Some(t), _) = from.poll_transmit(64 * 1024) {
        let _ = match t {
            Transmit::Data(b) => to.on_data(b),
            Transmit::Control(b) => to.on_extended(EXT_CONTROL, &b),
            _ => Wake::default(),
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn entry_points_take_garbage() {
        super::channel_state(&[0, 5, 1, 2, 3, 4, 5, 2, 3, 0, 0, 0, 9, 3, 9, 10, 11, 0]);
        assert_eq!(super::authorized_keys("garbage"), 0);
        assert_eq!(super::known_hosts("@revoked"), 0);
    }

    #[test]
    fn frames_through_states_arrive_whole() {
        assert_eq!(super::frames_through_states(10_000, 64), 640_000);
        // Frames far larger than a packet and than the window.
        assert_eq!(super::frames_through_states(3, 3 << 20), 9 << 20);
    }
}
