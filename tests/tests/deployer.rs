//! The deployment controller end to end: real etcd, three real `capstan-agent`s running real
//! processes, the real `capstan-scheduler` and the real `capstan-deployer`. Services are written
//! as users write them; a sampler lists the tasks every 50 ms during each rollout and the test
//! fails on any breach of the rolling bounds.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::ServiceStatusDoc;
use capstan_core::deployment::{Deployment, DeploymentStatus, HookStatus, RolloutState};
use capstan_core::keys::Family;
use capstan_core::service::{LifecycleStage, ServiceStatus};
use capstan_core::task::{DesiredStatus, Task, TaskStatus};
use capstan_e2e::*;
use capstan_store::Store;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};

/// Health grace given to the deployer: tasks count healthy after 3 s RUNNING.
const GRACE: f64 = 3.0;

struct Plane {
    _etcd: EtcdCluster,

    dir: tempfile::TempDir,
    store: Store,
    procs: Vec<Proc>,
    deployers: Vec<Proc>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        for p in self.procs.iter_mut().chain(self.deployers.iter_mut()) {
            p.kill();
        }
        kill_task_processes(self.dir.path());
    }
}

async fn plane(deployers: usize) -> Plane {
    plane_with(deployers, &[]).await
}

/// A plane whose deployers get `extra` flags.
async fn plane_with(deployers: usize, extra: &[&str]) -> Plane {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let endpoints = etcd.endpoints();
    let dir = test_dir();
    let mut procs: Vec<Proc> = ["a", "b", "c"]
        .iter()
        .map(|z| agent(&endpoints, dir.path(), z))
        .collect();
    procs.push(scheduler(&endpoints, dir.path(), "s1"));
    let deployers = (0..deployers)
        .map(|i| {
            let args = [&["--health-grace", "3s"], extra].concat();
            controller("deployer", &endpoints, dir.path(), &format!("d{i}"), &args)
        })
        .collect();
    let store = store(&endpoints).await;
    registered(&store, "default", 3).await;
    Plane {
        _etcd: etcd,

        dir,
        store,
        procs,
        deployers,
    }
}

/// Registers `web:<rev>` running `command` through `sh -c`.
async fn task_definition(s: &Store, rev: u32, command: &str) {
    let td = json!({
        "family": "web", "revision": rev, "status": "ACTIVE",
        "containerDefinitions": [{"name": "app", "image": "x", "cpu": 64, "memory": 32,
            "entryPoint": ["sh", "-c"], "command": [command], "stopTimeout": 2}]
    });
    put_doc(s, &s.keys().task_definition("web", rev), &td).await;
}

async fn service(s: &Store, doc: Value) {
    put_doc(s, &s.keys().service("default", "web"), &doc).await;
}

fn spec(rev: u32, desired: u32, config: Value) -> Value {
    json!({"serviceName": "web", "taskDefinition": format!("web:{rev}"), "desiredCount": desired,
        "deploymentConfiguration": config})
}

async fn deployments(s: &Store) -> Vec<Deployment> {
    deployments_of(s, "web").await
}

async fn status(s: &Store) -> Option<ServiceStatusDoc> {
    s.get_json::<ServiceStatusDoc>(&s.keys().service_status("default", "web"))
        .await
        .expect("get")
        .map(|v| v.value)
}

async fn events(s: &Store) -> Vec<String> {
    s.list(&s.keys().list(Family::Events, &["default", "web"]))
        .await
        .expect("list")
        .kvs
        .iter()
        .filter_map(|kv| kv.json::<capstan_core::ServiceEvent>().ok())
        .map(|e| e.message)
        .collect()
}

/// Waits until the PRIMARY runs `web:<rev>` and is COMPLETED; returns it.
async fn completed(s: &Store, rev: u32, within: Duration) -> Deployment {
    let td = &format!("web:{rev}");
    eventually(within, &format!("{td} COMPLETED"), || async move {
        deployments(s).await.into_iter().find(|d| {
            d.status == DeploymentStatus::Primary
                && &d.task_definition == td
                && d.rollout_state == RolloutState::Completed
        })
    })
    .await
}

fn live(t: &Task) -> bool {
    t.desired_status == DesiredStatus::Running
        && matches!(
            t.last_status,
            TaskStatus::Provisioning
                | TaskStatus::Pending
                | TaskStatus::Activating
                | TaskStatus::Running
        )
}

fn healthy(t: &Task, now: f64) -> bool {
    t.desired_status == DesiredStatus::Running
        && t.last_status == TaskStatus::Running
        && t.started_at.is_some_and(|s| now - s >= GRACE)
}

/// Most live and fewest healthy tasks seen while sampling.
#[derive(Debug, Clone, Copy)]
struct Seen {
    max_live: usize,
    min_healthy: usize,
    samples: usize,
}

/// Samples the service's tasks every 50 ms until stopped.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(s: &Store) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen {
            max_live: 0,
            min_healthy: usize::MAX,
            samples: 0,
        }));
        let (s, st, se) = (s.clone(), stop.clone(), seen.clone());
        let handle = tokio::spawn(async move {
            while !st.load(Ordering::SeqCst) {
                let now = now_secs();
                let ts: Vec<Task> = tasks(&s, "default")
                    .await
                    .into_iter()
                    .filter(|t| t.group.as_deref() == Some("service:web"))
                    .collect();
                {
                    let mut g = se.lock().expect("lock");
                    g.max_live = g.max_live.max(ts.iter().filter(|t| live(t)).count());
                    let h = ts.iter().filter(|t| healthy(t, now)).count();
                    g.min_healthy = g.min_healthy.min(h);
                    g.samples += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { stop, seen, handle }
    }

    async fn finish(self) -> Seen {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.await.expect("sampler");
        *self.seen.lock().expect("lock")
    }
}

/// Tasks RUNNING of the deployment.
async fn running_of(s: &Store, deployment: &str) -> usize {
    tasks(s, "default")
        .await
        .iter()
        .filter(|t| {
            t.started_by.as_deref() == Some(deployment)
                && live(t)
                && t.last_status == TaskStatus::Running
        })
        .count()
}

/// Deploys web:1 at `desired` with `config`, waits for it, then rolls to web:2 while sampling.
async fn roll(p: &Plane, desired: u32, config: Value) -> (Seen, Deployment) {
    let s = &p.store;
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, "exec sleep 601").await;
    service(s, spec(1, desired, config.clone())).await;
    completed(s, 1, Duration::from_secs(30)).await;
    let sampler = Sampler::start(s);
    service(s, spec(2, desired, config)).await;
    let done = completed(s, 2, Duration::from_secs(60)).await;
    (sampler.finish().await, done)
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_min_50_max_100_never_exceeds_4_or_drops_below_2_healthy() {
    let p = plane(1).await;
    let (seen, done) = roll(
        &p,
        4,
        json!({"minimumHealthyPercent": 50, "maximumPercent": 100}),
    )
    .await;
    assert!(seen.samples > 20, "sampled {seen:?}");
    assert!(seen.max_live <= 4, "more than 4 tasks: {seen:?}");
    assert!(seen.min_healthy >= 2, "fewer than 2 healthy: {seen:?}");
    assert_eq!(running_of(&p.store, &done.id).await, 4);
    let st = status(&p.store).await.expect("status");
    assert_eq!(
        (
            st.desired_count,
            st.running_count,
            st.task_definition.as_str()
        ),
        (4, 4, "web:2")
    );
    assert!(
        events(&p.store)
            .await
            .iter()
            .any(|e| e == "service (web) has reached a steady state.")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rolling_min_100_max_200_never_exceeds_8_or_drops_below_4_healthy() {
    let p = plane(1).await;
    let (seen, done) = roll(
        &p,
        4,
        json!({"minimumHealthyPercent": 100, "maximumPercent": 200}),
    )
    .await;
    assert!(seen.max_live <= 8, "more than 8 tasks: {seen:?}");
    assert!(
        seen.max_live > 4,
        "it should use the room above 100%: {seen:?}"
    );
    assert!(seen.min_healthy >= 4, "fewer than 4 healthy: {seen:?}");
    assert_eq!(running_of(&p.store, &done.id).await, 4);
    let old: Vec<Deployment> = deployments(&p.store)
        .await
        .into_iter()
        .filter(|d| d.id != done.id)
        .collect();
    assert!(
        old.iter().all(|d| d.status == DeploymentStatus::Inactive),
        "{old:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn min_100_max_100_is_stuck_and_says_so() {
    let p = plane(1).await;
    let s = &p.store;
    let config = json!({"minimumHealthyPercent": 100, "maximumPercent": 100});
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, "exec sleep 601").await;
    service(s, spec(1, 3, config.clone())).await;
    completed(s, 1, Duration::from_secs(30)).await;
    service(s, spec(2, 3, config)).await;
    eventually(Duration::from_secs(20), "the stuck event", || async move {
        events(s).await.into_iter().find(|e| {
            e == "service (web) was unable to stop or start tasks during a deployment because of the \
                  service deployment configuration. Update the minimumHealthyPercent or maximumPercent \
                  value and try again."
        })
    })
    .await;
    // Nothing moved.
    let ts = tasks(s, "default").await;
    assert_eq!(ts.iter().filter(|t| live(t)).count(), 3);
}

/// A new revision that fails; the breaker rolls back to web:1.
async fn breaker_rolls_back(command: &str) {
    let p = plane(1).await;
    let s = &p.store;
    let config = json!({"minimumHealthyPercent": 100, "maximumPercent": 200,
        "deploymentCircuitBreaker": {"enable": true, "rollback": true}});
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, command).await;
    service(s, spec(1, 3, config.clone())).await;
    let first = completed(s, 1, Duration::from_secs(30)).await;
    service(s, spec(2, 3, config)).await;
    let failed = eventually(Duration::from_secs(60), "web:2 FAILED", || async move {
        deployments(s)
            .await
            .into_iter()
            .find(|d| d.task_definition == "web:2" && d.rollout_state == RolloutState::Failed)
    })
    .await;
    assert_eq!(
        failed.rollout_state_reason.as_deref(),
        Some("ECS deployment circuit breaker: tasks failed to start.")
    );
    let cb = failed.circuit_breaker.expect("breaker state");
    assert!(
        cb.failure_count >= cb.threshold && cb.threshold == 3,
        "{cb:?}"
    );
    let back = completed(s, 1, Duration::from_secs(60)).await;
    assert_ne!(back.id, first.id, "a rollback is a new deployment");
    assert_eq!(
        back.rollout_state_reason.as_deref(),
        Some(format!("ECS deployment {} completed.", back.id).as_str())
    );
    assert_eq!(
        back.rollback.as_ref().map(|r| r.from_deployment.as_str()),
        Some(failed.id.as_str())
    );
    eventually(
        Duration::from_secs(20),
        "3 healthy web:1 tasks and no web:2 task",
        || async move {
            let ts = tasks(s, "default").await;
            let now = now_secs();
            let ok = ts
                .iter()
                .filter(|t| t.task_definition_arn.ends_with("web:1") && healthy(t, now))
                .count()
                == 3
                && !ts
                    .iter()
                    .any(|t| t.task_definition_arn.ends_with("web:2") && live(t));
            ok.then_some(())
        },
    )
    .await;
    let ev = events(s).await;
    assert!(
        ev.iter()
            .any(|e| e.contains("circuit breaker: rolling back to deploymentId")),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_rolls_back_a_revision_that_exits_at_once() {
    breaker_rolls_back("exit 1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn breaker_rolls_back_a_revision_that_runs_2s_then_exits_1() {
    breaker_rolls_back("sleep 2; exit 1").await;
}

/// A webhook server answering from `answers` in turn (the last one repeats); records stages.
async fn webhook(answers: Vec<Value>) -> (String, Arc<Mutex<Vec<Value>>>) {
    let calls = Arc::new(Mutex::new(Vec::new()));
    let n = Arc::new(AtomicU32::new(0));
    let (c, answers) = (calls.clone(), Arc::new(answers));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
            let (c, n, answers) = (c.clone(), n.clone(), answers.clone());
            async move {
                c.lock().expect("lock").push(body);
                let i = n.fetch_add(1, Ordering::SeqCst) as usize;
                axum::Json(answers[i.min(answers.len() - 1)].clone())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), calls)
}

fn blue_green(rev: u32, hooks: Value) -> Value {
    spec(
        rev,
        2,
        json!({"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0, "lifecycleHooks": hooks}),
    )
}

/// Deploys web:1 blue/green, then web:2 with `hooks`.
async fn blue_green_to_v2(p: &Plane, hooks: Value) {
    let s = &p.store;
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, "exec sleep 601").await;
    service(s, blue_green(1, json!([]))).await;
    completed(s, 1, Duration::from_secs(60)).await;
    service(s, blue_green(2, hooks)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_webhook_in_progress_then_succeeded() {
    let p = plane(1).await;
    let (url, calls) = webhook(vec![
        json!({"hookStatus": "IN_PROGRESS", "callBackDelay": 1}),
        json!({"hookStatus": "SUCCEEDED"}),
    ])
    .await;
    blue_green_to_v2(
        &p,
        json!([{"targetType": "WEBHOOK", "url": url,
        "lifecycleStages": ["POST_SCALE_UP"], "hookDetails": {"team": "web"}}]),
    )
    .await;
    let green = completed(&p.store, 2, Duration::from_secs(60)).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 2, "{calls:?}");
    assert_eq!(calls[0]["lifecycleStage"], "POST_SCALE_UP");
    assert_eq!(calls[0]["deploymentId"], green.id.as_str());
    assert_eq!(calls[0]["hookDetails"]["team"], "web");
    assert_eq!(calls[0]["productionTrafficWeights"][green.id.as_str()], 0);
    assert_eq!(running_of(&p.store, &green.id).await, 2);
    eventually(Duration::from_secs(20), "blue scaled to zero", || async {
        let ts = tasks(&p.store, "default").await;
        (!ts.iter()
            .any(|t| t.task_definition_arn.ends_with("web:1") && live(t)))
        .then_some(())
    })
    .await;
}

/// A hook server for the hardening test: `/hook` checks the signature and answers SUCCEEDED,
/// `/redirect` sends a 307 to `/hook`, `/huge` answers 10 MB. Records (path, signature valid).
async fn hardened_hooks(
    secret_of: impl Fn(&str) -> String + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<(String, bool)>>>) {
    use axum::http::{HeaderMap, StatusCode, Uri};
    let seen = Arc::new(Mutex::new(Vec::new()));
    let base = Arc::new(Mutex::new(String::new()));
    let (s2, b2) = (seen.clone(), base.clone());
    let secret_of = Arc::new(secret_of);
    let app = axum::Router::new().fallback(
        move |uri: Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let (seen, base, secret_of) = (s2.clone(), b2.clone(), secret_of.clone());
            async move {
                let url = format!("{}{}", base.lock().expect("lock"), uri.path());
                let ts: u64 = headers
                    .get("x-capstan-timestamp")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_default();
                let sig = headers
                    .get("x-capstan-signature")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let valid = sig == capstan_iam::webhook::signature(&secret_of(&url), ts, &body);
                seen.lock()
                    .expect("lock")
                    .push((uri.path().to_string(), valid));
                match uri.path() {
                    "/redirect" => (
                        StatusCode::TEMPORARY_REDIRECT,
                        [("location", "/hook".to_string())],
                        String::new(),
                    ),
                    "/huge" => (
                        StatusCode::OK,
                        [("content-type", "application/json".to_string())],
                        format!(
                            "{{\"hookStatus\": \"SUCCEEDED\", \"pad\": \"{}\"}}",
                            "x".repeat(10 << 20)
                        ),
                    ),
                    _ => (
                        StatusCode::OK,
                        [("content-type", "application/json".to_string())],
                        json!({"hookStatus": if valid { "SUCCEEDED" } else { "FAILED" }})
                            .to_string(),
                    ),
                }
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    *base.lock().expect("lock") = format!("http://{addr}");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_signed_and_a_redirect_or_a_10_mb_answer_fails_the_hook_cleanly() {
    let key_dir = test_dir();
    let key_file = key_dir.path().join("webhook.key");
    std::fs::write(&key_file, b"a signing key only the deployer holds").expect("key");
    let key = std::fs::read(&key_file).expect("key");
    let p = plane_with(
        1,
        &[
            "--webhook-signing-key-file",
            &key_file.display().to_string(),
            "--webhook-allow-host",
            "127.0.0.1",
        ],
    )
    .await;
    let s = &p.store;
    let (base, seen) =
        hardened_hooks(move |url| capstan_iam::webhook::hook_secret(&key, url)).await;
    let hook = |path: &str| {
        json!([{"targetType": "WEBHOOK", "url": format!("{base}{path}"),
            "lifecycleStages": ["POST_SCALE_UP"]}])
    };
    // A signed call to an allowed host: the receiver verifies it and answers SUCCEEDED.
    blue_green_to_v2(&p, hook("/hook")).await;
    completed(s, 2, Duration::from_secs(60)).await;
    assert_eq!(
        seen.lock().expect("lock").clone(),
        vec![("/hook".to_string(), true)],
        "one call, correctly signed"
    );
    // A redirect is not followed and a 10 MB answer is not read: each fails its hook, and the
    // deployment rolls back with the reason on the hook.
    task_definition(s, 3, "exec sleep 602").await;
    task_definition(s, 4, "exec sleep 603").await;
    for (rev, path, why) in [
        (3, "/redirect", "redirects are not followed"),
        (4, "/huge", "larger than 65536 bytes"),
    ] {
        service(s, blue_green(rev, hook(path))).await;
        let failed = eventually(
            Duration::from_secs(60),
            &format!("web:{rev} FAILED"),
            || async move {
                deployments(s).await.into_iter().find(|d| {
                    d.task_definition == format!("web:{rev}")
                        && d.rollout_state == RolloutState::Failed
                })
            },
        )
        .await;
        let detail = &failed.lifecycle_hook_details[0];
        assert_eq!(detail.status, HookStatus::Failed, "{detail:?}");
        assert!(
            detail.reason.as_deref().is_some_and(|r| r.contains(why)),
            "{detail:?}"
        );
        // Back on web:2, untouched.
        eventually(
            Duration::from_secs(60),
            "web:2 PRIMARY again",
            || async move {
                deployments(s)
                    .await
                    .into_iter()
                    .find(|d| d.status == DeploymentStatus::Primary && d.task_definition == "web:2")
            },
        )
        .await;
    }
    let paths: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        !paths[1..].contains(&"/hook".to_string()),
        "the redirect was not followed: {paths:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_webhook_failed_rolls_back_to_blue() {
    let p = plane(1).await;
    let s = &p.store;
    let (url, _calls) = webhook(vec![json!({"hookStatus": "FAILED"})]).await;
    blue_green_to_v2(
        &p,
        json!([{"targetType": "WEBHOOK", "url": url, "lifecycleStages": ["POST_SCALE_UP"]}]),
    )
    .await;
    let green = eventually(Duration::from_secs(60), "web:2 FAILED", || async move {
        deployments(s)
            .await
            .into_iter()
            .find(|d| d.task_definition == "web:2" && d.rollout_state == RolloutState::Failed)
    })
    .await;
    assert_eq!(green.lifecycle_stage, Some(LifecycleStage::PostScaleUp));
    let green_id = &green.id;
    eventually(
        Duration::from_secs(30),
        "blue PRIMARY with 2 tasks, green none",
        || async move {
            let deps = deployments(s).await;
            let blue = deps
                .iter()
                .find(|d| d.status == DeploymentStatus::Primary)?;
            (blue.task_definition == "web:1"
                && running_of(s, &blue.id).await == 2
                && running_of(s, green_id).await == 0)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_pause_hook_waits_for_continue() {
    let p = plane(1).await;
    let s = &p.store;
    blue_green_to_v2(
        &p,
        json!([{"targetType": "PAUSE", "lifecycleStages": ["POST_SCALE_UP"]}]),
    )
    .await;
    let green = eventually(
        Duration::from_secs(60),
        "waiting at POST_SCALE_UP",
        || async move {
            deployments(s).await.into_iter().find(|d| {
                d.task_definition == "web:2"
                    && d.lifecycle_stage == Some(LifecycleStage::PostScaleUp)
                    && d.lifecycle_hook_details
                        .iter()
                        .any(|h| h.status == HookStatus::AwaitingAction)
            })
        },
    )
    .await;
    // It holds there, without a continue, for as long as we watch (2 s).
    let until = tokio::time::Instant::now() + Duration::from_secs(2);
    while tokio::time::Instant::now() < until {
        let still = deployments(s)
            .await
            .into_iter()
            .find(|d| d.id == green.id)
            .expect("green");
        assert_eq!(still.lifecycle_stage, Some(LifecycleStage::PostScaleUp));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put_doc(
        s,
        &s.keys().continue_deployment("default", "web", &green.id),
        &json!({"action": "CONTINUE"}),
    )
    .await;
    completed(s, 2, Duration::from_secs(30)).await;
    // The request was consumed.
    let left = s
        .list(
            &s.keys()
                .list(Family::ContinueDeploymentRequests, &["default"]),
        )
        .await
        .expect("list");
    assert!(left.kvs.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn leader_sigkill_mid_rollout_keeps_the_bounds_and_finishes() {
    let mut p = plane(2).await;
    let s = &p.store.clone();
    let config = json!({"minimumHealthyPercent": 100, "maximumPercent": 200});
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, "exec sleep 601").await;
    service(s, spec(1, 4, config.clone())).await;
    completed(s, 1, Duration::from_secs(30)).await;
    let sampler = Sampler::start(s);
    service(s, spec(2, 4, config)).await;
    eventually(
        Duration::from_secs(20),
        "web:2 tasks starting",
        || async move {
            let ts = tasks(s, "default").await;
            ts.iter()
                .any(|t| t.task_definition_arn.ends_with("web:2"))
                .then_some(())
        },
    )
    .await;
    let who = leader_id(s).await;
    let idx = if who.contains("d0") { 0 } else { 1 };
    p.deployers[idx].kill();
    completed(s, 2, Duration::from_secs(60)).await;
    let seen = sampler.finish().await;
    assert!(seen.max_live <= 8, "{seen:?}");
    assert!(seen.min_healthy >= 4, "{seen:?}");
    let new_leader = leader_id(s).await;
    assert_ne!(new_leader, who);
}

/// The deployer leader's replica id (the election value).
async fn leader_id(s: &Store) -> String {
    eventually(Duration::from_secs(10), "a deployer leader", || async {
        s.leader("deployer").await.ok().flatten()
    })
    .await
}

/// Stands in for the registrar: every RUNNING task of a load-balanced deployment is a healthy
/// target of its group, and each group lists the listeners routed to it.
fn fake_registrar(s: &Store) -> tokio::task::JoinHandle<()> {
    let s = s.clone();
    tokio::spawn(async move {
        loop {
            let deps = deployments(&s).await;
            let mut groups: std::collections::BTreeMap<String, Vec<Value>> =
                ["web-blue", "web-green"]
                    .iter()
                    .map(|g| (g.to_string(), Vec::new()))
                    .collect();
            for t in tasks(&s, "default").await {
                let tg = deps
                    .iter()
                    .find(|d| Some(d.id.as_str()) == t.started_by.as_deref())
                    .and_then(|d| d.load_balancers.first())
                    .and_then(|lb| lb.target_group_arn.clone());
                if let Some(tg) = tg
                    && t.last_status == TaskStatus::Running
                {
                    groups.entry(tg).or_default().push(
                        json!({"taskId": t.id(), "host": "127.0.0.1", "port": 8080, "state": "healthy"}),
                    );
                }
            }
            // Like the registrar, report which listeners each group serves once routed there.
            let mut routed: Vec<(String, String)> = Vec::new();
            for l in ["web-prod", "web-test"] {
                if let Some(tg) = route(&s, l).await {
                    routed.push((l.to_string(), tg));
                }
            }
            for (tg, targets) in groups {
                let listeners: Vec<Value> = routed
                    .iter()
                    .filter(|(_, g)| *g == tg)
                    .map(|(l, _)| json!({"listener": l, "since": 1.0}))
                    .collect();
                put_doc(
                    &s,
                    &s.keys().target_group_status(&tg),
                    &json!({"targets": targets, "listeners": listeners}),
                )
                .await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

async fn route(s: &Store, listener: &str) -> Option<String> {
    let r = s
        .get_json::<capstan_core::lb::ListenerRoute>(&s.keys().listener_route(listener))
        .await
        .expect("get")?;
    r.value
        .target_groups
        .first()
        .map(|t| t.target_group_arn.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn blue_green_with_load_balancers_shifts_the_listeners_to_green() {
    let p = plane(1).await;
    let s = &p.store;
    let registrar = fake_registrar(s);
    let lb = json!([{"targetGroupArn": "web-blue", "containerName": "app", "containerPort": 8080,
        "advancedConfiguration": {"alternateTargetGroupArn": "web-green",
            "productionListenerRule": "web-prod", "testListenerRule": "web-test"}}]);
    let with_lb = |rev: u32| {
        let mut doc = blue_green(rev, json!([]));
        doc["loadBalancers"] = lb.clone();
        doc
    };
    task_definition(s, 1, "exec sleep 600").await;
    task_definition(s, 2, "exec sleep 601").await;
    service(s, with_lb(1)).await;
    let first = completed(s, 1, Duration::from_secs(30)).await;
    assert_eq!(
        first.load_balancers[0].target_group_arn.as_deref(),
        Some("web-blue")
    );
    assert_eq!(route(s, "web-prod").await.as_deref(), Some("web-blue"));
    service(s, with_lb(2)).await;
    let green = completed(s, 2, Duration::from_secs(60)).await;
    assert_eq!(
        green.load_balancers[0].target_group_arn.as_deref(),
        Some("web-green")
    );
    assert_eq!(route(s, "web-prod").await.as_deref(), Some("web-green"));
    assert_eq!(route(s, "web-test").await.as_deref(), Some("web-green"));
    registrar.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn desired_count_rescales_force_redeploys_unknown_revision_is_reported_and_delete_cleans_up()
{
    let p = plane(1).await;
    let s = &p.store;
    task_definition(s, 1, "exec sleep 600").await;
    service(s, spec(1, 2, json!({}))).await;
    let first = &completed(s, 1, Duration::from_secs(30)).await;
    // desiredCount alone: the same deployment, rescaled.
    service(s, spec(1, 3, json!({}))).await;
    eventually(
        Duration::from_secs(20),
        "3 running in the same deployment",
        || async move { (running_of(s, &first.id).await == 3).then_some(()) },
    )
    .await;
    assert_eq!(deployments(s).await.len(), 1);
    // forceNewDeployment: a new deployment of the same revision.
    let mut forced = spec(1, 3, json!({}));
    forced["forceNewDeployment"] = json!(true);
    service(s, forced).await;
    let second = &eventually(
        Duration::from_secs(30),
        "a forced deployment completes",
        || async move {
            deployments(s).await.into_iter().find(|d| {
                d.id != first.id
                    && d.status == DeploymentStatus::Primary
                    && d.rollout_state == RolloutState::Completed
            })
        },
    )
    .await;
    assert_eq!(second.task_definition, "web:1");
    // An unknown revision: reported, nothing changes.
    service(s, spec(9, 3, json!({}))).await;
    let st = eventually(
        Duration::from_secs(10),
        "the error in the status",
        || async move { status(s).await.filter(|st| st.error.is_some()) },
    )
    .await;
    assert!(
        st.error.as_deref().is_some_and(|e| e.contains("web:9")),
        "{st:?}"
    );
    assert_eq!(running_of(s, &second.id).await, 3);
    // Deleted: tasks stop (the status is DRAINING meanwhile, too briefly here to catch), then
    // deployments go and the service is INACTIVE.
    s.delete(&s.keys().service("default", "web"))
        .await
        .expect("delete");
    eventually(
        Duration::from_secs(30),
        "everything cleaned up",
        || async move {
            let gone = deployments(s).await.is_empty()
                && status(s)
                    .await
                    .is_some_and(|st| st.status == ServiceStatus::Inactive)
                && !tasks(s, "default").await.iter().any(live);
            gone.then_some(())
        },
    )
    .await;
}
