//! The workload: the services the soak keeps busy, the requests it makes while faults land, and
//! the two questions the driver asks of the system (does it serve? has it converged?).
//!
//! Services (cluster `default`):
//! - `web`: the compose example, rolling 100/200, 3 tasks behind listener `web` (:8000);
//! - `roll`: rolling 50/100, 4 tasks, scaled between 2 and 6; the first revision of every three
//!   crashes, so the circuit breaker fails it and rolls back;
//! - `shop`: blue/green, 2 tasks behind listener `shop` (:8100), test listener `shop-test`;
//! - `daemon`: one task on every agent host.
//!
//! Plus RunTask bursts of a task that exits on its own. Every request's result is recorded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_store::Store;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::check::Final;
use crate::compose::{AGENT_HOSTS, Compose, Error, LB_HOSTS};
use crate::history::{History, Kind};

/// The workload's cluster.
pub const CLUSTER: &str = "default";
/// The listener ports HTTP traffic goes to on every LB host: `web`, `shop`.
pub const PORTS: [u16; 2] = [8000, 8100];
/// The services the workload runs.
pub const SERVICES: [&str; 4] = ["web", "roll", "shop", "daemon"];

/// The busybox httpd of `deploy/compose/web-taskdef.json`, as family `family` saying `revision`.
fn httpd(family: &str, revision: u32) -> Value {
    json!({"family": family, "containerDefinitions": [{
        "name": "app", "image": "busybox", "essential": true, "memory": 32, "cpu": 64,
        "portMappings": [{"containerPort": 8080, "hostPort": 0}],
        "entryPoint": ["sh", "-c"],
        "command": ["d=/tmp/capstan-www-$CAPSTAN_TASK_ID; mkdir -p $d; echo \"hello from $CAPSTAN_TASK_ID on $(hostname), revision $REVISION\" > $d/index.html; exec busybox httpd -f -p 0.0.0.0:$PORT -h $d"],
        "environment": [{"name": "REVISION", "value": revision.to_string()}],
        "stopTimeout": 2}]})
}

/// A task that sleeps (revision `revision`), or one that exits 1 a second after it starts.
fn sleeper(family: &str, revision: u32, crash: bool) -> Value {
    let script = if crash {
        "echo this revision crashes; sleep 1; exit 1".to_string()
    } else {
        format!("echo revision {revision}; exec sleep 100000")
    };
    json!({"family": family, "containerDefinitions": [{
        "name": "app", "image": "busybox", "essential": true, "memory": 16, "cpu": 32,
        "entryPoint": ["sh", "-c"], "command": [script], "stopTimeout": 2}]})
}

/// The workload and what it asked for.
pub struct Workload {
    compose: Compose,
    store: Store,
    history: History,
    rng: Mutex<StdRng>,
    /// Set before the last fault: no new deployments, so the end converges.
    pub winding_down: AtomicBool,
    /// (service, `family:revision`) of every failing revision deployed.
    failing: Mutex<Vec<(String, String)>>,
    /// How many requests succeeded and failed.
    counts: Mutex<(u32, u32)>,
    next_revision: Mutex<u32>,
    /// Deployments of `roll` asked for so far.
    roll_deploys: AtomicU32,
}

fn revision_of(out: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(out).ok()?;
    let v = v.as_array().and_then(|a| a.first()).unwrap_or(&v);
    v.get("revision")
        .or_else(|| v.get("taskDefinition").and_then(|t| t.get("revision")))
        .and_then(Value::as_u64)
}

impl Workload {
    /// A workload on `compose` seeded with `seed`.
    pub fn new(compose: Compose, store: Store, history: History, seed: u64) -> Arc<Self> {
        Arc::new(Self {
            compose,
            store,
            history,
            rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed)),
            winding_down: AtomicBool::new(false),
            failing: Mutex::new(Vec::new()),
            counts: Mutex::new((0, 0)),
            next_revision: Mutex::new(100),
            roll_deploys: AtomicU32::new(0),
        })
    }

    fn file(&self, name: &str, doc: &Value) -> Result<String, Error> {
        let dir = self.compose.scratch();
        let path = dir.join(name);
        std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::write(&path, doc.to_string()))
            .map_err(|source| Error::Spawn {
                command: format!("write {}", path.display()),
                source,
            })?;
        Ok(path.display().to_string())
    }

    /// One CLI request, recorded with the keys it may write.
    async fn request(&self, what: &str, writes: &[String], args: &[&str]) -> Result<String, Error> {
        let started = self.history.now();
        let api = self.rng.lock().await.random_range(0..2);
        let r = self.compose.capstan(api, args).await;
        self.history.record(Kind::Request {
            what: what.to_string(),
            writes: writes.to_vec(),
            started,
            error: r.as_ref().err().map(ToString::to_string),
        });
        let mut c = self.counts.lock().await;
        if r.is_ok() {
            c.0 += 1;
        } else {
            c.1 += 1;
        }
        r
    }

    fn taskdef_prefix(&self, family: &str) -> String {
        self.store.keys().list(Family::TaskDefinitions, &[family])
    }

    fn service_key(&self, s: &str) -> String {
        self.store.keys().service(CLUSTER, s)
    }

    /// Registers `doc`; its `family:revision`.
    async fn register(&self, doc: &Value) -> Result<String, Error> {
        let family = doc["family"].as_str().unwrap_or("x").to_string();
        let path = self.file(&format!("{family}.json"), doc)?;
        let out = self
            .request(
                &format!("register {family}"),
                &[self.taskdef_prefix(&family)],
                &["-o", "json", "taskdef", "register", "-f", &path],
            )
            .await?;
        let rev = revision_of(&out).ok_or_else(|| Error::Failed {
            command: "taskdef register".into(),
            output: format!("no revision in {out}"),
        })?;
        Ok(format!("{family}:{rev}"))
    }

    /// Creates the object at `key` with `capstan COMMAND… -f FILE` (`doc` written to `file`)
    /// unless it exists: a soak on a deployment an earlier one used finds it there.
    async fn ensure(
        &self,
        key: String,
        file: &str,
        doc: &Value,
        command: &[&str],
    ) -> Result<(), Error> {
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        let path = self.file(file, doc)?;
        let mut args = command.to_vec();
        args.extend(["-f", path.as_str()]);
        self.request(&format!("{} -f {file}", command.join(" ")), &[key], &args)
            .await
            .map(drop)
    }

    /// Creates service `name` from `doc`, registering `taskdef` first, unless it exists.
    async fn ensure_service(&self, name: &str, taskdef: &Value, doc: &Value) -> Result<(), Error> {
        let key = self.service_key(name);
        if self.store.get(&key).await?.is_some() {
            return Ok(());
        }
        self.register(taskdef).await?;
        self.ensure(
            key,
            &format!("{name}-service.json"),
            doc,
            &["service", "create"],
        )
        .await
    }

    /// Creates what the workload needs that is not there yet (the compose example is).
    pub async fn setup(&self) -> Result<(), Error> {
        let doc = json!({"serviceName": "roll", "taskDefinition": "roll", "desiredCount": 4,
            "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 100,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true}}});
        self.ensure_service("roll", &sleeper("roll", 1, false), &doc)
            .await?;
        let doc = json!({"serviceName": "daemon", "taskDefinition": "daemon",
            "schedulingStrategy": "DAEMON"});
        self.ensure_service("daemon", &sleeper("daemon", 1, false), &doc)
            .await?;
        let tg = json!({"protocol": "HTTP",
            "healthCheck": {"path": "/", "intervalSeconds": 5, "healthyThresholdCount": 2},
            "attributes": [{"key": "deregistration_delay.timeout_seconds", "value": "5"}]});
        for name in ["shop-blue", "shop-green"] {
            let key = self.store.keys().target_group(name);
            self.ensure(key, "shop-tg.json", &tg, &["targetgroup", "create", name])
                .await?;
        }
        for (name, port, tg) in [
            ("shop", 8100, "shop-blue"),
            ("shop-test", 8101, "shop-green"),
        ] {
            let doc = json!({"port": port, "protocol": "HTTP",
                "defaultActions": [{"type": "forward", "targetGroupArn": tg}]});
            let key = self.store.keys().key(Family::Listeners, &[name]);
            let file = format!("{name}-listener.json");
            self.ensure(key, &file, &doc, &["listener", "create", name])
                .await?;
        }
        let doc = json!({"serviceName": "shop", "taskDefinition": "shop", "desiredCount": 2,
            "deploymentConfiguration": {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0,
                "deploymentCircuitBreaker": {"enable": true, "rollback": true}},
            "healthCheckGracePeriodSeconds": 5,
            "loadBalancers": [{"targetGroupArn": "shop-blue", "containerName": "app",
                "containerPort": 8080, "advancedConfiguration": {
                    "alternateTargetGroupArn": "shop-green", "productionListenerRule": "shop",
                    "testListenerRule": "shop-test"}}]});
        self.ensure_service("shop", &httpd("shop", 1), &doc).await?;
        let burst = json!({"family": "burst", "containerDefinitions": [{
            "name": "app", "image": "busybox", "essential": true, "memory": 8, "cpu": 16,
            "entryPoint": ["sh", "-c"], "command": ["sleep 3"]}]});
        if self
            .store
            .list(&self.taskdef_prefix("burst"))
            .await?
            .kvs
            .is_empty()
        {
            self.register(&burst).await?;
        }
        Ok(())
    }

    /// Whether `service` has a deployment in progress (or etcd does not say).
    async fn deploying(&self, service: &str) -> bool {
        let prefix = self
            .store
            .keys()
            .list(Family::Deployments, &[CLUSTER, service]);
        match self.store.list(&prefix).await {
            Ok(l) => l.kvs.iter().any(|kv| {
                kv.json::<Value>()
                    .is_ok_and(|d| d["rolloutState"] == "IN_PROGRESS")
            }),
            Err(_) => true,
        }
    }

    /// Deploys a new revision of `service` (failing when `crash`).
    async fn deploy(&self, service: &str, crash: bool) {
        if self.deploying(service).await {
            return;
        }
        let n = {
            let mut n = self.next_revision.lock().await;
            *n += 1;
            *n
        };
        let doc = match service {
            "web" | "shop" => httpd(service, n),
            _ => sleeper(service, n, crash),
        };
        let Ok(td) = self.register(&doc).await else {
            return;
        };
        let what = format!(
            "deploy {service} {td}{}",
            if crash { " (crashes)" } else { "" }
        );
        let ok = self
            .request(
                &what,
                &[self.service_key(service)],
                &["service", "update", service, "--task-definition", &td],
            )
            .await
            .is_ok();
        if ok && crash {
            self.failing.lock().await.push((service.to_string(), td));
        }
    }

    /// One random action.
    async fn act(&self) {
        let pick = self.rng.lock().await.random_range(0..10);
        let deploys = !self.winding_down.load(Ordering::SeqCst);
        match pick {
            0..=1 if deploys => self.deploy("web", false).await,
            2..=3 if deploys => {
                // The first of every three revisions of `roll` crashes, so even a short soak
                // sees the breaker roll one back.
                let n = self.roll_deploys.fetch_add(1, Ordering::SeqCst);
                self.deploy("roll", n.is_multiple_of(3)).await;
            }
            4 if deploys => self.deploy("shop", false).await,
            5..=6 => {
                let n = self.rng.lock().await.random_range(2..=6).to_string();
                let _ = self
                    .request(
                        &format!("scale roll {n}"),
                        &[self.service_key("roll")],
                        &["service", "update", "roll", "--desired-count", &n],
                    )
                    .await;
            }
            _ => {
                let _ = self
                    .request(
                        "run 3 burst",
                        &[],
                        &["task", "run", "--task-definition", "burst", "--count", "3"],
                    )
                    .await;
            }
        }
    }

    /// Acts every 5–12 s until `stop`.
    pub async fn drive(self: Arc<Self>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            self.act().await;
            let wait = self.rng.lock().await.random_range(5_000..12_000);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
    }

    /// Failing revisions deployed.
    pub async fn failing(&self) -> Vec<(String, String)> {
        self.failing.lock().await.clone()
    }

    /// Requests (succeeded, failed).
    pub async fn counts(&self) -> (u32, u32) {
        *self.counts.lock().await
    }
}

/// The cluster's records, for the questions below.
struct View {
    services: BTreeMap<String, Value>,
    tasks: Vec<Value>,
    deployments: BTreeMap<String, Vec<Value>>,
}

async fn view(store: &Store) -> Result<View, capstan_store::StoreError> {
    let k = store.keys();
    let docs = |l: capstan_store::Listing| -> Vec<(String, Value)> {
        l.kvs
            .iter()
            .filter_map(|kv| Some((kv.key.clone(), kv.json::<Value>().ok()?)))
            .collect()
    };
    let services = docs(store.list(&k.list(Family::Services, &[CLUSTER])).await?)
        .into_iter()
        .filter_map(|(key, v)| Some((key.rsplit('/').next()?.to_string(), v)))
        .collect();
    let tasks = docs(store.list(&k.list(Family::Tasks, &[CLUSTER])).await?)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let mut deployments: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (key, v) in docs(store.list(&k.list(Family::Deployments, &[CLUSTER])).await?) {
        let parts: Vec<&str> = key.rsplit('/').collect();
        if let Some(s) = parts.get(1) {
            deployments.entry(s.to_string()).or_default().push(v);
        }
    }
    Ok(View {
        services,
        tasks,
        deployments,
    })
}

fn running_of<'a>(v: &'a View, service: &str) -> impl Iterator<Item = &'a Value> {
    let group = format!("service:{service}");
    v.tasks.iter().filter(move |t| {
        t["group"] == group.as_str()
            && t["desiredStatus"] == "RUNNING"
            && t["lastStatus"] == "RUNNING"
    })
}

/// The fewest RUNNING tasks a serving service has: its minimumHealthyPercent of desiredCount
/// (a daemon: one per agent host).
fn floor_of(v: &View, service: &str) -> u64 {
    match v.services.get(service) {
        Some(s) if s["schedulingStrategy"] == "DAEMON" => AGENT_HOSTS.len() as u64,
        Some(s) => {
            let min = s["deploymentConfiguration"]["minimumHealthyPercent"]
                .as_u64()
                .unwrap_or(100);
            (desired_of(v, service) * min).div_ceil(100)
        }
        None => 0,
    }
}

fn desired_of(v: &View, service: &str) -> u64 {
    match v.services.get(service) {
        Some(s) if s["schedulingStrategy"] == "DAEMON" => AGENT_HOSTS.len() as u64,
        Some(s) => s["desiredCount"].as_u64().unwrap_or(0),
        None => 0,
    }
}

/// Whether the system serves: every controller has a leader, every service at least its
/// healthy floor RUNNING (a deployment may hold it there), and every LB host answers on every
/// port. `Err` says what is missing.
pub async fn serving(store: &Store, compose: &Compose) -> Result<(), String> {
    for role in ["scheduler", "deployer", "scaler", "registrar"] {
        if store.leader(role).await.ok().flatten().is_none() {
            return Err(format!("no {role} leader"));
        }
    }
    let v = view(store).await.map_err(|e| e.to_string())?;
    for s in SERVICES {
        let (n, d) = (running_of(&v, s).count() as u64, floor_of(&v, s));
        if n < d {
            return Err(format!("{s}: {n} RUNNING, below its floor {d}"));
        }
    }
    for lb in LB_HOSTS {
        for port in PORTS {
            if !crate::record::answers(compose, lb, port).await {
                return Err(format!("{lb}:{port} does not answer"));
            }
        }
    }
    Ok(())
}

/// Whether the system has converged: it serves, no deployment is in progress, each service
/// runs exactly its desired count all on its PRIMARY deployment's revision, and no other task
/// of a service or a burst is live.
pub async fn converged(store: &Store, compose: &Compose) -> Result<(), String> {
    serving(store, compose).await?;
    let v = view(store).await.map_err(|e| e.to_string())?;
    for s in SERVICES {
        let deps = v.deployments.get(s).map(Vec::as_slice).unwrap_or(&[]);
        if deps.iter().any(|d| d["rolloutState"] == "IN_PROGRESS") {
            return Err(format!("{s}: a deployment in progress"));
        }
        let Some(primary) = deps.iter().find(|d| d["status"] == "PRIMARY") else {
            return Err(format!("{s}: no PRIMARY deployment"));
        };
        let td = crate::check::family_revision(primary["taskDefinition"].as_str().unwrap_or(""));
        let on: Vec<&Value> = running_of(&v, s).collect();
        let d = desired_of(&v, s);
        let other = |t: &&Value| {
            crate::check::family_revision(t["taskDefinitionArn"].as_str().unwrap_or("")) != td
        };
        if on.len() as u64 != d || on.iter().any(other) {
            return Err(format!(
                "{s}: {} RUNNING, {d} desired, PRIMARY {td}",
                on.len()
            ));
        }
    }
    let live = v.tasks.iter().filter(|t| {
        t["desiredStatus"] == "RUNNING"
            && t["lastStatus"] != "RUNNING"
            && t["lastStatus"] != "STOPPED"
    });
    if let Some(t) = live.into_iter().next() {
        return Err(format!("task {} still {}", t["taskArn"], t["lastStatus"]));
    }
    Ok(())
}

/// What the agents and the records say at the end.
pub async fn final_state(store: &Store, compose: &Compose) -> Result<Final, String> {
    let mut f = Final::default();
    for a in AGENT_HOSTS {
        let ids: BTreeSet<String> = crate::record::agent_tasks(compose, a)
            .await
            .map_err(|e| format!("{a}: {e}"))?;
        f.agents.insert(a.to_string(), ids);
    }
    let v = view(store).await.map_err(|e| e.to_string())?;
    for t in v.tasks {
        let id = t["taskArn"]
            .as_str()
            .and_then(|a| a.rsplit('/').next())
            .unwrap_or("")
            .to_string();
        f.tasks.insert(id, t);
    }
    f.deployments = v.deployments;
    Ok(f)
}
