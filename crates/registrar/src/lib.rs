//! The Capstan target registrar: keeps each target group's targets in step with the tasks of the
//! deployments that name it, health-checks the targets itself (HTTP with the group's matcher, or
//! TCP connect) with ELBv2's thresholds, drains deregistering targets and marks them drained so
//! the scheduler may stop their tasks, and writes `/capstan/status/targetgroups/<name>`.
//!
//! The leader supervises HAProxy ([`haproxy`]): one frontend per listener, one backend per target
//! group; healthy targets are ready servers, draining ones drain, and a draining target is
//! drained once HAProxy reports no sessions on it (or the deregistration delay passed).

pub mod dataplane;
pub mod haproxy;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capstan_core::deployment::Deployment;
use capstan_core::instance::ContainerInstance;
use capstan_core::keys::Family;
use capstan_core::lb::{LbProtocol, TargetGroup, TargetGroupStatusDoc, TargetState};
use capstan_core::service::lb_object_name;
use capstan_core::task::Task;
use capstan_plan::targets::{self, Failure, Settings, Tracked};
use capstan_runtime::events::now;
use capstan_runtime::{
    Action, CommonArgs, Controller, ControllerConfig, Runtime, RuntimeError, WorkQueue,
};
use capstan_store::{Cache, Claim, Leadership, StoreError, Write, json_decoder};
use futures::FutureExt;
use tokio_util::sync::CancellationToken;

/// Command-line arguments of `capstan-registrar`.
#[derive(Debug, clap::Parser)]
#[command(name = "capstan-registrar", version)]
pub struct RegistrarArgs {
    /// etcd, prefix, admin address, election and logging.
    #[command(flatten)]
    pub common: CommonArgs,
    /// HAProxy binary the leader runs as the data plane.
    #[arg(long, env = "CAPSTAN_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,
    /// Directory for HAProxy's configuration, map and admin socket; a temporary one by default.
    #[arg(long, env = "CAPSTAN_HAPROXY_DIR")]
    pub haproxy_dir: Option<PathBuf>,
    /// Run without a data plane (health checks and status only).
    #[arg(long, env = "CAPSTAN_NO_DATA_PLANE")]
    pub no_data_plane: bool,
    /// Drive an HAProxy that runs already, through this admin-level stats socket, instead of
    /// starting one (its configuration must have `fe_<listener>` / `be_<group>` as Capstan
    /// renders them).
    #[arg(long, env = "CAPSTAN_HAPROXY_SOCKET", requires = "haproxy_map")]
    pub haproxy_socket: Option<PathBuf>,
    /// With --haproxy-socket: the map file its frontends route by.
    #[arg(long, env = "CAPSTAN_HAPROXY_MAP", requires = "haproxy_socket")]
    pub haproxy_map: Option<PathBuf>,
}

/// The caches the registrar reads.
#[derive(Clone)]
pub struct Caches {
    /// Target group specs (validated).
    pub groups: Cache<TargetGroup>,
    /// Deployments (their load balancers).
    pub deployments: Cache<Deployment>,
    /// Tasks.
    pub tasks: Cache<Task>,
    /// Container instances (their addresses).
    pub instances: Cache<ContainerInstance>,
    /// Target group status (its own).
    pub status: Cache<TargetGroupStatusDoc>,
    /// Listener specs.
    pub listeners: Cache<capstan_core::lb::Listener>,
    /// Listener routes (the deployer's).
    pub routes: Cache<capstan_core::lb::ListenerRoute>,
}

impl Caches {
    fn ready(&self) -> bool {
        self.groups.is_ready()
            && self.deployments.is_ready()
            && self.tasks.is_ready()
            && self.instances.is_ready()
            && self.status.is_ready()
    }
}

/// Targets by group, then by task id, as this leader tracks them.
type Tracking = Mutex<HashMap<String, BTreeMap<String, Tracked>>>;

/// Shared state of the registrar.
pub struct Ctx {
    store: capstan_store::Store,
    caches: Caches,
    tracking: Tracking,
    /// The data plane, when there is one.
    haproxy: Option<Box<dyn dataplane::DataPlane>>,
    /// Sessions per target at the last sync, by group then task.
    sessions: Mutex<HashMap<String, HashMap<String, u32>>>,
    /// Listener → (the groups it routes to, since when) as applied to the data plane.
    applied: Mutex<BTreeMap<String, (Vec<String>, f64)>>,
    /// Listeners that split traffic over several groups: listener → (group, weight).
    weighted: Mutex<BTreeMap<String, Vec<(String, u32)>>>,
}

/// The host part of an agent endpoint (`http://10.0.0.1:7000` → `10.0.0.1`).
pub fn host_of_endpoint(endpoint: &str) -> Option<String> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.rsplit_once(':') {
        Some((h, _)) => h,
        None => authority,
    };
    (!host.is_empty()).then(|| host.trim_matches(['[', ']']).to_string())
}

fn lock<T>(t: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    t.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn reconcile(tg: String, claim: Arc<Claim>, ctx: Arc<Ctx>) -> Result<Action, StoreError> {
    let c = &ctx.caches;
    if !c.ready() {
        return Ok(Action::requeue(Duration::from_millis(200)));
    }
    let keys = ctx.store.keys().clone();
    let status_key = keys.target_group_status(&tg);
    let Some(spec) = c
        .groups
        .get(&keys.target_group(&tg))
        .and_then(|e| e.value.as_ref().ok().cloned())
    else {
        lock(&ctx.tracking).remove(&tg);
        if c.status.get(&status_key).is_some() {
            ctx.store
                .commit(Write::new().delete(&status_key), Some(&claim))
                .await?;
        }
        return Ok(Action::await_change());
    };
    let deployments: Vec<Deployment> = c
        .deployments
        .list()
        .iter()
        .filter_map(|e| e.value.as_ref().ok().cloned())
        .filter(|d| {
            d.load_balancers
                .iter()
                .any(|lb| lb.target_group_arn.as_deref().map(lb_object_name) == Some(tg.as_str()))
        })
        .collect();
    let tasks: Vec<Task> = c
        .tasks
        .list()
        .iter()
        .filter_map(|e| e.value.as_ref().ok().cloned())
        .filter(|t| {
            deployments
                .iter()
                .any(|d| t.started_by.as_deref() == Some(d.id.as_str()))
        })
        .collect();
    let instances: HashMap<String, String> = c
        .instances
        .list()
        .iter()
        .filter_map(|e| {
            let ci = e.value.as_ref().ok()?;
            let id = e.key.rsplit('/').next()?.to_string();
            Some((id, host_of_endpoint(&ci.agent_endpoint)?))
        })
        .collect();
    let wanted = targets::wanted(&tg, &deployments, &tasks, |i| instances.get(i).cloned());
    let settings = Settings::of(&spec);
    let now = now();
    let (doc, wake) = {
        let mut all = lock(&ctx.tracking);
        let tracked = all.entry(tg.clone()).or_insert_with(|| {
            // A new leader carries on from the last status written.
            c.status
                .get(&status_key)
                .and_then(|e| e.value.as_ref().ok().cloned())
                .map(|doc| {
                    doc.targets
                        .into_iter()
                        .map(|s| {
                            (
                                s.task_id.clone(),
                                Tracked {
                                    status: s,
                                    passes: 0,
                                    fails: 0,
                                    draining_since: None,
                                    healthy_since: None,
                                },
                            )
                        })
                        .collect()
                })
                .unwrap_or_default()
        });
        // Without a data plane nothing flows through a target, so it has no sessions.
        let sessions = lock(&ctx.sessions).get(&tg).cloned();
        let wake = targets::converge(
            tracked,
            &wanted,
            |id| match (&ctx.haproxy, &sessions) {
                (None, _) => Some(0),
                (Some(_), Some(s)) => Some(s.get(id).copied().unwrap_or(0)),
                (Some(_), None) => None,
            },
            &settings,
            now,
        );
        let doc = TargetGroupStatusDoc {
            targets: tracked.values().map(|t| t.status.clone()).collect(),
            listeners: lock(&ctx.applied)
                .iter()
                .filter(|(_, (groups, _))| groups.contains(&tg))
                .map(|(l, (_, since))| capstan_core::lb::ServingListener {
                    listener: l.clone(),
                    since: *since,
                })
                .collect(),
            updated_at: None,
        };
        (doc, wake)
    };
    // The data plane follows the targets first, so that a target the status calls healthy is
    // already taking traffic; sessions feed the next drain decision.
    let mut poll = None;
    if let Some(hp) = &ctx.haproxy {
        let tracked = lock(&ctx.tracking).get(&tg).cloned().unwrap_or_default();
        // The group's own backend, then the weighted listeners' backends it is part of; a
        // target's sessions are counted over all of them.
        let ramp = |t: &Tracked| t.weight(&settings, now);
        let mut synced = hp
            .sync_backend(
                &haproxy::backend(&tg),
                &haproxy::group_members(&tracked, ramp),
            )
            .await;
        let weighted: Vec<(String, Vec<(String, u32)>)> = lock(&ctx.weighted)
            .iter()
            .filter(|(_, groups)| groups.iter().any(|(g, _)| *g == tg))
            .map(|(l, g)| (l.clone(), g.clone()))
            .collect();
        for (listener, groups) in weighted {
            let all = lock(&ctx.tracking).clone();
            let empty = BTreeMap::new();
            let parts: Vec<(u32, &BTreeMap<String, Tracked>)> = groups
                .iter()
                .map(|(g, w)| (*w, all.get(g).unwrap_or(&empty)))
                .collect();
            let more = hp
                .sync_backend(
                    &haproxy::listener_backend(&listener),
                    &haproxy::weighted_members(&parts, ramp),
                )
                .await;
            synced = match (synced, more) {
                (Ok(mut a), Ok(b)) => {
                    for (id, n) in b {
                        if let Some(x) = a.get_mut(&id) {
                            *x += n;
                        }
                    }
                    Ok(a)
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
        }
        match synced {
            Ok(sessions) => {
                lock(&ctx.sessions).insert(tg.clone(), sessions);
            }
            Err(e) => tracing::warn!(%tg, error = %e, "cannot program haproxy"),
        }
        if tracked
            .values()
            .any(|t| t.status.state == TargetState::Draining && !t.status.drained)
        {
            poll = Some(Duration::from_millis(250));
        }
        // Slow start: raise the weights again in a second.
        if tracked.values().any(|t| t.ramping(&settings, now)) {
            poll = Some(poll.map_or(Duration::from_secs(1), |p| p.min(Duration::from_secs(1))));
        }
    }
    let unchanged = c
        .status
        .get(&status_key)
        .and_then(|e| e.value.as_ref().ok().cloned())
        .is_some_and(|mut old| {
            old.updated_at = None;
            old == doc
        });
    if !unchanged {
        let mut doc = doc;
        doc.updated_at = Some(now);
        ctx.store
            .commit(Write::new().put_json(&status_key, &doc), Some(&claim))
            .await?;
    }
    let wait = match wake {
        Some(at) => Duration::from_secs_f64((at - now).max(0.0)),
        None => Duration::from_secs(30),
    };
    Ok(Action::requeue(poll.map_or(wait, |p| p.min(wait))))
}

/// Keeps HAProxy's layout (listeners, groups) and listener routes in step while this replica
/// leads; a (re)start queues every group so its servers are set again.
async fn data_plane(
    ctx: Arc<Ctx>,
    queue: WorkQueue<String>,
    mut leadership: Leadership,
    cancel: CancellationToken,
) {
    // Without a data plane, routes count as applied at once (status and deployments still
    // follow them).
    let hp = ctx.haproxy.as_deref();
    let keys = ctx.store.keys().clone();
    loop {
        let claim = tokio::select! {
            _ = cancel.cancelled() => return,
            c = leadership.acquired() => match c { Some(c) => c, None => return },
        };
        let mut applied: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
        loop {
            let name_of = |k: &str| keys.parse(k).and_then(|p| p.parts.first().cloned());
            let listeners: Vec<(String, capstan_core::lb::Listener)> = ctx
                .caches
                .listeners
                .list()
                .iter()
                .filter_map(|e| Some((name_of(&e.key)?, e.value.as_ref().ok()?.clone())))
                .collect();
            let groups: Vec<String> = ctx
                .caches
                .groups
                .list()
                .iter()
                .filter(|e| e.value.is_ok())
                .filter_map(|e| name_of(&e.key))
                .collect();
            // Where each listener sends traffic: the deployer's route, else its default action.
            let split: BTreeMap<String, Vec<(String, u32)>> = listeners
                .iter()
                .map(|(name, l)| {
                    let routed = ctx
                        .caches
                        .routes
                        .get(&keys.listener_route(name))
                        .and_then(|e| e.value.as_ref().ok().cloned())
                        .map(|r| {
                            r.target_groups
                                .iter()
                                .map(|t| (t.target_group_arn.clone(), t.weight.unwrap_or(1)))
                                .collect::<Vec<_>>()
                        });
                    let groups = routed.unwrap_or_else(|| {
                        l.default_actions
                            .first()
                            .map(|a| a.weighted_target_groups())
                            .unwrap_or_default()
                    });
                    let groups: Vec<(String, u32)> = groups
                        .into_iter()
                        .filter(|(_, w)| *w > 0)
                        .map(|(g, w)| (lb_object_name(&g).to_string(), w))
                        .collect();
                    (name.clone(), groups)
                })
                .filter(|(_, g)| !g.is_empty())
                .collect();
            let routes: BTreeMap<String, String> = split
                .iter()
                .map(|(l, g)| {
                    let be = match g.as_slice() {
                        [(one, _)] => haproxy::backend(one),
                        _ => haproxy::listener_backend(l),
                    };
                    (l.clone(), be)
                })
                .collect();
            let weighted: BTreeMap<String, Vec<(String, u32)>> = split
                .iter()
                .filter(|(_, g)| g.len() > 1)
                .map(|(l, g)| (l.clone(), g.clone()))
                .collect();
            // Groups whose weighted listeners changed sync again.
            {
                let mut current = lock(&ctx.weighted);
                if *current != weighted {
                    for g in current.values().chain(weighted.values()).flatten() {
                        queue.add(g.0.clone());
                    }
                    *current = weighted.clone();
                }
            }
            let mut layout = haproxy::Layout::new(&listeners, &groups);
            layout.weighted = weighted.keys().cloned().collect();
            let ensured = match hp {
                Some(hp) => hp.ensure(&layout, &routes).await,
                None => Ok(false),
            };
            // Listeners that are gone route nowhere.
            let gone: Vec<String> = lock(&ctx.applied)
                .keys()
                .filter(|l| !routes.contains_key(*l))
                .cloned()
                .collect();
            for l in gone {
                if let Some((groups, _)) = lock(&ctx.applied).remove(&l) {
                    for g in groups {
                        queue.add(g);
                    }
                }
                applied.remove(&l);
            }
            match ensured {
                Ok(restarted) => {
                    if restarted {
                        applied.clear();
                        for g in &groups {
                            queue.add(g.clone());
                        }
                    }
                    for (l, be) in &routes {
                        let now_in: Vec<String> = split
                            .get(l)
                            .map(|g| g.iter().map(|(g, _)| g.clone()).collect())
                            .unwrap_or_default();
                        if applied.get(l) != Some(&(be.clone(), now_in.clone())) {
                            let routed = match hp {
                                Some(hp) => hp.route(l, be).await,
                                None => Ok(()),
                            };
                            match routed {
                                Ok(()) => {
                                    applied.insert(l.clone(), (be.clone(), now_in.clone()));
                                    // Report it on the groups it left and joined.
                                    let before = lock(&ctx.applied)
                                        .insert(l.clone(), (now_in.clone(), now()))
                                        .map(|(g, _)| g)
                                        .unwrap_or_default();
                                    for g in before.into_iter().chain(now_in) {
                                        queue.add(g);
                                    }
                                }
                                Err(e) => tracing::warn!(listener = %l, error = %e, "cannot route"),
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot run haproxy"),
            }
            tokio::select! {
                biased;
                // Shutting down: HAProxy keeps serving; the next registrar adopts it.
                _ = cancel.cancelled() => return,
                _ = leadership.lost(&claim) => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        // Only the leader drives HAProxy.
        lock(&ctx.applied).clear();
        lock(&ctx.weighted).clear();
        if let Some(hp) = hp {
            hp.stop().await;
        }
    }
}

/// One health check of `host:port` with the group's settings.
async fn check(
    http: &reqwest::Client,
    tg: &TargetGroup,
    host: &str,
    port: u16,
) -> Result<(), Failure> {
    let hc = tg.effective_health_check();
    let timeout = Duration::from_secs(u64::from(hc.timeout_seconds.unwrap_or(6)));
    let port = match hc.port.as_deref() {
        Some("traffic-port") | None => port,
        Some(p) => p.parse().unwrap_or(port),
    };
    match hc.protocol.unwrap_or_default() {
        LbProtocol::Tcp => {
            match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(_)) => Err(Failure::ConnectionFailed),
                Err(_) => Err(Failure::Timeout),
            }
        }
        LbProtocol::Http => {
            let url = format!("http://{host}:{port}{}", hc.path.as_deref().unwrap_or("/"));
            match http.get(&url).timeout(timeout).send().await {
                Ok(resp) => {
                    let code = resp.status().as_u16();
                    if hc.matcher.as_ref().is_none_or(|m| m.matches(code)) {
                        Ok(())
                    } else {
                        Err(Failure::ResponseCodeMismatch)
                    }
                }
                Err(e) if e.is_timeout() => Err(Failure::Timeout),
                Err(_) => Err(Failure::ConnectionFailed),
            }
        }
    }
}

/// A group due for checks: its name, spec, targets (task id, host, port), and whether its
/// interval is up (else only its never-checked targets are due).
type Due = (String, TargetGroup, Vec<(String, String, u16)>, bool);

/// Health-checks every tracked target while this replica leads, each group at its interval and
/// a new target at once (so it can go healthy without waiting an interval); a target whose
/// state changes queues its group for a status write.
async fn health_checks(
    ctx: Arc<Ctx>,
    queue: WorkQueue<String>,
    mut leadership: Leadership,
    cancel: CancellationToken,
) {
    // HTTP checks only need plain TCP, but reqwest wants a TLS provider installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().build() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the health-check client");
            return;
        }
    };
    let mut next: HashMap<String, tokio::time::Instant> = HashMap::new();
    let mut checked: HashSet<(String, String)> = HashSet::new();
    loop {
        let claim = tokio::select! {
            _ = cancel.cancelled() => return,
            c = leadership.acquired() => match c { Some(c) => c, None => return },
        };
        loop {
            let now = tokio::time::Instant::now();
            let due: Vec<Due> = {
                let all = lock(&ctx.tracking);
                checked.retain(|(tg, id)| all.get(tg).is_some_and(|t| t.contains_key(id)));
                all.iter()
                    .filter_map(|(tg, tracked)| {
                        let interval_up = next.get(tg).is_none_or(|at| *at <= now);
                        let targets: Vec<(String, String, u16)> = tracked
                            .values()
                            .filter(|t| t.status.state != TargetState::Draining)
                            .filter(|t| {
                                interval_up
                                    || !checked.contains(&(tg.clone(), t.status.task_id.clone()))
                            })
                            .map(|t| {
                                (
                                    t.status.task_id.clone(),
                                    t.status.host.clone(),
                                    t.status.port,
                                )
                            })
                            .collect();
                        if targets.is_empty() && !interval_up {
                            return None;
                        }
                        let spec = ctx
                            .caches
                            .groups
                            .get(&ctx.store.keys().target_group(tg))
                            .and_then(|e| e.value.as_ref().ok().cloned())?;
                        Some((tg.clone(), spec, targets, interval_up))
                    })
                    .collect()
            };
            for (tg, spec, targets, interval_up) in due {
                let s = Settings::of(&spec);
                if interval_up {
                    next.insert(tg.clone(), now + Duration::from_secs_f64(s.interval));
                }
                for (id, _, _) in &targets {
                    checked.insert((tg.clone(), id.clone()));
                }
                let results = futures::future::join_all(targets.iter().map(|(id, host, port)| {
                    let (http, spec) = (&http, &spec);
                    async move { (id.clone(), check(http, spec, host, *port).await) }
                }))
                .await;
                let mut changed = false;
                {
                    let mut all = lock(&ctx.tracking);
                    if let Some(tracked) = all.get_mut(&tg) {
                        for (id, r) in results {
                            if let Some(t) = tracked.get_mut(&id) {
                                let before = t.status.clone();
                                targets::observe(t, r, &s, capstan_runtime::events::now());
                                changed |= t.status != before;
                            }
                        }
                    }
                }
                if changed {
                    queue.add(tg);
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = leadership.lost(&claim) => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
        lock(&ctx.tracking).clear();
        next.clear();
        checked.clear();
    }
}

/// Groups named by the load balancers of `deployments`.
fn groups_of(deployments: &[Arc<capstan_store::Entry<Deployment>>]) -> Vec<String> {
    let mut out: Vec<String> = deployments
        .iter()
        .filter_map(|e| e.value.as_ref().ok())
        .flat_map(|d| d.load_balancers.iter())
        .filter_map(|lb| {
            lb.target_group_arn
                .as_deref()
                .map(|t| lb_object_name(t).to_string())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs the registrar until SIGTERM/SIGINT.
pub async fn run(args: RegistrarArgs) -> Result<(), RuntimeError> {
    let rt = Runtime::start("registrar", &args.common).await?;
    let resync = Duration::from_secs(300);
    let caches = Caches {
        groups: rt.cache(
            Family::TargetGroups,
            capstan_runtime::spec_decoder(),
            resync,
        ),
        deployments: rt.cache(Family::Deployments, json_decoder(), resync),
        tasks: rt.cache(Family::Tasks, json_decoder(), resync),
        instances: rt.cache(Family::ContainerInstances, json_decoder(), resync),
        status: rt.cache(Family::TargetGroupStatus, json_decoder(), resync),
        listeners: rt.cache(Family::Listeners, capstan_runtime::spec_decoder(), resync),
        routes: rt.cache(Family::ListenerRoutes, json_decoder(), resync),
    };
    let haproxy = (!args.no_data_plane).then(|| {
        let dir = args
            .haproxy_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("capstan-registrar-{}", rt.id)));
        let hp = match (&args.haproxy_socket, &args.haproxy_map) {
            (Some(socket), Some(map)) => haproxy::Haproxy::external(haproxy::External {
                socket: socket.clone(),
                map: map.clone(),
            }),
            _ => haproxy::Haproxy::new(args.haproxy_bin.clone(), dir),
        };
        Box::new(hp) as Box<dyn dataplane::DataPlane>
    });
    let ctx = Arc::new(Ctx {
        store: rt.store.clone(),
        caches: caches.clone(),
        tracking: Mutex::new(HashMap::new()),
        haproxy,
        sessions: Mutex::new(HashMap::new()),
        applied: Mutex::new(BTreeMap::new()),
        weighted: Mutex::new(BTreeMap::new()),
    });
    let keys = rt.store.keys().clone();
    let (k1, k2, k3) = (keys.clone(), keys.clone(), keys.clone());
    let (d1, d2, g1) = (
        caches.deployments.clone(),
        caches.deployments.clone(),
        caches.groups.clone(),
    );
    let tasks = caches.tasks.clone();
    let controller = Controller::new(ControllerConfig::new("registrar"))
        .watches(&caches.groups, move |k| {
            k1.parse(k)
                .and_then(|p| p.parts.first().cloned())
                .into_iter()
                .collect()
        })
        .watches(&caches.deployments, move |_| groups_of(&d1.list()))
        .watches(&caches.tasks, move |k| {
            // The groups of the task's deployment.
            let Some(p) = k2.parse(k) else { return vec![] };
            let Some(t) = tasks.get(k).and_then(|e| e.value.as_ref().ok().cloned()) else {
                return vec![];
            };
            let (Some(service), Some(dep)) = (
                t.group.as_deref().and_then(|g| g.strip_prefix("service:")),
                t.started_by.as_deref(),
            ) else {
                return vec![];
            };
            d2.get(&k2.deployment(&p.parts[0], service, dep))
                .map(|e| groups_of(&[e]))
                .unwrap_or_default()
        })
        .watches(&caches.instances, move |_| {
            g1.list()
                .iter()
                .filter_map(|e| k3.parse(&e.key))
                .filter_map(|p| p.parts.first().cloned())
                .collect()
        })
        .resyncs({
            let (g, k) = (caches.groups.clone(), keys.clone());
            move || {
                g.list()
                    .iter()
                    .filter_map(|e| k.parse(&e.key))
                    .filter_map(|p| p.parts.first().cloned())
                    .collect()
            }
        });
    tokio::spawn(data_plane(
        ctx.clone(),
        controller.queue(),
        rt.leadership.clone(),
        rt.cancel.clone(),
    ));
    tokio::spawn(health_checks(
        ctx.clone(),
        controller.queue(),
        rt.leadership.clone(),
        rt.cancel.clone(),
    ));
    rt.serve(controller, ctx, |k, c, x| reconcile(k, c, x).boxed())
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_come_from_agent_endpoints() {
        assert_eq!(
            host_of_endpoint("http://10.0.0.1:7000").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(
            host_of_endpoint("https://node-1:7000/").as_deref(),
            Some("node-1")
        );
        assert_eq!(
            host_of_endpoint("http://[::1]:7000").as_deref(),
            Some("::1")
        );
        assert_eq!(
            host_of_endpoint("127.0.0.1:7000").as_deref(),
            Some("127.0.0.1")
        );
    }
}
