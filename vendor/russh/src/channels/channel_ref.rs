use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::mpsc::Sender;

use super::WindowSizeRef;
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
}

/// streamkit patch: how many `ChannelRef`s exist in this process.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// streamkit patch: the number of channel handles (`ChannelRef`) alive in this
/// process: one per channel a session still tracks. Leak tests watch it return
/// to its baseline once channels are closed.
pub fn live_channel_refs() -> usize {
    LIVE.load(Ordering::SeqCst)
}

impl Drop for ChannelRef {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self::with_window(sender, WindowSizeRef::new(0))
    }

    pub(crate) fn with_window(sender: Sender<ChannelMsg>, window_size: WindowSizeRef) -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Self {
            sender,
            window_size,
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
