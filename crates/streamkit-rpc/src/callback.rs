//! Function references passed as arguments.

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Weak};

use serde::{Deserialize, Serialize};

use crate::codec::Message;
use crate::error::RpcError;
use crate::{Context, Rpc, RpcInner};

/// A function of the peer that created it, passed to another peer inside an
/// argument and called by it while the creator keeps the `Callback`.
///
/// Created with [`Rpc::callback`]; it travels as `{"$callback": "<name>"}` in
/// any codec. The receiver calls it with [`Callback::call`], which goes back to
/// the peer that sent it over the same connection. Dropping the creator's last
/// clone unregisters the function: later calls fail with "method not found".
#[derive(Serialize, Deserialize)]
#[serde(bound = "")]
pub struct Callback<A, R> {
    #[serde(rename = "$callback", deserialize_with = "callback_name")]
    method: String,
    #[serde(skip)]
    guard: Option<Arc<Guard>>,
    #[serde(skip)]
    _t: PhantomData<fn(A) -> R>,
}

/// Whether `name` is one `Rpc::callback` makes: `$cb.` and 32 hex digits.
pub(crate) fn is_callback_name(name: &str) -> bool {
    name.strip_prefix("$cb.")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A callback received in an argument must name a callback: a peer must not make
/// us call one of its ordinary methods while our code believes it calls back.
fn callback_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    if !is_callback_name(&name) {
        return Err(serde::de::Error::custom(format!(
            "{name:?} is not a callback (callbacks are named $cb.<32 hex digits>)"
        )));
    }
    Ok(name)
}

impl<A, R> Clone for Callback<A, R> {
    fn clone(&self) -> Self {
        Callback {
            method: self.method.clone(),
            guard: self.guard.clone(),
            _t: PhantomData,
        }
    }
}

impl<A, R> std::fmt::Debug for Callback<A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callback")
            .field("method", &self.method)
            .finish()
    }
}

struct Guard {
    rpc: Weak<RpcInner>,
    method: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(rpc) = self.rpc.upgrade() {
            rpc.unregister(&self.method);
        }
    }
}

pub(crate) fn register<A, R, F, Fut>(rpc: &Rpc, f: F) -> Callback<A, R>
where
    A: Message,
    R: Message,
    F: Fn(Context, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, RpcError>> + Send + 'static,
{
    let mut id = [0u8; 16];
    getrandom::fill(&mut id).expect("the OS random source works");
    let method: String = format!(
        "$cb.{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    rpc.unary(&method, f);
    Callback {
        guard: Some(Arc::new(Guard {
            rpc: Arc::downgrade(&rpc.inner),
            method: method.clone(),
        })),
        method,
        _t: PhantomData,
    }
}

impl<A: Message, R: Message> Callback<A, R> {
    /// Calls the function on the peer that sent it (the caller of `ctx`'s call),
    /// within that call's deadline.
    pub async fn call(&self, ctx: &Context, arg: &A) -> Result<R, RpcError> {
        ctx.call_back().call(&self.method, arg).await
    }

    /// Calls the function on `peer` from `rpc` (outside a handler).
    pub async fn call_on(&self, rpc: &Rpc, peer: &str, arg: &A) -> Result<R, RpcError> {
        rpc.caller().peer(peer).call(&self.method, arg).await
    }
}
