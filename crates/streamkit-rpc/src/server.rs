//! The callee's side of a session: one task reads the caller's messages and
//! starts a task per call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use streamkit::{Channel, ChannelMeta};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::codec::Codec;
use crate::error::{Code, RpcError};
use crate::session::{CALL_WINDOW, Cancel, Full, Gate, Inbox, Outbox, lock};
use crate::wire::Message as Wire;
use crate::{Context, RpcInner};

/// What a handler returns: `Ok(Some(object))` is the last output, sent with the
/// end of the call in one message.
pub(crate) type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Option<Bytes>, RpcError>> + Send>>;

/// A registered method, type-erased.
pub(crate) struct Method {
    /// Unary and server-streaming methods take exactly one input.
    pub(crate) one_input: bool,
    pub(crate) handler: Box<dyn Fn(Context, RawInputs, RawOutputs) -> HandlerFuture + Send + Sync>,
}

impl Method {
    pub(crate) fn new<F, Fut>(one_input: bool, f: F) -> Method
    where
        F: Fn(Context, RawInputs, RawOutputs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Option<Bytes>, RpcError>> + Send + 'static,
    {
        Method {
            one_input,
            handler: Box::new(move |ctx, ins, outs| Box::pin(f(ctx, ins, outs))),
        }
    }
}

/// The inputs of a call as encoded objects.
pub struct RawInputs {
    pub(crate) inbox: Arc<Inbox>,
    pub(crate) codec: Codec,
}

impl RawInputs {
    /// The next input; `None` once the caller ended its inputs.
    pub async fn next(&mut self) -> Option<Result<Bytes, RpcError>> {
        self.inbox.recv().await
    }

    /// The codec the inputs are encoded with.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

/// The outputs of a call as encoded objects.
pub struct RawOutputs {
    pub(crate) out: Arc<Outbox>,
    pub(crate) gate: Arc<Gate>,
    pub(crate) id: u64,
    pub(crate) codec: Codec,
    pub(crate) max_message: usize,
}

impl RawOutputs {
    /// Sends one output, waiting for the caller's flow-control credit.
    pub async fn send(&mut self, payload: Bytes) -> Result<(), RpcError> {
        check_size(payload.len(), self.max_message)?;
        self.gate.take(payload.len()).await?;
        self.out
            .send(Wire::Item {
                id: self.id,
                payload,
                last: false,
            })
            .await
    }

    /// The codec outputs must be encoded with.
    pub fn codec(&self) -> Codec {
        self.codec
    }
}

pub(crate) fn check_size(len: usize, max: usize) -> Result<(), RpcError> {
    if len > max {
        return Err(RpcError::new(
            Code::RESOURCE_EXHAUSTED,
            format!("object of {len} bytes exceeds the limit of {max} bytes"),
        ));
    }
    Ok(())
}

/// Sessions one calling peer may have open to this node at once (one per codec
/// is the norm; a few more cover reconnects racing the old session's end).
pub(crate) const MAX_SESSIONS_PER_CALLER: usize = 16;

/// What one calling peer makes this node hold, over all its sessions: names are
/// identities (bound to keys), so a caller cannot multiply its budget by opening
/// more sessions or connections under its name.
#[derive(Default)]
pub(crate) struct CallerBudget {
    /// Bytes of inputs waiting for handlers.
    inputs: Arc<AtomicUsize>,
    /// Calls running (answer not yet queued).
    calls: AtomicUsize,
    sessions: AtomicUsize,
}

/// A place counted in one of a caller's counters (a running call, an open
/// session), given back when dropped.
struct Slot(Arc<CallerBudget>, fn(&CallerBudget) -> &AtomicUsize);

impl Slot {
    /// Takes a place; also how many were taken before it.
    fn take(budget: &Arc<CallerBudget>, which: fn(&CallerBudget) -> &AtomicUsize) -> (Slot, usize) {
        let before = which(budget).fetch_add(1, Ordering::Relaxed);
        (Slot(budget.clone(), which), before)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        (self.1)(&self.0).fetch_sub(1, Ordering::Relaxed);
    }
}

struct Running {
    _slot: Slot,
    /// Tells this call from a later one that reuses its id.
    generation: u64,
    inbox: Arc<Inbox>,
    gate: Arc<Gate>,
    cancel: Cancel,
    task: AbortHandle,
    one_input: bool,
    inputs: u64,
}

/// A session a caller opened to us.
pub(crate) struct ServerSession {
    pub(crate) out: Arc<Outbox>,
    calls: Mutex<HashMap<u64, Running>>,
    generation: std::sync::atomic::AtomicU64,
    /// Ids the caller cancelled before their `CALL` arrived (a cancel can
    /// overtake its call in the caller's queue). Bounded: see `EARLY_CANCELS`.
    early_cancels: Mutex<std::collections::VecDeque<u64>>,
    /// The highest call id seen, to tell an early cancel from a late one.
    highest_id: std::sync::atomic::AtomicU64,
    /// Set when the node goes away: the session ends.
    pub(crate) closing: Cancel,
    /// What its caller holds here, over all its sessions.
    budget: Arc<CallerBudget>,
    /// The session channel's share of its connection's memory budget.
    share: streamkit::BudgetShare,
}

/// How many early cancels are remembered; older ones are forgotten (the caller
/// then gets an answer it no longer waits for, which it ignores).
const EARLY_CANCELS: usize = 1024;

/// Serves one session channel until it ends.
pub(crate) async fn serve(rpc: Weak<RpcInner>, meta: ChannelMeta, mut ch: Channel) {
    // Quiet calls are normal: a session never times out on reads.
    ch.set_read_timeout(None);
    // Sessions never nest: a remote cannot park channels on one.
    ch.refuse_children();
    let share = ch.budget_share();
    let (mut r, w) = ch.split();
    let out = Outbox::spawn(w, Some(share.clone()));
    let codec = match meta
        .headers()
        .get("codec")
        .unwrap_or("json")
        .parse::<Codec>()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(peer = %meta.remote_peer(), error = %e, "refused an rpc session");
            let _ = out
                .send(Wire::Error {
                    id: 0,
                    code: Code::UNKNOWN_CODEC.0,
                    message: e.to_string(),
                    data: None,
                })
                .await;
            return;
        }
    };
    let Some(budget) = rpc
        .upgrade()
        .map(|rpc| rpc.caller_budget(meta.remote_peer()))
    else {
        return;
    };
    let (_session_slot, sessions) = Slot::take(&budget, |b| &b.sessions);
    if sessions >= MAX_SESSIONS_PER_CALLER {
        tracing::info!(peer = %meta.remote_peer(), "refused an rpc session: too many from this peer");
        let _ = out
            .send(Wire::Error {
                id: 0,
                code: Code::RESOURCE_EXHAUSTED.0,
                message: format!(
                    "too many rpc sessions from this peer (limit {MAX_SESSIONS_PER_CALLER})"
                ),
                data: None,
            })
            .await;
        return;
    }
    let session = Arc::new(ServerSession {
        out: out.clone(),
        calls: Mutex::new(HashMap::new()),
        generation: Default::default(),
        early_cancels: Mutex::default(),
        highest_id: Default::default(),
        closing: Cancel::default(),
        budget,
        share,
    });
    let Some(opts) = rpc.upgrade().map(|rpc| {
        // The catalogue is this session's first message.
        rpc.add_server(&session);
        rpc.opts.clone()
    }) else {
        return;
    };
    let caller: Arc<str> = Arc::from(meta.remote_peer());
    // The caller stopped reading its answers while it kept calling.
    let mut cut_off = false;
    loop {
        let read = tokio::select! {
            biased;
            () = session.closing.cancelled() => break,
            read = r.read_frame() => read,
        };
        let frame = match read {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(peer = %caller, error = %e, "rpc session ended");
                break;
            }
        };
        let msg = match Wire::decode(&frame) {
            Ok(m) => m,
            Err(e) => {
                tracing::info!(peer = %caller, error = %e, "malformed rpc message; ending the session");
                session.end(format!("malformed message: {e}"));
                break;
            }
        };
        match msg {
            Wire::Call {
                id,
                method,
                budget_us,
                input,
                last,
            } => {
                let Some(rpc) = rpc.upgrade() else { break };
                let started = Instant::now();
                if lock(&session.calls).contains_key(&id) {
                    session.end(format!("call id {id} is already in use"));
                    break;
                }
                session
                    .highest_id
                    .fetch_max(id, std::sync::atomic::Ordering::Relaxed);
                if session.cancelled_early(id) {
                    continue;
                }
                if let Err(e) = start(
                    &rpc, &session, &caller, codec, id, &method, budget_us, started, input, last,
                ) && session.fail(id, &e, codec).is_err()
                {
                    cut_off = true;
                    break;
                }
            }
            Wire::Item { id, payload, last } => {
                let res = {
                    let mut calls = lock(&session.calls);
                    match calls.get_mut(&id) {
                        None => Ok(()), // finished or cancelled: late inputs are dropped
                        Some(c) => {
                            c.inputs += 1;
                            if c.one_input && (c.inputs > 1 || !last) {
                                Err(one_input_error())
                            } else if let Err(e) = check_size(payload.len(), opts.max_message_size)
                            {
                                Err(e)
                            } else if session
                                .budget
                                .inputs
                                .load(std::sync::atomic::Ordering::Relaxed)
                                + crate::session::cost(payload.len())
                                > opts.max_inputs_per_caller
                            {
                                Err(inputs_over_budget(opts.max_inputs_per_caller))
                            } else if let Err(why) = c.inbox.push(payload, opts.max_message_size) {
                                Err(refused(why))
                            } else {
                                if last {
                                    c.inbox.finish(Ok(()));
                                }
                                Ok(())
                            }
                        }
                    }
                };
                if let Err(e) = res {
                    session.abort(id);
                    if session.fail(id, &e, codec).is_err() {
                        cut_off = true;
                        break;
                    }
                }
            }
            Wire::End { id } => {
                if let Some(c) = lock(&session.calls).get(&id) {
                    c.inbox.finish(Ok(()));
                }
            }
            Wire::Cancel { id } => {
                if id
                    > session
                        .highest_id
                        .load(std::sync::atomic::Ordering::Relaxed)
                {
                    session.remember_cancel(id);
                } else {
                    session.abort(id);
                }
            }
            Wire::Credit { id, bytes } => {
                if let Some(c) = lock(&session.calls).get(&id) {
                    c.gate.grant(bytes);
                }
            }
            Wire::Error { .. } | Wire::Methods { .. } => {
                tracing::info!(peer = %caller, "unexpected rpc message from a caller; ending the session");
                session.end("unexpected message from a caller".into());
                break;
            }
        }
    }
    // The caller is gone: its calls are cancelled.
    let ids: Vec<u64> = lock(&session.calls).keys().copied().collect();
    for id in ids {
        session.abort(id);
    }
    // What is queued goes out if the caller takes it, within a grace; a caller
    // cut off for not reading gets nothing more.
    if cut_off {
        out.kill();
    } else {
        out.kill_after(SESSION_END_GRACE);
    }
}

/// How long an ended session's last answers may wait for the caller to take them.
const SESSION_END_GRACE: Duration = Duration::from_secs(10);

impl ServerSession {
    /// Whether the caller cancelled `id` before its `CALL` arrived.
    fn cancelled_early(&self, id: u64) -> bool {
        let mut early = lock(&self.early_cancels);
        match early.iter().position(|&x| x == id) {
            Some(i) => {
                early.remove(i);
                true
            }
            None => false,
        }
    }

    fn remember_cancel(&self, id: u64) {
        let mut early = lock(&self.early_cancels);
        if early.len() >= EARLY_CANCELS {
            early.pop_front();
        }
        early.push_back(id);
    }

    /// Ends the session with a protocol error (`ERROR` id 0), if the queue has
    /// room for it (the session ends either way).
    fn end(&self, why: String) {
        let _ = self.out.try_send(Wire::Error {
            id: 0,
            code: Code::INTERNAL.0,
            message: why,
            data: None,
        });
    }

    /// The node is going away: every call is cancelled and the session ends.
    pub(crate) fn shut(&self) {
        let ids: Vec<u64> = lock(&self.calls).keys().copied().collect();
        for id in ids {
            self.abort(id);
        }
        self.closing.cancel();
    }

    /// Cancels a running call (its handler's future is dropped).
    fn abort(&self, id: u64) {
        if let Some(c) = lock(&self.calls).remove(&id) {
            c.cancel.cancel();
            c.task.abort();
            c.inbox.fail(RpcError::cancelled());
            c.gate.close(RpcError::cancelled());
        }
    }

    /// Answers a call with an error, in order with the session's other messages.
    /// The reader calls it, and the reader never waits: `Err` if the queue is
    /// full (the caller does not read its answers), and the session ends, with a
    /// log line, rather than hold more for it.
    fn fail(&self, id: u64, e: &RpcError, codec: Codec) -> Result<(), Full> {
        self.out
            .try_send(error_message(id, e, codec))
            .inspect_err(|_| {
                tracing::info!(
                    "rpc caller does not read its answers ({} bytes queued): ending the session",
                    crate::session::OUTBOX_BYTES
                );
            })
    }
}

#[allow(clippy::too_many_arguments)]
fn start(
    rpc: &Arc<RpcInner>,
    session: &Arc<ServerSession>,
    caller: &Arc<str>,
    codec: Codec,
    id: u64,
    method: &str,
    budget_us: u64,
    started: Instant,
    input: Option<Bytes>,
    last: bool,
) -> Result<(), RpcError> {
    let opts = &rpc.opts;
    let Some(m) = rpc.method(method) else {
        return Err(RpcError::new(
            Code::METHOD_NOT_FOUND,
            format!("method {method:?} not found on peer {:?}", rpc.peer.name()),
        ));
    };
    let (slot, running) = Slot::take(&session.budget, |b| &b.calls);
    if running >= opts.max_concurrent_calls {
        return Err(RpcError::new(
            Code::RESOURCE_EXHAUSTED,
            format!(
                "too many concurrent calls (limit {})",
                opts.max_concurrent_calls
            ),
        ));
    }
    // A method taking one input takes it with "last": it answers at once, so a
    // second input could otherwise come after the answer and be lost.
    if m.one_input && input.is_some() != last {
        return Err(one_input_error());
    }
    if let Some(p) = &input
        && session
            .budget
            .inputs
            .load(std::sync::atomic::Ordering::Relaxed)
            + crate::session::cost(p.len())
            > opts.max_inputs_per_caller
    {
        return Err(inputs_over_budget(opts.max_inputs_per_caller));
    }
    let inbox = Inbox::new(
        CALL_WINDOW,
        session.budget.inputs.clone(),
        Some(session.share.clone()),
    );
    inbox.grant_to(session.out.clone(), id);
    let mut inputs = 0;
    if let Some(p) = input {
        check_size(p.len(), opts.max_message_size)?;
        inbox.push(p, opts.max_message_size).map_err(refused)?;
        inputs = 1;
    }
    if last {
        inbox.finish(Ok(()));
    }
    let gate = Gate::new(CALL_WINDOW);
    let cancel = Cancel::default();
    let deadline = (budget_us > 0).then(|| started + Duration::from_micros(budget_us));
    let ctx = Context {
        rpc: crate::Rpc { inner: rpc.clone() },
        caller: caller.clone(),
        method: Arc::from(method),
        codec,
        deadline,
        cancel: cancel.clone(),
    };
    let raw_in = RawInputs {
        inbox: inbox.clone(),
        codec,
    };
    let raw_out = RawOutputs {
        out: session.out.clone(),
        gate: gate.clone(),
        id,
        codec,
        max_message: opts.max_message_size,
    };
    let fut = (m.handler)(ctx, raw_in, raw_out);
    let sess = Arc::downgrade(session);
    let out = session.out.clone();
    let cancel2 = cancel.clone();
    let gate2 = gate.clone();
    let generation = session
        .generation
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    // Registered before the task can finish and remove it.
    let mut calls = lock(&session.calls);
    let task = tokio::spawn(async move {
        let run = std::panic::AssertUnwindSafe(fut).catch_unwind();
        let res = match deadline {
            Some(d) => tokio::time::timeout_at(d, run).await.map_err(|_| ()),
            None => Ok(run.await),
        };
        let reply = match res {
            Ok(Ok(Ok(Some(last)))) => Wire::Item {
                id,
                payload: last,
                last: true,
            },
            Ok(Ok(Ok(None))) => Wire::End { id },
            Ok(Ok(Err(e))) => error_message(id, &e, codec),
            Ok(Err(panic)) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string payload".into());
                error_message(
                    id,
                    &RpcError::new(Code::INTERNAL, format!("handler panicked: {what}")),
                    codec,
                )
            }
            Err(()) => {
                cancel2.cancel();
                error_message(id, &RpcError::deadline(), codec)
            }
        };
        // Outputs sent after the end (from tasks the handler spawned) fail.
        gate2.close(RpcError::new(Code::CANCELLED, "the call has ended"));
        // Counted as running until its answer is queued, so that answers the
        // caller does not read stay within the concurrent-call limit.
        let _ = out.send(reply).await;
        if let Some(s) = sess.upgrade() {
            let mut calls = lock(&s.calls);
            if calls.get(&id).is_some_and(|c| c.generation == generation) {
                calls.remove(&id);
            }
        }
    });
    calls.insert(
        id,
        Running {
            _slot: slot,
            generation,
            inbox,
            gate,
            cancel,
            task: task.abort_handle(),
            one_input: m.one_input,
            inputs,
        },
    );
    Ok(())
}

fn refused(why: crate::session::Refused) -> RpcError {
    match why {
        crate::session::Refused::Overrun => RpcError::new(
            Code::RESOURCE_EXHAUSTED,
            "inputs sent beyond the granted credit",
        ),
        crate::session::Refused::Budget => RpcError::new(
            Code::RESOURCE_EXHAUSTED,
            "the connection's memory budget cannot hold this input",
        ),
    }
}

fn one_input_error() -> RpcError {
    RpcError::new(
        Code::BAD_ARGUMENTS,
        "this method takes exactly one input, sent with \"last\"",
    )
}

fn inputs_over_budget(max: usize) -> RpcError {
    RpcError::new(
        Code::RESOURCE_EXHAUSTED,
        format!("inputs waiting for handlers from this peer exceed {max} bytes"),
    )
}

fn error_message(id: u64, e: &RpcError, codec: Codec) -> Wire {
    Wire::Error {
        id,
        code: e.code().0,
        message: e.message().to_owned(),
        data: e.encoded_data(codec),
    }
}
