//! A peer's registered connections, by id (the order they registered in) and by
//! the remote's name, so that finding a peer's connection (every `open`, every
//! name check at a handshake) costs the connections of that name, not all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::connection::Conn;

#[derive(Default)]
pub(super) struct Conns {
    by_id: BTreeMap<u64, Arc<Conn>>,
    /// Ids of each name's connections, oldest first.
    by_name: HashMap<String, Vec<u64>>,
}

impl Conns {
    pub(super) fn insert(&mut self, conn: Arc<Conn>) {
        let id = conn.info.id;
        self.by_name
            .entry(conn.info.remote_name.clone())
            .or_default()
            .push(id);
        self.by_id.insert(id, conn);
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let conn = self.by_id.remove(&id)?;
        let name = &conn.info.remote_name;
        if let Some(ids) = self.by_name.get_mut(name) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.by_name.remove(name);
            }
        }
        Some(conn)
    }

    /// The connection of that id.
    pub(super) fn get(&self, id: u64) -> Option<&Arc<Conn>> {
        self.by_id.get(&id)
    }

    /// The connections to `name`, oldest first.
    pub(super) fn named<'a>(
        &'a self,
        name: &str,
    ) -> impl DoubleEndedIterator<Item = &'a Arc<Conn>> + 'a {
        self.by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|id| self.by_id.get(id))
    }

    /// Every connection, in the order they registered.
    pub(super) fn values(&self) -> impl Iterator<Item = &Arc<Conn>> {
        self.by_id.values()
    }

    /// Takes every connection out.
    pub(super) fn take_all(&mut self) -> Vec<Arc<Conn>> {
        self.by_name.clear();
        std::mem::take(&mut self.by_id).into_values().collect()
    }
}
