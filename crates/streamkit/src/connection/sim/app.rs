//! The application side of a simulation: channels opened and accepted, each run
//! by a small script of operations, one step at a time, as tasks of a real
//! application would call them (a step that cannot proceed waits).

use std::collections::VecDeque;
use std::time::Instant;

use super::Rng;
use crate::channel::{Headers, Step};
use crate::connection::state::{ChannelKey, ConnectionState};
use crate::error::{ChannelError, OpenErrorKind};
use crate::wire::reason::OpenRefusal;

/// One operation of a channel's script.
#[derive(Debug, Clone)]
pub(in crate::connection) enum Op {
    /// Writes this many bytes of the channel's pattern.
    Write(usize),
    /// Writes an error frame.
    WriteError(&'static [u8]),
    /// Sends trailers.
    Trailers(&'static str),
    /// Ends the stream this way and waits for its acknowledgement.
    CloseWrite,
    /// Reads the byte stream to its end.
    ReadAll,
    /// Reads at most this many bytes (a slow reader).
    ReadSome(usize),
    /// Writes this many bytes of the pattern while reading what arrives, as a
    /// writer and a reader task of one application would.
    WriteAndRead(usize),
    /// Writes back everything read so far (an echo).
    WriteBack,
    /// Closes the channel and waits for the outcome.
    Close,
    /// Aborts the channel.
    Reset,
    /// Drops every handle.
    Drop,
    /// Opens a child inside this channel, run by the script.
    OpenChild(Vec<Op>),
    /// Accepts one child, run by the script.
    AcceptChild(Vec<Op>),
}

/// What happened to one channel end, for the scenario's checks.
#[derive(Debug, Default, Clone)]
pub(in crate::connection) struct Record {
    pub service: String,
    /// The seed of the pattern this end writes.
    pub seed: u64,
    pub sent: usize,
    pub received: Vec<u8>,
    pub eof: bool,
    pub close_write: Option<Result<(), ChannelError>>,
    pub close: Option<Result<(), ChannelError>>,
    pub failures: Vec<ChannelError>,
    pub trailers: Option<Headers>,
    /// Every operation ran (none was cut short by a failure).
    pub finished: bool,
}

struct End {
    key: ChannelKey,
    ops: VecDeque<Op>,
    /// The current operation was started (a wait on it is no progress).
    started: bool,
    record: usize,
    seed: u64,
}

/// An open in flight.
struct Opening {
    key: ChannelKey,
    ops: Vec<Op>,
    record: usize,
}

/// How the application serves what the remote opens.
pub(in crate::connection) type Serve = fn(&str) -> Result<Vec<Op>, OpenRefusal>;

/// One side's application.
pub(in crate::connection) struct App {
    /// Channels to open, with their scripts.
    to_open: VecDeque<(String, Vec<Op>)>,
    opening: Vec<Opening>,
    ends: Vec<End>,
    /// Top-level channels the remote opened, waiting for `accept`.
    incoming: VecDeque<ChannelKey>,
    serve: Serve,
    pub records: Vec<Record>,
    pub open_failures: Vec<OpenErrorKind>,
}

/// The bytes a channel end writes: a pattern of its own, so mixed-up data shows.
/// Byte `i` is `(31·seed + 7·i) mod 251`: a cycle of 251 bytes, copied whole (the
/// simulation checks megabytes per run).
pub(in crate::connection) fn pattern(seed: u64, from: usize, len: usize) -> Vec<u8> {
    const P: usize = 251;
    let base = (seed % P as u64) as usize * 31 % P;
    let cycle: Vec<u8> = (0..P).map(|k| ((base + 7 * k) % P) as u8).collect();
    let mut out = Vec::with_capacity(len);
    let mut at = from % P;
    while out.len() < len {
        let n = (P - at).min(len - out.len());
        out.extend_from_slice(&cycle[at..at + n]);
        at = 0;
    }
    out
}

impl App {
    pub(in crate::connection) fn new(serve: Serve) -> App {
        App {
            to_open: VecDeque::new(),
            opening: Vec::new(),
            ends: Vec::new(),
            incoming: VecDeque::new(),
            serve,
            records: Vec::new(),
            open_failures: Vec::new(),
        }
    }

    /// Opens a channel to `service` and runs `ops` on it.
    pub(in crate::connection) fn open(mut self, service: &str, ops: Vec<Op>) -> App {
        self.to_open.push_back((service.to_owned(), ops));
        self
    }

    /// The application's policy for a top-level open from the remote.
    pub(in crate::connection) fn admit(&self, service: &str) -> Result<(), OpenRefusal> {
        (self.serve)(service).map(|_| ())
    }

    /// A top-level channel from the remote arrived in the accept queue.
    pub(in crate::connection) fn incoming(&mut self, key: ChannelKey) {
        self.incoming.push_back(key);
    }

    /// Opens it has yet to make (time does not pass before it made them).
    pub(in crate::connection) fn has_opens_to_make(&self) -> bool {
        !self.to_open.is_empty()
    }

    pub(in crate::connection) fn can_act(&self) -> bool {
        !self.to_open.is_empty()
            || !self.opening.is_empty()
            || !self.incoming.is_empty()
            || !self.ends.is_empty()
    }

    fn new_record(&mut self, service: &str) -> usize {
        self.records.push(Record {
            service: service.to_owned(),
            ..Record::default()
        });
        self.records.len() - 1
    }

    /// Starts running `ops` on `key`.
    fn start(&mut self, key: ChannelKey, ops: Vec<Op>, record: usize) {
        self.records[record].seed = key.0;
        self.ends.push(End {
            key,
            ops: ops.into(),
            started: false,
            record,
            seed: key.0,
        });
    }

    /// One step of the application; `true` if it made progress.
    pub(in crate::connection) fn act(
        &mut self,
        st: &mut ConnectionState,
        rng: &mut Rng,
        now: Instant,
    ) -> bool {
        let choices = self.to_open.len().min(1)
            + self.opening.len()
            + self.incoming.len().min(1)
            + self.ends.len();
        if choices == 0 {
            return false;
        }
        let start = rng.below(choices);
        for i in 0..choices {
            if self.act_on((start + i) % choices, st, now) {
                return true;
            }
        }
        false
    }

    fn act_on(&mut self, mut pick: usize, st: &mut ConnectionState, now: Instant) -> bool {
        if !self.to_open.is_empty() {
            if pick == 0 {
                let Some((service, ops)) = self.to_open.pop_front() else {
                    return false;
                };
                let record = self.new_record(&service);
                match st.open(&service, Headers::new(), None, now) {
                    Ok(key) => {
                        // The simulated transport sends requests as commands.
                        st.request_by_driver(key);
                        self.opening.push(Opening { key, ops, record });
                    }
                    Err(e) => self.open_failures.push(e),
                }
                return true;
            }
            pick -= 1;
        }
        if pick < self.opening.len() {
            let key = self.opening[pick].key;
            return match st.poll_open(key) {
                Ok(false) => false,
                Ok(true) => {
                    let o = self.opening.swap_remove(pick);
                    self.start(key, o.ops, o.record);
                    true
                }
                Err(e) => {
                    self.opening.swap_remove(pick);
                    self.open_failures.push(e);
                    true
                }
            };
        }
        pick -= self.opening.len();
        if !self.incoming.is_empty() {
            if pick == 0 {
                let Some(key) = self.incoming.pop_front() else {
                    return false;
                };
                // As the peer's accept queue does: a channel reset while it waited
                // is not handed out.
                if !st.accepted(key) {
                    st.refuse_unaccepted(key);
                    return true;
                }
                let service = st.meta(key).map(|m| m.service.clone()).unwrap_or_default();
                let ops = (self.serve)(&service).unwrap_or_default();
                let record = self.new_record(&service);
                self.start(key, ops, record);
                return true;
            }
            pick -= 1;
        }
        self.step_end(pick, st, now)
    }

    /// One operation of one channel end.
    fn step_end(&mut self, i: usize, st: &mut ConnectionState, now: Instant) -> bool {
        let End {
            key,
            started,
            record,
            seed,
            ..
        } = self.ends[i];
        let Some(op) = self.ends[i].ops.front().cloned() else {
            // Script done: the application lets go of the channel.
            self.records[record].finished = true;
            self.release(i, st, now);
            return true;
        };
        match op {
            Op::OpenChild(ops) => {
                let record = self.new_record("child");
                match st.open("child", Headers::new(), Some(key), now) {
                    Ok(child) => {
                        st.request_by_driver(child);
                        self.opening.push(Opening {
                            key: child,
                            ops,
                            record,
                        });
                    }
                    Err(e) => self.open_failures.push(e),
                }
                self.ends[i].ops.pop_front();
                return true;
            }
            Op::AcceptChild(ops) => {
                return match st.poll_accept_child(key) {
                    Ok(Some(child)) => {
                        let record = self.new_record("child");
                        self.start(child, ops, record);
                        self.ends[i].ops.pop_front();
                        true
                    }
                    Ok(None) => false,
                    Err(_) => {
                        self.ends[i].ops.pop_front();
                        true
                    }
                };
            }
            _ => {}
        }
        let rec = &mut self.records[record];
        let fail = |rec: &mut Record, e: ChannelError| rec.failures.push(e);
        let mut done = false;
        let mut progress = !started;
        let mut dead = false;
        match op {
            Op::Write(n) => {
                let from = rec.sent;
                let chunk = pattern(seed, from, (n - from).min(8192));
                match st.op(key, |s| s.write(&chunk)) {
                    Some(Step::Ready(k)) => {
                        rec.sent += k;
                        progress = true;
                        done = rec.sent >= n;
                    }
                    Some(Step::Pending) => {}
                    Some(Step::Failed(e)) => {
                        fail(rec, e);
                        dead = true;
                    }
                    None => dead = true,
                }
            }
            Op::WriteAndRead(n) => {
                let mut buf = vec![0u8; 8192];
                match st.op(key, |s| s.read(&mut buf)) {
                    Some(Step::Ready(k)) if k > 0 => {
                        rec.received.extend_from_slice(&buf[..k]);
                        progress = true;
                    }
                    Some(Step::Failed(e)) => {
                        fail(rec, e);
                        dead = true;
                    }
                    _ => {}
                }
                if !dead && rec.sent < n {
                    let chunk = pattern(seed, rec.sent, (n - rec.sent).min(8192));
                    match st.op(key, |s| s.write(&chunk)) {
                        Some(Step::Ready(k)) => {
                            rec.sent += k;
                            progress = true;
                        }
                        Some(Step::Pending) => {}
                        Some(Step::Failed(e)) => {
                            fail(rec, e);
                            dead = true;
                        }
                        None => dead = true,
                    }
                }
                done = rec.sent >= n;
            }
            Op::WriteBack => {
                let back = rec.received[rec.sent.min(rec.received.len())..].to_vec();
                if back.is_empty() {
                    done = true;
                } else {
                    match st.op(key, |s| s.write(&back[..back.len().min(8192)])) {
                        Some(Step::Ready(k)) => {
                            rec.sent += k;
                            progress = true;
                            done = rec.sent >= rec.received.len();
                        }
                        Some(Step::Pending) => {}
                        Some(Step::Failed(e)) => {
                            fail(rec, e);
                            dead = true;
                        }
                        None => dead = true,
                    }
                }
            }
            Op::WriteError(b) => match st.op(key, |s| s.write_frame(b, true)) {
                Some(Step::Ready(())) => done = true,
                Some(Step::Pending) => {}
                Some(Step::Failed(e)) => {
                    fail(rec, e);
                    dead = true;
                }
                None => dead = true,
            },
            Op::Trailers(t) => match st.op(key, |s| s.write_trailers(vec![t.to_owned()])) {
                Some(Step::Ready(())) => done = true,
                Some(Step::Pending) => {}
                Some(Step::Failed(e)) => {
                    fail(rec, e);
                    dead = true;
                }
                None => dead = true,
            },
            Op::CloseWrite => match st.op(key, |s| s.close_write()) {
                Some(Step::Ready(())) => {
                    rec.close_write = Some(Ok(()));
                    done = true;
                }
                Some(Step::Pending) => {}
                Some(Step::Failed(e)) => {
                    rec.close_write = Some(Err(e));
                    dead = true;
                }
                None => dead = true,
            },
            Op::ReadAll | Op::ReadSome(_) => {
                let limit = match op {
                    Op::ReadSome(n) => n,
                    _ => 4096,
                };
                let mut buf = vec![0u8; limit.max(1)];
                match st.op(key, |s| s.read(&mut buf)) {
                    Some(Step::Ready(0)) => {
                        rec.eof = true;
                        rec.trailers = st.meta(key).and_then(|m| m.trailers.get().cloned());
                        done = true;
                    }
                    Some(Step::Ready(n)) => {
                        rec.received.extend_from_slice(&buf[..n]);
                        progress = true;
                        done = matches!(op, Op::ReadSome(_));
                    }
                    Some(Step::Pending) => {}
                    Some(Step::Failed(e)) => {
                        fail(rec, e);
                        dead = true;
                    }
                    None => dead = true,
                }
            }
            Op::Close => match st.close(key, now) {
                Some(Step::Ready(())) => {
                    rec.close = Some(Ok(()));
                    done = true;
                }
                Some(Step::Pending) => {}
                Some(Step::Failed(e)) => {
                    rec.close = Some(Err(e));
                    done = true;
                }
                None => dead = true,
            },
            Op::Reset => {
                st.reset(key);
                done = true;
            }
            Op::Drop => {
                self.ends[i].ops.clear();
                self.records[record].finished = true;
                self.release(i, st, now);
                return true;
            }
            Op::OpenChild(_) | Op::AcceptChild(_) => {}
        }
        let end = &mut self.ends[i];
        if dead {
            end.ops.clear();
            self.release(i, st, now);
            return true;
        }
        if done {
            end.ops.pop_front();
            end.started = false;
            return true;
        }
        end.started = true;
        progress
    }

    /// The application drops the channel's handles.
    fn release(&mut self, i: usize, st: &mut ConnectionState, now: Instant) {
        let end = self.ends.swap_remove(i);
        st.reader_dropped(end.key, now);
        st.writer_dropped(end.key, now);
    }
}
