//! The Capstan deployment controller: turns service changes into deployments, runs rolling and
//! blue/green rollouts by setting each deployment's task count (the scheduler converges them),
//! guards them with the circuit breaker, rolls back, runs lifecycle hooks, and writes the
//! DescribeServices-shaped status and the service events.
//!
//! It is the only writer of `/capstan/deployments/…`, `/capstan/status/services/…` and
//! `/capstan/routes/…`.

pub mod hooks;
pub mod snapshot;

use std::sync::Arc;
use std::time::Duration;

use capstan_core::ServiceStatusDoc;
use capstan_core::deployment::{Deployment, DeploymentStatus, RolloutState};
use capstan_core::keys::Family;
use capstan_core::lb::{ListenerRoute, TargetGroupTuple};
use capstan_core::service::{ServiceStatus, lb_object_name};
use capstan_plan::deploy::{self, Decision, ListenerRole, View, same};
use capstan_runtime::events::now;
use capstan_runtime::{
    Action, CommonArgs, Controller, ControllerConfig, Events, Runtime, RuntimeError,
};
use capstan_store::{Claim, StoreError, Write};
use futures::FutureExt;

use crate::snapshot::{Caches, ServiceKey};

/// Command-line arguments of `capstan-deployer`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-deployer", version)]
pub struct DeployerArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long a task without health checks or load balancers must run to count as healthy
    /// (ECS: 40 s).
    #[arg(long, env = "CAPSTAN_HEALTH_GRACE", default_value = "40s")]
    pub health_grace: humantime::Duration,
    /// INACTIVE deployments kept per service (history and rollback targets).
    #[arg(long, env = "CAPSTAN_DEPLOYMENT_HISTORY", default_value_t = 10)]
    pub history: usize,
    /// Reconciles at once.
    #[arg(long, env = "CAPSTAN_DEPLOYER_CONCURRENCY", default_value_t = 16)]
    pub concurrency: usize,
}

/// Shared state of the deployer's reconcilers.
pub struct Ctx {
    store: capstan_store::Store,
    caches: Caches,
    events: Events,
    http: reqwest::Client,
    grace_secs: f64,
    history: usize,
}

/// Safety-net requeue while a rollout is in progress.
const IN_PROGRESS_RESYNC: Duration = Duration::from_secs(30);

/// The DescribeServices-shaped status of a service.
/// Whether the registrar reports `primary`'s test and production listeners routed to its
/// target groups (in their status' `listeners`).
fn routed(
    caches: &Caches,
    keys: &capstan_core::Keys,
    spec: &capstan_core::Service,
    primary: &Deployment,
) -> deploy::Routed {
    let mut out = deploy::Routed::default();
    for (i, lb) in spec.load_balancers.iter().enumerate() {
        let Some(adv) = &lb.advanced_configuration else {
            continue;
        };
        let Some(tg) = primary
            .load_balancers
            .get(i)
            .and_then(|l| l.target_group_arn.as_deref())
            .map(lb_object_name)
        else {
            continue;
        };
        let serving: Vec<String> = caches
            .targets
            .get(&keys.target_group_status(tg))
            .and_then(|e| e.value.as_ref().ok().cloned())
            .map(|d| d.listeners.into_iter().map(|l| l.listener).collect())
            .unwrap_or_default();
        let here = |l: &Option<String>| {
            l.as_deref()
                .is_none_or(|l| serving.iter().any(|s| s == lb_object_name(l)))
        };
        out.test &= here(&adv.test_listener_rule);
        out.production &= here(&adv.production_listener_rule);
    }
    out
}

fn status_doc(
    key: &ServiceKey,
    desired: u32,
    deployments: &[Deployment],
    status: ServiceStatus,
    error: Option<String>,
) -> ServiceStatusDoc {
    let mut shown: Vec<Deployment> = deployments
        .iter()
        .filter(|d| d.status != DeploymentStatus::Inactive)
        .cloned()
        .collect();
    shown.sort_by_key(|d| d.status != DeploymentStatus::Primary);
    ServiceStatusDoc {
        service_name: key.service.clone(),
        cluster_arn: key.cluster.clone(),
        status,
        desired_count: desired,
        running_count: shown.iter().map(|d| d.running_count).sum(),
        pending_count: shown.iter().map(|d| d.pending_count).sum(),
        task_definition: shown
            .first()
            .map(|d| d.task_definition.clone())
            .unwrap_or_default(),
        deployments: shown,
        updated_at: None,
        error,
    }
}

impl Ctx {
    /// Puts the status doc when it changed (ignoring `updatedAt`).
    fn put_status(&self, w: Write, key: &ServiceKey, mut doc: ServiceStatusDoc) -> Write {
        let k = self.store.keys().service_status(&key.cluster, &key.service);
        let unchanged = self
            .caches
            .status
            .get(&k)
            .and_then(|e| e.value.as_ref().ok().cloned())
            .is_some_and(|mut old| {
                old.updated_at = None;
                old == doc
            });
        if unchanged {
            return w;
        }
        doc.updated_at = Some(now());
        w.put_json(&k, &doc)
    }

    /// Route writes for the decision's listener moves.
    fn put_routes(
        &self,
        mut w: Write,
        key: &ServiceKey,
        spec: &capstan_core::Service,
        d: &Decision,
        deps: &[Deployment],
    ) -> Write {
        for r in &d.routes {
            let Some(dep) = deps.iter().find(|x| x.id == r.deployment) else {
                continue;
            };
            for (i, lb) in spec.load_balancers.iter().enumerate() {
                let Some(adv) = &lb.advanced_configuration else {
                    continue;
                };
                let listener = match r.role {
                    ListenerRole::Test => adv.test_listener_rule.as_deref(),
                    ListenerRole::Production => adv.production_listener_rule.as_deref(),
                };
                let (Some(listener), Some(tg)) = (
                    listener,
                    dep.load_balancers
                        .get(i)
                        .and_then(|l| l.target_group_arn.as_deref()),
                ) else {
                    continue;
                };
                let route = ListenerRoute {
                    target_groups: vec![TargetGroupTuple {
                        target_group_arn: lb_object_name(tg).to_string(),
                        weight: Some(100),
                    }],
                    service: format!("{}/{}", key.cluster, key.service),
                    deployment: dep.id.clone(),
                };
                let k = self.store.keys().listener_route(lb_object_name(listener));
                let unchanged = self
                    .caches
                    .routes
                    .get(&k)
                    .is_some_and(|e| e.value.as_ref().ok() == Some(&route));
                if !unchanged {
                    w = w.put_json(&k, &route);
                }
            }
        }
        w
    }
}

async fn reconcile(
    key: ServiceKey,
    claim: Arc<Claim>,
    ctx: Arc<Ctx>,
) -> Result<Action, StoreError> {
    let caches = &ctx.caches;
    if !caches.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let keys = ctx.store.keys().clone();
    let now = now();
    let spec_entry = caches
        .services
        .get(&keys.service(&key.cluster, &key.service));
    let entries = caches
        .deployments
        .list_prefix(&keys.list(Family::Deployments, &[&key.cluster, &key.service]));
    let originals: Vec<(Deployment, i64)> = entries
        .iter()
        .filter_map(|e| e.value.as_ref().ok().map(|d| (d.clone(), e.mod_revision)))
        .collect();
    let spec = match spec_entry.as_deref().map(|e| &e.value) {
        Some(Err(msg)) => {
            let msg = format!("the service spec is not valid: {msg}");
            let deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
            let w = ctx.put_status(
                Write::new(),
                &key,
                status_doc(&key, 0, &deps, ServiceStatus::Active, Some(msg.clone())),
            );
            if !w.is_empty() {
                ctx.store.commit(w, Some(&claim)).await?;
            }
            return Ok(Action::await_change());
        }
        Some(Ok(s)) if s.status() == ServiceStatus::Active => Some(s.clone()),
        _ => None,
    };
    let config = match &spec {
        Some(s) => match snapshot::config(
            caches,
            &keys,
            s,
            spec_entry.as_ref().map_or(0, |e| e.mod_revision),
            ctx.history,
        ) {
            Ok(c) => Some(c),
            Err(msg) => {
                let deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
                let desired = s.desired_count.unwrap_or(0);
                let w = ctx.put_status(
                    Write::new(),
                    &key,
                    status_doc(
                        &key,
                        desired,
                        &deps,
                        ServiceStatus::Active,
                        Some(msg.clone()),
                    ),
                );
                if !w.is_empty() {
                    ctx.store.commit(w, Some(&claim)).await?;
                }
                ctx.events
                    .record(
                        &claim,
                        &key.cluster,
                        &key.service,
                        format!("service ({}) was unable to deploy: {msg}", key.service),
                    )
                    .await?;
                return Ok(Action::await_change());
            }
        },
        None => None,
    };
    let mut deps: Vec<Deployment> = originals.iter().map(|(d, _)| d.clone()).collect();
    let tasks = snapshot::tasks_by_deployment(caches, &keys, &key);
    let tallies = snapshot::tallies(
        caches,
        &keys,
        spec.as_ref(),
        &deps,
        &tasks,
        ctx.grace_secs,
        now,
    );

    // Hooks of the PRIMARY's current stage.
    let continue_key = |id: &str| keys.continue_deployment(&key.cluster, &key.service, id);
    let mut hook_run = hooks::HookRun::default();
    let primary = deps
        .iter()
        .rposition(|d| d.status == DeploymentStatus::Primary);
    if let (Some(s), Some(p)) = (&spec, primary) {
        let blue = deps.iter().rev().find(|d| {
            d.status == DeploymentStatus::Active && d.rollout_state != RolloutState::Failed
        });
        let request = caches
            .continues
            .get(&continue_key(&deps[p].id))
            .and_then(|e| e.value.as_ref().ok().cloned());
        hook_run = hooks::run(
            &ctx.http,
            &hooks::Stage {
                key: &key,
                spec: s,
                primary: &deps[p],
                blue,
                continue_request: request.as_ref(),
                now,
            },
        )
        .await;
        deps[p].lifecycle_hook_details = std::mem::take(&mut hook_run.details);
    }
    let new_id = format!("ecs-svc/{}", (now * 1e6) as u64);
    let routed = match (&spec, primary) {
        (Some(s), Some(p)) => routed(caches, &keys, s, &deps[p]),
        _ => deploy::Routed::default(),
    };
    let decision = deploy::plan(&View {
        service: &key.service,
        config: config.as_ref(),
        deployments: &deps,
        tallies: &tallies,
        hooks: hook_run.outcome.clone(),
        now,
        new_id: &new_id,
        routed,
    });

    // Apply the decision to the deployments, then write what differs from etcd.
    let mut after: Vec<Deployment> = deps
        .into_iter()
        .filter(|d| !decision.delete.contains(&d.id))
        .map(|d| {
            decision
                .put
                .iter()
                .find(|p| p.id == d.id)
                .cloned()
                .unwrap_or(d)
        })
        .collect();
    for p in &decision.put {
        if !after.iter().any(|d| d.id == p.id) {
            after.push(p.clone());
        }
    }
    let mut w = Write::new();
    let mut touches_deployments = !decision.delete.is_empty();
    for d in &mut after {
        let k = keys.deployment(&key.cluster, &key.service, &d.id);
        match originals.iter().find(|(o, _)| o.id == d.id) {
            Some((o, _)) if same(d, o) => {}
            Some((_, rev)) => {
                touches_deployments = true;
                d.updated_at = Some(now);
                w = w.put_json(&k, d).if_unchanged(&k, *rev);
            }
            None => {
                touches_deployments = true;
                w = w.put_json(&k, d).if_absent(&k);
            }
        }
    }
    for id in &decision.delete {
        if let Some((_, rev)) = originals.iter().find(|(o, _)| &o.id == id) {
            let k = keys.deployment(&key.cluster, &key.service, id);
            w = w.delete(&k).if_unchanged(&k, *rev);
        }
    }
    // ContinueServiceDeployment requests: used, or for a deployment no longer waiting.
    let waiting_on = after
        .iter()
        .find(|d| {
            d.status == DeploymentStatus::Primary && d.rollout_state == RolloutState::InProgress
        })
        .filter(|_| !hook_run.consumed_continue)
        .map(|d| continue_key(&d.id));
    for e in caches.continues.list_prefix(&keys.list(
        Family::ContinueDeploymentRequests,
        &[&key.cluster, &key.service],
    )) {
        if Some(&e.key) != waiting_on.as_ref() {
            w = w.delete(&e.key);
        }
    }
    let status_key = keys.service_status(&key.cluster, &key.service);
    match (&spec, &config) {
        (Some(s), Some(c)) => {
            w = ctx.put_status(
                w,
                &key,
                status_doc(&key, c.desired, &after, ServiceStatus::Active, None),
            );
            w = ctx.put_routes(w, &key, s, &decision, &after);
        }
        // Deleted: DRAINING while tasks remain, then INACTIVE (kept, as ECS shows deleted
        // services; `etcdctl del` of the status key forgets it).
        (None, _) if !after.is_empty() || caches.status.get(&status_key).is_some() => {
            let state = if after.is_empty() {
                ServiceStatus::Inactive
            } else {
                ServiceStatus::Draining
            };
            w = ctx.put_status(w, &key, status_doc(&key, 0, &after, state, None));
        }
        _ => {}
    }
    if !w.is_empty() {
        let rev = ctx.store.commit(w, Some(&claim)).await?;
        metrics::counter!("capstan_deployer_writes_total").increment(1);
        // The next reconcile of this service must see this write, or it would start a second
        // deployment for the same change.
        if touches_deployments {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                caches.deployments.wait_revision(rev),
            )
            .await;
        }
    }
    for e in decision.events {
        ctx.events
            .record(&claim, &key.cluster, &key.service, e)
            .await?;
    }

    let wake = [decision.wake_at, hook_run.wake_at]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
    let rolling = after
        .iter()
        .any(|d| d.rollout_state == RolloutState::InProgress);
    Ok(if wake.is_finite() {
        let d = Duration::from_secs_f64((wake - now).clamp(0.0, IN_PROGRESS_RESYNC.as_secs_f64()));
        Action::requeue(d)
    } else if rolling {
        Action::requeue(IN_PROGRESS_RESYNC)
    } else {
        Action::await_change()
    })
}

/// Services of the cluster whose spec satisfies `pred`.
fn services_where(
    caches: &Caches,
    keys: &capstan_core::Keys,
    pred: impl Fn(&capstan_core::Service) -> bool,
) -> Vec<ServiceKey> {
    caches
        .services
        .list()
        .iter()
        .filter(|e| e.value.as_ref().is_ok_and(&pred))
        .filter_map(|e| keys.parse(&e.key))
        .map(|p| ServiceKey {
            cluster: p.parts[0].clone(),
            service: p.parts[1].clone(),
        })
        .collect()
}

/// Runs the deployer until SIGTERM/SIGINT.
pub async fn run(args: DeployerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("deployer", &args.common).await?;
    let resync = Duration::from_secs(300);
    let caches = Caches {
        services: rt.cache(Family::Services, capstan_runtime::spec_decoder(), resync),
        deployments: rt.cache(Family::Deployments, capstan_store::json_decoder(), resync),
        taskdefs: rt.cache(
            Family::TaskDefinitions,
            capstan_runtime::spec_decoder(),
            resync,
        ),
        tasks: rt.cache(Family::Tasks, capstan_store::json_decoder(), resync),
        targets: rt.cache(
            Family::TargetGroupStatus,
            capstan_store::json_decoder(),
            resync,
        ),
        continues: rt.cache(
            Family::ContinueDeploymentRequests,
            capstan_runtime::spec_decoder(),
            resync,
        ),
        status: rt.cache(Family::ServiceStatus, capstan_store::json_decoder(), resync),
        routes: rt.cache(
            Family::ListenerRoutes,
            capstan_store::json_decoder(),
            resync,
        ),
    };
    let http = hooks::http_client().map_err(RuntimeError::Setup)?;
    let ctx = Arc::new(Ctx {
        store: rt.store.clone(),
        caches: caches.clone(),
        events: Events::new(rt.store.clone()),
        http,
        grace_secs: Duration::from(args.health_grace).as_secs_f64(),
        history: args.history,
    });
    let keys = rt.store.keys().clone();
    let by_parts = |keys: &capstan_core::Keys, k: &str| -> Vec<ServiceKey> {
        keys.parse(k)
            .filter(|p| p.parts.len() >= 2)
            .map(|p| ServiceKey {
                cluster: p.parts[0].clone(),
                service: p.parts[1].clone(),
            })
            .into_iter()
            .collect()
    };
    let mut config = ControllerConfig::new("deployer");
    config.concurrency = args.concurrency;
    let (k1, k2, k3, k4, k5, k6) = (
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
        keys.clone(),
    );
    let (tasks, c1, c2, c3) = (
        caches.tasks.clone(),
        caches.clone(),
        caches.clone(),
        caches.clone(),
    );
    let controller = Controller::new(config)
        .watches(&caches.services, move |k| by_parts(&k1, k))
        .watches(&caches.deployments, move |k| by_parts(&k2, k))
        .watches(&caches.continues, move |k| by_parts(&k3, k))
        .watches(&caches.tasks, move |k| {
            let Some(p) = k4.parse(k) else { return vec![] };
            tasks
                .get(k)
                .and_then(|e| e.value.as_ref().ok().and_then(|t| t.group.clone()))
                .and_then(|g| g.strip_prefix("service:").map(str::to_string))
                .map(|service| ServiceKey {
                    cluster: p.parts[0].clone(),
                    service,
                })
                .into_iter()
                .collect()
        })
        .watches(&caches.taskdefs, move |k| {
            let Some(family) = k5.parse(k).and_then(|p| p.parts.first().cloned()) else {
                return vec![];
            };
            services_where(&c1, &k5, |s| {
                s.task_definition
                    .as_deref()
                    .is_some_and(|r| r.split(':').next() == Some(family.as_str()))
            })
        })
        .watches(&caches.targets, move |k| {
            let Some(tg) = k6.parse(k).and_then(|p| p.parts.first().cloned()) else {
                return vec![];
            };
            services_where(&c2, &k6, |s| {
                s.load_balancers.iter().any(|lb| {
                    lb.target_group_arn.as_deref().map(lb_object_name) == Some(tg.as_str())
                        || lb
                            .advanced_configuration
                            .as_ref()
                            .and_then(|a| a.alternate_target_group_arn.as_deref())
                            .map(lb_object_name)
                            == Some(tg.as_str())
                })
            })
        })
        .resyncs(move || {
            let mut out = services_where(&c3, &keys, |_| true);
            // Deployments whose service is gone still need cleaning up.
            for e in c3.deployments.list() {
                if let Some(p) = keys.parse(&e.key) {
                    let k = ServiceKey {
                        cluster: p.parts[0].clone(),
                        service: p.parts[1].clone(),
                    };
                    if !out.contains(&k) {
                        out.push(k);
                    }
                }
            }
            out
        });
    rt.serve(controller, ctx, |k, c, x| reconcile(k, c, x).boxed())
        .await;
    Ok(())
}
