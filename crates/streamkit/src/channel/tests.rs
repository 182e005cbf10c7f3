//! Two channel states wired back to back, with no sockets: each test reads like a
//! conversation between the two ends.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::wire::control::{Control, ControlDecoder};
use crate::wire::reason::ResetCode;
use crate::wire::{EXT_CONTROL, EXT_ERROR, INITIAL_CREDIT};

const WINDOW: u32 = 256 * 1024;

fn cfg() -> Config {
    Config {
        window: WINDOW,
        max_window: WINDOW,
        max_frame: 1024 * 1024,
        send_buffer: 128 * 1024,
        max_trailer_bytes: 1024,
    }
}

/// Both ends of one channel, and what is in flight between them.
struct Pair {
    a: ChannelState,
    b: ChannelState,
    /// Largest chunk the "transport" takes at once.
    mtu: usize,
}

#[derive(Clone, Copy, Debug)]
enum Side {
    A,
    B,
}

impl Pair {
    fn new() -> Pair {
        Pair::with(cfg())
    }

    fn with(cfg: Config) -> Pair {
        let mut a = ChannelState::native(cfg.clone());
        let mut b = ChannelState::native(cfg);
        let _ = a.open_window();
        let _ = b.open_window();
        Pair {
            a,
            b,
            mtu: 32 * 1024,
        }
    }

    fn side(&mut self, s: Side) -> (&mut ChannelState, &mut ChannelState) {
        match s {
            Side::A => (&mut self.a, &mut self.b),
            Side::B => (&mut self.b, &mut self.a),
        }
    }

    /// Moves one transmit from `from` to the other end; false if there was none.
    fn step(&mut self, from: Side) -> bool {
        let mtu = self.mtu;
        let (src, dst) = self.side(from);
        let (t, _) = src.poll_transmit(mtu);
        let Some(t) = t else { return false };
        let _ = match t {
            Transmit::Data(b) => dst.on_data(b),
            Transmit::Error(b) => dst.on_extended(EXT_ERROR, &b),
            Transmit::Control(b) => dst.on_extended(EXT_CONTROL, &b),
            Transmit::Close { .. } => dst.on_close(),
            Transmit::Eof { .. } => dst.on_eof(),
            Transmit::WindowAdjust(_) => Wake::default(),
        };
        true
    }

    /// Runs the transport until neither side has anything to send.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            let moved = self.step(Side::A) | self.step(Side::B);
            if !moved {
                assert!(!self.a.wants_transmit() && !self.b.wants_transmit());
                return;
            }
        }
        panic!("transport never settled");
    }
}

fn read_all(s: &mut ChannelState) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).0 {
            Step::Ready(0) | Step::Pending => return out,
            Step::Ready(n) => out.extend_from_slice(&buf[..n]),
            Step::Failed(e) => panic!("read failed: {e}"),
        }
    }
}

fn write_all(p: &mut Pair, from: Side, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        let (src, _) = p.side(from);
        match src.write(&data[off..]).0 {
            Step::Ready(n) => off += n,
            Step::Pending => {
                p.settle();
            }
            Step::Failed(e) => panic!("write failed: {e}"),
        }
    }
}

#[test]
fn bytes_flow_both_ways_and_close_cleanly() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, b"hello");
    write_all(&mut p, Side::B, b"world");
    p.settle();
    assert_eq!(read_all(&mut p.b), b"hello");
    assert_eq!(read_all(&mut p.a), b"world");

    assert_eq!(p.a.close_write().0, Step::Pending);
    p.settle();
    assert_eq!(p.a.close_write().0, Step::Ready(()), "FIN acknowledged");
    assert_eq!(p.b.read(&mut [0u8; 8]).0, Step::Ready(0), "EOF");
    // The reverse direction still works after the half-close.
    write_all(&mut p, Side::B, b"more");
    p.settle();
    assert_eq!(read_all(&mut p.a), b"more");
    assert!(!p.a.is_closed());

    assert_eq!(p.b.close_write().0, Step::Pending);
    p.settle();
    assert_eq!(p.b.close_write().0, Step::Ready(()));
    assert!(p.a.is_closed() && p.b.is_closed());
    assert_eq!(p.a.read(&mut [0u8; 8]).0, Step::Ready(0));
}

#[test]
fn a_stalled_reader_bounds_what_is_buffered() {
    let mut p = Pair::new();
    let chunk = vec![7u8; 64 * 1024];
    // A writes far more than the window; B never reads.
    let mut written = 0usize;
    for _ in 0..200 {
        if let Step::Ready(n) = p.a.write(&chunk).0 {
            written += n;
        }
        p.settle();
    }
    // A window grows only for a reader that reads: the receiver holds the initial
    // credit, the sender's buffer one send buffer; no more.
    assert_eq!(written, INITIAL_CREDIT as usize + cfg().send_buffer);
    assert_eq!(p.b.buffered(), INITIAL_CREDIT as usize);
    assert_eq!(p.a.write(&chunk).0, Step::Pending, "writer is held back");
    // Reading drains and the writer resumes.
    let got = read_all(&mut p.b);
    assert!(!got.is_empty());
    p.settle();
    assert!(matches!(p.a.write(&chunk).0, Step::Ready(_)));
}

/// Writes 64 KiB chunks from A until A's writes wait, without B reading; returns
/// what B then holds.
fn fill_until_held(p: &mut Pair) -> usize {
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..10_000 {
        let step = p.a.write(&chunk).0;
        p.settle();
        if step == Step::Pending {
            return p.b.buffered();
        }
    }
    panic!("the writer was never held back");
}

#[test]
fn the_window_grows_while_the_reader_keeps_up_and_never_past_its_ceiling() {
    let max = 4 * WINDOW;
    let grows = Config {
        max_window: max,
        ..cfg()
    };
    // A reader that never read: no growth, the initial credit buffered.
    let mut p = Pair::with(grows.clone());
    assert_eq!(fill_until_held(&mut p), INITIAL_CREDIT as usize);

    // A reader that keeps up: the window doubles up to its ceiling, and once the
    // reader stops, what it holds is bounded by the ceiling.
    let mut p = Pair::with(grows);
    let chunk = vec![7u8; 64 * 1024];
    for _ in 0..200 {
        let _ = p.a.write(&chunk);
        p.settle();
        let _ = read_all(&mut p.b);
        p.settle();
    }
    // It holds what the last grant allowed: more than half the ceiling (so the window
    // reached the ceiling; the start was a quarter of it), never more than all of it.
    let held = fill_until_held(&mut p);
    assert!(
        held > max as usize / 2 && held <= max as usize,
        "held {held}, window {WINDOW}, ceiling {max}"
    );
}

#[test]
fn exceeding_credit_is_a_protocol_violation() {
    let mut b = ChannelState::native(cfg());
    let big = vec![0u8; INITIAL_CREDIT as usize + 1];
    let _ = b.on_data(Bytes::copy_from_slice(&big));
    assert!(matches!(
        b.read(&mut [0u8; 4]).0,
        Step::Failed(ChannelError::Protocol(_))
    ));
    // It tells the peer why.
    let (t, _) = b.poll_transmit(1024);
    let Some(Transmit::Control(rec)) = t else {
        panic!("{t:?}")
    };
    let mut out = Vec::new();
    ControlDecoder::new(4096).push(&rec, &mut out).unwrap();
    assert!(matches!(out[0], Control::Reset { code: 3, .. }), "{out:?}");
    assert_eq!(b.poll_transmit(1024).0, Some(Transmit::Close { eof: true }));
}

#[test]
fn frames_of_every_size_arrive_whole() {
    let mut p = Pair::new();
    let sizes = [0usize, 1, 4, 100, 70_000, 600_000];
    let mut got = Vec::new();
    // The reader reads whenever the writer waits: frames larger than the window
    // arrive whole all the same.
    let read = |p: &mut Pair, got: &mut Vec<Bytes>| -> bool {
        p.settle();
        match p.b.read_frame().0 {
            Step::Ready(Some(f)) => got.push(f),
            Step::Ready(None) => return true,
            Step::Pending => {}
            Step::Failed(e) => panic!("{e}"),
        }
        false
    };
    for (i, &n) in sizes.iter().enumerate() {
        let payload = vec![i as u8; n];
        loop {
            match p.a.write_frame(&payload, false).0 {
                Step::Ready(()) => break,
                Step::Pending => {
                    read(&mut p, &mut got);
                }
                Step::Failed(e) => panic!("{e}"),
            }
        }
    }
    let _ = p.a.close_write();
    while !read(&mut p, &mut got) {}
    assert_eq!(got.len(), sizes.len());
    for (i, (f, &n)) in got.iter().zip(&sizes).enumerate() {
        assert_eq!(f.len(), n);
        assert!(f.iter().all(|&x| x == i as u8));
    }
}

#[test]
fn oversize_frame_fails_the_channel_without_allocating() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, &u32::MAX.to_be_bytes());
    p.settle();
    let (step, _) = p.b.read_frame();
    assert!(
        matches!(step, Step::Failed(ChannelError::FrameTooLarge { len, .. }) if len == u64::from(u32::MAX))
    );
    assert!(p.b.buffered() < 64);
    p.settle();
    // The writer learns why.
    let (step, _) = p.a.write(b"x");
    assert!(
        matches!(
            step,
            Step::Failed(ChannelError::ResetByPeer {
                code: ResetCode::FrameTooLarge,
                ..
            })
        ),
        "{step:?}"
    );
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn truncated_frame_at_end_of_stream_is_an_error() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, &[0, 0, 0, 10, 1, 2]);
    let _ = p.a.close_write();
    p.settle();
    assert_eq!(
        p.b.read_frame().0,
        Step::Failed(ChannelError::TruncatedFrame)
    );
}

#[test]
fn errors_written_before_the_end_are_seen_after_it() {
    let mut p = Pair::new();
    let _ = p.a.write_frame(b"data-1", false);
    let _ = p.a.write_frame(b"oops", true);
    let _ = p.a.write_frame(b"data-2", false);
    let _ = p.a.write_frame(b"second error", true);
    let _ = p.a.close_write();
    p.settle();
    assert_eq!(
        p.b.read_frame().0,
        Step::Ready(Some(Bytes::from_static(b"data-1")))
    );
    assert_eq!(
        p.b.read_frame().0,
        Step::Ready(Some(Bytes::from_static(b"data-2")))
    );
    assert_eq!(p.b.read_frame().0, Step::Ready(None));
    assert_eq!(
        p.b.read_error().0,
        Step::Ready(Some(Bytes::from_static(b"oops")))
    );
    assert_eq!(
        p.b.read_error().0,
        Step::Ready(Some(Bytes::from_static(b"second error")))
    );
    assert_eq!(p.b.read_error().0, Step::Ready(None));
}

#[test]
fn unread_errors_do_not_stall_the_data() {
    let mut p = Pair::new();
    // 40 KiB of errors the reader never looks at, then 1 MiB of data it does read.
    for _ in 0..40 {
        let _ = p.a.write_frame(&[b'e'; 1020], true);
    }
    let data = vec![1u8; 1 << 20];
    let mut off = 0;
    let mut got = 0;
    while got < data.len() {
        if off < data.len()
            && let Step::Ready(n) = p.a.write(&data[off..]).0
        {
            off += n;
        }
        p.settle();
        got += read_all(&mut p.b).len();
    }
    assert_eq!(got, data.len());
}

#[test]
fn trailers_are_visible_at_end_of_stream() {
    let mut p = Pair::new();
    let _ = p.a.write(b"body");
    let _ =
        p.a.write_trailers(vec!["exit-status=3".into(), "a,b=c\nd".into()]);
    p.settle();
    assert_eq!(p.b.trailers(), None, "not before the end of stream");
    let _ = p.a.close_write();
    p.settle();
    assert_eq!(p.b.trailers().unwrap(), ["exit-status=3", "a,b=c\nd"]);
    assert_eq!(read_all(&mut p.b), b"body");
}

#[test]
fn trailers_over_the_limit_are_refused_locally() {
    let mut p = Pair::new();
    let (step, _) = p.a.write_trailers(vec!["x".repeat(2000)]);
    assert!(matches!(
        step,
        Step::Failed(ChannelError::TrailersTooLarge { .. })
    ));
}

#[test]
fn reset_is_an_error_not_eof_on_both_sides() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, b"partial");
    p.settle();
    let _ = p.a.reset();
    p.settle();
    assert!(matches!(
        p.b.read(&mut [0u8; 16]).0,
        Step::Failed(ChannelError::ResetByPeer {
            code: ResetCode::Cancelled,
            ..
        })
    ));
    assert!(matches!(
        p.b.write(b"x").0,
        Step::Failed(ChannelError::ResetByPeer { .. })
    ));
    assert_eq!(
        p.a.read(&mut [0u8; 16]).0,
        Step::Failed(ChannelError::ResetLocally)
    );
    assert_eq!(p.a.write(b"x").0, Step::Failed(ChannelError::ResetLocally));
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn a_parent_with_children_stays_open_after_both_fins() {
    let mut p = Pair::new();
    let _ = p.a.set_has_children(true);
    let _ = p.b.set_has_children(true);
    let _ = p.a.close_write();
    let _ = p.b.close_write();
    p.settle();
    assert_eq!(p.a.close_write().0, Step::Ready(()));
    assert!(
        !p.a.is_closed() && !p.b.is_closed(),
        "held open by children"
    );
    assert!(p.a.accepts_children() && p.b.accepts_children());
    // The last child closes on each side: now the SSH channel closes.
    let _ = p.a.set_has_children(false);
    let _ = p.b.set_has_children(false);
    p.settle();
    assert!(p.a.is_closed() && p.b.is_closed());
    assert!(!p.a.accepts_children());
}

#[test]
fn an_explicit_close_is_not_held_by_children() {
    let mut p = Pair::new();
    let _ = p.a.set_has_children(true);
    let _ = p.b.set_has_children(true);
    let _ = p.a.close();
    let _ = p.b.close_write();
    p.settle();
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn a_closed_parent_resets_its_child_on_both_ends() {
    let mut p = Pair::new();
    write_all(&mut p, Side::B, b"unread");
    p.settle();
    let _ = p.a.on_parent_closed();
    p.settle();
    assert_eq!(
        p.a.read(&mut [0u8; 8]).0,
        Step::Failed(ChannelError::ParentClosed)
    );
    assert_eq!(p.b.write(b"x").0, Step::Failed(ChannelError::ParentClosed));
    assert!(p.a.has_failed() && p.b.has_failed());
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn close_with_unfinished_peer_stops_its_writes_but_keeps_its_reads() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, b"request");
    let (step, _) = p.a.close();
    assert_eq!(step, Step::Pending);
    p.settle();
    assert_eq!(p.a.close().0, Step::Ready(()));
    // B got everything and a clean EOF...
    assert_eq!(read_all(&mut p.b), b"request");
    assert_eq!(p.b.read(&mut [0u8; 4]).0, Step::Ready(0));
    // ...but may not write any more.
    assert_eq!(
        p.b.write(b"late").0,
        Step::Failed(ChannelError::ClosedByPeer)
    );
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn peer_closing_first_is_clean_for_a_side_that_never_wrote() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, b"reply");
    let (step, _) = p.a.close();
    assert_eq!(step, Step::Pending);
    p.settle();
    assert_eq!(p.a.close().0, Step::Ready(()));
    assert_eq!(read_all(&mut p.b), b"reply");
    // B wrote nothing, so A stopping it lost nothing: B's own close is clean.
    assert_eq!(p.b.close().0, Step::Ready(()));
    p.settle();
    assert!(p.a.is_closed() && p.b.is_closed());
}

#[test]
fn peer_closing_first_fails_the_close_of_a_side_that_wrote() {
    let mut p = Pair::new();
    write_all(&mut p, Side::B, b"unread");
    let (step, _) = p.a.close();
    assert_eq!(step, Step::Pending);
    p.settle();
    assert_eq!(p.a.close().0, Step::Ready(()));
    // A closed without reading what B sent: B cannot know it arrived.
    assert_eq!(p.b.close().0, Step::Failed(ChannelError::ClosedByPeer));
}

#[test]
fn dropped_reader_keeps_crediting() {
    let mut p = Pair::new();
    let _ = p.b.reader_dropped();
    let data = vec![9u8; 4 * WINDOW as usize];
    write_all(&mut p, Side::A, &data);
    p.settle();
    assert_eq!(p.b.buffered(), 0);
}

#[test]
fn connection_loss_fails_reads_after_buffered_data() {
    let mut p = Pair::new();
    write_all(&mut p, Side::A, b"last words");
    p.settle();
    let _ =
        p.b.on_connection_lost(&ChannelError::ConnectionLost("peer vanished".into()));
    assert_eq!(read_all_until_err(&mut p.b), b"last words");
    assert!(matches!(
        p.b.write(b"x").0,
        Step::Failed(ChannelError::ConnectionLost(_))
    ));
}

fn read_all_until_err(s: &mut ChannelState) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).0 {
            Step::Ready(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            Step::Failed(ChannelError::ConnectionLost(_)) => return out,
            other => panic!("expected data then connection lost, got {other:?}"),
        }
    }
}

#[test]
fn close_without_fin_is_a_reset() {
    let mut b = ChannelState::native(cfg());
    let _ = b.on_data(Bytes::from_static(b"abc"));
    let _ = b.on_close();
    assert!(matches!(
        b.read(&mut [0u8; 8]).0,
        Step::Failed(ChannelError::ResetByPeer { .. })
    ));
    assert!(b.is_closed());
}

#[test]
fn protocol_violations_reset_the_channel() {
    // Each sequence of control records breaks the protocol.
    let cases: Vec<Vec<Control>> = vec![
        vec![Control::Fin, Control::Fin],
        vec![Control::FinAck],
        vec![Control::Fin, Control::Trailers(vec!["late".into()])],
    ];
    for recs in cases {
        let mut b = ChannelState::native(cfg());
        let mut wire = BytesMut::new();
        for r in &recs {
            r.encode(&mut wire);
        }
        let _ = b.on_extended(EXT_CONTROL, &wire);
        assert!(
            matches!(b.write(b"x").0, Step::Failed(ChannelError::Protocol(_))),
            "{recs:?}"
        );
    }
    // Data after FIN.
    let mut b = ChannelState::native(cfg());
    let mut wire = BytesMut::new();
    Control::Fin.encode(&mut wire);
    let _ = b.on_extended(EXT_CONTROL, &wire);
    let _ = b.on_data(Bytes::from_static(b"late"));
    assert!(matches!(
        b.write(b"x").0,
        Step::Failed(ChannelError::Protocol(_))
    ));
}

proptest::proptest! {
    /// Whatever the chunking of the transport, bytes and frames arrive intact and in order.
    #[test]
    fn any_mtu_delivers_in_order(
        mtu in 1usize..70_000,
        frames in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..3000), 1..20),
    ) {
        let mut p = Pair::new();
        p.mtu = mtu;
        for f in &frames {
            loop {
                match p.a.write_frame(f, false).0 {
                    Step::Ready(()) => break,
                    Step::Pending => p.settle(),
                    Step::Failed(e) => panic!("{e}"),
                }
            }
        }
        let _ = p.a.close_write();
        p.settle();
        for f in &frames {
            let got = p.b.read_frame().0;
            proptest::prop_assert_eq!(got, Step::Ready(Some(Bytes::copy_from_slice(f))));
        }
        proptest::prop_assert_eq!(p.b.read_frame().0, Step::Ready(None));
    }

    /// Arbitrary bytes on any stream never panic and never grow the buffers past the window.
    #[test]
    fn hostile_input_is_bounded(input in proptest::collection::vec((0u32..4, proptest::collection::vec(proptest::num::u8::ANY, 0..2000)), 0..50)) {
        let mut b = ChannelState::native(cfg());
        for (kind, bytes) in input {
            let _ = match kind {
                0 => b.on_data(Bytes::copy_from_slice(&bytes)),
                1 => b.on_extended(EXT_ERROR, &bytes),
                2 => b.on_extended(EXT_CONTROL, &bytes),
                _ => b.on_extended(99, &bytes),
            };
            let _ = b.poll_transmit(1024);
            proptest::prop_assert!(b.buffered() <= WINDOW as usize);
        }
    }
}

#[test]
fn compat_channels_speak_plain_ssh() {
    // A session channel with a standard client: 128 KiB of SSH window advertised
    // (more is granted only as the application reads).
    let mut s = ChannelState::compat(cfg(), 128 * 1024, true);
    let _ = s.open_window();
    let _ = s.write(b"out");
    let _ = s.write_frame(b"plain stderr", true);
    let _ = s.write_trailers(vec!["exit-status=5".into(), "other=dropped".into()]);
    let _ = s.close_write();
    let mut sent = Vec::new();
    while let (Some(t), _) = s.poll_transmit(1024) {
        sent.push(t);
    }
    assert_eq!(
        sent,
        [
            Transmit::Data(Bytes::from_static(b"out")),
            Transmit::Error(Bytes::from_static(b"plain stderr")),
            Transmit::Eof {
                exit_status: Some(5)
            },
        ],
        "no length prefixes, no control records"
    );
    assert_eq!(
        s.close_write().0,
        Step::Ready(()),
        "no acknowledgement to wait for"
    );
    // The client's data, its stderr as error frames, and its EOF as end of stream.
    let _ = s.on_data(Bytes::from_static(b"in"));
    let _ = s.on_extended(EXT_ERROR, b"client stderr");
    let _ = s.on_eof();
    assert_eq!(read_all(&mut s), b"in");
    assert_eq!(
        s.read_error().0,
        Step::Ready(Some(Bytes::from_static(b"client stderr")))
    );
    assert_eq!(s.read_error().0, Step::Ready(None));
    // Both ends finished: the channel closes, without a second EOF.
    assert_eq!(
        s.poll_transmit(1024).0,
        Some(Transmit::Close { eof: false })
    );
}

#[test]
fn compat_flow_control_is_the_ssh_window() {
    let mut s = ChannelState::compat(cfg(), WINDOW, false);
    let _ = s.open_window();
    let chunk = vec![0u8; 64 * 1024];
    for _ in 0..4 {
        let _ = s.on_data(Bytes::copy_from_slice(&chunk));
    }
    // Nothing is granted while the reader holds the window...
    assert_eq!(s.poll_transmit(1024).0, None);
    // ...reading reopens it, as SSH window adjustments.
    let got = read_all(&mut s);
    assert_eq!(got.len(), WINDOW as usize);
    assert_eq!(
        s.poll_transmit(1024).0,
        Some(Transmit::WindowAdjust(WINDOW))
    );
    // A client that ignores the window gets the channel closed.
    let mut s = ChannelState::compat(cfg(), 1024, false);
    let _ = s.on_data(Bytes::from(vec![0u8; 2048]));
    assert!(matches!(
        s.read(&mut [0u8; 8]).0,
        Step::Failed(ChannelError::Protocol(_))
    ));
    // Closed without an EOF: the client must not take it for a clean end.
    assert_eq!(
        s.poll_transmit(1024).0,
        Some(Transmit::Close { eof: false })
    );
}

#[test]
fn a_frame_larger_than_the_budget_allows_waits_for_room_then_completes() {
    let mut p = Pair::new();
    // The connection lets B hold 128 KiB in all: credit outstanding plus bytes held.
    p.b.set_allowance(128 * 1024);
    let payload = vec![5u8; 512 * 1024];
    let mut sent = false;
    for _ in 0..100 {
        if !sent && p.a.write_frame(&payload, true).0 == Step::Ready(()) {
            sent = true;
        }
        p.settle();
    }
    // Part of the error frame is in; the rest waits for credit the budget cut short.
    assert!(p.b.charge() <= 128 * 1024, "charged {}", p.b.charge());
    assert!(p.b.held_back());
    assert_eq!(p.b.read_error().0, Step::Pending);
    // The budget has room again (the connection retries the grant): it completes.
    p.b.set_allowance(u64::MAX);
    let _ = p.b.regrant();
    for _ in 0..100 {
        if !sent && p.a.write_frame(&payload, true).0 == Step::Ready(()) {
            sent = true;
        }
        p.settle();
    }
    assert!(sent);
    assert_eq!(
        p.b.read_error().0,
        Step::Ready(Some(Bytes::from(payload.clone())))
    );
    assert_eq!(p.b.read_error().0, Step::Pending, "exactly one frame");
}
