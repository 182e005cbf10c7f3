//! Endpoints given to `connect` are kept: a dialer re-dials them when their
//! connection is lost, with exponential backoff and jitter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::Notify;

use super::PeerInner;
use super::events::Event;
use crate::connection::Conn;
use crate::connection::driver::lock;
use crate::endpoint::Endpoint;
use crate::error::ConnectError;
use crate::transport::Host;

/// One endpoint being kept connected.
pub(crate) struct Dialer {
    pub(crate) endpoint: Endpoint,
    stopped: AtomicBool,
    stop: Notify,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Dialer {
    pub(crate) fn new(endpoint: Endpoint) -> Arc<Dialer> {
        Arc::new(Dialer {
            endpoint,
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
            conn: Mutex::new(None),
        })
    }

    /// Stops re-dialling; returns the current connection, if any.
    pub(crate) fn stop(&self) -> Option<Arc<Conn>> {
        // Under the lock that `store` takes: a dial finishing now either sees the
        // stop or is handed back here.
        let conn = {
            let mut conn = lock(&self.conn);
            self.stopped.store(true, Ordering::SeqCst);
            conn.take()
        };
        self.stop.notify_waiters();
        conn
    }

    /// Makes `conn` the endpoint's connection; `false` (and the connection closed)
    /// if the dialer was stopped meanwhile.
    async fn store(&self, conn: Arc<Conn>) -> bool {
        {
            let mut slot = lock(&self.conn);
            if !self.is_stopped() {
                *slot = Some(conn);
                return true;
            }
        }
        conn.close("disconnected").await;
        false
    }

    /// The name of the peer at this endpoint, when it was last connected.
    pub(crate) fn peer_name(&self) -> Option<String> {
        lock(&self.conn)
            .as_ref()
            .map(|c| c.info.remote_name.clone())
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    pub(crate) fn current(&self) -> Option<Arc<Conn>> {
        lock(&self.conn).clone()
    }

    /// Sleeps `d`; `false` if stopped meanwhile.
    async fn pause(&self, d: Duration) -> bool {
        let stopped = self.stop.notified();
        tokio::pin!(stopped);
        stopped.as_mut().enable();
        if self.is_stopped() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(d) => !self.is_stopped(),
            () = stopped => false,
        }
    }
}

/// Whether dialling again could help (the remote may come back), as opposed to a
/// refusal that needs a fix on one side (keys, trust, address).
pub(crate) fn is_retryable(e: &ConnectError) -> bool {
    matches!(
        e,
        ConnectError::Io { .. } | ConnectError::Timeout { .. } | ConnectError::Handshake { .. }
    )
}

/// ±20% of `d`, so that many clients do not re-dial in lockstep.
fn jitter(d: Duration) -> Duration {
    let r = getrandom::u32().unwrap_or(0);
    let frac = f64::from(r) / f64::from(u32::MAX); // 0..1
    d.mul_f64(0.8 + 0.4 * frac)
}

/// The first connection: retried while the endpoint cannot be reached, if the
/// policy says so. Dropping the future stops it.
pub(crate) async fn first_connect(
    peer: &Arc<PeerInner>,
    dialer: &Dialer,
) -> Result<Arc<Conn>, ConnectError> {
    let mut attempt = 0u32;
    loop {
        if dialer.is_stopped() {
            return Err(ConnectError::Cancelled(dialer.endpoint.to_string()));
        }
        let host: Arc<dyn Host> = peer.clone();
        match crate::transport::connect(&host, &dialer.endpoint).await {
            Ok(conn) => {
                if !dialer.store(conn.clone()).await {
                    return Err(ConnectError::Cancelled(dialer.endpoint.to_string()));
                }
                return Ok(conn);
            }
            Err(e) => {
                let policy = peer.options().reconnect.clone();
                attempt += 1;
                let exhausted = policy.max_attempts.is_some_and(|m| attempt >= m);
                if !policy.retry_first_connect
                    || !is_retryable(&e)
                    || exhausted
                    || peer.is_shutting_down()
                {
                    return Err(e);
                }
                let delay = jitter(policy.delay(attempt));
                tracing::debug!(endpoint = %dialer.endpoint, attempt, ?delay, error = %e, "connect failed, retrying");
                peer.events.emit(|| Event::Reconnecting {
                    endpoint: dialer.endpoint.to_string(),
                    attempt,
                    delay,
                    error: e.to_string(),
                });
                if !dialer.pause(delay).await {
                    return Err(ConnectError::Cancelled(dialer.endpoint.to_string()));
                }
            }
        }
    }
}

/// Keeps the endpoint connected until the dialer is stopped, the peer goes away,
/// or the attempt limit is reached.
pub(crate) async fn supervise(peer: Weak<PeerInner>, dialer: Arc<Dialer>) {
    // Attempts since the endpoint was last stably connected: a server that accepts
    // and drops us at once must not reset the backoff (or the attempt limit).
    let mut attempt = 0u32;
    loop {
        // Wait for the current connection to end.
        let Some(conn) = dialer.current() else { return };
        let up = tokio::time::Instant::now();
        conn.wait_lost().await;
        if let Some(p) = peer.upgrade()
            && up.elapsed() >= p.options().reconnect.max_delay
        {
            attempt = 0;
        }
        let reason = conn
            .lost()
            .map(|e| crate::connection::state::lost_reason(&e).full())
            .unwrap_or_default();
        let mut error = reason;
        loop {
            let Some(p) = peer.upgrade() else { return };
            let policy = p.options().reconnect.clone();
            if dialer.is_stopped() || p.is_shutting_down() {
                return;
            }
            if !policy.enabled {
                p.forget_dialer(&dialer);
                return;
            }
            attempt += 1;
            if policy.max_attempts.is_some_and(|m| attempt > m) {
                tracing::info!(endpoint = %dialer.endpoint, attempts = attempt - 1, "giving up re-dialling");
                p.forget_dialer(&dialer);
                p.events.emit(|| Event::GaveUp {
                    endpoint: dialer.endpoint.to_string(),
                    attempts: attempt - 1,
                    error: error.clone(),
                });
                return;
            }
            let delay = jitter(policy.delay(attempt));
            p.events.emit(|| Event::Reconnecting {
                endpoint: dialer.endpoint.to_string(),
                attempt,
                delay,
                error: error.clone(),
            });
            drop(p);
            if !dialer.pause(delay).await {
                return;
            }
            let Some(p) = peer.upgrade() else { return };
            let host: Arc<dyn Host> = p;
            match crate::transport::connect(&host, &dialer.endpoint).await {
                Ok(conn) => {
                    tracing::info!(endpoint = %dialer.endpoint, peer = %conn.info.remote_name, attempt, "reconnected");
                    if !dialer.store(conn).await {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    tracing::debug!(endpoint = %dialer.endpoint, attempt, error = %e, "re-dial failed");
                    error = e.to_string();
                }
            }
        }
    }
}
