//! Watch caches: one per key family. List at revision R, watch from R+1, relist after compaction
//! and periodically, and tell subscribers about every change in revision order.
//!
//! A cache has one writer (its background task) and many cheap readers ([`Cache`] is `Clone`).
//! Values that do not decode are kept with their error, so a bad document never stops the cache
//! and the controller can report it on the object itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use etcd_client::{EventType, WatchOptions};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{KeyValue, Store};

/// Default period of full relists, the safety net for anything a watch could miss.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// Turns stored bytes into a value, or says why it cannot.
pub type Decoder<T> = Arc<dyn Fn(&str, &[u8]) -> Result<T, String> + Send + Sync>;

/// One cached object.
#[derive(Debug)]
pub struct Entry<T> {
    /// Its key.
    pub key: String,
    /// The decoded value, or why it did not decode.
    pub value: Result<T, String>,
    /// Raw bytes as stored.
    pub raw: Vec<u8>,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Revision that created it.
    pub create_revision: i64,
    /// Lease it is bound to.
    pub lease: i64,
}

/// What changed in a cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The key was created or changed at `revision`.
    Put {
        /// The key.
        key: String,
        /// Revision of the change.
        revision: i64,
    },
    /// The key was deleted at `revision`.
    Delete {
        /// The key.
        key: String,
        /// Revision of the deletion.
        revision: i64,
    },
}

impl Change {
    /// The key that changed.
    pub fn key(&self) -> &str {
        match self {
            Change::Put { key, .. } | Change::Delete { key, .. } => key,
        }
    }
}

/// Counters for tests and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Full lists done (the first one included).
    pub lists: u64,
    /// Watches (re)opened.
    pub watches: u64,
    /// Relists forced by compaction.
    pub compactions: u64,
}

struct State<T> {
    objects: BTreeMap<String, Arc<Entry<T>>>,
    revision: i64,
    stats: CacheStats,
}

struct Inner<T> {
    prefix: String,
    state: RwLock<State<T>>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<Change>>>,
    ready: watch::Sender<bool>,
    decode: Decoder<T>,
}

/// A read handle on a watch cache.
pub struct Cache<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A decoder for plain JSON documents.
pub fn json_decoder<T: serde::de::DeserializeOwned>() -> Decoder<T> {
    Arc::new(|_key, bytes| serde_json::from_slice(bytes).map_err(|e| e.to_string()))
}

impl<T: Send + Sync + 'static> Cache<T> {
    /// Starts a cache of every key under `prefix`, resynced every `resync`.
    pub fn spawn(
        store: Store,
        prefix: String,
        decode: Decoder<T>,
        resync: Duration,
        cancel: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (ready, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            prefix,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                revision: 0,
                stats: CacheStats::default(),
            }),
            subscribers: Mutex::new(Vec::new()),
            ready,
            decode,
        });
        let cache = Self { inner };
        let handle = tokio::spawn(cache.clone().run(store, resync, cancel));
        (cache, handle)
    }

    /// The prefix this cache holds.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// One object.
    pub fn get(&self, key: &str) -> Option<Arc<Entry<T>>> {
        read(&self.inner.state).objects.get(key).cloned()
    }

    /// Every object, in key order.
    pub fn list(&self) -> Vec<Arc<Entry<T>>> {
        read(&self.inner.state).objects.values().cloned().collect()
    }

    /// Every object under `prefix`, in key order.
    pub fn list_prefix(&self, prefix: &str) -> Vec<Arc<Entry<T>>> {
        read(&self.inner.state)
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every key.
    pub fn keys(&self) -> Vec<String> {
        read(&self.inner.state).objects.keys().cloned().collect()
    }

    /// Number of objects.
    pub fn len(&self) -> usize {
        read(&self.inner.state).objects.len()
    }

    /// Whether the cache holds no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The revision the cache has seen everything up to.
    pub fn revision(&self) -> i64 {
        read(&self.inner.state).revision
    }

    /// Counters.
    pub fn stats(&self) -> CacheStats {
        read(&self.inner.state).stats
    }

    /// Whether the first list has completed.
    pub fn is_ready(&self) -> bool {
        *self.inner.ready.borrow()
    }

    /// Waits for the first list.
    pub async fn ready(&self) {
        let mut rx = self.inner.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Waits until the cache has seen revision `rev` (e.g. the revision of one's own write).
    pub async fn wait_revision(&self, rev: i64) {
        let mut rx = self.inner.ready.subscribe();
        while self.revision() < rev {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Every change from now on, in revision order.
    pub fn subscribe(&self) -> mpsc::UnboundedReceiver<Change> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(tx);
        rx
    }

    fn publish(&self, changes: Vec<Change>) {
        if !changes.is_empty() {
            let mut subs = self
                .inner
                .subscribers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            subs.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
        }
        // Wakes `wait_revision` callers; the value stays true once ready.
        self.inner.ready.send_modify(|_| {});
    }

    fn entry(&self, kv: KeyValue) -> Entry<T> {
        let value = (self.inner.decode)(&kv.key, &kv.value);
        Entry {
            value,
            key: kv.key,
            raw: kv.value,
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
            lease: kv.lease,
        }
    }

    /// Replaces the contents with a fresh listing, emitting the differences as changes.
    fn replace(&self, kvs: Vec<KeyValue>, revision: i64) {
        let mut fresh = BTreeMap::new();
        for kv in kvs {
            let e = self.entry(kv);
            fresh.insert(e.key.clone(), Arc::new(e));
        }
        let mut changes = Vec::new();
        {
            let mut st = write(&self.inner.state);
            for (k, old) in &st.objects {
                if !fresh.contains_key(k) {
                    changes.push(Change::Delete {
                        key: k.clone(),
                        revision,
                    });
                } else if fresh[k].mod_revision != old.mod_revision {
                    changes.push(Change::Put {
                        key: k.clone(),
                        revision: fresh[k].mod_revision,
                    });
                }
            }
            for (k, e) in &fresh {
                if !st.objects.contains_key(k) {
                    changes.push(Change::Put {
                        key: k.clone(),
                        revision: e.mod_revision,
                    });
                }
            }
            changes.sort_by_key(|c| match c {
                Change::Put { revision, .. } | Change::Delete { revision, .. } => *revision,
            });
            st.objects = fresh;
            st.revision = revision;
            st.stats.lists += 1;
        }
        self.inner.ready.send_replace(true);
        self.publish(changes);
    }

    fn apply(&self, events: &[etcd_client::Event], header_revision: i64) {
        // Decoded before taking the lock: readers (snapshots) never wait on JSON parsing.
        // Each event: its key, its revision, and the new entry (None for a delete).
        let decoded: Vec<(String, i64, Option<Entry<T>>)> = events
            .iter()
            .filter_map(|ev| {
                let kv = ev.kv()?;
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let revision = kv.mod_revision();
                let entry = (ev.event_type() == EventType::Put).then(|| {
                    self.entry(KeyValue {
                        key: key.clone(),
                        value: kv.value().to_vec(),
                        create_revision: kv.create_revision(),
                        mod_revision: revision,
                        lease: kv.lease(),
                    })
                });
                Some((key, revision, entry))
            })
            .collect();
        let mut changes = Vec::with_capacity(decoded.len());
        {
            let mut st = write(&self.inner.state);
            for (key, revision, entry) in decoded {
                st.revision = st.revision.max(revision);
                match entry {
                    Some(e) => {
                        st.objects.insert(key.clone(), Arc::new(e));
                        changes.push(Change::Put { key, revision });
                    }
                    None => {
                        st.objects.remove(&key);
                        changes.push(Change::Delete { key, revision });
                    }
                }
            }
            if events.is_empty() {
                // A progress notification: nothing under the prefix changed up to here.
                st.revision = st.revision.max(header_revision);
            }
        }
        self.publish(changes);
    }

    async fn run(self, store: Store, resync: Duration, cancel: CancellationToken) {
        let backoff = Duration::from_millis(200);
        'list: while !cancel.is_cancelled() {
            match store.list(&self.inner.prefix).await {
                Ok(listing) => self.replace(listing.kvs, listing.revision),
                Err(e) => {
                    tracing::warn!(prefix = %self.inner.prefix, error = %e, "cache: list failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => continue 'list,
                    }
                }
            }
            let relist_at = tokio::time::Instant::now() + resync;
            // Watch from the next revision; reopen on stream errors, relist on compaction.
            loop {
                let from = self.revision() + 1;
                write(&self.inner.state).stats.watches += 1;
                let mut client = store.client();
                let opts = WatchOptions::new()
                    .with_prefix()
                    .with_start_revision(from)
                    .with_progress_notify();
                let opened = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = tokio::time::timeout(store.call_timeout(), client.watch(self.inner.prefix.as_str(), Some(opts))) => r,
                };
                let mut stream = match opened {
                    Ok(Ok(s)) => s,
                    other => {
                        let err = match other {
                            Ok(Err(e)) => e.to_string(),
                            _ => "timed out".to_string(),
                        };
                        tracing::debug!(prefix = %self.inner.prefix, error = %err, "cache: watch failed; retrying");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(backoff) => {}
                        }
                        if tokio::time::Instant::now() >= relist_at {
                            continue 'list;
                        }
                        continue;
                    }
                };
                loop {
                    let msg = tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep_until(relist_at) => continue 'list,
                        m = stream.message() => m,
                    };
                    match msg {
                        Ok(Some(resp)) => {
                            if resp.compact_revision() > 0 {
                                tracing::info!(prefix = %self.inner.prefix, compacted = resp.compact_revision(), "cache: history compacted; relisting");
                                write(&self.inner.state).stats.compactions += 1;
                                continue 'list;
                            }
                            if resp.canceled() {
                                tracing::debug!(prefix = %self.inner.prefix, reason = resp.cancel_reason(), "cache: watch canceled; reopening");
                                break;
                            }
                            if resp.created() && resp.events().is_empty() {
                                continue;
                            }
                            let header = resp.header().map_or(0, |h| h.revision());
                            self.apply(resp.events(), header);
                        }
                        Ok(None) | Err(_) => {
                            tracing::debug!(prefix = %self.inner.prefix, "cache: watch stream ended; reopening");
                            tokio::select! {
                                _ = cancel.cancelled() => return,
                                _ = tokio::time::sleep(backoff) => {}
                            }
                            break;
                        }
                    }
                }
            }
        }
    }
}
