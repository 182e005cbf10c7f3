//! Standard SSH clients' `session` channels: `env` requests gathered as headers,
//! then `exec` (or `subsystem`) names the service.

use super::*;

impl ConnectionState {
    // ------------------------------------------------------------------
    // Standard clients' sessions
    // ------------------------------------------------------------------

    pub(super) fn session_of(&mut self, ssh: u32) -> Option<(ChannelKey, &mut Entry)> {
        let key = self.routed(ssh)?;
        let e = self.entries.get_mut(&key)?;
        matches!(e.phase, Phase::Session { .. }).then_some((key, e))
    }

    /// An `env` request on a session channel becomes a header `NAME=VALUE`;
    /// `false` (refused) after `exec`, or past the header-size limit.
    pub(crate) fn session_env(&mut self, ssh: u32, name: &str, value: &str) -> bool {
        let max = self.limits.max_header_bytes;
        let Some((_, e)) = self.session_of(ssh) else {
            return false;
        };
        let Phase::Session { headers, bytes } = &mut e.phase else {
            return false;
        };
        let header = format!("{name}={value}");
        if *bytes + header.len() + 16 > max {
            return false;
        }
        *bytes += header.len() + 16;
        headers.push(header);
        true
    }

    /// The headers a session gathered so far (the caller admits its `exec`).
    pub(crate) fn session_headers(&self, ssh: u32) -> Option<Vec<String>> {
        let key = self.routed(ssh)?;
        match &self.entries.get(&key)?.phase {
            Phase::Session { headers, .. } => Some(headers.clone()),
            _ => None,
        }
    }

    /// `exec`/`subsystem` on a session: it becomes a channel for `service`, if
    /// `admitted`; otherwise it reports the refusal as a failing command (a message
    /// on stderr, then `exit-status`) and closes. `None` if there is no such session.
    pub(crate) fn session_start(
        &mut self,
        ssh: u32,
        service: &str,
        headers: Headers,
        admitted: Result<(), (String, u32)>,
    ) -> Option<ChannelKey> {
        let (key, _) = self.session_of(ssh)?;
        let meta = self.make_meta(service.to_owned(), headers);
        let e = self.entries.get_mut(&key)?;
        e.meta = meta;
        e.phase = Phase::Open;
        if let Some(at) = e.linger.take() {
            self.lingering.remove(&(at, key));
        }
        match admitted {
            Ok(()) => {
                e.holder = Holder::Waiting;
                self.announce_incoming(key);
                Some(key)
            }
            Err((message, status)) => {
                let e = self.entries.get_mut(&key)?;
                e.holder = Holder::Released;
                self.with(key, |s| {
                    let (_, w1) = s.write_frame(message.as_bytes(), true);
                    let (_, w2) = s.write_trailers(vec![format!("exit-status={status}")]);
                    let (_, w3) = s.close();
                    ((), w1.or(w2).or(w3))
                });
                self.schedule(key);
                None
            }
        }
    }
}
