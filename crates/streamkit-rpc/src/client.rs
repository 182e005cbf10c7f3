//! The caller's side of a session, and the handles of calls in flight.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use bytes::Bytes;
use streamkit::ReadHalf;
use tokio::time::Instant;

use crate::RpcInner;
use crate::codec::{Codec, Message};
use crate::error::{Code, RpcError};
use crate::server::check_size;
use crate::session::{CALL_WINDOW, Gate, Inbox, Outbox, lock};

/// How long a peer has to answer a new session with its catalogue.
const SESSION_START: std::time::Duration = std::time::Duration::from_secs(10);
use crate::wire::Message as Wire;

struct Pending {
    outputs: Arc<Inbox>,
    gate: Arc<Gate>,
}

/// A session we opened to a peer, with one codec.
pub(crate) struct ClientSession {
    pub(crate) peer: String,
    pub(crate) codec: Codec,
    out: Arc<Outbox>,
    calls: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    methods: RwLock<HashSet<String>>,
    dead: OnceLock<RpcError>,
    window: usize,
    max_message: usize,
    reader: OnceLock<tokio::task::AbortHandle>,
    /// Calls in flight to this peer (over all our sessions to it) are limited as
    /// a callee limits them per calling peer (the same option): calls beyond wait
    /// here for a slot instead of being refused there.
    slots: Arc<tokio::sync::Semaphore>,
}

impl ClientSession {
    /// Opens a session channel to `peer` and waits for its catalogue.
    pub(crate) async fn open(
        rpc: &Arc<RpcInner>,
        peer: &str,
        codec: Codec,
    ) -> Result<Arc<ClientSession>, RpcError> {
        let ch = rpc
            .peer
            .open(peer, crate::SERVICE, [format!("codec={}", codec.name())])
            .await
            .map_err(|e| RpcError::unavailable(e.to_string()))?;
        let mut ch = ch;
        // Quiet calls are normal: a session never times out on reads.
        ch.set_read_timeout(None);
        // Sessions never nest: a remote cannot park channels on one.
        ch.refuse_children();
        let (mut r, w) = ch.split();
        // The first message is the catalogue, or why the session is refused.
        let first = tokio::time::timeout(SESSION_START, r.read_frame())
            .await
            .map_err(|_| {
                RpcError::unavailable(format!(
                    "peer {peer:?} did not start the rpc session within {SESSION_START:?}"
                ))
            })?
            .map_err(|e| RpcError::unavailable(e.to_string()))?;
        let names = match first.as_ref().map(Wire::decode) {
            Some(Ok(Wire::Methods { names })) => names,
            Some(Ok(Wire::Error { code, message, .. })) => {
                return Err(RpcError::from_wire(code, message, None));
            }
            _ => {
                return Err(RpcError::new(
                    Code::INTERNAL,
                    "peer did not start the rpc session",
                ));
            }
        };
        let session = Arc::new(ClientSession {
            peer: peer.to_owned(),
            codec,
            out: Outbox::spawn(w, None),
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            methods: RwLock::new(names.into_iter().collect()),
            dead: OnceLock::new(),
            window: CALL_WINDOW,
            max_message: rpc.opts.max_message_size,
            reader: OnceLock::new(),
            slots: rpc.call_slots(peer),
        });
        let weak_rpc = Arc::downgrade(rpc);
        let s = session.clone();
        let task = tokio::spawn(async move {
            let why = s.read_loop(&mut r).await;
            s.die(why);
            if let Some(rpc) = weak_rpc.upgrade() {
                rpc.forget_session(&s);
            }
        });
        let _ = session.reader.set(task.abort_handle());
        Ok(session)
    }

    pub(crate) fn serves(&self, method: &str) -> bool {
        self.methods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(method)
    }

    pub(crate) fn is_dead(&self) -> bool {
        self.dead.get().is_some()
    }

    /// Ends the session now (the `Rpc` is going away).
    pub(crate) fn shut(&self) {
        if let Some(t) = self.reader.get() {
            t.abort();
        }
        self.die(RpcError::unavailable("rpc node shut down"));
    }
    fn die(&self, why: RpcError) {
        let calls: Vec<Pending> = {
            // Under the lock `start` checks and inserts with: no call slips in.
            let mut calls = lock(&self.calls);
            let _ = self.dead.set(why.clone());
            calls.drain().map(|(_, p)| p).collect()
        };
        for p in calls {
            p.outputs.finish(Err(why.clone()));
            p.gate.close(why.clone());
        }
    }
}

/// Starts a call on `session`: the returned handle receives the outputs.
pub(crate) async fn start(
    session: &Arc<ClientSession>,
    method: &str,
    deadline: Option<Instant>,
    input: Option<Bytes>,
    last: bool,
) -> Result<CallHandle, RpcError> {
    if let Some(e) = session.dead.get() {
        return Err(e.clone());
    }
    let slot = session
        .slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| RpcError::unavailable("session closed"))?;
    if let Some(e) = session.dead.get() {
        return Err(e.clone()); // it died while we waited for a slot
    }
    let gate = Gate::new(session.window);
    if let Some(i) = &input {
        check_size(i.len(), session.max_message)?;
        gate.take(i.len()).await?;
    }
    // The callee tells a cancel that overtook its call from a late one by the
    // highest id it has seen, so ids must reach it in order: the id is taken and the
    // CALL queued under one lock, through a place reserved beforehand. Nothing is
    // registered before that, so a call dropped while it waits leaves no trace.
    let permit = session.out.reserve().await?;
    let budget_us = match deadline {
        None => 0,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RpcError::deadline());
            }
            u64::try_from(left.as_micros()).unwrap_or(u64::MAX).max(1)
        }
    };
    // A caller bounds its outputs by the calls it makes: counted per call.
    let outputs = Inbox::new(session.window, Default::default(), None);
    let id = {
        let mut calls = lock(&session.calls);
        if let Some(e) = session.dead.get() {
            return Err(e.clone());
        }
        let id = session.next_id.fetch_add(1, Ordering::Relaxed);
        calls.insert(
            id,
            Pending {
                outputs: outputs.clone(),
                gate: gate.clone(),
            },
        );
        permit.send(
            Wire::Call {
                id,
                method: method.to_owned(),
                budget_us,
                input,
                last,
            }
            .encode(),
        );
        id
    };
    outputs.grant_to(session.out.clone(), id);
    Ok(CallHandle {
        session: session.clone(),
        id,
        outputs,
        gate,
        deadline,
        done: false,
        sent_last: last,
        slot: Some(slot),
    })
}

/// One call in flight, untyped. Dropping it before the call ended cancels the
/// call on the callee.
pub struct CallHandle {
    session: Arc<ClientSession>,
    id: u64,
    outputs: Arc<Inbox>,
    gate: Arc<Gate>,
    deadline: Option<Instant>,
    done: bool,
    /// Its place among the calls in flight to the peer, until the call ends.
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    sent_last: bool,
}

impl CallHandle {
    /// The peer serving the call.
    pub fn peer(&self) -> &str {
        &self.session.peer
    }

    /// The codec of the call.
    pub fn codec(&self) -> Codec {
        self.session.codec
    }

    /// Sends one encoded input, waiting for the callee's flow-control credit.
    pub async fn send_raw(&mut self, payload: Bytes) -> Result<(), RpcError> {
        if self.sent_last {
            return Err(RpcError::new(Code::BAD_ARGUMENTS, "inputs already ended"));
        }
        check_size(payload.len(), self.session.max_message)?;
        let send = async {
            self.gate.take(payload.len()).await?;
            self.session
                .out
                .send(Wire::Item {
                    id: self.id,
                    payload,
                    last: false,
                })
                .await
        };
        match self.deadline {
            Some(d) => tokio::time::timeout_at(d, send)
                .await
                .map_err(|_| RpcError::deadline())?,
            None => send.await,
        }
    }

    /// Ends the inputs (the callee's input stream ends).
    pub async fn close_send(&mut self) -> Result<(), RpcError> {
        if std::mem::replace(&mut self.sent_last, true) {
            return Ok(());
        }
        self.session.out.send(Wire::End { id: self.id }).await
    }

    /// The next encoded output; `None` once the call ended successfully.
    pub async fn next_raw(&mut self) -> Option<Result<Bytes, RpcError>> {
        if self.done {
            return None;
        }
        let next = match self.deadline {
            Some(d) => match tokio::time::timeout_at(d, self.outputs.recv()).await {
                Ok(n) => n,
                Err(_) => Some(Err(RpcError::deadline())),
            },
            None => self.outputs.recv().await,
        };
        match &next {
            None | Some(Err(_)) => {
                self.finish_local();
            }
            Some(Ok(_)) => {}
        }
        next
    }

    /// The call ended on our side: nothing to cancel any more, unless it failed
    /// locally (deadline), in which case the callee is told.
    fn finish_local(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.slot = None;
        let removed = lock(&self.session.calls).remove(&self.id).is_some();
        if removed && !self.outputs.is_finished() {
            self.session.out.send_now(Wire::Cancel { id: self.id });
        }
    }
}

impl Drop for CallHandle {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            if lock(&self.session.calls).remove(&self.id).is_some() {
                self.session.out.send_now(Wire::Cancel { id: self.id });
            }
        }
    }
}

impl ClientSession {
    /// Reads the callee's messages until the session ends; returns why.
    async fn read_loop(&self, r: &mut ReadHalf) -> RpcError {
        loop {
            let frame = match r.read_frame().await {
                Ok(Some(f)) => f,
                Ok(None) => {
                    return RpcError::unavailable(format!(
                        "peer {:?} ended the rpc session",
                        self.peer
                    ));
                }
                Err(e) => {
                    return RpcError::unavailable(format!(
                        "rpc session with {:?} lost: {e}",
                        self.peer
                    ));
                }
            };
            let msg = match Wire::decode(&frame) {
                Ok(m) => m,
                Err(e) => {
                    return RpcError::new(
                        Code::INTERNAL,
                        format!("malformed message from {:?}: {e}", self.peer),
                    );
                }
            };
            match msg {
                Wire::Item { id, payload, last } => {
                    let mut calls = lock(&self.calls);
                    let Some(p) = calls.get(&id) else { continue };
                    let res = check_size(payload.len(), self.max_message).and_then(|()| {
                        p.outputs.push(payload, self.max_message).map_err(|_| {
                            RpcError::new(Code::RESOURCE_EXHAUSTED, "callee sent beyond its credit")
                        })
                    });
                    match res {
                        Err(e) => {
                            let p = calls.remove(&id);
                            drop(calls);
                            if let Some(p) = p {
                                p.outputs.fail(e.clone());
                                p.gate.close(e);
                            }
                            self.out.send_now(Wire::Cancel { id });
                        }
                        Ok(()) if last => {
                            if let Some(p) = calls.remove(&id) {
                                p.outputs.finish(Ok(()));
                                p.gate
                                    .close(RpcError::new(Code::CANCELLED, "the call has ended"));
                            }
                        }
                        Ok(()) => {}
                    }
                }
                Wire::End { id } => {
                    if let Some(p) = lock(&self.calls).remove(&id) {
                        p.outputs.finish(Ok(()));
                        p.gate
                            .close(RpcError::new(Code::CANCELLED, "the call has ended"));
                    }
                }
                Wire::Error {
                    id: 0,
                    code,
                    message,
                    ..
                } => {
                    return RpcError::from_wire(code, message, None);
                }
                Wire::Error {
                    id,
                    code,
                    message,
                    data,
                } => {
                    if let Some(p) = lock(&self.calls).remove(&id) {
                        let e = RpcError::from_wire(code, message, data.map(|d| (self.codec, d)));
                        p.outputs.finish(Err(e.clone()));
                        p.gate.close(e);
                    }
                }
                Wire::Credit { id, bytes } => {
                    if let Some(p) = lock(&self.calls).get(&id) {
                        p.gate.grant(bytes);
                    }
                }
                Wire::Methods { names } => {
                    *self
                        .methods
                        .write()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) =
                        names.into_iter().collect();
                }
                Wire::Call { .. } | Wire::Cancel { .. } => {
                    return RpcError::new(
                        Code::INTERNAL,
                        format!("unexpected message from callee {:?}", self.peer),
                    );
                }
            }
        }
    }
}

/// Outputs of a server-streaming or bidirectional call, typed.
pub struct Streaming<R> {
    pub(crate) handle: CallHandle,
    pub(crate) _r: PhantomData<fn() -> R>,
}

impl<R: Message> Streaming<R> {
    /// The next output; `None` once the call ended successfully.
    pub async fn next(&mut self) -> Option<Result<R, RpcError>> {
        let codec = self.handle.codec();
        Some(match self.handle.next_raw().await? {
            Ok(b) => R::decode(codec, &b)
                .map_err(|e| RpcError::new(Code::INTERNAL, format!("output did not decode: {e}"))),
            Err(e) => Err(e),
        })
    }

    /// All remaining outputs.
    pub async fn collect(mut self) -> Result<Vec<R>, RpcError> {
        let mut v = Vec::new();
        while let Some(r) = self.next().await {
            v.push(r?);
        }
        Ok(v)
    }

    /// The outputs as a [`futures::Stream`].
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<R, RpcError>> + Send {
        futures::stream::unfold(self, |mut s| async move { s.next().await.map(|r| (r, s)) })
    }

    /// The peer serving the call.
    pub fn peer(&self) -> &str {
        self.handle.peer()
    }
}

/// A call whose inputs the caller streams: client-streaming and bidirectional.
pub struct Call<A, R> {
    pub(crate) outputs: Streaming<R>,
    pub(crate) _a: PhantomData<fn(A)>,
}

impl<A: Message, R: Message> Call<A, R> {
    /// Sends one input.
    pub async fn send(&mut self, input: &A) -> Result<(), RpcError> {
        let h = &mut self.outputs.handle;
        let b = input
            .encode(h.codec())
            .map_err(|e| RpcError::new(Code::BAD_ARGUMENTS, e.to_string()))?;
        h.send_raw(Bytes::from(b)).await
    }

    /// Ends the inputs.
    pub async fn close_send(&mut self) -> Result<(), RpcError> {
        self.outputs.handle.close_send().await
    }

    /// The next output (bidirectional calls).
    pub async fn next(&mut self) -> Option<Result<R, RpcError>> {
        self.outputs.next().await
    }

    /// Ends the inputs and waits for the one result (client-streaming calls).
    pub async fn finish(mut self) -> Result<R, RpcError> {
        self.close_send().await?;
        match self.outputs.next().await {
            Some(r) => r,
            None => Err(RpcError::new(
                Code::INTERNAL,
                "the call ended without a result",
            )),
        }
    }

    /// Ends the inputs and returns the outputs (bidirectional calls).
    pub async fn into_outputs(mut self) -> Result<Streaming<R>, RpcError> {
        self.close_send().await?;
        Ok(self.outputs)
    }

    /// The peer serving the call.
    pub fn peer(&self) -> &str {
        self.outputs.peer()
    }
}
