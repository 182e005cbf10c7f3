//! Channels from standard SSH clients (OpenSSH `ssh`, paramiko, ...): `session`
//! channels with `exec`/`subsystem` and `env`, and `direct-tcpip`, mapped onto
//! services. See `docs/PROTOCOL.md`, "Standard SSH clients".

use std::sync::{Arc, Weak};

use super::connection::{Accepted, Connection};
use crate::channel::Headers;
use crate::channel::shared::{ChannelShared, lock};
use crate::channel::state::ChannelState;
use crate::transport::ssh::Writer;
use crate::wire::open::validate_service;
use crate::wire::reason::OpenRefusal;

/// A `session` channel waiting for its `exec` or `subsystem` request.
pub(crate) struct PendingSession {
    shared: Arc<ChannelShared>,
    headers: Vec<String>,
    header_bytes: usize,
}

/// Exit status for a service that does not exist, as shells use for a missing command.
const EXIT_NOT_FOUND: u32 = 127;
/// Exit status for a service the client may not use or that cannot take it now.
const EXIT_REFUSED: u32 = 126;

impl Connection {
    fn new_compat_channel(&self, ssh_id: u32, session: bool) -> Arc<ChannelShared> {
        let state = ChannelState::new_compat(self.cfg.clone(), self.ssh_window, session);
        let ch = ChannelShared::with_state(ssh_id, state, self.pump.clone(), Weak::new());
        if let Some(reason) = self.lost() {
            ch.update(|s| ((), s.on_connection_lost(&reason)));
        }
        ch
    }

    /// `ssh -W service:port` / `ssh -L ...:service:port`: the host names the service.
    pub(crate) fn incoming_direct_tcpip(
        self: &Arc<Self>,
        ssh_id: u32,
        host: &str,
    ) -> Result<Accepted, OpenRefusal> {
        let (peer, opts) = self.admitting()?;
        validate_service(host).map_err(|_| OpenRefusal::BadRequest)?;
        let headers = Headers::new();
        // The authoriser is the application's code: never run it under our locks.
        let slot = self.admit(&peer, &opts, host, &headers)?;
        let mut map = lock(&self.channels);
        if map.len() >= opts.max_channels_per_connection {
            return Err(OpenRefusal::TooManyChannels);
        }
        let shared = self.new_compat_channel(ssh_id, false);
        map.insert(ssh_id, shared.clone());
        Ok(Accepted::new(
            shared,
            self.meta(host.to_owned(), headers),
            slot,
            self.peer.clone(),
        ))
    }

    /// A `session` channel opened: it becomes a service channel at `exec`/`subsystem`.
    pub(crate) fn session_opened(&self, ssh_id: u32, writer: Writer) -> Result<(), OpenRefusal> {
        let (_, opts) = self.admitting()?;
        let mut map = lock(&self.channels);
        if map.len() >= opts.max_channels_per_connection {
            return Err(OpenRefusal::TooManyChannels);
        }
        let shared = self.new_compat_channel(ssh_id, true);
        // Attached now, so that a shutdown can close a session that never says `exec`.
        shared.attach(writer);
        map.insert(ssh_id, shared.clone());
        lock(&self.sessions).insert(
            ssh_id,
            PendingSession {
                shared,
                headers: Vec::new(),
                header_bytes: 0,
            },
        );
        Ok(())
    }

    /// An `env` request on a session channel: it becomes a header `NAME=VALUE`.
    /// `false` (refused) after `exec`, or past the header-size limit.
    pub(crate) fn session_env(&self, ssh_id: u32, name: &str, value: &str) -> bool {
        let Ok((_, opts)) = self.admitting() else {
            return false;
        };
        let mut sessions = lock(&self.sessions);
        let Some(s) = sessions.get_mut(&ssh_id) else {
            return false;
        };
        let header = format!("{name}={value}");
        if s.header_bytes + header.len() + 16 > opts.max_header_bytes {
            return false;
        }
        s.header_bytes += header.len() + 16;
        s.headers.push(header);
        true
    }

    /// An `exec` (or `subsystem`) request: the first word names the service; the
    /// rest, if any, becomes the header `args=REST`. `false` if it cannot be taken
    /// at all (no such session, or a second request); a service that does not exist
    /// or is refused is reported like a failing command (a message on stderr and
    /// exit status 127 or 126), since standard clients print little for a failed
    /// request.
    pub(crate) fn session_start(self: &Arc<Self>, ssh_id: u32, command: &[u8]) -> bool {
        let Some(pending) = lock(&self.sessions).remove(&ssh_id) else {
            return false;
        };
        // Not UTF-8 cannot name a service: it is reported as not found.
        let command = String::from_utf8_lossy(command);
        let command = command.trim();
        let (service, args) = match command.split_once(char::is_whitespace) {
            Some((s, rest)) => (s, rest.trim_start()),
            None => (command, ""),
        };
        let mut headers = pending.headers;
        if !args.is_empty() {
            headers.push(format!("args={args}"));
        }
        let headers = Headers::from(headers);
        let info = self.meta(service.to_owned(), headers.clone());
        let outcome = self.admitting().and_then(|(peer, opts)| {
            validate_service(service).map_err(|_| OpenRefusal::ServiceNotFound)?;
            self.admit(&peer, &opts, service, &headers)
        });
        match outcome {
            Ok(slot) => Accepted::new(pending.shared, info, slot, self.peer.clone()).complete(None),
            Err(refusal) => {
                tracing::info!(peer = %self.remote_name, service, "refused: {}", refusal.description());
                let status = if refusal == OpenRefusal::ServiceNotFound {
                    EXIT_NOT_FOUND
                } else {
                    EXIT_REFUSED
                };
                let message = format!("streamkit: {service}: {}\n", refusal.description());
                let shared = pending.shared;
                shared.describe(info);
                shared.update(|s| {
                    let (_, w1) = s.write_frame(message.as_bytes(), true);
                    let (_, w2) = s.write_trailers(vec![format!("exit-status={status}")]);
                    let (_, w3) = s.close();
                    ((), w1.or(w2).or(w3))
                });
            }
        }
        true
    }

    /// The remote opened its window on a channel: it may be waiting to send.
    pub(crate) fn on_window(&self, ssh_id: u32) {
        let ch = lock(&self.channels).get(&ssh_id).cloned();
        if let Some(ch) = ch {
            ch.schedule();
        }
    }

    pub(super) fn forget_session(&self, ssh_id: u32) {
        lock(&self.sessions).remove(&ssh_id);
    }
}
