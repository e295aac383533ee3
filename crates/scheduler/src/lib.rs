//! The Capstan service scheduler: converges each deployment to its own task count, places tasks
//! with ECS's filters and strategies, starts and stops them through the agents, follows the
//! agents' task streams, replaces failed tasks and tasks lost with their host.
//!
//! It is the only writer of `/capstan/tasks/…` and the only caller of StartTask/StopTask.
//!
//! Shape (the same in every controller, see docs/architecture.md): `args` (flags), `snapshot`
//! (caches → planner inputs), `reconcile` (the loop body), `execute` (fenced writes and agent
//! calls), and what only the scheduler has: `agents` (the agents' task streams) and `requests`
//! (RunTask and StopTask request keys). This file only wires them.

pub mod agents;
pub mod args;
pub mod execute;
pub mod reconcile;
pub mod requests;
pub mod snapshot;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_agent_client::Agents;
use capstan_core::Keys;
use capstan_core::keys::{ClusterKey, Family, ServiceKey};
use capstan_core::task::Task;
use capstan_runtime::{
    Controller, ControllerConfig, Events, Runtime, RuntimeError, spawn_while_leading,
};
use futures::FutureExt;

pub use crate::args::SchedulerArgs;
use crate::execute::Executor;
pub use crate::reconcile::Ctx;
use crate::reconcile::reconcile_key;
use capstan_store::Cache;

use crate::snapshot::{Caches, spec_decoder, status_decoder};

/// What the scheduler reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A service's deployments.
    Service(ServiceKey),
    /// A RunTask request.
    RunTask {
        /// Cluster.
        cluster: String,
        /// Request id.
        id: String,
    },
    /// A StopTask request.
    StopTask {
        /// Cluster.
        cluster: String,
        /// Task id.
        task: String,
    },
    /// One-off tasks of a cluster waiting in PROVISIONING for capacity.
    Waiting {
        /// Cluster.
        cluster: String,
    },
}

/// The keys a task's change wakes: its service's, or its cluster's waiting one-off tasks.
fn task_keys(keys: &Keys, tasks: &Cache<Task>, task_key: &str) -> Vec<Key> {
    let Some(ClusterKey { cluster, .. }) = keys.cluster_key(Family::Tasks, task_key) else {
        return vec![];
    };
    let Some(t) = tasks.get(task_key) else {
        return vec![];
    };
    let Ok(t) = &t.value else { return vec![] };
    if snapshot::waiting_one_off(t) {
        return vec![Key::Waiting { cluster }];
    }
    t.service()
        .map(|service| Key::Service(ServiceKey::new(&cluster, service)))
        .into_iter()
        .collect()
}

/// Runs the scheduler until SIGTERM/SIGINT.
pub async fn run(args: SchedulerArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("scheduler", &args.common).await?;
    let caches = Caches {
        services: rt.cache(Family::Services, spec_decoder()),
        deployments: rt.cache(Family::Deployments, status_decoder()),
        taskdefs: rt.cache(Family::TaskDefinitions, spec_decoder()),
        tasks: rt.cache(Family::Tasks, status_decoder()),
        instances: rt.cache(Family::ContainerInstances, status_decoder()),
        runtask: rt.cache(Family::RunTaskRequests, spec_decoder()),
        stoptask: rt.cache(Family::StopTaskRequests, spec_decoder()),
        targets: rt.cache(Family::TargetGroupStatus, status_decoder()),
        clusters: rt.cache(Family::Clusters, spec_decoder()),
        protection: rt.cache(Family::TaskProtection, status_decoder()),
    };
    let keys = rt.store.keys().clone();
    let ctx = Arc::new(Ctx {
        exec: Executor {
            store: rt.store.clone(),
            keys: keys.clone(),
            agents: Arc::new(Agents::new(args.tls.files())),
            caches: caches.clone(),
            created: AtomicI64::new(0),
        },
        grace: args.grace().as_secs_f64(),
        missing_since: Mutex::new(BTreeMap::new()),
        events: Events::new(rt.store.clone()),
        retention: args.task_retention.into(),
        drain_timeout: Duration::from(args.drain_timeout).as_secs_f64(),
    });

    let service_of = |keys: &Keys, k: &str| -> Vec<Key> {
        keys.service_of(k).map(Key::Service).into_iter().collect()
    };
    let mut config = ControllerConfig::new("scheduler");
    config.concurrency = args.concurrency;
    config.settle = args.settle.into();
    let k1 = keys.clone();
    let k2 = keys.clone();
    let k3 = keys.clone();
    let tasks = caches.tasks.clone();
    let tasks8 = caches.tasks.clone();
    let k8 = keys.clone();
    let all = caches.clone();
    let k4 = keys.clone();
    let k5 = keys.clone();
    let k6 = keys.clone();
    let k7 = keys.clone();
    let deps7 = caches.deployments.clone();
    let controller = Controller::new(config)
        .watches(&caches.deployments, move |k| service_of(&k1, k))
        .watches(&caches.services, move |k| service_of(&k2, k))
        .watches(&caches.tasks, move |k| task_keys(&k3, &tasks, k))
        .watches(&caches.protection, move |k| {
            // A protection set, lifted or expired: its task's service may scale in now.
            k8.cluster_key(Family::TaskProtection, k)
                .map(|ClusterKey { cluster, id }| task_keys(&k8, &tasks8, &k8.task(&cluster, &id)))
                .unwrap_or_default()
        })
        .watches(&caches.instances, move |k| {
            // An instance came, went or changed: every service of its cluster may move.
            let Some(ClusterKey { cluster, .. }) = k4.cluster_key(Family::ContainerInstances, k)
            else {
                return vec![];
            };
            let mut out: Vec<Key> = all
                .deployments
                .list_prefix(&k4.list(Family::Deployments, &[&cluster]))
                .iter()
                .filter_map(|e| k4.service_of(&e.key))
                .map(Key::Service)
                .collect();
            out.dedup();
            out.push(Key::Waiting { cluster });
            out
        })
        .watches(&caches.runtask, move |k| {
            k5.cluster_key(Family::RunTaskRequests, k)
                .map(|ClusterKey { cluster, id }| Key::RunTask { cluster, id })
                .into_iter()
                .collect()
        })
        .watches(&caches.targets, move |k| {
            // A target drained: services whose deployments use that group may stop tasks now.
            let Some(tg) = k7.name_of(Family::TargetGroupStatus, k) else {
                return vec![];
            };
            let mut out: Vec<Key> = deps7
                .list()
                .iter()
                .filter(|e| {
                    e.value.as_ref().is_ok_and(|d| {
                        d.load_balancers.iter().any(|lb| {
                            lb.target_group_arn
                                .as_deref()
                                .map(capstan_core::service::lb_object_name)
                                == Some(tg.as_str())
                        })
                    })
                })
                .filter_map(|e| k7.service_of(&e.key))
                .map(Key::Service)
                .collect();
            out.dedup();
            out
        })
        .watches(&caches.stoptask, move |k| {
            k6.cluster_key(Family::StopTaskRequests, k)
                .map(|ClusterKey { cluster, id }| Key::StopTask { cluster, task: id })
                .into_iter()
                .collect()
        });
    let follower = ctx.clone();
    spawn_while_leading(
        rt.leadership.clone(),
        rt.cancel.clone(),
        move |claim, term| agents::follow_agents(follower.clone(), claim, term),
    );
    rt.serve(controller, ctx, |k, c, x| reconcile_key(k, c, x).boxed())
        .await;
    Ok(())
}
