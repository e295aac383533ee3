//! A work queue of object keys: deduplicated, one reconcile per key at a time, delayed requeues
//! (earliest deadline wins) and per-key exponential backoff with jitter that never gives up.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Backoff settings for keys whose reconcile failed.
#[derive(Debug, Clone, Copy)]
pub struct BackoffConfig {
    /// First delay.
    pub base: Duration,
    /// Longest delay; retries continue at this period forever (jitter applies below it).
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(200),
            cap: Duration::from_secs(60),
        }
    }
}

struct State<K> {
    ready: VecDeque<K>,
    queued: HashSet<K>,
    processing: HashSet<K>,
    /// Added while being processed: queued again when `done` is called.
    dirty: HashSet<K>,
    delayed: BTreeMap<(Instant, u64), K>,
    deadlines: HashMap<K, (Instant, u64)>,
    backoff: HashMap<K, ExponentialBackoff>,
    /// When each key's last reconcile finished (kept while within the settle time).
    finished: HashMap<K, Instant>,
    seq: u64,
    shutdown: bool,
}

/// A work queue of keys. Cheap to clone; all clones share one queue.
pub struct WorkQueue<K> {
    state: Arc<Mutex<State<K>>>,
    notify: Arc<Notify>,
    backoff: BackoffConfig,
    settle: Duration,
}

impl<K> Clone for WorkQueue<K> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            notify: self.notify.clone(),
            backoff: self.backoff,
            settle: self.settle,
        }
    }
}

impl<K: Clone + Eq + Hash> WorkQueue<K> {
    /// An empty queue.
    pub fn new(backoff: BackoffConfig) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                ready: VecDeque::new(),
                queued: HashSet::new(),
                processing: HashSet::new(),
                dirty: HashSet::new(),
                delayed: BTreeMap::new(),
                deadlines: HashMap::new(),
                backoff: HashMap::new(),
                finished: HashMap::new(),
                seq: 0,
                shutdown: false,
            })),
            notify: Arc::new(Notify::new()),
            backoff,
            settle: Duration::ZERO,
        }
    }

    /// A key is not reconciled again sooner than `settle` after its last reconcile finished:
    /// changes arriving meanwhile are gathered into one later reconcile. Zero (the default)
    /// reconciles at once. It bounds the cost of keys whose every reconcile reads many objects
    /// that change often (a service with thousands of tasks reporting in).
    pub fn with_settle(mut self, settle: Duration) -> Self {
        self.settle = settle;
        self
    }

    /// How long `key` must still wait after its last reconcile, if at all.
    fn settling(&self, st: &mut State<K>, key: &K) -> Option<Duration> {
        if self.settle.is_zero() {
            return None;
        }
        let done = *st.finished.get(key)?;
        let left = self.settle.checked_sub(done.elapsed());
        if left.is_none() {
            st.finished.remove(key);
        }
        left.filter(|d| !d.is_zero())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues `key` now. A key already queued is not queued twice; a key being processed is
    /// queued again once its reconcile finishes.
    pub fn add(&self, key: K) {
        let mut st = self.lock();
        if !st.processing.contains(&key)
            && let Some(wait) = self.settling(&mut st, &key)
        {
            drop(st);
            return self.add_after(key, wait);
        }
        if let Some(slot) = st.deadlines.remove(&key) {
            st.delayed.remove(&slot);
        }
        Self::enqueue(&mut st, key);
        drop(st);
        self.notify.notify_one();
    }

    fn enqueue(st: &mut State<K>, key: K) {
        if st.processing.contains(&key) {
            st.dirty.insert(key);
        } else if st.queued.insert(key.clone()) {
            st.ready.push_back(key);
        }
    }

    /// Queues `key` after `delay`, unless it is queued sooner already.
    pub fn add_after(&self, key: K, delay: Duration) {
        if delay.is_zero() {
            return self.add(key);
        }
        let at = Instant::now() + delay;
        let mut st = self.lock();
        if st.queued.contains(&key) {
            return;
        }
        if let Some(&(existing, seq)) = st.deadlines.get(&key) {
            if existing <= at {
                return;
            }
            st.delayed.remove(&(existing, seq));
        }
        st.seq += 1;
        let slot = (at, st.seq);
        st.delayed.insert(slot, key.clone());
        st.deadlines.insert(key, slot);
        drop(st);
        // A waiting worker may need to wake earlier than it planned.
        self.notify.notify_one();
    }

    /// Queues `key` after its next backoff delay (growing per failure, capped, jittered).
    pub fn add_rate_limited(&self, key: K) -> Duration {
        let delay = {
            let mut st = self.lock();
            let cfg = self.backoff;
            st.backoff
                .entry(key.clone())
                .or_insert_with(|| {
                    ExponentialBuilder::default()
                        .with_min_delay(cfg.base)
                        .with_max_delay(cfg.cap)
                        .with_jitter()
                        .without_max_times()
                        .build()
                })
                .next()
                .unwrap_or(cfg.cap)
                .min(cfg.cap)
        };
        self.add_after(key, delay);
        delay
    }

    /// Resets `key`'s backoff after a success.
    pub fn forget(&self, key: &K) {
        self.lock().backoff.remove(key);
    }

    /// Marks `key`'s reconcile finished; re-queues it if it was added meanwhile.
    pub fn done(&self, key: &K) {
        let mut st = self.lock();
        st.processing.remove(key);
        if !self.settle.is_zero() {
            st.finished.insert(key.clone(), Instant::now());
        }
        if st.dirty.remove(key) {
            if !self.settle.is_zero() {
                drop(st);
                return self.add_after(key.clone(), self.settle);
            }
            Self::enqueue(&mut st, key.clone());
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Waits for the next key to process and marks it in progress; `None` after shutdown.
    pub async fn next(&self) -> Option<K> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wake_at = {
                let mut st = self.lock();
                if st.shutdown {
                    return None;
                }
                let now = Instant::now();
                while let Some((&slot, _)) = st.delayed.first_key_value() {
                    if slot.0 > now {
                        break;
                    }
                    if let Some(key) = st.delayed.remove(&slot) {
                        st.deadlines.remove(&key);
                        Self::enqueue(&mut st, key);
                    }
                }
                if let Some(key) = st.ready.pop_front() {
                    st.queued.remove(&key);
                    st.processing.insert(key.clone());
                    let more = !st.ready.is_empty();
                    drop(st);
                    if more {
                        // Let another worker pick up the rest.
                        self.notify.notify_one();
                    }
                    return Some(key);
                }
                st.delayed.first_key_value().map(|(slot, _)| slot.0)
            };
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }

    /// Stops handing out keys; `next` returns `None` from now on.
    pub fn shutdown(&self) {
        self.lock().shutdown = true;
        self.notify.notify_waiters();
    }

    /// Keys queued now (ready, not delayed).
    pub fn len(&self) -> usize {
        self.lock().ready.len()
    }

    /// Whether no key is ready now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keys waiting for a delay.
    pub fn delayed_len(&self) -> usize {
        self.lock().delayed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> WorkQueue<&'static str> {
        WorkQueue::new(BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
        })
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_of_one_key_are_deduplicated() {
        let q = queue();
        for _ in 0..100 {
            q.add("a");
        }
        q.add("b");
        assert_eq!(q.len(), 2);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(q.next().await, Some("b"));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_is_never_handed_out_twice_at_once() {
        let q = queue();
        q.add("a");
        assert_eq!(q.next().await, Some("a"));
        // Added again while processing: held back until done.
        q.add("a");
        q.add("a");
        assert!(q.is_empty());
        let waiting = tokio::time::timeout(Duration::from_secs(5), q.next()).await;
        assert!(waiting.is_err(), "handed out while in progress");
        q.done(&"a");
        assert_eq!(q.next().await, Some("a"));
        q.done(&"a");
        assert!(
            tokio::time::timeout(Duration::from_secs(5), q.next())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn settle_gathers_changes_after_a_reconcile() {
        let q = queue().with_settle(Duration::from_millis(100));
        q.add("a");
        assert_eq!(q.next().await, Some("a"));
        q.add("a"); // arrives while processing
        q.done(&"a");
        // Not handed out again until the settle time has passed since it finished.
        let start = Instant::now();
        q.add("a");
        q.add("b"); // other keys are not held back
        assert_eq!(q.next().await, Some("b"));
        q.done(&"b");
        assert_eq!(q.next().await, Some("a"));
        assert!(
            start.elapsed() >= Duration::from_millis(100),
            "{:?}",
            start.elapsed()
        );
        q.done(&"a");
        // Once settled, an add is immediate.
        tokio::time::advance(Duration::from_millis(150)).await;
        q.add("a");
        assert_eq!(q.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn earliest_requeue_wins() {
        let q = queue();
        let start = Instant::now();
        q.add_after("a", Duration::from_secs(10));
        q.add_after("a", Duration::from_secs(3));
        q.add_after("a", Duration::from_secs(20));
        assert_eq!(q.delayed_len(), 1);
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_growing_capped_and_forever() {
        let q = queue();
        let mut delays = Vec::new();
        for _ in 0..40 {
            let start = Instant::now();
            let planned = q.add_rate_limited("a");
            assert_eq!(q.next().await, Some("a"));
            let waited = Instant::now() - start;
            // Tokio's timer has millisecond granularity.
            assert!(
                waited >= planned && waited - planned < Duration::from_millis(2),
                "{waited:?} vs {planned:?}"
            );
            q.done(&"a");
            delays.push(waited);
        }
        // Grows from the base, jittered by at most one more base step…
        assert!(
            delays[0] >= Duration::from_secs(1) && delays[0] < Duration::from_secs(3),
            "{delays:?}"
        );
        assert!(delays[4] > delays[0], "{delays:?}");
        // …never exceeds the cap, and never stops.
        assert!(
            delays.iter().all(|d| *d <= Duration::from_millis(30_002)),
            "{delays:?}"
        );
        assert!(delays[39] >= Duration::from_secs(30), "{delays:?}");
        // Success resets it.
        q.forget(&"a");
        let planned = q.add_rate_limited("a");
        assert!(planned < Duration::from_secs(3), "{planned:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_immediate_add_supersedes_a_delay() {
        let q = queue();
        q.add_after("a", Duration::from_secs(60));
        let start = Instant::now();
        q.add("a");
        assert_eq!(q.next().await, Some("a"));
        assert_eq!(Instant::now(), start);
        assert_eq!(q.delayed_len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wakes_waiters() {
        let q = queue();
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next().await });
        tokio::task::yield_now().await;
        q.shutdown();
        assert_eq!(waiter.await.expect("joined"), None);
    }
}
