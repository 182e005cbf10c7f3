//! [`ConnectionState`]: everything one connection knows about its channels, as a
//! value driven by events. It owns the channel table (each entry a
//! [`ChannelState`] with its place among nested channels), the open ids, our opens
//! in flight, the children waiting to be accepted, and every deadline. It never
//! reads a clock (time comes in as `now`), never blocks and never touches a socket:
//! the driver feeds it what the transport and the application do, and takes from it
//! what to send ([`poll_transmit`](ConnectionState::poll_transmit)), what to ask the
//! transport ([`poll_command`](ConnectionState::poll_command)) and when to wake it
//! ([`poll_timeout`](ConnectionState::poll_timeout)).
//!
//! A channel goes through these phases:
//!
//! ```text
//!  ours:     Opening ──SSH id assigned──▶ Opening{ssh} ──confirmed, way to send ready──▶ Open
//!               └──── refused / open timeout / connection lost ────▶ OpenFailed
//!                                                   (the opener takes the error, the entry goes)
//!  theirs:   (decided) Accepted ──the transport accepted it and can send──▶ Open
//!  a standard client's session:   Session ──exec──▶ Open
//! ```
//!
//! Nothing is sent on a channel before it is `Open` (or a `Session`): the transport
//! must have its way to send first. The transport tells us the SSH id of an open of
//! ours when it assigns it, before the request goes out, so whatever the remote
//! sends for the channel finds it. An open given up (the opener timed out or went
//! away) keeps its id in `given_up` until the remote answers: a late confirmation
//! is closed at once. A nested open names its parent by open id, which the table
//! knows from the moment the parent's open was sent or received, so every open is
//! decided at once: nothing ever waits on another task.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

mod app;
mod budget;
mod compat;
mod nest;
mod opens;

use crate::channel::{self, ChannelState, Headers, Step, Transmit, Wake};
use crate::error::{ChannelError, LostReason, OpenErrorKind};
use crate::trust::RemoteIdentity;
use crate::wire::open::OpenRequest;
use crate::wire::reason::OpenRefusal;
use budget::Budget;
pub(crate) use budget::PeerBudget;
use nest::Nest;

/// The SSH window a standard client's channel starts with: like a native
/// channel's initial credit, all it gets until the application has the channel.
pub(crate) const COMPAT_INITIAL_WINDOW: u32 = crate::wire::INITIAL_CREDIT;

/// Least room in the budget worth retrying a grant it cut short.
const MIN_REGRANT: u64 = 16 * 1024;

/// A channel's name in the table: never reused within a connection (SSH ids are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChannelKey(pub(crate) u64);

/// Hashes numbers this side chose (channel keys, its own SSH ids) with one
/// multiplication: every channel operation looks its channel up a few times, and
/// SipHash's defence against chosen keys is not needed for keys nobody else picks.
/// Maps keyed by what the remote chooses (open ids) keep the default hasher.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct OwnKeyHasher(u64);

impl std::hash::Hasher for OwnKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: the high bits (hashbrown's tag) and the low bits (its
        // index) both vary with sequential numbers.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A map keyed by numbers this side chose (see [`OwnKeyHasher`]).
pub(crate) type OwnMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<OwnKeyHasher>>;
type OwnSet<K> = HashSet<K, std::hash::BuildHasherDefault<OwnKeyHasher>>;

/// Who opened a channel, as this side sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Origin {
    Local,
    Remote,
}

/// What a channel is: fixed at its open, but for the remote's trailers, which
/// arrive with its end of stream and outlive the channel's entry.
#[derive(Debug)]
pub(crate) struct Meta {
    pub service: String,
    pub headers: Headers,
    pub local_peer: String,
    pub remote_peer: String,
    /// What the remote proved, with its name.
    pub remote_identity: Arc<RemoteIdentity>,
    pub trailers: OnceLock<Headers>,
}

/// The limits a connection applies, from the peer's options when it was made.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub channel: channel::Config,
    pub max_channels: usize,
    pub max_pending_accepts: usize,
    /// Whether channels take children at all (see `nest.rs`).
    pub accept_children: bool,
    pub max_header_bytes: usize,
    pub open_timeout: Duration,
    /// How long a closed channel (or one whose handles were dropped) may wait for
    /// the remote to take what was written before it is reset.
    pub close_timeout: Duration,
    /// How long a standard client's `session` may wait before `exec`.
    pub session_timeout: Duration,
    /// Most bytes the remote may make this connection hold (see `budget.rs`).
    pub budget: u64,
    /// The peer's budget, shared by its connections.
    pub peer_budget: Arc<PeerBudget>,
    /// The budget of the connections from this one's remote address (accepted
    /// connections only).
    pub address_budget: Option<Arc<PeerBudget>>,
    /// Initial read and write timeouts of the channels' handles (not used here).
    pub read_timeout: Option<Duration>,
    pub write_timeout: Option<Duration>,
}

/// Where a channel stands on its way to being open (see the module's diagram).
#[derive(Debug)]
enum Phase {
    /// Our open request is on its way (`request`: not yet handed to the
    /// transport); `ssh` once the transport assigned it.
    Opening {
        request: Option<OpenWire>,
        ssh: Option<u32>,
        deadline: Instant,
    },
    /// Our open failed; the opener takes the error (then the entry goes).
    OpenFailed(OpenErrorKind),
    /// A standard client's `session` channel, before `exec`.
    Session { headers: Vec<String>, bytes: usize },
    /// The remote's open, accepted here; the transport has yet to say it can send.
    Accepted,
    /// Open on both sides (or closed since, with data left for its reader).
    Open,
}

/// Who holds the channel's handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    /// Our open in flight: the opener takes it when it is open.
    Opener,
    /// Waiting in its parent's accept queue: no handle yet.
    Queued,
    /// A top-level channel waiting in the peer's accept queue: its handle is
    /// there, the application has not taken it. One that dies there (reset, or
    /// its connection lost before its end) drops what it holds at once.
    Waiting,
    /// Nothing will hold it (a standard client's session before `exec`).
    Nobody,
    /// The application holds its halves.
    App { reader: bool, writer: bool },
    /// Every handle was dropped: the channel finishes in the background.
    Released,
}

impl Holder {
    /// A handle waiting in the peer's queue is handled like any the application
    /// holds (dropping its halves finishes or releases the channel).
    fn take_from_queue(&mut self) {
        if *self == Holder::Waiting {
            *self = Holder::App {
                reader: true,
                writer: true,
            };
        }
    }
}

#[derive(Debug)]
struct Entry {
    phase: Phase,
    state: ChannelState,
    meta: Arc<Meta>,
    /// The SSH channel's id on this side, while it is routed.
    ssh: Option<u32>,
    /// Who opened it and its open id, if it has one (standard clients' do not).
    ident: Option<(Origin, u64)>,
    nest: Nest,
    holder: Holder,
    /// In the transmit queue.
    scheduled: bool,
    /// `Opened` was reported, so `Closed` follows.
    announced: bool,
    /// When the channel, closed by the application or released, is reset if it
    /// has not finished.
    linger: Option<Instant>,
    /// What its open request costs the budget (besides the channel's own charge),
    /// and what a layer above holds for it (`BudgetShare`).
    cost: u64,
    /// In the budget's queue of grants cut short.
    starved: bool,
}

/// What our open request says on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OpenWire {
    /// To a Streamkit peer: the request's path (`direct-streamlocal`).
    Native(String),
    /// To a standard client that asked for a remote forward (`ssh -R`): a
    /// `forwarded-tcpip` channel, for one visitor.
    Forwarded(ForwardedTcpip),
}

/// A `forwarded-tcpip` open: where the visitor came (the forwarded address and
/// port) and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardedTcpip {
    pub(crate) connected_address: String,
    pub(crate) connected_port: u32,
    pub(crate) originator_address: String,
    pub(crate) originator_port: u32,
}

/// An incoming channel-open request, decoded.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// From a Streamkit peer.
    Native(OpenRequest),
    /// A standard client's `direct-tcpip` (the host names the service).
    DirectTcpip { service: String },
    /// A standard client's `session` (the service comes with `exec`).
    Session,
}

/// The answer to an incoming open.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    Accept(ChannelKey),
    Refuse(OpenRefusal),
}

/// Something the driver must ask of the transport.
#[derive(Debug)]
pub(crate) enum Command {
    /// Send the open request of `key` (see [`ConnectionState::take_request`]):
    /// the opener usually has already.
    Open { key: ChannelKey },
    /// The SSH channel `key` is closed here: the transport can drop its writer.
    Forget { key: ChannelKey },
}

/// Something to report above the connection.
#[derive(Debug)]
pub(crate) enum Report {
    Opened { meta: Arc<Meta>, local: bool },
    Closed { meta: Arc<Meta> },
}

/// What an open we made came to, from the transport.
#[derive(Debug)]
pub(crate) enum OpenOutcome {
    Refused(u32),
    Gone,
}

/// Waiters made ready since the driver last looked.
#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    pub read: Vec<ChannelKey>,
    pub write: Vec<ChannelKey>,
    /// Parents whose accept queue changed (or closed).
    pub accept: Vec<ChannelKey>,
    /// The driver has something to do.
    pub driver: bool,
}

/// Bytes one channel sends before the next channel's turn.
const TURN_BUDGET: usize = 512 * 1024;

/// One connection's channels (see the module docs).
#[derive(Debug)]
pub(crate) struct ConnectionState {
    limits: Limits,
    local_name: String,
    remote_name: String,
    remote_identity: Arc<RemoteIdentity>,
    next_key: u64,
    next_open_id: u64,
    entries: OwnMap<ChannelKey, Entry>,
    by_ssh: OwnMap<u32, ChannelKey>,
    /// SSH ids of our opens given up before the remote answered them.
    given_up: OwnSet<u32>,
    /// Our opens not yet assigned an SSH id.
    unrouted_opens: usize,
    /// The deadlines of our opens in flight, earliest first: an open leaves it when
    /// it opens or fails, so the next deadline is found without a scan.
    deadlines: BTreeSet<(Instant, ChannelKey)>,
    /// The close deadlines of channels closing (see `Entry::linger`), earliest first.
    lingering: BTreeSet<(Instant, ChannelKey)>,
    idents: HashMap<(Origin, u64), ChannelKey>,
    /// Children waiting in any accept queue of this connection.
    queued_children: usize,
    ready: VecDeque<ChannelKey>,
    turn: Option<(ChannelKey, usize)>,
    commands: VecDeque<Command>,
    reports: VecDeque<Report>,
    wake: Wakeups,
    lost: Option<ChannelError>,
    budget: Budget,
}

impl ConnectionState {
    pub(crate) fn new(
        limits: Limits,
        local_name: String,
        remote_name: String,
        remote_identity: RemoteIdentity,
    ) -> ConnectionState {
        ConnectionState {
            budget: Budget::new(
                limits.budget,
                limits.peer_budget.clone(),
                limits.address_budget.clone(),
            ),
            limits,
            local_name,
            remote_name,
            remote_identity: Arc::new(remote_identity),
            next_key: 1,
            next_open_id: 1,
            entries: OwnMap::default(),
            by_ssh: OwnMap::default(),
            given_up: OwnSet::default(),
            unrouted_opens: 0,
            deadlines: BTreeSet::new(),
            lingering: BTreeSet::new(),
            idents: HashMap::new(),
            queued_children: 0,
            ready: VecDeque::new(),
            turn: None,
            commands: VecDeque::new(),
            reports: VecDeque::new(),
            wake: Wakeups::default(),
            lost: None,
        }
    }

    // ------------------------------------------------------------------
    // Observers
    // ------------------------------------------------------------------

    /// Channels open at the SSH level and our opens in flight.
    pub(crate) fn channel_count(&self) -> usize {
        // Opens given up and not answered yet count: a remote that never answers
        // cannot make us hold more than the limit.
        self.by_ssh.len() + self.unrouted_opens + self.given_up.len()
    }

    pub(crate) fn lost(&self) -> Option<&ChannelError> {
        self.lost.as_ref()
    }

    pub(crate) fn meta(&self, key: ChannelKey) -> Option<Arc<Meta>> {
        self.entries.get(&key).map(|e| e.meta.clone())
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Every entry, for the simulation's failure messages.
    #[cfg(test)]
    pub(crate) fn dump(&self) -> String {
        let mut out = String::new();
        let mut keys: Vec<_> = self.entries.keys().collect();
        keys.sort();
        for k in keys {
            let e = &self.entries[k];
            out.push_str(&format!(
                "\n  {k:?} ssh={:?} phase={:?} holder={:?} service={:?} state={:?}",
                e.ssh, e.phase, e.holder, e.meta.service, e.state
            ));
        }
        out.push_str(&format!(
            "\n  by_ssh={:?} given_up={:?}",
            self.by_ssh, self.given_up
        ));
        out
    }

    /// Whether our open of `key` still waits for its answer.
    #[cfg(test)]
    pub(crate) fn is_opening(&self, key: ChannelKey) -> bool {
        self.entries
            .get(&key)
            .is_some_and(|e| matches!(e.phase, Phase::Opening { .. }))
    }

    /// Every channel's state, in no order (for the simulation's checks).
    #[cfg(test)]
    pub(crate) fn channels(&self) -> impl Iterator<Item = (ChannelKey, &ChannelState)> {
        self.entries.iter().map(|(k, e)| (*k, &e.state))
    }

    /// Every entry's key (for the simulation's checks).
    #[cfg(test)]
    pub(crate) fn all_keys(&self) -> Vec<ChannelKey> {
        let mut keys: Vec<_> = self.entries.keys().copied().collect();
        keys.sort();
        keys
    }

    /// Bytes charged to this connection's memory budget.
    #[cfg(test)]
    pub(crate) fn budgeted(&self) -> u64 {
        self.budget.used()
    }

    /// The budget's count against the sum of what each entry is charged now (for
    /// the simulation's checks): they must agree.
    #[cfg(test)]
    pub(crate) fn audit_budget(&self) -> (u64, u64) {
        let sum = self
            .entries
            .values()
            .map(|e| e.state.charge() + e.cost)
            .sum();
        (self.budget.used(), sum)
    }

    /// Bytes held for readers and written but unsent, over all channels.
    pub(crate) fn buffered(&self) -> (usize, usize) {
        self.entries.values().fold((0, 0), |(r, w), e| {
            (r + e.state.buffered(), w + e.state.send_buffered())
        })
    }

    /// Keys of the channels routed now (for shutdown).
    pub(crate) fn open_keys(&self) -> Vec<ChannelKey> {
        self.by_ssh.values().copied().collect()
    }

    /// Looks at one channel's state.
    pub(crate) fn peek<R>(&self, key: ChannelKey, f: impl FnOnce(&ChannelState) -> R) -> Option<R> {
        self.entries.get(&key).map(|e| f(&e.state))
    }

    pub(crate) fn child_count(&self, key: ChannelKey) -> usize {
        self.entries.get(&key).map_or(0, |e| e.nest.child_count())
    }

    /// Takes the waiters made ready since the last call.
    #[cfg(test)]
    pub(crate) fn take_wakeups(&mut self) -> Wakeups {
        std::mem::take(&mut self.wake)
    }

    /// Swaps the waiters made ready since the last call with `spare`, which must
    /// be empty: its lists keep their capacity, so a step allocates nothing.
    pub(crate) fn swap_wakeups(&mut self, spare: &mut Wakeups) {
        debug_assert!(spare.read.is_empty() && spare.write.is_empty() && spare.accept.is_empty());
        std::mem::swap(&mut self.wake, spare);
    }

    pub(crate) fn poll_command(&mut self) -> Option<Command> {
        self.commands.pop_front()
    }

    pub(crate) fn poll_report(&mut self) -> Option<Report> {
        self.reports.pop_front()
    }

    // ------------------------------------------------------------------
    // Entries
    // ------------------------------------------------------------------

    fn new_key(&mut self) -> ChannelKey {
        let key = ChannelKey(self.next_key);
        self.next_key += 1;
        key
    }

    fn make_meta(&self, service: String, headers: Headers) -> Arc<Meta> {
        Arc::new(Meta {
            service,
            headers,
            local_peer: self.local_name.clone(),
            remote_peer: self.remote_name.clone(),
            remote_identity: self.remote_identity.clone(),
            trailers: OnceLock::new(),
        })
    }

    /// What an open request costs the budget.
    fn request_cost(service: &str, headers: &[String]) -> u64 {
        (service.len() + headers.iter().map(|h| h.len() + 4).sum::<usize>()) as u64
    }

    /// Whether the budget can take another channel the remote opens.
    fn budget_admits(&self, cost: u64) -> bool {
        self.budget
            .admits(u64::from(crate::wire::INITIAL_CREDIT) + cost)
    }

    fn insert(
        &mut self,
        key: ChannelKey,
        phase: Phase,
        holder: Holder,
        state: ChannelState,
        meta: Arc<Meta>,
    ) {
        let cost = Self::request_cost(&meta.service, meta.headers.as_slice());
        self.budget.add(state.charge() + cost);
        self.entries.insert(
            key,
            Entry {
                phase,
                state,
                meta,
                ssh: None,
                ident: None,
                nest: Nest::default(),
                holder,
                scheduled: false,
                announced: false,
                linger: None,
                cost,
                starved: false,
            },
        );
    }

    /// A layer above holds `n` more bytes for `key`'s remote: charged if the
    /// budget can hold them (or in any case, if `force`). `false` if not charged.
    pub(crate) fn charge_held(&mut self, key: ChannelKey, n: u64, force: bool) -> bool {
        if !self.entries.contains_key(&key) || !(force || self.budget.admits(n)) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&key) {
            e.cost += n;
        }
        self.budget.add(n);
        true
    }

    /// The layer above let go of `n` bytes it held for `key`'s remote (nothing
    /// once the entry is gone: its charges went with it).
    pub(crate) fn release_held(&mut self, key: ChannelKey, n: u64) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let n = n.min(e.cost);
        e.cost -= n;
        self.budget.release(n);
        if self.budget.has_starved() {
            self.feed_starved();
        }
    }

    /// Takes an entry out of the table, releasing what it was charged.
    fn remove_entry(&mut self, key: ChannelKey) -> Option<Entry> {
        let e = self.entries.remove(&key)?;
        self.budget.release(e.state.charge() + e.cost);
        Some(e)
    }

    fn route(&mut self, key: ChannelKey, ssh: u32) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.ssh = Some(ssh);
        }
        self.by_ssh.insert(ssh, key);
    }

    fn set_ident(&mut self, key: ChannelKey, ident: (Origin, u64)) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.ident = Some(ident);
        }
        self.idents.insert(ident, key);
    }

    /// Wakes whoever `w` names for `key`, schedules its transmit, and notices a
    /// channel that closed.
    fn apply(&mut self, key: ChannelKey, w: Wake) {
        if w.read {
            self.wake.read.push(key);
        }
        if w.write {
            self.wake.write.push(key);
        }
        if w.transmit {
            self.schedule(key);
        }
        let Some(e) = self.entries.get(&key) else {
            return;
        };
        if e.meta.trailers.get().is_none()
            && let Some(t) = e.state.trailers()
        {
            let _ = e.meta.trailers.set(Headers::from(t.to_vec()));
        }
        if e.state.is_closed() && e.ssh.is_some() {
            self.closed(key);
        }
    }

    fn schedule(&mut self, key: ChannelKey) {
        if let Some(e) = self.entries.get_mut(&key)
            && !e.scheduled
            && e.ssh.is_some()
            && matches!(e.phase, Phase::Open | Phase::Session { .. })
        {
            e.scheduled = true;
            self.ready.push_back(key);
            self.wake.driver = true;
        }
    }

    /// Runs `f` on a channel's state and applies what it made ready. Whatever `f`
    /// does stays within the memory budget; if it released memory, grants the
    /// budget cut short before get their turn.
    fn with<R>(
        &mut self,
        key: ChannelKey,
        f: impl FnOnce(&mut ChannelState) -> (R, Wake),
    ) -> Option<R> {
        let r = self.with_charged(key, f)?;
        // Memory may have been released by this channel, or by one that closed or
        // went: a grant cut short before gets its turn.
        if self.budget.has_starved() {
            self.feed_starved();
        }
        Some(r)
    }

    /// [`with`](Self::with), without the retries.
    fn with_charged<R>(
        &mut self,
        key: ChannelKey,
        f: impl FnOnce(&mut ChannelState) -> (R, Wake),
    ) -> Option<R> {
        let e = self.entries.get_mut(&key)?;
        let before = e.state.charge();
        let room = if e.state.assembling() {
            self.budget.hard_free()
        } else {
            self.budget.free()
        };
        e.state.set_allowance(before + room);
        let (r, w) = f(&mut e.state);
        let after = e.state.charge();
        if !e.starved && e.state.held_back() {
            e.starved = true;
            self.budget.starve(key);
        }
        self.budget.change(before, after);
        self.apply(key, w);
        Some(r)
    }

    /// Grants the budget cut short, oldest first, while it has room.
    fn feed_starved(&mut self) {
        while let Some(key) = self.budget.next_starved(MIN_REGRANT) {
            let Some(e) = self.entries.get_mut(&key) else {
                continue;
            };
            e.starved = false;
            let _ = self.with_charged(key, |s| ((), s.regrant()));
            if self.entries.get(&key).is_some_and(|e| e.starved) {
                // Still short (queued again, last): the budget is full again.
                break;
            }
        }
    }

    /// The SSH channel of `key` is closed here: it leaves the routing table, its
    /// children are closed, and the entry goes once no handle holds it.
    fn closed(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let Some(ssh) = e.ssh.take() else {
            return;
        };
        if let Some(at) = e.linger.take() {
            self.lingering.remove(&(at, key));
        }
        if self.by_ssh.get(&ssh) == Some(&key) {
            self.by_ssh.remove(&ssh);
        }
        if let Some(ident) = e.ident.take()
            && self.idents.get(&ident) == Some(&key)
        {
            self.idents.remove(&ident);
        }
        if e.announced {
            self.reports.push_back(Report::Closed {
                meta: e.meta.clone(),
            });
        }
        if e.holder == Holder::Waiting && e.state.is_dead() {
            // Nobody will read it: its memory goes now, not when the queue drops it.
            let cost = std::mem::take(&mut e.cost);
            self.budget.release(cost);
            self.with(key, |s| ((), s.reader_dropped()));
        }
        self.commands.push_back(Command::Forget { key });
        self.wake.driver = true;
        self.wake.read.push(key);
        self.wake.write.push(key);
        self.close_children(key);
        self.leave_parent(key);
        self.maybe_remove(key);
    }

    /// Removes an entry nobody can reach any more.
    fn maybe_remove(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get(&key) else {
            return;
        };
        let unreachable = match e.holder {
            Holder::Released | Holder::Nobody => true,
            // Queued in a parent: it stays there (with its data) until accepted,
            // unless it failed (nothing left to read).
            Holder::Queued => e.state.has_failed(),
            Holder::Opener | Holder::Waiting | Holder::App { .. } => false,
        };
        if e.ssh.is_none() && unreachable {
            let parent = e.nest.parent();
            let queued = e.holder == Holder::Queued;
            self.remove_entry(key);
            if queued {
                self.unqueue(key, parent);
            }
        }
    }

    // ------------------------------------------------------------------
    // From the transport
    // ------------------------------------------------------------------

    fn routed(&self, ssh: u32) -> Option<ChannelKey> {
        self.by_ssh.get(&ssh).copied()
    }

    pub(crate) fn on_data(&mut self, ssh: u32, data: Bytes) {
        if let Some(key) = self.routed(ssh) {
            self.with(key, |s| ((), s.on_data(data)));
        }
    }

    pub(crate) fn on_extended(&mut self, ssh: u32, ext: u32, data: &[u8]) {
        if let Some(key) = self.routed(ssh) {
            self.with(key, |s| ((), s.on_extended(ext, data)));
        }
    }

    pub(crate) fn on_eof(&mut self, ssh: u32) {
        if let Some(key) = self.routed(ssh) {
            self.with(key, |s| ((), s.on_eof()));
        }
    }

    /// The remote closed the SSH channel.
    pub(crate) fn on_close(&mut self, ssh: u32) {
        if let Some(key) = self.routed(ssh) {
            self.with(key, |s| ((), s.on_close()));
        }
    }

    /// The remote opened its SSH window on a channel (standard clients: ours
    /// may be waiting for room).
    pub(crate) fn on_window(&mut self, ssh: u32) {
        if let Some(key) = self.routed(ssh) {
            self.schedule(key);
        }
    }

    /// The connection is gone: every channel fails, every open in flight too.
    pub(crate) fn on_lost(&mut self, e: ChannelError) {
        if self.lost.is_some() {
            return;
        }
        self.lost = Some(e.clone());
        self.given_up.clear();
        let keys: Vec<ChannelKey> = self.entries.keys().copied().collect();
        for key in &keys {
            let opening = matches!(
                self.entries.get(key).map(|e| &e.phase),
                Some(Phase::Opening { .. })
            );
            if opening {
                self.fail_open(*key, OpenErrorKind::ConnectionLost(lost_reason(&e)), false);
                continue;
            }
            self.with(*key, |s| ((), s.on_connection_lost(&e)));
            self.closed(*key);
        }
        self.ready.clear();
        self.turn = None;
        self.wake.driver = true;
    }
}

/// A lost connection's reason, for an open error.
pub(crate) fn lost_reason(e: &ChannelError) -> LostReason {
    match e {
        ChannelError::ConnectionLost(r) => r.clone(),
        other => LostReason::new(other.to_string()),
    }
}
