//! Streaming RPC over Streamkit channels, with pluggable codecs.
//!
//! A method takes zero or more input objects and yields zero or more output
//! objects: unary, server-streaming, client-streaming and bidirectional calls are
//! the four shapes. Methods are registered by name with serde-typed async
//! closures, no code generation; a dynamic path takes and gives encoded bytes for
//! plugins and scripting. Either side of a connection serves and calls.
//!
//! ```no_run
//! # async fn demo(server_peer: streamkit::Peer, client_peer: streamkit::Peer) -> Result<(), streamkit_rpc::RpcError> {
//! use streamkit_rpc::{Codec, Rpc};
//!
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Add { a: i64, b: i64 }
//!
//! let server = Rpc::new(&server_peer).expect("rpc service free");
//! server.unary("arith.add", |_ctx, args: Add| async move { Ok(args.a + args.b) });
//!
//! let client = Rpc::new(&client_peer).expect("rpc service free");
//! let sum: i64 = client.call("arith.add", &Add { a: 1, b: 2 }).await?;
//! assert_eq!(sum, 3);
//! // Another codec, a named peer, a deadline:
//! let sum: i64 = client
//!     .caller()
//!     .codec(Codec::Cbor)
//!     .peer("server")
//!     .timeout(std::time::Duration::from_secs(1))
//!     .call("arith.add", &Add { a: 2, b: 2 })
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! Calls travel over one multiplexed session channel per peer and codec (service
//! `rpc`, header `codec=NAME`), so a call costs no channel open: see
//! `docs/PROTOCOL.md`, "RPC", for the messages and their flow control.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod callback;
mod client;
mod codec;
mod error;
mod server;
mod session;
pub mod wire;

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use streamkit::{ListenError, Peer, ServiceListener};
use tokio::sync::OnceCell;
use tokio::time::Instant;

pub use callback::Callback;
pub use client::{Call, CallHandle, Streaming};
pub use codec::{Codec, CodecError, Message, Proto, UnknownCodec};
pub use error::{Code, RpcError};
pub use server::{RawInputs, RawOutputs};

use client::ClientSession;
use server::{Method, ServerSession};
use session::{Cancel, lock};

/// The channel service RPC sessions use.
pub const SERVICE: &str = "rpc";

/// Limits and defaults of an [`Rpc`] node.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RpcOptions {
    /// Largest encoded object, either way (default 4 MiB). Bigger ones fail that
    /// call with [`Code::RESOURCE_EXHAUSTED`].
    pub max_message_size: usize,
    /// Calls one calling peer may have running here, over all its sessions
    /// (default 1,024); as a caller, the calls this node makes at once per
    /// session (more wait for a slot). With the inputs waiting for handlers (at
    /// most `max_inputs_per_caller`), each session's queue of answers (1 MiB and
    /// one message) and at most 16 sessions per calling peer, what one caller can
    /// make a callee hold is bounded.
    pub max_concurrent_calls: usize,
    /// Bytes of inputs one calling peer's calls may have waiting for their
    /// handlers, all calls and sessions together (default 16 MiB). An input that
    /// would pass it fails its call with [`Code::RESOURCE_EXHAUSTED`].
    pub max_inputs_per_caller: usize,
    /// Deadline of calls that set none (default none).
    pub default_timeout: Option<Duration>,
}

impl Default for RpcOptions {
    fn default() -> RpcOptions {
        RpcOptions {
            max_message_size: 4 << 20,
            max_concurrent_calls: 1024,
            max_inputs_per_caller: 16 << 20,
            default_timeout: None,
        }
    }
}

type SessionCell = Arc<OnceCell<Arc<ClientSession>>>;

pub(crate) struct RpcInner {
    pub(crate) peer: Peer,
    pub(crate) opts: RpcOptions,
    methods: RwLock<HashMap<String, Arc<Method>>>,
    sessions: Mutex<HashMap<(String, Codec), SessionCell>>,
    servers: Mutex<Vec<Weak<ServerSession>>>,
    /// Slots for our calls in flight, per callee peer (see `ClientSession`).
    call_slots: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// Each calling peer's budget, shared by its sessions while any is open.
    callers: Mutex<HashMap<String, Weak<server::CallerBudget>>>,
    round_robin: AtomicUsize,
    accept_task: Mutex<Option<tokio::task::AbortHandle>>,
    listener: Arc<ServiceListener>,
}

impl Drop for RpcInner {
    fn drop(&mut self) {
        // Given back now, so that a new node can take the service at once.
        self.listener.close();
        if let Some(t) = lock(&self.accept_task).take() {
            t.abort();
        }
        for cell in lock(&self.sessions).values() {
            if let Some(s) = cell.get() {
                s.shut();
            }
        }
        for s in lock(&self.servers).iter().filter_map(Weak::upgrade) {
            s.shut();
        }
    }
}

impl RpcInner {
    pub(crate) fn method(&self, name: &str) -> Option<Arc<Method>> {
        self.methods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// The public catalogue: callback methods (`$...`) are not listed.
    pub(crate) fn catalogue(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .methods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .filter(|n| !n.starts_with('$'))
            .cloned()
            .collect();
        names.sort();
        names
    }
    /// Registers a new session and queues its first message, the catalogue.
    /// Catalogues are built and queued under the `servers` lock, so every
    /// session gets them in order.
    /// The slots for our calls in flight to `peer`, shared by our sessions to it.
    pub(crate) fn call_slots(&self, peer: &str) -> Arc<tokio::sync::Semaphore> {
        lock(&self.call_slots)
            .entry(peer.to_owned())
            .or_insert_with(|| {
                Arc::new(tokio::sync::Semaphore::new(self.opts.max_concurrent_calls))
            })
            .clone()
    }

    /// `peer`'s budget as a caller of this node (one for all its sessions).
    pub(crate) fn caller_budget(&self, peer: &str) -> Arc<server::CallerBudget> {
        let mut callers = lock(&self.callers);
        if let Some(b) = callers.get(peer).and_then(Weak::upgrade) {
            return b;
        }
        callers.retain(|_, w| w.strong_count() > 0);
        let b = Arc::new(server::CallerBudget::default());
        callers.insert(peer.to_owned(), Arc::downgrade(&b));
        b
    }

    pub(crate) fn add_server(&self, s: &Arc<ServerSession>) {
        let mut servers = lock(&self.servers);
        servers.retain(|w| w.strong_count() > 0);
        servers.push(Arc::downgrade(s));
        s.out.send_now(wire::Message::Methods {
            names: self.catalogue(),
        });
    }

    fn catalogue_changed(&self) {
        let servers = lock(&self.servers);
        let names = self.catalogue();
        for s in servers.iter().filter_map(Weak::upgrade) {
            s.out.send_now(wire::Message::Methods {
                names: names.clone(),
            });
        }
    }

    pub(crate) fn forget_session(&self, s: &Arc<ClientSession>) {
        let mut sessions = lock(&self.sessions);
        let key = (s.peer.clone(), s.codec);
        if sessions
            .get(&key)
            .and_then(|c| c.get())
            .is_some_and(|x| Arc::ptr_eq(x, s))
        {
            sessions.remove(&key);
        }
    }

    fn register(&self, name: &str, m: Method) {
        self.methods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(name.to_owned(), Arc::new(m));
        if !name.starts_with('$') {
            self.catalogue_changed();
        }
    }

    pub(crate) fn unregister(&self, name: &str) -> bool {
        let removed = self
            .methods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .is_some();
        if removed && !name.starts_with('$') {
            self.catalogue_changed();
        }
        removed
    }

    async fn session(
        self: &Arc<Self>,
        peer: &str,
        codec: Codec,
    ) -> Result<Arc<ClientSession>, RpcError> {
        loop {
            let cell = lock(&self.sessions)
                .entry((peer.to_owned(), codec))
                .or_default()
                .clone();
            let s = cell
                .get_or_try_init(|| ClientSession::open(self, peer, codec))
                .await;
            match s {
                Ok(s) if s.is_dead() => {
                    // Lost since: forget it and open a fresh one.
                    self.forget_session(&s.clone());
                }
                Ok(s) => return Ok(s.clone()),
                Err(e) => {
                    let mut sessions = lock(&self.sessions);
                    if sessions
                        .get(&(peer.to_owned(), codec))
                        .is_some_and(|c| Arc::ptr_eq(c, &cell))
                    {
                        sessions.remove(&(peer.to_owned(), codec));
                    }
                    return Err(e);
                }
            }
        }
    }

    /// The session a call goes to: the named peer, or the next connected peer
    /// (round-robin) whose catalogue has the method.
    async fn pick(
        self: &Arc<Self>,
        peer: Option<&str>,
        method: &str,
        codec: Codec,
    ) -> Result<Arc<ClientSession>, RpcError> {
        if let Some(p) = peer {
            return self.session(p, codec).await;
        }
        let mut names = self.peer.peers();
        if names.is_empty() {
            return Err(RpcError::unavailable("no connected peers"));
        }
        names.sort();
        let opened = futures::future::join_all(names.iter().map(|n| self.session(n, codec))).await;
        let mut last_err = None;
        let open: Vec<Arc<ClientSession>> = opened
            .into_iter()
            .filter_map(|r| r.map_err(|e| last_err = Some(e)).ok())
            .collect();
        let mut candidates: Vec<Arc<ClientSession>> =
            open.iter().filter(|s| s.serves(method)).cloned().collect();
        if candidates.is_empty() {
            // A catalogue may be a moment behind a registration: the peers
            // themselves answer (with "method not found" if it really is absent).
            candidates = open;
        }
        if candidates.is_empty() {
            return Err(last_err.unwrap_or_else(|| RpcError::unavailable("no connected peers")));
        }
        let i = self.round_robin.fetch_add(1, Ordering::Relaxed) % candidates.len();
        Ok(candidates[i].clone())
    }
}

/// An RPC node on a peer: registers methods others can call, and calls theirs.
///
/// Cheap to clone. The node serves while any clone (or a running handler) holds
/// it; dropping the last one stops serving and ends its sessions.
#[derive(Clone)]
pub struct Rpc {
    pub(crate) inner: Arc<RpcInner>,
}

impl std::fmt::Debug for Rpc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rpc")
            .field("peer", &self.inner.peer.name())
            .finish_non_exhaustive()
    }
}

impl Rpc {
    /// An RPC node with default options: takes the peer's `rpc` channels (see
    /// [`Peer::listen`]).
    pub fn new(peer: &Peer) -> Result<Rpc, ListenError> {
        Rpc::with_options(peer, RpcOptions::default())
    }

    /// An RPC node with these options.
    pub fn with_options(peer: &Peer, opts: RpcOptions) -> Result<Rpc, ListenError> {
        let listener = Arc::new(peer.listen(SERVICE)?);
        let inner = Arc::new(RpcInner {
            listener: listener.clone(),
            peer: peer.clone(),
            opts,
            methods: RwLock::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
            servers: Mutex::new(Vec::new()),
            callers: Mutex::new(HashMap::new()),
            call_slots: Mutex::new(HashMap::new()),
            round_robin: AtomicUsize::new(0),
            accept_task: Mutex::new(None),
        });
        let weak = Arc::downgrade(&inner);
        let task = tokio::spawn(async move {
            while let Ok((meta, ch)) = listener.accept().await {
                tokio::spawn(server::serve(weak.clone(), meta, ch));
            }
        });
        *lock(&inner.accept_task) = Some(task.abort_handle());
        Ok(Rpc { inner })
    }

    /// The peer this node runs on.
    pub fn peer(&self) -> &Peer {
        &self.inner.peer
    }

    /// Registers a unary method: one input, one output.
    pub fn unary<A, R, F, Fut>(&self, name: &str, f: F)
    where
        A: Message,
        R: Message,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.inner.register(
            name,
            Method::new(true, move |ctx, mut ins, _outs| {
                let f = f.clone();
                async move {
                    let codec = ins.codec;
                    let a = one_input::<A>(&mut ins).await?;
                    let r = f(ctx, a).await?;
                    Ok(Some(encode_output(&r, codec)?))
                }
            }),
        );
    }

    /// Registers a server-streaming method: one input, any number of outputs
    /// sent through [`Outputs`].
    pub fn server_stream<A, R, F, Fut>(&self, name: &str, f: F)
    where
        A: Message,
        R: Message,
        F: Fn(Context, A, Outputs<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.inner.register(
            name,
            Method::new(true, move |ctx, mut ins, outs| {
                let f = f.clone();
                async move {
                    let a = one_input::<A>(&mut ins).await?;
                    f(ctx, a, Outputs::new(outs)).await?;
                    Ok(None)
                }
            }),
        );
    }

    /// Registers a client-streaming method: any number of inputs read from
    /// [`Inputs`], one output.
    pub fn client_stream<A, R, F, Fut>(&self, name: &str, f: F)
    where
        A: Message,
        R: Message,
        F: Fn(Context, Inputs<A>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.inner.register(
            name,
            Method::new(false, move |ctx, ins, _outs| {
                let f = f.clone();
                async move {
                    let codec = ins.codec;
                    let r = f(ctx, Inputs::new(ins)).await?;
                    Ok(Some(encode_output(&r, codec)?))
                }
            }),
        );
    }

    /// Registers a bidirectional method: inputs and outputs both streamed.
    pub fn bidi<A, R, F, Fut>(&self, name: &str, f: F)
    where
        A: Message,
        R: Message,
        F: Fn(Context, Inputs<A>, Outputs<R>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.inner.register(
            name,
            Method::new(false, move |ctx, ins, outs| {
                let f = f.clone();
                async move {
                    f(ctx, Inputs::new(ins), Outputs::new(outs)).await?;
                    Ok(None)
                }
            }),
        );
    }

    /// Registers a method on encoded objects (the dynamic path): the handler
    /// sees the call's codec and the raw bytes of each object.
    pub fn register_raw<F, Fut>(&self, name: &str, f: F)
    where
        F: Fn(Context, RawInputs, RawOutputs) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), RpcError>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.inner.register(
            name,
            Method::new(false, move |ctx, ins, outs| {
                let f = f.clone();
                async move {
                    f(ctx, ins, outs).await?;
                    Ok(None)
                }
            }),
        );
    }

    /// Removes a method; calls already running finish. Returns whether it existed.
    pub fn unregister(&self, name: &str) -> bool {
        self.inner.unregister(name)
    }

    /// The methods this node serves (callbacks not included).
    pub fn methods(&self) -> Vec<String> {
        self.inner.catalogue()
    }

    /// A call builder with the default options: JSON, round-robin, no deadline
    /// (unless [`RpcOptions::default_timeout`] sets one).
    pub fn caller(&self) -> Caller {
        Caller {
            rpc: self.clone(),
            peer: None,
            codec: Codec::Json,
            timeout: self.inner.opts.default_timeout,
            deadline: None,
        }
    }

    /// A unary call with the default options (see [`Caller::call`]).
    pub async fn call<A: Message, R: Message>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, RpcError> {
        self.caller().call(method, args).await
    }

    /// A server-streaming call with the default options.
    pub async fn call_stream<A: Message, R: Message>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Streaming<R>, RpcError> {
        self.caller().call_stream(method, args).await
    }

    /// A client-streaming or bidirectional call with the default options.
    pub async fn open_call<A: Message, R: Message>(
        &self,
        method: &str,
    ) -> Result<Call<A, R>, RpcError> {
        self.caller().open_call(method).await
    }

    /// Registers `f` as a callback that can be passed to another peer as an
    /// argument (see [`Callback`]).
    pub fn callback<A, R, F, Fut>(&self, f: F) -> Callback<A, R>
    where
        A: Message,
        R: Message,
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
    {
        callback::register(self, f)
    }
}

async fn one_input<A: Message>(ins: &mut RawInputs) -> Result<A, RpcError> {
    match ins.next().await {
        Some(Ok(b)) => A::decode(ins.codec, &b).map_err(RpcError::bad_arguments),
        Some(Err(e)) => Err(e),
        None => Err(RpcError::new(
            Code::BAD_ARGUMENTS,
            "this method takes exactly one input",
        )),
    }
}

fn encode_output<R: Message>(r: &R, codec: Codec) -> Result<Bytes, RpcError> {
    r.encode(codec)
        .map(Bytes::from)
        .map_err(|e| RpcError::new(Code::INTERNAL, format!("output did not encode: {e}")))
}

/// How a call is made: which peer, which codec, which deadline.
#[derive(Clone, Debug)]
pub struct Caller {
    rpc: Rpc,
    peer: Option<String>,
    codec: Codec,
    /// Counted from the start of each call.
    timeout: Option<Duration>,
    deadline: Option<Instant>,
}

impl Caller {
    /// Calls this peer instead of the next one round-robin.
    pub fn peer(mut self, name: impl Into<String>) -> Caller {
        self.peer = Some(name.into());
        self
    }

    /// Encodes with this codec (default JSON).
    pub fn codec(mut self, codec: Codec) -> Caller {
        self.codec = codec;
        self
    }
    /// Fails each call with [`Code::DEADLINE_EXCEEDED`] `t` after it starts; the
    /// callee is given the same budget, and passes what is left to calls it makes.
    pub fn timeout(mut self, t: Duration) -> Caller {
        self.timeout = Some(t);
        self
    }

    /// A deadline as an instant (an earlier deadline already set wins).
    pub fn deadline(mut self, d: Option<Instant>) -> Caller {
        self.deadline = match (self.deadline, d) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }

    async fn start(
        &self,
        method: &str,
        input: Option<Bytes>,
        last: bool,
    ) -> Result<CallHandle, RpcError> {
        let deadline = self.deadline_now();
        let go = async {
            let s = self
                .rpc
                .inner
                .pick(self.peer.as_deref(), method, self.codec)
                .await?;
            client::start(&s, method, deadline, input, last).await
        };
        match deadline {
            Some(d) => tokio::time::timeout_at(d, go)
                .await
                .map_err(|_| RpcError::deadline())?,
            None => go.await,
        }
    }
    /// The deadline of a call starting now: the earlier of the timeout and the
    /// deadline, if any.
    fn deadline_now(&self) -> Option<Instant> {
        let t = self.timeout.map(|t| Instant::now() + t);
        match (t, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn encode<A: Message>(&self, a: &A) -> Result<Bytes, RpcError> {
        a.encode(self.codec).map(Bytes::from).map_err(|e| {
            RpcError::new(
                Code::BAD_ARGUMENTS,
                format!("arguments did not encode: {e}"),
            )
        })
    }

    /// A unary call: one input, one output.
    pub async fn call<A: Message, R: Message>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<R, RpcError> {
        let mut s = self.call_stream::<A, R>(method, args).await?;
        match s.next().await {
            Some(r) => r,
            None => Err(RpcError::new(
                Code::INTERNAL,
                "the call ended without a result",
            )),
        }
    }

    /// A server-streaming call: one input, the outputs as they come.
    pub async fn call_stream<A: Message, R: Message>(
        &self,
        method: &str,
        args: &A,
    ) -> Result<Streaming<R>, RpcError> {
        let input = self.encode(args)?;
        let handle = self.start(method, Some(input), true).await?;
        Ok(Streaming {
            handle,
            _r: PhantomData,
        })
    }

    /// A client-streaming or bidirectional call: send inputs, then read the
    /// result ([`Call::finish`]) or the outputs ([`Call::next`]).
    pub async fn open_call<A: Message, R: Message>(
        &self,
        method: &str,
    ) -> Result<Call<A, R>, RpcError> {
        let handle = self.start(method, None, false).await?;
        Ok(Call {
            outputs: Streaming {
                handle,
                _r: PhantomData,
            },
            _a: PhantomData,
        })
    }

    /// The dynamic path: starts a call with encoded inputs (`None` sends none
    /// yet). Read outputs with [`CallHandle::next_raw`], send more inputs with
    /// [`CallHandle::send_raw`].
    pub async fn call_raw(
        &self,
        method: &str,
        first: Option<Bytes>,
        last: bool,
    ) -> Result<CallHandle, RpcError> {
        self.start(method, first, last).await
    }
}

/// What a handler knows about its call.
#[derive(Clone)]
pub struct Context {
    rpc: Rpc,
    caller: Arc<str>,
    method: Arc<str>,
    codec: Codec,
    deadline: Option<Instant>,
    cancel: Cancel,
}

impl Context {
    /// The calling peer's name.
    pub fn caller(&self) -> &str {
        &self.caller
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The codec the caller chose.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// When the call's budget runs out, if it has one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the caller cancelled the call (or its deadline passed). The
    /// handler's future is dropped then; tasks it spawned can watch this.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the call is cancelled.
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// This node, to make calls from a handler.
    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }

    /// A call builder that passes on this call's deadline and codec.
    pub fn caller_options(&self) -> Caller {
        self.rpc.caller().codec(self.codec).deadline(self.deadline)
    }

    /// A call builder aimed back at the calling peer (a plugin host calling the
    /// plugin that called it), with this call's deadline and codec.
    pub fn call_back(&self) -> Caller {
        self.caller_options().peer(self.caller.to_string())
    }
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("caller", &self.caller)
            .field("method", &self.method)
            .field("codec", &self.codec)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The inputs of a streaming call, typed.
pub struct Inputs<A> {
    raw: RawInputs,
    _a: PhantomData<fn() -> A>,
}

impl<A: Message> Inputs<A> {
    fn new(raw: RawInputs) -> Inputs<A> {
        Inputs {
            raw,
            _a: PhantomData,
        }
    }

    /// The next input; `None` once the caller ended its inputs. An input that does
    /// not decode is a [`Code::BAD_ARGUMENTS`] error (returning it with `?` fails
    /// the call with it).
    pub async fn next(&mut self) -> Option<Result<A, RpcError>> {
        let codec = self.raw.codec;
        Some(match self.raw.next().await? {
            Ok(b) => A::decode(codec, &b).map_err(RpcError::bad_arguments),
            Err(e) => Err(e),
        })
    }
}

/// The outputs of a streaming call, typed.
pub struct Outputs<R> {
    raw: RawOutputs,
    _r: PhantomData<fn(R)>,
}

impl<R: Message> Outputs<R> {
    fn new(raw: RawOutputs) -> Outputs<R> {
        Outputs {
            raw,
            _r: PhantomData,
        }
    }

    /// Sends one output, waiting while the caller has not consumed earlier ones.
    pub async fn send(&mut self, r: &R) -> Result<(), RpcError> {
        let b = encode_output(r, self.raw.codec)?;
        self.raw.send(b).await
    }
}
