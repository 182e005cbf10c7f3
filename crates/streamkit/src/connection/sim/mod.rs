//! Two [`ConnectionState`]s joined by a simulated SSH layer, on virtual time, with
//! a seeded scheduler: in the style of quinn's `Pair` and smoltcp's seeded network.
//!
//! What the simulation models of SSH (and of our transports around the state):
//!
//! - each side's channel numbers, assigned when an open is sent or accepted;
//! - the wire as one FIFO queue per channel and direction (SSH keeps a channel's
//!   messages in order; across channels, the scheduler delivers in any order);
//! - an open's life: request, then confirmation or failure; the opener's task
//!   learns the assigned id and the answer as events of its own, which the
//!   scheduler may run before or after what the wire delivers meanwhile;
//! - CLOSE: the side that sends it forgets the channel (later messages for it are
//!   dropped); the receiving side's SSH layer answers with a CLOSE the sender never
//!   sees, so the receiver forgets it too;
//! - the loss of the connection, at once on both sides.
//!
//! Each step the scheduler picks one enabled action at random (seeded): deliver the
//! next message of some channel queue, run an opener-task event, let one side's
//! driver send one transmit, let one side's application take one step of its
//! script, or let time pass. After every step the invariants are checked; at the
//! end, the scenario's own checks, and that both tables are empty.

pub(super) mod app;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::state::{
    ChannelKey, Command, ConnectionState, Decision, Incoming, Limits, OpenOutcome, OpenWire,
};
use crate::channel::{self, Transmit};
use crate::error::ChannelError;
use crate::wire::open::OpenRequest;
use crate::wire::reason::OpenRefusal;
use crate::wire::{EXT_CONTROL, EXT_ERROR};
use app::App;

/// A small deterministic generator (xorshift64*): every run of a seed is the same.
#[derive(Debug, Clone)]
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(super) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub(super) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// The two sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Side {
    A,
    B,
}

impl Side {
    pub(super) fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// What travels on one channel's queue.
#[derive(Debug)]
enum Wire {
    Open { from_ssh: u32, path: String },
    Confirm { to_ssh: u32, from_ssh: u32 },
    Refuse { to_ssh: u32, code: u32 },
    Data(Bytes),
    Extended(u32, Bytes),
    Eof,
    Close,
}

/// An event of an opener's task: the answer to its open.
#[derive(Debug)]
enum TaskEvent {
    Confirmed(u32, u32),
    Refused(u32),
}

/// One side's SSH layer and transport around its state.
struct End {
    state: ConnectionState,
    next_ssh: u32,
    /// Channels the SSH layer knows: our number → the remote's (once known).
    ssh: HashMap<u32, Option<u32>>,
    /// The transport's way to send: a channel's key → (ours, the remote's number).
    writers: HashMap<ChannelKey, (u32, u32)>,
    /// Our opens' tasks: per key, the events they will see, in order.
    tasks: BTreeMap<ChannelKey, VecDeque<TaskEvent>>,
    /// Our opens in flight at the SSH level: our number → key.
    opening: HashMap<u32, ChannelKey>,
    app: App,
}

/// A queue on the wire: (from side, the channel's id at the receiving side, or for
/// an open request the sender's id).
type QueueId = (Side, u64);

/// The whole simulation.
pub(super) struct Sim {
    pub(super) rng: Rng,
    now: Instant,
    ends: [End; 2],
    /// Channel queues, by (from, a queue number); a queue is made per channel open.
    wire: BTreeMap<QueueId, VecDeque<Wire>>,
    /// The queue each (receiving side, its channel number) is fed by, and back.
    queue_of: HashMap<(Side, u32), QueueId>,
    queue_by_id: HashMap<QueueId, u32>,
    next_queue: u64,
    lost: bool,
    /// Open requests wait on the wire until then (a remote that does not answer).
    pub(super) hold_opens_until: Option<Instant>,
    pub(super) steps: usize,
    pub(super) max_window: usize,
    pub(super) max_frame: usize,
}

pub(super) fn limits() -> Limits {
    Limits {
        channel: channel::Config {
            window: 64 * 1024,
            max_window: 256 * 1024,
            max_frame: 64 * 1024,
            send_buffer: 32 * 1024,
            max_trailer_bytes: 1024,
        },
        max_channels: 4096,
        max_pending_accepts: 1024,
        accept_children: true,
        max_header_bytes: 16 * 1024,
        open_timeout: Duration::from_secs(30),
        close_timeout: Duration::from_secs(10),
        session_timeout: Duration::from_secs(10),
        budget: 64 * 1024 * 1024,
        peer_budget: super::PeerBudget::new(512 * 1024 * 1024),
        address_budget: None,
        read_timeout: None,
        write_timeout: None,
    }
}

impl Sim {
    pub(super) fn new(seed: u64, a: App, b: App) -> Sim {
        let end = |me: &str, them: &str, app| End {
            state: ConnectionState::new(
                limits(),
                me.into(),
                them.into(),
                crate::trust::RemoteIdentity::Token,
            ),
            next_ssh: 1,
            ssh: HashMap::new(),
            writers: HashMap::new(),
            tasks: BTreeMap::new(),
            opening: HashMap::new(),
            app,
        };
        let l = limits();
        Sim {
            rng: Rng::new(seed),
            now: Instant::now(),
            ends: [end("a", "b", a), end("b", "a", b)],
            wire: BTreeMap::new(),
            queue_of: HashMap::new(),
            queue_by_id: HashMap::new(),
            next_queue: 0,
            lost: false,
            hold_opens_until: None,
            steps: 0,
            max_window: l.channel.max_window as usize,
            max_frame: l.channel.max_frame,
        }
    }

    fn end(&mut self, s: Side) -> &mut End {
        &mut self.ends[s as usize]
    }

    pub(super) fn app(&mut self, s: Side) -> &mut App {
        &mut self.end(s).app
    }

    pub(super) fn state(&mut self, s: Side) -> &mut ConnectionState {
        &mut self.end(s).state
    }

    fn new_queue(&mut self, from: Side) -> QueueId {
        self.next_queue += 1;
        (from, self.next_queue)
    }

    fn push(&mut self, from: Side, to_ssh: u32, msg: Wire) {
        let to = from.other();
        let q = match self.queue_of.get(&(to, to_ssh)) {
            Some(q) => *q,
            None => return, // the remote's SSH layer no longer knows the channel
        };
        self.wire.entry(q).or_default().push_back(msg);
    }

    /// Loses the connection on both sides at once.
    pub(super) fn lose(&mut self) {
        if self.lost {
            return;
        }
        self.lost = true;
        self.wire.clear();
        for s in [Side::A, Side::B] {
            let e = self.end(s);
            e.tasks.clear();
            e.ssh.clear();
            e.writers.clear();
            e.opening.clear();
            e.state
                .on_lost(ChannelError::ConnectionLost("simulated loss".into()));
        }
        self.settle_commands();
    }

    /// Runs until nothing is left to do (or `max_steps`); `true` if it settled.
    pub(super) fn run(&mut self, max_steps: usize) -> bool {
        while self.steps < max_steps {
            if !self.step() {
                return true;
            }
            self.check_invariants();
        }
        false
    }

    /// One action, chosen at random among those enabled; `false` if none is.
    fn step(&mut self) -> bool {
        #[derive(Clone, Copy)]
        enum Action {
            Deliver(QueueId),
            Task(Side, ChannelKey),
            Send(Side),
            App(Side),
            Time,
        }
        let mut enabled: Vec<Action> = Vec::new();
        let held = self.hold_opens_until.is_some_and(|t| self.now < t);
        for (q, v) in &self.wire {
            match v.front() {
                None => {}
                Some(Wire::Open { .. }) if held => {}
                Some(_) => enabled.push(Action::Deliver(*q)),
            }
        }
        for s in [Side::A, Side::B] {
            let e = &self.ends[s as usize];
            for k in e
                .tasks
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| *k)
            {
                enabled.push(Action::Task(s, k));
            }
            if !self.lost {
                enabled.push(Action::Send(s));
            }
            if e.app.can_act() {
                enabled.push(Action::App(s));
            }
        }
        if held || self.ends.iter().any(|e| e.state.poll_timeout().is_some()) {
            enabled.push(Action::Time);
        }
        if enabled.is_empty() {
            return false;
        }
        // Each step does something, or tells us there is nothing: try the enabled
        // actions from a random start until one acts.
        let start = self.rng.below(enabled.len());
        let trace = std::env::var_os("STREAMKIT_SIM_TRACE").is_some();
        for i in 0..enabled.len() {
            let action = enabled[(start + i) % enabled.len()];
            if trace {
                let what = match action {
                    Action::Deliver(q) => format!(
                        "deliver {q:?} {:?}",
                        self.wire.get(&q).and_then(|v| v.front())
                    ),
                    Action::Task(s, k) => format!("task {s:?} {k:?}"),
                    Action::Send(s) => format!("send {s:?}"),
                    Action::App(s) => format!("app {s:?}"),
                    Action::Time => "time".into(),
                };
                eprintln!("step {}: {what}", self.steps);
            }
            let acted = match action {
                Action::Deliver(q) => self.deliver(q),
                Action::Task(s, k) => self.task(s, k),
                Action::Send(s) => self.send(s),
                Action::App(s) => self.app_step(s),
                Action::Time => self.pass_time(),
            };
            if acted {
                self.steps += 1;
                self.settle_commands();
                return true;
            }
        }
        false
    }

    fn pass_time(&mut self) -> bool {
        let hold = self.hold_opens_until.filter(|t| self.now < *t);
        let Some(next) = self
            .ends
            .iter()
            .filter_map(|e| e.state.poll_timeout())
            .chain(hold)
            .min()
        else {
            return false;
        };
        // Time passes only when nothing else can happen: a deadline is reached only
        // by what never answers.
        let held = hold.is_some();
        let idle = self
            .wire
            .values()
            .all(|v| v.is_empty() || (held && matches!(v.front(), Some(Wire::Open { .. }))))
            && self
                .ends
                .iter()
                .all(|e| e.tasks.values().all(VecDeque::is_empty));
        if !idle || self.ends.iter().any(|e| e.app.has_opens_to_make()) {
            return false;
        }
        self.now = self.now.max(next);
        let now = self.now;
        for s in [Side::A, Side::B] {
            self.state(s).handle_timeout(now);
        }
        true
    }

    pub(super) fn now(&self) -> Instant {
        self.now
    }

    /// Carries out what the states asked of their transports.
    pub(super) fn settle_commands(&mut self) {
        for s in [Side::A, Side::B] {
            while let Some(cmd) = self.state(s).poll_command() {
                if std::env::var_os("STREAMKIT_SIM_TRACE").is_some() {
                    eprintln!("  command {s:?} {cmd:?}");
                }
                match cmd {
                    Command::Open { key } => {
                        match self.state(s).take_request(key) {
                            Some(OpenWire::Native(path)) => self.send_open(s, key, path),
                            // The simulated peers are both native.
                            Some(OpenWire::Forwarded(_)) => {
                                unreachable!("no standard clients here")
                            }
                            None => {}
                        }
                    }
                    Command::Forget { key } => {
                        self.end(s).writers.remove(&key);
                    }
                }
            }
            // Reports and wakeups matter to the driver only.
            while self.state(s).poll_report().is_some() {}
            let _ = self.state(s).take_wakeups();
        }
    }

    fn send_open(&mut self, s: Side, key: ChannelKey, path: String) {
        if self.lost {
            self.state(s).on_open_failed(key, OpenOutcome::Gone);
            return;
        }
        let e = self.end(s);
        let ssh = e.next_ssh;
        e.next_ssh += 1;
        e.ssh.insert(ssh, None);
        e.opening.insert(ssh, key);
        e.tasks.entry(key).or_default();
        // The SSH layer tells the state the id as it assigns it.
        e.state.on_open_sent(key, ssh);
        // What the remote sends on the channel comes on a queue of its own.
        let q = self.new_queue(s.other());
        self.queue_by_id.insert(q, ssh);
        self.queue_of.insert((s, ssh), q);
        // The request travels on a queue of its own (the channel's, from now on).
        let rq = self.new_queue(s);
        self.wire.entry(rq).or_default().push_back(Wire::Open {
            from_ssh: ssh,
            path,
        });
    }

    fn task(&mut self, s: Side, key: ChannelKey) -> bool {
        let Some(ev) = self
            .end(s)
            .tasks
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
        else {
            return false;
        };
        // The opener's task sees one answer, and is done.
        self.end(s).tasks.remove(&key);
        if !self.state(s).is_opening(key) {
            // The opener gave up (its future, with the transport's side of the
            // open, was dropped): what it would have seen goes nowhere.
            return true;
        }
        match ev {
            TaskEvent::Confirmed(ours, theirs) => {
                // The opener's task: its way to send, then the channel is open.
                self.end(s).writers.insert(key, (ours, theirs));
                if !self.state(s).on_open_confirmed(key) {
                    self.end(s).writers.remove(&key);
                }
            }
            TaskEvent::Refused(code) => {
                self.state(s)
                    .on_open_failed(key, OpenOutcome::Refused(code));
            }
        }
        true
    }

    fn deliver(&mut self, q: QueueId) -> bool {
        let Some(queue) = self.wire.get_mut(&q) else {
            return false;
        };
        let Some(msg) = queue.pop_front() else {
            return false;
        };
        // Only queues with something in them stay: each step looks at all of them.
        if queue.is_empty() {
            self.wire.remove(&q);
        }
        let from = q.0;
        let to = from.other();
        match msg {
            Wire::Open { from_ssh, path } => self.receive_open(to, from_ssh, &path),
            Wire::Confirm { to_ssh, from_ssh } => {
                let e = self.end(to);
                let Some(peer) = e.ssh.get_mut(&to_ssh) else {
                    return true;
                };
                *peer = Some(from_ssh);
                let key = e.opening.remove(&to_ssh);
                let waiting = key.filter(|k| e.tasks.contains_key(k) && e.state.is_opening(*k));
                // russh wakes the opener's task before it calls the handler: the task
                // may run first, on another thread.
                if let Some(key) = waiting
                    && self.rng.below(2) == 0
                {
                    if let Some(t) = self.end(to).tasks.get_mut(&key) {
                        t.push_back(TaskEvent::Confirmed(to_ssh, from_ssh));
                    }
                    while self.task(to, key) {}
                    if !self.state(to).on_confirmed(to_ssh) {
                        panic!("{to:?}: a confirmation the opener took first was refused");
                    }
                    return true;
                }
                if !self.state(to).on_confirmed(to_ssh) {
                    // Given up: the SSH layer closes it at once.
                    self.end(to).ssh.remove(&to_ssh);
                    self.push(to, from_ssh, Wire::Close);
                    return true;
                }
                if let Some(key) = waiting
                    && let Some(t) = self.end(to).tasks.get_mut(&key)
                {
                    t.push_back(TaskEvent::Confirmed(to_ssh, from_ssh));
                }
            }
            Wire::Refuse { to_ssh, code } => {
                let e = self.end(to);
                e.ssh.remove(&to_ssh);
                e.state.on_refused(to_ssh);
                if let Some(key) = e.opening.remove(&to_ssh)
                    && let Some(t) = e.tasks.get_mut(&key)
                {
                    t.push_back(TaskEvent::Refused(code));
                }
            }
            Wire::Data(b) => self.channel_msg(q, |st, ssh| st.on_data(ssh, b)),
            Wire::Extended(ext, b) => {
                self.channel_msg(q, |st, ssh| st.on_extended(ssh, ext, &b));
            }
            Wire::Eof => self.channel_msg(q, |st, ssh| st.on_eof(ssh)),
            Wire::Close => {
                let Some(ssh) = self.ssh_of(q) else {
                    return true;
                };
                let e = self.end(to);
                if e.ssh.remove(&ssh).is_some() {
                    // The SSH layer answers with a CLOSE of its own; the other side
                    // closed first and never sees it.
                    e.state.on_close(ssh);
                }
            }
        }
        true
    }

    /// The receiving side's channel number of a queue.
    fn ssh_of(&self, q: QueueId) -> Option<u32> {
        self.queue_by_id.get(&q).copied()
    }

    fn channel_msg(&mut self, q: QueueId, f: impl FnOnce(&mut ConnectionState, u32)) {
        let to = q.0.other();
        if let Some(ssh) = self.ssh_of(q)
            && self.end(to).ssh.contains_key(&ssh)
        {
            f(self.state(to), ssh);
        }
    }

    fn receive_open(&mut self, s: Side, from_ssh: u32, path: &str) {
        let e = self.end(s);
        let ssh = e.next_ssh;
        e.next_ssh += 1;
        let req = match OpenRequest::decode(path, 16 * 1024) {
            Ok(r) => r,
            Err(_) => {
                self.push(
                    s,
                    from_ssh,
                    Wire::Refuse {
                        to_ssh: from_ssh,
                        code: OpenRefusal::BadRequest.code(),
                    },
                );
                return;
            }
        };
        let top = req.parent.is_none();
        // The layer above admits top-level opens: the application's own policy.
        if top && let Err(r) = self.end(s).app.admit(&req.service) {
            self.push_open_answer(s, from_ssh, Err(r));
            return;
        }
        let now = self.now;
        match self
            .state(s)
            .on_open_request(ssh, Incoming::Native(req), now)
        {
            Decision::Accept(key) => {
                let e = self.end(s);
                e.ssh.insert(ssh, Some(from_ssh));
                e.writers.insert(key, (ssh, from_ssh));
                let q = self.new_queue(s.other());
                self.queue_by_id.insert(q, ssh);
                self.queue_of.insert((s, ssh), q);
                if top {
                    self.end(s).app.incoming(key);
                }
                self.push_open_answer(s, from_ssh, Ok(ssh));
                self.state(s).established(key);
            }
            Decision::Refuse(r) => self.push_open_answer(s, from_ssh, Err(r)),
        }
    }

    /// The answer to an open travels on the opener's channel queue.
    fn push_open_answer(&mut self, s: Side, to_ssh: u32, answer: Result<u32, OpenRefusal>) {
        let msg = match answer {
            Ok(from_ssh) => Wire::Confirm { to_ssh, from_ssh },
            Err(r) => Wire::Refuse {
                to_ssh,
                code: r.code(),
            },
        };
        self.push(s, to_ssh, msg);
    }

    /// One side's driver sends one transmit.
    fn send(&mut self, s: Side) -> bool {
        let Some(key) = self.state(s).next_sender() else {
            return false;
        };
        let Some(t) = self.state(s).poll_transmit(key, 16 * 1024) else {
            return true;
        };
        let Some((ours, theirs)) = self.end(s).writers.get(&key).copied() else {
            panic!("{s:?} sends on {key:?}, which the transport has no writer for: {t:?}");
        };
        let msg = match t {
            Transmit::Data(b) => Wire::Data(b),
            Transmit::Error(b) => Wire::Extended(EXT_ERROR, b),
            Transmit::Control(b) => Wire::Extended(EXT_CONTROL, b),
            Transmit::Close { eof } => {
                if eof {
                    self.push(s, theirs, Wire::Eof);
                }
                // Closed here: the SSH layer forgets it.
                self.end(s).ssh.remove(&ours);
                Wire::Close
            }
            Transmit::Eof { .. } => Wire::Eof,
            Transmit::WindowAdjust(_) => return true,
        };
        self.push(s, theirs, msg);
        true
    }

    fn app_step(&mut self, s: Side) -> bool {
        let now = self.now;
        let e = &mut self.ends[s as usize];
        e.app.act(&mut e.state, &mut self.rng, now)
    }

    /// After every step: what a peer holds stays within its bounds.
    fn check_invariants(&mut self) {
        let (max_window, max_frame) = (self.max_window, self.max_frame);
        for s in [Side::A, Side::B] {
            let (counted, sum) = self.ends[s as usize].state.audit_budget();
            assert_eq!(counted, sum, "{s:?}'s budget lost count of its charges");
            for (key, c) in self.ends[s as usize].state.channels() {
                let buffered = c.buffered();
                assert!(
                    buffered <= max_window + max_frame + 64 * 1024,
                    "{s:?} {key:?} holds {buffered} bytes, over its window and one frame"
                );
                if let Some(e) = c.send_failure() {
                    assert!(
                        !matches!(e, ChannelError::Protocol(_)),
                        "{s:?} {key:?} saw a protocol violation: {e}"
                    );
                }
            }
        }
    }

    /// After a run that settled: nothing is left in either table once both sides
    /// closed everything.
    pub(super) fn check_empty(&mut self) {
        for s in [Side::A, Side::B] {
            let st = &self.ends[s as usize].state;
            assert!(
                st.channel_count() == 0
                    && st.all_keys().is_empty()
                    && st.poll_timeout().is_none()
                    && st.budgeted() == 0,
                "{s:?} keeps channels:{}",
                st.dump()
            );
        }
    }
}

#[cfg(test)]
mod tests;
