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
/// kind, one of length and that many bytes. Panics if an invariant breaks.
///
/// Bytes for the control and error streams are mostly wrapped into well-formed
/// records and frames built from the fuzzer's bytes (kind, values, reason), so
/// that every record kind is reached; one op in eight sends them raw, which tests
/// the decoders and may leave a stream mid-record for the rest of the input.
pub fn channel_state(input: &[u8]) {
    const WINDOW: u32 = 64 * 1024;
    const MAX_FRAME: usize = 32 * 1024;
    let mut s = ChannelState::native(Config {
        window: WINDOW,
        max_window: 4 * WINDOW,
        max_frame: MAX_FRAME,
        send_buffer: 16 * 1024,
        max_trailer_bytes: 1024,
    });
    let _ = s.open_window();
    let mut rest = input;
    let mut buf = [0u8; 512];
    while let Some((&op, tail)) = rest.split_first() {
        // A length byte, then that many bytes (the length is not part of the chunk).
        let Some((&len, body)) = tail.split_first() else {
            break;
        };
        let (chunk, next) = body.split_at(usize::from(len).min(body.len()));
        rest = next;
        let raw = op & 0xe0 == 0xe0;
        let _ = match op % 12 {
            0 => s.on_data(Bytes::copy_from_slice(chunk)),
            1 if raw => s.on_extended(EXT_ERROR, chunk),
            1 => s.on_extended(EXT_ERROR, &framed(chunk)),
            2 if raw => s.on_extended(EXT_CONTROL, chunk),
            2 => s.on_extended(EXT_CONTROL, &control_record(chunk)),
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
        // Nothing buffered beyond the largest window plus one frame (its header too).
        assert!(
            s.buffered() <= (4 * WINDOW) as usize + MAX_FRAME + 4,
            "buffered {} over the window and one frame",
            s.buffered()
        );
        assert!(
            s.send_buffered() <= 16 * 1024 + MAX_FRAME + 4,
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

/// `chunk` as one frame: its length, then its bytes.
fn framed(chunk: &[u8]) -> Vec<u8> {
    let mut out = (chunk.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(chunk);
    out
}

/// A well-formed control record made from the fuzzer's bytes: the first picks
/// the kind (an unknown one too), the rest the values.
fn control_record(chunk: &[u8]) -> Vec<u8> {
    use crate::wire::control::Control;
    let (&pick, rest) = chunk.split_first().unwrap_or((&0, &[]));
    let number = |b: &[u8]| {
        let mut n = [0u8; 4];
        for (d, s) in n.iter_mut().zip(b) {
            *d = *s;
        }
        u32::from_be_bytes(n)
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let record = match pick % 6 {
        0 => Control::Credit(number(rest)),
        1 => Control::Trailers(rest.chunks(8).map(text).collect()),
        2 => Control::Fin,
        3 => Control::FinAck,
        4 => Control::Reset {
            code: number(rest) % 9,
            reason: text(rest.get(4..).unwrap_or_default()),
        },
        _ => {
            // A kind this version does not know, with a body to skip.
            let mut out = ((rest.len() + 1) as u32).to_be_bytes().to_vec();
            out.push(0x40 | (pick & 0x3f));
            out.extend_from_slice(rest);
            return out;
        }
    };
    let mut out = bytes::BytesMut::new();
    record.encode(&mut out);
    out.to_vec()
}

thread_local! {
    static REACHED: std::cell::Cell<[u64; 6]> = const { std::cell::Cell::new([0; 6]) };
}

/// Called by the channel state for every control record it acts on, so that a
/// run can show which kinds the fuzzing reached.
pub(crate) fn reached(rec: &crate::wire::control::Control) {
    use crate::wire::control::Control;
    let i = match rec {
        Control::Credit(_) => 0,
        Control::Trailers(_) => 1,
        Control::Fin => 2,
        Control::FinAck => 3,
        Control::Reset { .. } => 4,
        Control::Unknown(_) => 5,
    };
    REACHED.with(|r| {
        let mut counts = r.get();
        counts[i] += 1;
        r.set(counts);
    });
}

/// How many control records of each kind this thread's channel states acted on
/// since the last call, as (name, count): CREDIT, TRAILERS, FIN, FIN_ACK, RESET
/// and unknown kinds.
pub fn take_control_records_reached() -> [(&'static str, u64); 6] {
    let counts = REACHED.with(|r| r.replace([0; 6]));
    let names = ["CREDIT", "TRAILERS", "FIN", "FIN_ACK", "RESET", "unknown"];
    std::array::from_fn(|i| (names[i], counts[i]))
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

#[cfg(test)]
mod reach {
    /// The channel-state target reaches every kind of control record: a short run
    /// on seeded random inputs, with the count per kind printed.
    #[test]
    fn the_channel_state_target_reaches_every_control_record() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let _ = super::take_control_records_reached();
        for _ in 0..2_000 {
            let len = 16 + (next() % 512) as usize;
            let input: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::channel_state(&input);
        }
        let counts = super::take_control_records_reached();
        eprintln!("control records reached in 2,000 inputs: {counts:?}");
        for (name, n) in counts {
            assert!(n > 0, "no {name} record reached: {counts:?}");
        }
    }
}
