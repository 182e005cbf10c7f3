//! Opens: ours (sent, assigned an SSH id, confirmed or refused or timed out) and
//! the remote's (decided at once: a top-level one admitted by the layer above, a
//! child by its parent here).

use super::*;
use crate::wire::open::ParentRef;

impl ConnectionState {
    // ------------------------------------------------------------------
    // Our opens
    // ------------------------------------------------------------------

    /// Starts opening a channel to `service` (inside `parent`, if given). The
    /// request waits to be taken ([`take_request`](Self::take_request)) by the
    /// opener, or by the driver once asked to ([`request_by_driver`]); the opener
    /// then polls [`poll_open`](Self::poll_open).
    ///
    /// [`request_by_driver`]: Self::request_by_driver
    pub(crate) fn open(
        &mut self,
        service: &str,
        headers: Headers,
        parent: Option<ChannelKey>,
        now: Instant,
    ) -> Result<ChannelKey, OpenErrorKind> {
        self.may_open()?;
        let parent_ref = match parent {
            None => None,
            Some(p) => {
                let e = self.entries.get(&p).ok_or(OpenErrorKind::ParentClosed)?;
                if !e.state.accepts_children() || e.ssh.is_none() {
                    return Err(OpenErrorKind::ParentClosed);
                }
                // As the receiver will see it: `Local` is a channel we (the sender) opened.
                match e.ident {
                    Some((Origin::Local, id)) => Some(ParentRef::Local(id)),
                    Some((Origin::Remote, id)) => Some(ParentRef::Remote(id)),
                    None => {
                        return Err(OpenErrorKind::InvalidRequest(
                            "channels cannot be opened inside this channel (the remote gave it no id)"
                                .into(),
                        ));
                    }
                }
            }
        };
        let open_id = self.next_open_id;
        let req = OpenRequest {
            service: service.to_owned(),
            headers: headers.as_slice().to_vec(),
            id: Some(open_id),
            parent: parent_ref,
        };
        let path = req
            .encode(self.limits.max_header_bytes)
            .map_err(|e| OpenErrorKind::InvalidRequest(e.to_string()))?;
        self.next_open_id += 1;
        let meta = self.make_meta(service.to_owned(), headers);
        let state = ChannelState::native(self.limits.channel.clone());
        let key = self.begin_open(OpenWire::Native(path), state, meta, now);
        self.set_ident(key, (Origin::Local, open_id));
        if let Some(p) = parent {
            self.adopt(p, key);
        }
        Ok(key)
    }

    /// Whether this side may open another channel now.
    fn may_open(&self) -> Result<(), OpenErrorKind> {
        if let Some(e) = &self.lost {
            return Err(OpenErrorKind::ConnectionLost(lost_reason(e)));
        }
        if self.channel_count() >= self.limits.max_channels {
            return Err(OpenErrorKind::TooManyChannels(self.limits.max_channels));
        }
        Ok(())
    }

    /// Enters our open of a new channel in the table, with its deadline.
    fn begin_open(
        &mut self,
        request: OpenWire,
        state: ChannelState,
        meta: Arc<Meta>,
        now: Instant,
    ) -> ChannelKey {
        let key = self.new_key();
        let deadline = now + self.limits.open_timeout;
        self.deadlines.insert((deadline, key));
        self.insert(
            key,
            Phase::Opening {
                request: Some(request),
                ssh: None,
                deadline,
            },
            Holder::Opener,
            state,
            meta,
        );
        self.unrouted_opens += 1;
        // The driver sleeps until the earliest deadline: it only needs waking if
        // this one is now the earliest.
        if self.deadlines.first() == Some(&(deadline, key))
            && self.lingering.first().is_none_or(|(d, _)| deadline < *d)
        {
            self.wake.driver = true;
        }
        key
    }

    /// Starts opening a `forwarded-tcpip` channel to a standard client, for a
    /// visitor of a remote forward it asked for: a channel of plain bytes (as its
    /// own opens are), described as service `forwarded-tcpip` with headers
    /// `visitor` and `public`. Taken and polled as [`open`](Self::open)'s are.
    pub(crate) fn open_forwarded(
        &mut self,
        forward: ForwardedTcpip,
        now: Instant,
    ) -> Result<ChannelKey, OpenErrorKind> {
        self.may_open()?;
        let mut headers = Headers::new();
        headers.insert(
            "visitor",
            &format!("{}:{}", forward.originator_address, forward.originator_port),
        );
        headers.insert(
            "public",
            &format!("{}:{}", forward.connected_address, forward.connected_port),
        );
        let meta = self.make_meta("forwarded-tcpip".to_owned(), headers);
        let state = ChannelState::compat(self.limits.channel.clone(), COMPAT_INITIAL_WINDOW, false);
        Ok(self.begin_open(OpenWire::Forwarded(forward), state, meta, now))
    }

    /// Nobody will take `key`'s request as it opens (the connection has no
    /// transport yet): the driver sends it when it starts.
    pub(crate) fn request_by_driver(&mut self, key: ChannelKey) {
        self.commands.push_back(Command::Open { key });
        self.wake.driver = true;
    }

    /// The open request of `key`, for the transport to send: once (the opener and
    /// the driver may both ask).
    pub(crate) fn take_request(&mut self, key: ChannelKey) -> Option<OpenWire> {
        match &mut self.entries.get_mut(&key)?.phase {
            Phase::Opening { request, .. } => request.take(),
            _ => None,
        }
    }

    /// Whether our open of `key` finished: `Ready` once open (the caller now holds
    /// its handles), `Failed` with why not.
    pub(crate) fn poll_open(&mut self, key: ChannelKey) -> Result<bool, OpenErrorKind> {
        let Some(e) = self.entries.get_mut(&key) else {
            return Err(OpenErrorKind::ConnectionLost("connection closed".into()));
        };
        match &e.phase {
            Phase::Opening { .. } => Ok(false),
            Phase::Open => {
                e.holder = Holder::App {
                    reader: true,
                    writer: true,
                };
                // A channel to a standard client (`forwarded-tcpip`): its SSH window
                // grows beyond the initial one now that the application has it.
                if matches!(e.state, ChannelState::Compat(_)) {
                    self.with(key, |s| ((), s.open_window()));
                }
                Ok(true)
            }
            Phase::OpenFailed(err) => {
                let err = err.clone();
                self.remove_entry(key);
                Err(err)
            }
            Phase::Session { .. } | Phase::Accepted => Ok(false),
        }
    }

    /// The opener stopped waiting (its future was dropped): the open fails here
    /// and its transport wait is abandoned; if the remote still answers, a late
    /// confirmation is closed at once.
    pub(crate) fn abandon_open(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get(&key) else {
            return;
        };
        match &e.phase {
            Phase::Opening { .. } => {
                self.fail_open(key, OpenErrorKind::Timeout(Duration::ZERO), true);
                self.remove_entry(key);
            }
            Phase::OpenFailed(_) => {
                self.remove_entry(key);
            }
            Phase::Open if e.holder == Holder::Opener => self.release(key),
            _ => {}
        }
    }

    /// The transport assigned our open of `key` its SSH id: before the request
    /// went out, so before the remote can answer it.
    pub(crate) fn on_open_sent(&mut self, key: ChannelKey, ssh: u32) {
        let pending = self.entries.get_mut(&key).and_then(|e| match &mut e.phase {
            Phase::Opening {
                ssh: slot @ None, ..
            } => {
                *slot = Some(ssh);
                Some(())
            }
            _ => None,
        });
        match pending {
            Some(()) => {
                self.unrouted_opens -= 1;
                self.route(key, ssh);
            }
            // Given up before the id was known: the remote may still answer it.
            None if !self.by_ssh.contains_key(&ssh) => {
                self.given_up.insert(ssh);
            }
            None => {}
        }
    }

    /// Our open of `key` was confirmed and the transport can send on it. `false`
    /// if its SSH channel has closed already (the transport need not keep its way
    /// to send).
    pub(crate) fn on_open_confirmed(&mut self, key: ChannelKey) -> bool {
        let bound = matches!(
            self.entries.get(&key).map(|e| &e.phase),
            Some(Phase::Opening { ssh: Some(_), .. })
        );
        if bound {
            self.opened(key);
        }
        self.entries.get(&key).is_some_and(|e| e.ssh.is_some())
    }

    /// The SSH layer confirmed an open of ours: data may follow at once (the
    /// channel is open once the opener's task has its way to send:
    /// [`on_open_confirmed`](Self::on_open_confirmed)). `false` if no open of ours
    /// waits for it any more (it was given up: the transport closes it).
    pub(crate) fn on_confirmed(&mut self, ssh: u32) -> bool {
        if self.given_up.remove(&ssh) {
            return false;
        }
        // The opener's task may have seen the answer first (russh wakes it before
        // it calls the handler): open already is fine too.
        self.by_ssh.contains_key(&ssh)
    }

    /// The remote refused an open of ours that was given up already.
    pub(crate) fn on_refused(&mut self, ssh: u32) {
        self.given_up.remove(&ssh);
    }

    /// Our open of `key` is open at both ends.
    pub(super) fn opened(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if let Phase::Opening { deadline, .. } = e.phase {
            self.deadlines.remove(&(deadline, key));
        }
        e.phase = Phase::Open;
        e.announced = true;
        self.reports.push_back(Report::Opened {
            meta: e.meta.clone(),
            local: true,
        });
        self.with(key, |s| ((), s.open_window()));
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.state.wants_transmit())
        {
            self.schedule(key);
        }
        self.wake.write.push(key);
    }

    /// The transport's answer to our open, when it is not a confirmation (which
    /// comes through [`on_confirmed`](Self::on_confirmed)).
    pub(crate) fn on_open_failed(&mut self, key: ChannelKey, outcome: OpenOutcome) {
        let err = match outcome {
            OpenOutcome::Refused(code) => OpenErrorKind::Refused(OpenRefusal::from_code(code)),
            OpenOutcome::Gone => OpenErrorKind::ConnectionLost(
                self.lost
                    .as_ref()
                    .map_or_else(|| "connection closed".into(), lost_reason),
            ),
        };
        self.fail_open(key, err, false);
    }

    /// Our open of `key` failed with `err`; `unanswered`: the remote may still
    /// answer it (a timeout), so its SSH id is kept to close a late confirmation.
    pub(super) fn fail_open(&mut self, key: ChannelKey, err: OpenErrorKind, unanswered: bool) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let Phase::Opening { ssh, deadline, .. } = e.phase else {
            return;
        };
        self.deadlines.remove(&(deadline, key));
        if ssh.is_none() {
            self.unrouted_opens -= 1;
        }
        if let Some(ssh) = ssh {
            if self.by_ssh.get(&ssh) == Some(&key) {
                self.by_ssh.remove(&ssh);
            }
            if unanswered && self.lost.is_none() {
                self.given_up.insert(ssh);
            }
        }
        e.ssh = None;
        e.phase = Phase::OpenFailed(err);
        if let Some(ident) = e.ident.take()
            && self.idents.get(&ident) == Some(&key)
        {
            self.idents.remove(&ident);
        }
        self.leave_parent(key);
        self.close_children(key);
        self.wake.write.push(key);
    }

    /// The next deadline: the earliest open or close timeout.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        let open = self.deadlines.first().map(|&(deadline, _)| deadline);
        let close = self.lingering.first().map(|&(deadline, _)| deadline);
        open.into_iter().chain(close).min()
    }

    /// Time passed: opens past their deadline fail (and their transport wait is
    /// abandoned).
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        self.handle_close_timeouts(now);
        while let Some(&(deadline, key)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_first();
            if self.open_deadline(key) == Some(deadline) {
                let timeout = self.limits.open_timeout;
                self.fail_open(key, OpenErrorKind::Timeout(timeout), true);
            }
        }
    }

    /// When `key`'s open times out, while it is opening.
    fn open_deadline(&self, key: ChannelKey) -> Option<Instant> {
        match self.entries.get(&key)?.phase {
            Phase::Opening { deadline, .. } => Some(deadline),
            _ => None,
        }
    }

    // ------------------------------------------------------------------
    // The remote's opens
    // ------------------------------------------------------------------

    /// An open request from the remote. A top-level one was admitted by the caller
    /// already (service, authoriser, accept queue); a child is decided here.
    pub(crate) fn on_open_request(&mut self, ssh: u32, req: Incoming, now: Instant) -> Decision {
        if self.lost.is_some() {
            return Decision::Refuse(OpenRefusal::ShuttingDown);
        }
        if self.channel_count() >= self.limits.max_channels {
            return Decision::Refuse(OpenRefusal::TooManyChannels);
        }
        let cost = match &req {
            Incoming::Native(r) => Self::request_cost(&r.service, &r.headers),
            Incoming::DirectTcpip { service } => Self::request_cost(service, &[]),
            Incoming::Session => self.limits.max_header_bytes as u64,
        };
        if !self.budget_admits(cost) {
            return Decision::Refuse(OpenRefusal::OverBudget);
        }
        match req {
            Incoming::Native(req) => match req.parent {
                None => {
                    let key = self.accept_native(ssh, req, None);
                    Decision::Accept(key)
                }
                Some(parent) => self.open_child(ssh, req, parent),
            },
            Incoming::DirectTcpip { service } => {
                let key = self.new_key();
                let meta = self.make_meta(service, Headers::new());
                let state =
                    ChannelState::compat(self.limits.channel.clone(), COMPAT_INITIAL_WINDOW, false);
                self.insert(key, Phase::Accepted, Holder::Waiting, state, meta);
                self.route(key, ssh);
                Decision::Accept(key)
            }
            Incoming::Session => {
                let key = self.new_key();
                // Described at `exec`, when the service is known.
                let meta = self.make_meta(String::new(), Headers::new());
                let state =
                    ChannelState::compat(self.limits.channel.clone(), COMPAT_INITIAL_WINDOW, true);
                self.insert(
                    key,
                    Phase::Session {
                        headers: Vec::new(),
                        bytes: 0,
                    },
                    Holder::Nobody,
                    state,
                    meta,
                );
                self.route(key, ssh);
                // Its headers come later (`env`), up to the limit: reserved now.
                if let Some(e) = self.entries.get_mut(&key) {
                    e.cost += cost;
                }
                self.budget.add(cost);
                // A session that never names its service (`exec`) is closed after
                // the handshake timeout: it holds a place and up to a window.
                self.linger_until(key, now + self.limits.session_timeout);
                Decision::Accept(key)
            }
        }
    }

    pub(super) fn accept_native(
        &mut self,
        ssh: u32,
        req: OpenRequest,
        parent: Option<ChannelKey>,
    ) -> ChannelKey {
        let key = self.new_key();
        let meta = self.make_meta(req.service, Headers::from(req.headers));
        let state = ChannelState::native(self.limits.channel.clone());
        // A top-level channel goes to the peer's accept queue as a handle at once;
        // a child waits in its parent's queue.
        let holder = if parent.is_some() {
            Holder::Queued
        } else {
            Holder::Waiting
        };
        self.insert(key, Phase::Accepted, holder, state, meta);
        self.route(key, ssh);
        if let Some(id) = req.id {
            self.set_ident(key, (Origin::Remote, id));
        }
        if let Some(p) = parent {
            self.adopt(p, key);
            self.enqueue(p, key);
        }
        key
    }

    /// The transport accepted the remote's open of `key` and can send on it.
    pub(crate) fn established(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if !matches!(e.phase, Phase::Accepted) {
            return;
        }
        e.phase = Phase::Open;
        self.announce_incoming(key);
        if self
            .entries
            .get(&key)
            .is_some_and(|e| e.state.wants_transmit())
        {
            self.schedule(key);
        }
    }

    pub(super) fn announce_incoming(&mut self, key: ChannelKey) {
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        e.announced = true;
        let meta = e.meta.clone();
        self.reports
            .push_back(Report::Opened { meta, local: false });
    }

    /// The application takes the remote's channel `key` from an accept queue: its
    /// window opens beyond the initial credit, as far as the budget allows.
    /// `false` if it was reset while it waited (it is not to be handed out).
    pub(crate) fn accepted(&mut self, key: ChannelKey) -> bool {
        if self.was_reset(key) {
            return false;
        }
        if let Some(e) = self.entries.get_mut(&key)
            && e.holder == Holder::Waiting
        {
            e.holder = Holder::App {
                reader: true,
                writer: true,
            };
        }
        self.with(key, |s| ((), s.open_window()));
        true
    }

    /// Whether `key` died (reset either way, or its connection lost before its
    /// end) or is gone: nothing is left for an application to take.
    pub(crate) fn was_reset(&self, key: ChannelKey) -> bool {
        self.entries.get(&key).is_none_or(|e| e.state.is_dead())
    }

    pub(super) fn open_child(&mut self, ssh: u32, req: OpenRequest, parent: ParentRef) -> Decision {
        // As seen by the sender: `Local` is a channel it opened.
        let ident = match parent {
            ParentRef::Local(id) => (Origin::Remote, id),
            ParentRef::Remote(id) => (Origin::Local, id),
        };
        let Some(p) = self.idents.get(&ident).copied() else {
            return Decision::Refuse(OpenRefusal::ParentNotFound);
        };
        self.decide_child(ssh, req, p)
    }

    pub(super) fn decide_child(&mut self, ssh: u32, req: OpenRequest, p: ChannelKey) -> Decision {
        match self.takes_child(p) {
            Ok(()) => Decision::Accept(self.accept_native(ssh, req, Some(p))),
            Err(why) => Decision::Refuse(why),
        }
    }
}
