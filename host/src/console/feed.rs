//! The event feed behind `GET /v1/events/stream`: one shared watcher of the
//! audit log's last `seq`, so any number of live streams cost one cheap query
//! per tick, and only while someone listens.
//!
//! It polls the store rather than being poked by it, which keeps it independent
//! of the engine and of which process appended (the CLI writes events too: a
//! token revoked with `happyx token revoke` reaches live streams the same way).

use std::time::Duration;

use tokio::sync::watch;

use crate::store::Store;

/// How often the last `seq` is read while at least one stream listens.
pub const TICK: Duration = Duration::from_millis(200);

/// A handle to the shared watcher. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventFeed {
    tx: watch::Sender<i64>,
}

impl EventFeed {
    /// Starts the watcher task on the current runtime.
    pub fn spawn(store: Store) -> EventFeed {
        let (tx, _) = watch::channel(0);
        let feed = EventFeed { tx };
        let tx = feed.tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if tx.is_closed() {
                    continue;
                }
                match store.last_event_seq().await {
                    Ok(seq) => {
                        tx.send_if_modified(|v| {
                            let changed = *v != seq;
                            *v = seq;
                            changed
                        });
                    }
                    Err(e) => {
                        tracing::warn!(code = e.code(), error = %e, "event feed cannot read the log")
                    }
                }
            }
        });
        feed
    }

    /// A receiver that wakes when the last `seq` changes.
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.tx.subscribe()
    }
}
