//! Work that runs only while this replica leads, beside the reconcile workers: the scheduler's
//! agent streams, the registrar's data plane and health checks.
//!
//! Contract: `work(claim, term)` starts each time leadership is won; `term` is cancelled when it
//! is lost or on shutdown, and the next term starts only after `work` has returned. Work that
//! returns by itself waits for the end of its term before it may start again. Losing leadership
//! stops deciding; what the work leaves serving (HAProxy's last configuration) is its own choice,
//! and it can tell a shutdown (the runtime's token cancelled) from a lost term.

use std::future::Future;
use std::sync::Arc;

use capstan_store::{Claim, Leadership};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Runs `work` in every term this replica leads, until `cancel`.
pub fn spawn_while_leading<F, Fut>(
    mut leadership: Leadership,
    cancel: CancellationToken,
    work: F,
) -> JoinHandle<()>
where
    F: Fn(Arc<Claim>, CancellationToken) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let claim = tokio::select! {
                _ = cancel.cancelled() => return,
                c = leadership.acquired() => match c { Some(c) => c, None => return },
            };
            let term = cancel.child_token();
            let mut run = tokio::spawn(work(claim.clone(), term.clone()));
            let finished = tokio::select! {
                r = &mut run => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "work of this term failed; it starts again next term");
                    }
                    true
                }
                _ = leadership.lost(&claim) => false,
                _ = cancel.cancelled() => false,
            };
            if finished {
                tokio::select! {
                    _ = leadership.lost(&claim) => {}
                    _ = cancel.cancelled() => {}
                }
            }
            term.cancel();
            if !finished {
                let _ = run.await;
            }
            if cancel.is_cancelled() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    fn claim(revision: i64) -> Claim {
        Claim {
            election: "e".into(),
            holder: "me".into(),
            key: format!("e/{revision}"),
            revision,
            lease: 1,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn work_runs_each_term_and_is_stopped_when_leadership_is_lost() {
        let (leadership, tx) = Leadership::fixed(claim(1));
        let cancel = CancellationToken::new();
        let started = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicUsize::new(0));
        let (s1, s2) = (started.clone(), stopped.clone());
        let handle = spawn_while_leading(leadership, cancel.clone(), move |c, term| {
            let (s1, s2) = (s1.clone(), s2.clone());
            async move {
                assert!(c.revision > 0);
                s1.fetch_add(1, Ordering::SeqCst);
                term.cancelled().await;
                s2.fetch_add(1, Ordering::SeqCst);
            }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            (
                started.load(Ordering::SeqCst),
                stopped.load(Ordering::SeqCst)
            ),
            (1, 0)
        );
        // Lost: the work is told to stop; won again: a second term starts.
        tx.send_replace(None);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(
            (
                started.load(Ordering::SeqCst),
                stopped.load(Ordering::SeqCst)
            ),
            (1, 1)
        );
        tx.send_replace(Some(Arc::new(claim(2))));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(started.load(Ordering::SeqCst), 2);
        cancel.cancel();
        handle.await.expect("joins");
        assert_eq!(
            stopped.load(Ordering::SeqCst),
            2,
            "shutdown stops the running term"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_returns_early_does_not_restart_within_its_term() {
        let (leadership, _tx) = Leadership::fixed(claim(1));
        let cancel = CancellationToken::new();
        let started = Arc::new(AtomicUsize::new(0));
        let s = started.clone();
        let handle = spawn_while_leading(leadership, cancel.clone(), move |_c, _term| {
            s.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(started.load(Ordering::SeqCst), 1);
        cancel.cancel();
        handle.await.expect("joins");
    }
}
