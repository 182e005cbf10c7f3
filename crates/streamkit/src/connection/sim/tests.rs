//! Scenarios run over many seeds: each seed is one ordering of the two sides'
//! application steps and deliveries. A failing seed names itself:
//! `STREAMKIT_SIM_SEED=N cargo test -p streamkit --lib sim::` replays it alone.

use std::panic::{AssertUnwindSafe, catch_unwind};

use super::app::{App, Op, Record, pattern};
use super::{Side, Sim};
use crate::error::ChannelError;
use crate::wire::reason::OpenRefusal;

/// Seeds to run: all of `range`, or the one in `STREAMKIT_SIM_SEED`.
fn seeds(range: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("STREAMKIT_SIM_SEED") {
        Ok(s) => s.parse().map(|s| vec![s]).unwrap_or_default(),
        Err(_) => range.collect(),
    }
}

/// Runs `scenario` for every seed; a failure names its seed.
fn for_seeds(name: &str, range: std::ops::Range<u64>, scenario: impl Fn(u64)) {
    for seed in seeds(range) {
        let r = catch_unwind(AssertUnwindSafe(|| scenario(seed)));
        if let Err(e) = r {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!(
                "simulation {name} failed with seed {seed} (replay: STREAMKIT_SIM_SEED={seed}): {msg}"
            );
        }
    }
}

/// Runs to the end and checks that nothing is left in either table.
fn settle(sim: &mut Sim, max_steps: usize) {
    assert!(sim.run(max_steps), "not settled after {max_steps} steps");
    sim.check_empty();
}

fn record<'a>(app: &'a App, service: &str) -> Option<&'a Record> {
    app.records.iter().find(|r| r.service == service)
}

fn serve_echo(service: &str) -> Result<Vec<Op>, OpenRefusal> {
    match service {
        s if s.starts_with("echo") => {
            Ok(vec![Op::ReadAll, Op::WriteBack, Op::CloseWrite, Op::Close])
        }
        s if s.starts_with("both") => Ok(vec![
            Op::WriteAndRead(300_000),
            Op::CloseWrite,
            Op::ReadAll,
            Op::Close,
        ]),
        _ => Err(OpenRefusal::ServiceNotFound),
    }
}

/// Byte for byte both ways, several channels at once, windows filling and
/// emptying: every end gets exactly what the other wrote, every close succeeds.
#[test]
fn echoes_arrive_whole_in_every_order() {
    for_seeds("echo", 0..1000, |seed| {
        let mut a = App::new(|_| Err(OpenRefusal::ServiceNotFound));
        let sizes = [0usize, 1, 70_000, 300_000];
        for (i, n) in sizes.iter().enumerate() {
            a = a.open(
                &format!("echo{i}"),
                vec![
                    Op::Write(*n),
                    Op::WriteError(b"on the side"),
                    Op::Trailers("rows=3"),
                    Op::CloseWrite,
                    Op::ReadAll,
                    Op::Close,
                ],
            );
        }
        let mut sim = Sim::new(seed, a, App::new(serve_echo));
        settle(&mut sim, 200_000);
        for (i, n) in sizes.iter().enumerate() {
            let service = format!("echo{i}");
            let mine = record(sim.app(Side::A), &service).expect("opened").clone();
            assert!(mine.failures.is_empty(), "{service}: {:?}", mine.failures);
            assert_eq!(mine.close_write, Some(Ok(())), "{service}");
            assert_eq!(mine.close, Some(Ok(())), "{service}");
            assert!(mine.eof, "{service}");
            assert!(
                mine.received == pattern(mine.seed, 0, *n),
                "{service}: the echo came back different"
            );
            let theirs = record(sim.app(Side::B), &service)
                .expect("accepted")
                .clone();
            assert_eq!(
                theirs.trailers,
                Some(crate::channel::Headers::from(["rows=3"])),
                "{service}"
            );
        }
    });
}

/// Credit exhausted both ways at once on one channel: both ends write more than
/// the other's window while reading; everything arrives.
#[test]
fn credit_runs_out_both_ways_and_comes_back() {
    for_seeds("credit", 0..500, |seed| {
        let a = App::new(|_| Err(OpenRefusal::ServiceNotFound)).open(
            "both",
            vec![
                Op::WriteAndRead(300_000),
                Op::CloseWrite,
                Op::ReadAll,
                Op::Close,
            ],
        );
        let mut sim = Sim::new(seed, a, App::new(serve_echo));
        settle(&mut sim, 200_000);
        let mine = record(sim.app(Side::A), "both").expect("opened").clone();
        let theirs = record(sim.app(Side::B), "both").expect("accepted").clone();
        assert!(mine.failures.is_empty() && theirs.failures.is_empty());
        assert!(mine.received == pattern(theirs.seed, 0, 300_000));
        assert!(theirs.received == pattern(mine.seed, 0, 300_000));
    });
}

fn serve_chaos(service: &str) -> Result<Vec<Op>, OpenRefusal> {
    Ok(match service.as_bytes().last() {
        Some(b'0') => vec![Op::ReadAll, Op::Close],
        Some(b'1') => vec![Op::Reset],
        Some(b'2') => vec![Op::Drop],
        Some(b'3') => vec![Op::Close],
        Some(b'4') => vec![Op::ReadSome(10), Op::Drop],
        Some(b'5') => vec![Op::Write(50_000), Op::Close],
        _ => return Err(OpenRefusal::ServiceNotFound),
    })
}

/// Opens racing closes, resets and drops on both sides: nothing hangs, no
/// channel sees a protocol violation, and both tables end empty.
#[test]
fn opens_race_closes_and_resets() {
    for_seeds("chaos", 0..2000, |seed| {
        let mut rng = super::Rng::new(seed ^ 0xABCD);
        let mut a = App::new(|_| Err(OpenRefusal::ServiceNotFound));
        let scripts: [Vec<Op>; 5] = [
            vec![Op::Write(20_000), Op::Close],
            vec![Op::Reset],
            vec![Op::Drop],
            vec![Op::Write(5_000), Op::CloseWrite, Op::ReadAll, Op::Close],
            vec![Op::Close],
        ];
        for i in 0..8 {
            let service = format!("c{i}-{}", rng.below(7));
            a = a.open(&service, scripts[rng.below(scripts.len())].clone());
        }
        let mut sim = Sim::new(seed, a, App::new(serve_chaos));
        settle(&mut sim, 200_000);
        // An unknown service is refused; the others opened.
        let refused = sim
            .app(Side::A)
            .open_failures
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    crate::error::OpenErrorKind::Refused(OpenRefusal::ServiceNotFound)
                )
            })
            .count();
        let unknown = sim
            .app(Side::A)
            .records
            .iter()
            .filter(|r| r.service.ends_with('6'))
            .count();
        assert_eq!(refused, unknown);
    });
}

fn serve_dropper(service: &str) -> Result<Vec<Op>, OpenRefusal> {
    match service {
        "drop" => Ok(vec![Op::Drop]),
        "close" => Ok(vec![Op::Close]),
        _ => Err(OpenRefusal::ServiceNotFound),
    }
}

/// The remote drops (or closes) its end without reading more than a window of
/// what we write: `close` must not report success, whatever crossed on the wire.
#[test]
fn a_close_after_the_remote_dropped_unread_data_is_not_success() {
    for_seeds("dropped", 0..1000, |seed| {
        let a = App::new(|_| Err(OpenRefusal::ServiceNotFound))
            .open("drop", vec![Op::Write(1_000_000), Op::Close])
            .open("close", vec![Op::Write(1_000_000), Op::Close]);
        let mut sim = Sim::new(seed, a, App::new(serve_dropper));
        settle(&mut sim, 400_000);
        for service in ["drop", "close"] {
            let mine = record(sim.app(Side::A), service).expect("opened").clone();
            assert_ne!(
                mine.close,
                Some(Ok(())),
                "{service}: close succeeded though the remote read nothing"
            );
            let told = mine.close == Some(Err(ChannelError::ClosedByPeer))
                || mine.failures.contains(&ChannelError::ClosedByPeer);
            assert!(told, "{service}: {:?} {:?}", mine.close, mine.failures);
        }
    });
}

fn serve_parent(service: &str) -> Result<Vec<Op>, OpenRefusal> {
    match service {
        // Opens a child and closes the parent at once.
        "parent" => Ok(vec![
            Op::OpenChild(vec![Op::Write(1_000), Op::Close]),
            Op::Close,
        ]),
        // Accepts a child while the opener closes the parent.
        "host" => Ok(vec![
            Op::AcceptChild(vec![Op::ReadAll, Op::Close]),
            Op::Close,
        ]),
        _ => Err(OpenRefusal::ServiceNotFound),
    }
}

/// A nested open racing its parent's close, from either side: the child is
/// refused, reset or finished, and nothing is left behind.
#[test]
fn a_nested_open_races_its_parents_close() {
    for_seeds("nested", 0..2000, |seed| {
        let a = App::new(|_| Err(OpenRefusal::ServiceNotFound))
            .open(
                "parent",
                vec![Op::AcceptChild(vec![Op::ReadAll, Op::Close]), Op::Close],
            )
            .open(
                "host",
                vec![
                    Op::OpenChild(vec![Op::Write(1_000), Op::CloseWrite, Op::Close]),
                    Op::Close,
                ],
            );
        let mut sim = Sim::new(seed, a, App::new(serve_parent));
        settle(&mut sim, 100_000);
    });
}

/// A thousand channels opening when the connection is lost at some point: every
/// open and every channel fails with the loss, and nothing is left.
#[test]
fn a_thousand_opens_while_the_connection_is_lost() {
    for_seeds("lost", 0..20, |seed| {
        let mut a = App::new(|_| Err(OpenRefusal::ServiceNotFound));
        for i in 0..1000 {
            a = a.open(
                &format!("echo{i}"),
                vec![Op::Write(100), Op::CloseWrite, Op::ReadAll, Op::Close],
            );
        }
        let mut sim = Sim::new(seed, a, App::new(serve_echo));
        let cut = 100 + sim.rng.below(20_000);
        sim.run(cut);
        sim.lose();
        settle(&mut sim, 1_000_000);
        let app = sim.app(Side::A);
        for e in &app.open_failures {
            assert!(
                matches!(e, crate::error::OpenErrorKind::ConnectionLost(_)),
                "{e}"
            );
        }
        for r in &app.records {
            for f in &r.failures {
                assert!(matches!(f, ChannelError::ConnectionLost(_)), "{f}");
            }
        }
    });
}

/// A remote that does not answer our opens within the open timeout: they fail
/// with a timeout; its late answers are closed at once, and nothing is left.
#[test]
fn opens_the_remote_answers_too_late_are_closed() {
    for_seeds("late", 0..500, |seed| {
        let mut a = App::new(|_| Err(OpenRefusal::ServiceNotFound));
        for i in 0..5 {
            a = a.open(&format!("echo{i}"), vec![Op::Write(10), Op::Close]);
        }
        let mut sim = Sim::new(seed, a, App::new(serve_echo));
        sim.hold_opens_until = Some(sim.now() + super::limits().open_timeout * 2);
        settle(&mut sim, 100_000);
        let app = sim.app(Side::A);
        assert_eq!(app.open_failures.len(), 5);
        for e in &app.open_failures {
            assert!(matches!(e, crate::error::OpenErrorKind::Timeout(_)), "{e}");
        }
    });
}
