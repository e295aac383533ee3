//! `Controller::run`: keys from watch caches and periodic resyncs go through a [`WorkQueue`];
//! while this replica leads, workers reconcile them, at most `concurrency` at once and never one
//! key twice at once. Followers keep queueing (their caches stay warm) and take over at once.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_store::{Cache, Change, Claim, Leadership};
use futures::FutureExt;
use futures::future::BoxFuture;
use std::panic::AssertUnwindSafe;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::queue::{BackoffConfig, WorkQueue};

/// What to do with a key after its reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Reconcile again after this long (the safety net; changes requeue sooner).
    Requeue(Duration),
    /// Reconcile again only when something changes.
    AwaitChange,
    /// Retry with the key's growing backoff (for errors).
    Backoff,
}

impl Action {
    /// Reconcile again after `d`.
    pub fn requeue(d: Duration) -> Self {
        Action::Requeue(d)
    }

    /// Reconcile again only on change.
    pub fn await_change() -> Self {
        Action::AwaitChange
    }

    /// The usual answer to a failed etcd call: a lost compare (another write got there first,
    /// the cache will catch up) is retried at once; anything else backs off.
    pub fn after_store_error(e: &capstan_store::StoreError) -> Self {
        match e {
            capstan_store::StoreError::Conflict { .. } => {
                Action::Requeue(Duration::from_millis(50))
            }
            _ => Action::Backoff,
        }
    }
}

/// What the runtime needs to know of a reconcile's error: what to do with the key, and a short
/// stable label for `capstan_reconcile_errors_total{reason}`.
pub trait ReconcileError: std::fmt::Display + Send + 'static {
    /// What to do with the key after this error.
    fn action(&self) -> Action;
    /// The metric label.
    fn metric_label(&self) -> &'static str;
}

impl ReconcileError for capstan_store::StoreError {
    fn action(&self) -> Action {
        Action::after_store_error(self)
    }

    fn metric_label(&self) -> &'static str {
        capstan_store::StoreError::metric_label(self)
    }
}

/// Settings of one controller.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Name, used in metrics and logs.
    pub name: String,
    /// Most reconciles at once.
    pub concurrency: usize,
    /// Every key is reconciled at least this often.
    pub resync: Duration,
    /// Error backoff.
    pub backoff: BackoffConfig,
    /// Least time between two reconciles of one key (see [`WorkQueue::with_settle`]).
    pub settle: Duration,
}

impl ControllerConfig {
    /// Defaults: concurrency 16, resync 60 s, backoff 200 ms → 60 s.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            concurrency: 16,
            resync: Duration::from_secs(60),
            backoff: BackoffConfig::default(),
            settle: Duration::ZERO,
        }
    }
}

type KeysFn<K> = Arc<dyn Fn() -> Vec<K> + Send + Sync>;

/// A controller over keys of type `K`.
pub struct Controller<K> {
    config: ControllerConfig,
    queue: WorkQueue<K>,
    all_keys: Vec<KeysFn<K>>,
    feeders: Vec<BoxFuture<'static, ()>>,
}

impl<K> Controller<K>
where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
{
    /// A controller with no triggers yet.
    pub fn new(config: ControllerConfig) -> Self {
        let queue = WorkQueue::new(config.backoff).with_settle(config.settle);
        Self {
            config,
            queue,
            all_keys: Vec::new(),
            feeders: Vec::new(),
        }
    }

    /// Its name, for metrics and logs.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The queue, to trigger keys from elsewhere (requests, timers).
    pub fn queue(&self) -> WorkQueue<K> {
        self.queue.clone()
    }

    /// Queues the keys `map` derives from every change of `cache`; and, on resync and on taking
    /// leadership, the keys derived from every object in it.
    pub fn watches<T: Send + Sync + 'static>(
        mut self,
        cache: &Cache<T>,
        map: impl Fn(&str) -> Vec<K> + Send + Sync + 'static,
    ) -> Self {
        let map = Arc::new(map);
        let mut rx = cache.subscribe();
        let queue = self.queue.clone();
        let m = map.clone();
        self.feeders.push(Box::pin(async move {
            while let Some(change) = rx.recv().await {
                let key = match &change {
                    Change::Put { key, .. } | Change::Delete { key, .. } => key,
                };
                for k in m(key) {
                    queue.add(k);
                }
            }
        }));
        let c = cache.clone();
        self.all_keys.push(Arc::new(move || {
            c.keys().iter().flat_map(|k| map(k)).collect()
        }));
        self
    }

    /// Adds a source of keys that must be reconciled on every resync even without an object.
    pub fn resyncs(mut self, keys: impl Fn() -> Vec<K> + Send + Sync + 'static) -> Self {
        self.all_keys.push(Arc::new(keys));
        self
    }

    fn sweep(all_keys: &[KeysFn<K>], queue: &WorkQueue<K>) {
        for f in all_keys {
            for k in f() {
                queue.add(k);
            }
        }
    }

    /// Runs until `cancel`: reconciles while this replica leads.
    ///
    /// `reconcile` gets the key, the current claim (for fenced writes) and the context;
    /// `error_policy` decides what an error means for the key (usually [`Action::Backoff`]).
    pub async fn run<C, E, R, P>(
        self,
        mut leadership: Leadership,
        ctx: Arc<C>,
        reconcile: R,
        error_policy: P,
        cancel: CancellationToken,
    ) where
        C: Send + Sync + 'static,
        E: std::fmt::Display + Send + 'static,
        R: Fn(K, Arc<Claim>, Arc<C>) -> BoxFuture<'static, Result<Action, E>>
            + Send
            + Sync
            + 'static,
        P: Fn(&K, &E, &C) -> Action + Send + Sync + 'static,
    {
        let Self {
            config,
            queue,
            all_keys,
            feeders,
        } = self;
        let mut background = JoinSet::new();
        for f in feeders {
            background.spawn(f);
        }
        {
            let (queue, all_keys, cancel) = (queue.clone(), all_keys.clone(), cancel.clone());
            let period = config.resync;
            background.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.tick().await;
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tick.tick() => Self::sweep(&all_keys, &queue),
                    }
                }
            });
        }
        let reconcile = Arc::new(reconcile);
        let error_policy = Arc::new(error_policy);
        let name = config.name.clone();
        loop {
            let claim = tokio::select! {
                _ = cancel.cancelled() => break,
                c = leadership.acquired() => match c { Some(c) => c, None => break },
            };
            metrics::gauge!("capstan_leader", "controller" => name.clone()).set(1.0);
            tracing::info!(controller = %name, token = claim.revision, "leading: full sweep");
            // A new leader reconciles everything at once: the old one may have left work undone.
            Self::sweep(&all_keys, &queue);
            let term = cancel.child_token();
            let mut workers = JoinSet::new();
            for _ in 0..config.concurrency.max(1) {
                workers.spawn(worker(
                    name.clone(),
                    queue.clone(),
                    claim.clone(),
                    ctx.clone(),
                    reconcile.clone(),
                    error_policy.clone(),
                    term.clone(),
                ));
            }
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = leadership.lost(&claim) => {
                    tracing::warn!(controller = %name, "lost leadership: stopping reconciles");
                }
            }
            term.cancel();
            while workers.join_next().await.is_some() {}
            metrics::gauge!("capstan_leader", "controller" => name.clone()).set(0.0);
        }
        queue.shutdown();
        background.abort_all();
    }
}

/// The text a panic was raised with, when it has one.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

async fn worker<K, C, E, R, P>(
    name: String,
    queue: WorkQueue<K>,
    claim: Arc<Claim>,
    ctx: Arc<C>,
    reconcile: Arc<R>,
    error_policy: Arc<P>,
    term: CancellationToken,
) where
    K: Clone + Eq + Hash + Debug + Send + Sync + 'static,
    C: Send + Sync + 'static,
    E: std::fmt::Display + Send + 'static,
    R: Fn(K, Arc<Claim>, Arc<C>) -> BoxFuture<'static, Result<Action, E>> + Send + Sync + 'static,
    P: Fn(&K, &E, &C) -> Action + Send + Sync + 'static,
{
    loop {
        let key = tokio::select! {
            _ = term.cancelled() => return,
            k = queue.next() => match k { Some(k) => k, None => return },
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            _ = term.cancelled() => {
                // Leadership ended mid-reconcile: whoever leads next must look at this key.
                queue.done(&key);
                queue.add(key);
                return;
            }
            // A panic is a bug in a reconcile, and it must cost that key a backoff, not the
            // worker and the key for good (it would stay "in flight" forever).
            r = AssertUnwindSafe(reconcile(key.clone(), claim.clone(), ctx.clone())).catch_unwind() => r,
        };
        metrics::histogram!("capstan_reconcile_duration_seconds", "controller" => name.clone())
            .record(started.elapsed().as_secs_f64());
        queue.done(&key);
        let action = match outcome {
            Ok(Ok(action)) => {
                metrics::counter!("capstan_reconcile_total", "controller" => name.clone(), "result" => "ok")
                    .increment(1);
                queue.forget(&key);
                action
            }
            Ok(Err(e)) => {
                metrics::counter!("capstan_reconcile_total", "controller" => name.clone(), "result" => "error")
                    .increment(1);
                tracing::warn!(controller = %name, key = ?key, error = %e, "reconcile failed");
                error_policy(&key, &e, &ctx)
            }
            Err(panic) => {
                metrics::counter!("capstan_reconcile_total", "controller" => name.clone(), "result" => "panic")
                    .increment(1);
                tracing::error!(controller = %name, key = ?key, panic = %panic_message(panic.as_ref()),
                    "reconcile panicked; retrying the key with backoff");
                Action::Backoff
            }
        };
        match action {
            Action::Requeue(d) => queue.add_after(key, d),
            Action::AwaitChange => {}
            Action::Backoff => {
                queue.add_rate_limited(key);
            }
        }
        metrics::gauge!("capstan_queue_depth", "controller" => name.clone())
            .set(queue.len() as f64);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use capstan_store::Leadership;

    use super::*;

    fn claim() -> Claim {
        Claim {
            election: "e".into(),
            holder: "me".into(),
            key: "e/1".into(),
            revision: 7,
            lease: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failing_keys_back_off_and_are_retried_until_they_succeed() {
        let mut cfg = ControllerConfig::new("test");
        cfg.backoff = BackoffConfig {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
        };
        cfg.resync = Duration::from_secs(3600);
        let controller = Controller::<String>::new(cfg);
        let queue = controller.queue();
        let attempts: Arc<Mutex<Vec<tokio::time::Instant>>> = Arc::default();
        let (leadership, _tx) = Leadership::fixed(claim());
        let cancel = CancellationToken::new();
        let a = attempts.clone();
        let c = cancel.clone();
        let run = tokio::spawn(controller.run(
            leadership,
            Arc::new(()),
            move |_key: String, claim: Arc<Claim>, _ctx: Arc<()>| {
                assert_eq!(claim.fencing_token(), 7);
                let a = a.clone();
                let c = c.clone();
                async move {
                    let mut v = a.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    v.push(tokio::time::Instant::now());
                    if v.len() < 6 {
                        Err(format!("attempt {} fails", v.len()))
                    } else {
                        c.cancel();
                        Ok(Action::AwaitChange)
                    }
                }
                .boxed()
            },
            |_k: &String, _e: &String, _c: &()| Action::Backoff,
            cancel.clone(),
        ));
        queue.add("svc".to_string());
        tokio::time::timeout(Duration::from_secs(600), run)
            .await
            .expect("finishes")
            .expect("joins");
        let v = attempts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(v.len(), 6);
        let gaps: Vec<Duration> = v.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps[0] >= Duration::from_secs(1), "{gaps:?}");
        assert!(gaps[3] > gaps[0], "{gaps:?}");
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_secs(8)),
            "{gaps:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reconcile_that_panics_costs_its_key_a_backoff_and_nothing_else() {
        let mut cfg = ControllerConfig::new("test");
        cfg.concurrency = 1;
        cfg.resync = Duration::from_secs(3600);
        let controller = Controller::<String>::new(cfg);
        let queue = controller.queue();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let (leadership, _tx) = Leadership::fixed(claim());
        let cancel = CancellationToken::new();
        let (s, c) = (seen.clone(), cancel.clone());
        let run = tokio::spawn(controller.run(
            leadership,
            Arc::new(()),
            move |key: String, _claim: Arc<Claim>, _ctx: Arc<()>| {
                let (s, c) = (s.clone(), c.clone());
                async move {
                    let n = {
                        let mut v = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        v.push(key.clone());
                        v.iter().filter(|k| **k == key).count()
                    };
                    if key == "bad" && n < 3 {
                        panic!("reconcile bug on {key}");
                    }
                    if key == "bad" {
                        c.cancel();
                    }
                    Ok::<_, String>(Action::AwaitChange)
                }
                .boxed()
            },
            |_k: &String, _e: &String, _c: &()| Action::Backoff,
            cancel.clone(),
        ));
        queue.add("bad".to_string());
        queue.add("good".to_string());
        tokio::time::timeout(Duration::from_secs(600), run)
            .await
            .expect("the panicking key is reconciled again until it succeeds")
            .expect("joins");
        let v = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert_eq!(v.iter().filter(|k| *k == "bad").count(), 3, "{v:?}");
        // The one worker survived the panics: the other key was reconciled too.
        assert!(v.contains(&"good".to_string()), "{v:?}");
    }

    #[test]
    fn store_errors_say_what_to_do_with_the_key_and_how_to_count_them() {
        use capstan_store::StoreError;
        let conflict = StoreError::Conflict { keys: "k".into() };
        assert_eq!(
            ReconcileError::action(&conflict),
            Action::Requeue(Duration::from_millis(50))
        );
        assert_eq!(ReconcileError::metric_label(&conflict), "conflict");
        let lost = StoreError::NotLeader {
            election: "e".into(),
        };
        assert_eq!(ReconcileError::action(&lost), Action::Backoff);
        assert_eq!(ReconcileError::metric_label(&lost), "not_leader");
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_does_not_reconcile() {
        let controller = Controller::<String>::new(ControllerConfig::new("test"));
        let queue = controller.queue();
        let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let n = count.clone();
        let cancel = CancellationToken::new();
        let run = tokio::spawn(controller.run(
            Leadership::never(),
            Arc::new(()),
            move |_k: String, _c: Arc<Claim>, _x: Arc<()>| {
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { Ok::<_, String>(Action::AwaitChange) }.boxed()
            },
            |_k: &String, _e: &String, _c: &()| Action::Backoff,
            cancel.clone(),
        ));
        queue.add("svc".to_string());
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(count.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(queue.len(), 1, "the key waits for a leader");
        cancel.cancel();
        run.await.expect("joins");
    }
}
