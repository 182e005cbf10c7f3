//! Reason codes: why an open was refused, why a channel was reset.

/// Why a channel-open request was refused, carried as the SSH
/// `SSH_MSG_CHANNEL_OPEN_FAILURE` reason code.
///
/// Codes 1–4 are RFC 4254 §5.1's; ours live in the private-use range
/// `0xFE000000..=0xFFFFFFFF` that RFC 4250 §4.9.2 sets aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpenRefusal {
    /// No such service on the remote peer.
    ServiceNotFound,
    /// The remote's authorisation hook refused this peer the service.
    Denied,
    /// The connection already carries as many channels as the remote allows.
    TooManyChannels,
    /// The remote has too many channels waiting to be accepted.
    AcceptQueueFull,
    /// The request could not be decoded.
    BadRequest,
    /// A nested open named a parent channel that does not exist on this connection.
    ParentNotFound,
    /// The remote peer is shutting down.
    ShuttingDown,
    /// A nested open named a parent whose application does not take channels
    /// opened inside it.
    ChildrenRefused,
    /// The remote's memory budget for this connection (or for all) cannot hold
    /// another channel.
    OverBudget,
    /// A hub has no peer of the requested name connected (or the policy hides it).
    NotReachable,
    /// A hub's limit on relayed channels for this peer (or for the target) is reached.
    RelayLimit,
    /// A relay asked this peer to take the hub's word for who is calling, and this
    /// peer does not trust that hub (see `Options::trusted_hubs`).
    HubNotTrusted,
    /// `SSH_OPEN_ADMINISTRATIVELY_PROHIBITED` from a non-Streamkit peer.
    Prohibited,
    /// `SSH_OPEN_CONNECT_FAILED`.
    ConnectFailed,
    /// `SSH_OPEN_UNKNOWN_CHANNEL_TYPE`: the remote does not speak the native protocol.
    UnknownChannelType,
    /// `SSH_OPEN_RESOURCE_SHORTAGE`.
    ResourceShortage,
    /// A code we do not know.
    Other(u32),
}

const BASE: u32 = 0xFE53_4B00; // 0xFE + "SK"

impl OpenRefusal {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            OpenRefusal::Prohibited => 1,
            OpenRefusal::ConnectFailed => 2,
            OpenRefusal::UnknownChannelType => 3,
            OpenRefusal::ResourceShortage => 4,
            OpenRefusal::ServiceNotFound => BASE + 1,
            OpenRefusal::Denied => BASE + 2,
            OpenRefusal::TooManyChannels => BASE + 3,
            OpenRefusal::AcceptQueueFull => BASE + 4,
            OpenRefusal::BadRequest => BASE + 5,
            OpenRefusal::ParentNotFound => BASE + 6,
            OpenRefusal::ShuttingDown => BASE + 7,
            OpenRefusal::ChildrenRefused => BASE + 8,
            OpenRefusal::OverBudget => BASE + 9,
            OpenRefusal::NotReachable => BASE + 10,
            OpenRefusal::RelayLimit => BASE + 11,
            OpenRefusal::HubNotTrusted => BASE + 12,
            OpenRefusal::Other(code) => code,
        }
    }

    /// Decodes a wire code.
    pub fn from_code(code: u32) -> OpenRefusal {
        match code {
            1 => OpenRefusal::Prohibited,
            2 => OpenRefusal::ConnectFailed,
            3 => OpenRefusal::UnknownChannelType,
            4 => OpenRefusal::ResourceShortage,
            c if c == BASE + 1 => OpenRefusal::ServiceNotFound,
            c if c == BASE + 2 => OpenRefusal::Denied,
            c if c == BASE + 3 => OpenRefusal::TooManyChannels,
            c if c == BASE + 4 => OpenRefusal::AcceptQueueFull,
            c if c == BASE + 5 => OpenRefusal::BadRequest,
            c if c == BASE + 6 => OpenRefusal::ParentNotFound,
            c if c == BASE + 7 => OpenRefusal::ShuttingDown,
            c if c == BASE + 8 => OpenRefusal::ChildrenRefused,
            c if c == BASE + 9 => OpenRefusal::OverBudget,
            c if c == BASE + 10 => OpenRefusal::NotReachable,
            c if c == BASE + 11 => OpenRefusal::RelayLimit,
            c if c == BASE + 12 => OpenRefusal::HubNotTrusted,
            c => OpenRefusal::Other(c),
        }
    }

    /// The human-readable description, also sent as the SSH description string.
    pub fn description(self) -> &'static str {
        match self {
            OpenRefusal::ServiceNotFound => "service not found",
            OpenRefusal::Denied => "access to the service denied",
            OpenRefusal::TooManyChannels => "too many channels on this connection",
            OpenRefusal::AcceptQueueFull => "too many channels waiting to be accepted",
            OpenRefusal::BadRequest => "malformed open request",
            OpenRefusal::ParentNotFound => "parent channel not found",
            OpenRefusal::ShuttingDown => "peer is shutting down",
            OpenRefusal::ChildrenRefused => "parent does not accept channels",
            OpenRefusal::OverBudget => "the connection's memory budget is spent",
            OpenRefusal::NotReachable => "no peer of that name is reachable through this hub",
            OpenRefusal::RelayLimit => "the hub's limit on relayed channels is reached",
            OpenRefusal::HubNotTrusted => "this peer does not take the hub's word for names",
            OpenRefusal::Prohibited => "administratively prohibited",
            OpenRefusal::ConnectFailed => "connect failed",
            OpenRefusal::UnknownChannelType => "unknown channel type (not a streamkit peer?)",
            OpenRefusal::ResourceShortage => "resource shortage",
            OpenRefusal::Other(_) => "refused",
        }
    }
}

/// Why a channel was reset, carried in a `RESET` control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ResetCode {
    /// The application aborted the channel.
    Cancelled,
    /// The peer closed the channel and will read no more.
    Closed,
    /// The peer saw a protocol violation on this channel.
    ProtocolError,
    /// A frame announced a length over the reader's limit.
    FrameTooLarge,
    /// The peer shut down and its close timeout ran out.
    Shutdown,
    /// Trailers or another bounded item went over its limit.
    LimitExceeded,
    /// The channel's parent closed, which closes its children.
    ParentClosed,
    /// A code we do not know.
    Other(u32),
}

impl ResetCode {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            ResetCode::Cancelled => 1,
            ResetCode::Closed => 2,
            ResetCode::ProtocolError => 3,
            ResetCode::FrameTooLarge => 4,
            ResetCode::Shutdown => 5,
            ResetCode::LimitExceeded => 6,
            ResetCode::ParentClosed => 7,
            ResetCode::Other(c) => c,
        }
    }

    /// Decodes a wire code.
    pub fn from_code(code: u32) -> ResetCode {
        match code {
            1 => ResetCode::Cancelled,
            2 => ResetCode::Closed,
            3 => ResetCode::ProtocolError,
            4 => ResetCode::FrameTooLarge,
            5 => ResetCode::Shutdown,
            6 => ResetCode::LimitExceeded,
            7 => ResetCode::ParentClosed,
            c => ResetCode::Other(c),
        }
    }
}

impl std::fmt::Display for ResetCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResetCode::Cancelled => f.write_str("cancelled"),
            ResetCode::Closed => f.write_str("closed"),
            ResetCode::ProtocolError => f.write_str("protocol error"),
            ResetCode::FrameTooLarge => f.write_str("frame too large"),
            ResetCode::Shutdown => f.write_str("shutdown"),
            ResetCode::ParentClosed => f.write_str("parent closed"),
            ResetCode::LimitExceeded => f.write_str("limit exceeded"),
            ResetCode::Other(c) => write!(f, "code {c}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for r in [
            OpenRefusal::ServiceNotFound,
            OpenRefusal::Denied,
            OpenRefusal::TooManyChannels,
            OpenRefusal::AcceptQueueFull,
            OpenRefusal::BadRequest,
            OpenRefusal::ParentNotFound,
            OpenRefusal::ShuttingDown,
            OpenRefusal::ChildrenRefused,
            OpenRefusal::OverBudget,
            OpenRefusal::Prohibited,
            OpenRefusal::ConnectFailed,
            OpenRefusal::UnknownChannelType,
            OpenRefusal::ResourceShortage,
            OpenRefusal::Other(99),
        ] {
            assert_eq!(OpenRefusal::from_code(r.code()), r);
        }
        for c in 0..10 {
            assert_eq!(ResetCode::from_code(c).code(), c);
        }
    }
}
