//! The deployment controller's planner: from a service's spec, its deployments and what their
//! tasks add up to, the deployments to write, the events to record and the listener routes to
//! set (ECS §3–5).
//!
//! - A spec change (its fingerprint) starts a new PRIMARY deployment; the old one becomes ACTIVE.
//!   desiredCount alone rescales the PRIMARY.
//! - ROLLING: [`crate::rollout::step`] sets the per-deployment counts; COMPLETED when PRIMARY
//!   has D healthy tasks and the others none.
//! - The circuit breaker counts the PRIMARY's failures; at the threshold it is FAILED and, with
//!   rollback, a new deployment of the last COMPLETED one starts (rolling), or blue takes over
//!   again (blue/green, before CLEAN_UP).
//! - BLUE_GREEN walks ECS's lifecycle stages one per call; hooks are run by the caller, which
//!   passes their outcome at the current stage.
//! - StopServiceDeployment (ROLLBACK) fails an in-progress PRIMARY and rolls it back as the
//!   breaker would, whether or not the breaker asks for rollback (ECS: "even if rollback
//!   wasn't configured").

use std::collections::HashMap;

use capstan_core::Timestamp;
use capstan_core::capacity::CapacityProviderStrategyItem;
use capstan_core::deployment::{
    BreakerState, BreakerStatus, Deployment, DeploymentStatus, RollbackInfo, RolloutState,
};
use capstan_core::service::{
    DeploymentCircuitBreaker, DeploymentStrategy, LifecycleStage, LoadBalancer,
};

use crate::health::Tally;
use crate::rollout::{self, Bounds, DeploymentState};

/// What the planner needs of the service spec.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// desiredCount.
    pub desired: u32,
    /// minimumHealthyPercent.
    pub min_healthy_percent: u32,
    /// maximumPercent.
    pub max_percent: u32,
    /// ROLLING or BLUE_GREEN.
    pub strategy: DeploymentStrategy,
    /// The circuit breaker, if configured.
    pub breaker: Option<DeploymentCircuitBreaker>,
    /// Blue/green bake time, seconds.
    pub bake_secs: f64,
    /// Fingerprint of the fields whose change starts a deployment.
    pub fingerprint: String,
    /// Resolved `family:revision`.
    pub task_definition: String,
    /// Capacity provider strategy.
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// Load balancers.
    pub load_balancers: Vec<LoadBalancer>,
    /// DAEMON: the scheduler places one PRIMARY task per instance.
    pub daemon: bool,
    /// INACTIVE deployments kept for history and rollback.
    pub history: usize,
}

/// Outcome of the PRIMARY's lifecycle hooks at its current stage.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Hooks {
    /// No hooks, or all done: the stage may end.
    #[default]
    Done,
    /// Some hook has not answered yet.
    Waiting,
    /// A hook failed, timed out with ROLLBACK, or was answered ROLLBACK.
    Rollback(String),
}

/// Which listener of a blue/green load balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListenerRole {
    /// `testListenerRule`.
    Test,
    /// `productionListenerRule`.
    Production,
}

/// Point a listener at a deployment's target groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Which listener.
    pub role: ListenerRole,
    /// Deployment whose target groups take the traffic.
    pub deployment: String,
}

/// Everything the planner sees of one service.
#[derive(Debug, Clone)]
pub struct View<'a> {
    /// Service name, for event texts.
    pub service: &'a str,
    /// The spec; `None` when the service was deleted.
    pub config: Option<&'a Config>,
    /// All its deployments.
    pub deployments: &'a [Deployment],
    /// Task tallies by deployment id.
    pub tallies: &'a HashMap<String, Tally>,
    /// The PRIMARY's hooks at its current stage.
    pub hooks: Hooks,
    /// A StopServiceDeployment (ROLLBACK) asks for the PRIMARY to be rolled back.
    pub stop: bool,
    /// Id for a deployment this call creates.
    pub new_id: &'a str,
    /// Whether the data plane already routes the PRIMARY's listeners to it.
    pub routed: Routed,
}

/// Whether the data plane routes a blue/green PRIMARY's test and production listeners to its
/// target groups (true when it has no such listener): the traffic-shift stages end only then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Routed {
    /// The test listeners route to it.
    pub test: bool,
    /// The production listeners route to it.
    pub production: bool,
}

impl Default for Routed {
    fn default() -> Self {
        Self {
            test: true,
            production: true,
        }
    }
}

/// What to do.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// Deployments to write (created or changed).
    pub put: Vec<Deployment>,
    /// Deployment ids to delete.
    pub delete: Vec<String>,
    /// Service event messages.
    pub events: Vec<String>,
    /// Listener routes to set.
    pub routes: Vec<Route>,
    /// Look again at this time even if nothing changes.
    pub wake_at: Option<Timestamp>,
}

/// The stage after `s` (None after CLEAN_UP).
pub fn next_stage(s: LifecycleStage) -> Option<LifecycleStage> {
    use LifecycleStage::*;
    Some(match s {
        ReconcileService => PreScaleUp,
        PreScaleUp => ScaleUp,
        ScaleUp => PostScaleUp,
        PostScaleUp => TestTrafficShift,
        TestTrafficShift => PostTestTrafficShift,
        PostTestTrafficShift => PreProductionTrafficShift,
        PreProductionTrafficShift => ProductionTrafficShift,
        ProductionTrafficShift => PostProductionTrafficShift,
        PostProductionTrafficShift => BakeTime,
        BakeTime => CleanUp,
        CleanUp => return None,
    })
}

/// The breaker's state for `desired` tasks and `failures` counted.
pub fn breaker_state(
    cfg: Option<&DeploymentCircuitBreaker>,
    desired: u32,
    failures: u32,
) -> BreakerState {
    match cfg.filter(|c| c.enable) {
        None => BreakerState {
            status: BreakerStatus::Disabled,
            failure_count: failures,
            threshold: 0,
        },
        Some(c) => {
            let threshold = c.threshold(desired);
            BreakerState {
                status: if failures >= threshold {
                    BreakerStatus::Triggered
                } else {
                    BreakerStatus::Monitoring
                },
                failure_count: failures,
                threshold,
            }
        }
    }
}

struct Planner<'a> {
    view: &'a View<'a>,
    now: Timestamp,
    deps: Vec<Deployment>,
    out: Decision,
}

impl Planner<'_> {
    fn tally(&self, id: &str) -> Tally {
        self.view.tallies.get(id).copied().unwrap_or_default()
    }

    fn wake(&mut self, at: Timestamp) {
        self.out.wake_at = Some(self.out.wake_at.map_or(at, |w| w.min(at)));
    }

    fn event(&mut self, text: String) {
        self.out
            .events
            .push(format!("service ({}) {text}", self.view.service));
    }

    fn primary(&self) -> Option<usize> {
        self.deps
            .iter()
            .rposition(|d| d.status == DeploymentStatus::Primary)
    }

    /// ACTIVE deployments, oldest first.
    fn old(&self) -> Vec<usize> {
        (0..self.deps.len())
            .filter(|i| self.deps[*i].status == DeploymentStatus::Active)
            .collect()
    }

    /// Starts a new PRIMARY for the spec; the old PRIMARY becomes ACTIVE.
    fn start(&mut self, cfg: &Config) -> usize {
        for d in &mut self.deps {
            if d.status == DeploymentStatus::Primary {
                d.status = DeploymentStatus::Active;
            }
        }
        let id = self.view.new_id.to_string();
        let blue = self.blue();
        let stage = (cfg.strategy == DeploymentStrategy::BlueGreen && !cfg.daemon).then(|| {
            let with_tasks = self
                .old()
                .into_iter()
                .filter(|i| self.tally(&self.deps[*i].id).live > 0)
                .count();
            if with_tasks > 1 {
                LifecycleStage::ReconcileService
            } else {
                LifecycleStage::PreScaleUp
            }
        });
        let load_balancers = match (stage, blue) {
            (Some(_), Some(b)) => green_load_balancers(&cfg.load_balancers, &self.deps[b]),
            _ => cfg.load_balancers.clone(),
        };
        self.deps.push(Deployment {
            id: id.clone(),
            status: DeploymentStatus::Primary,
            task_definition: cfg.task_definition.clone(),
            desired_count: 0,
            created_at: Some(self.now),
            updated_at: Some(self.now),
            rollout_state: RolloutState::InProgress,
            rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
            capacity_provider_strategy: cfg.capacity_provider_strategy.clone(),
            strategy: Some(cfg.strategy),
            lifecycle_stage: stage,
            stage_started_at: stage.map(|_| self.now),
            circuit_breaker: Some(breaker_state(cfg.breaker.as_ref(), cfg.desired, 0)),
            spec_fingerprint: Some(cfg.fingerprint.clone()),
            load_balancers,
            ..Deployment::default()
        });
        self.wake(self.now);
        self.deps.len() - 1
    }

    /// Blue: the newest ACTIVE deployment that did not fail.
    fn blue(&self) -> Option<usize> {
        self.old()
            .into_iter()
            .rev()
            .find(|i| self.deps[*i].rollout_state != RolloutState::Failed)
    }

    /// The newest deployment other than `p` that completed.
    fn rollback_target(&self, p: usize) -> Option<usize> {
        (0..self.deps.len())
            .rev()
            .find(|i| *i != p && self.deps[*i].rollout_state == RolloutState::Completed)
    }

    /// Counts the PRIMARY's failures; trips the breaker (and rolls back when asked).
    fn breaker(&mut self, cfg: &Config, p: usize) {
        let t = self.tally(&self.deps[p].id);
        let state = breaker_state(cfg.breaker.as_ref(), cfg.desired, t.failures);
        self.deps[p].failed_tasks = t.failures;
        self.deps[p].circuit_breaker = Some(state);
        if state.status != BreakerStatus::Triggered {
            return;
        }
        let id = self.deps[p].id.clone();
        self.deps[p].rollout_state = RolloutState::Failed;
        self.deps[p].rollout_state_reason =
            Some("ECS deployment circuit breaker: tasks failed to start.".into());
        self.event(format!(
            "(deployment {id}) deployment failed: tasks failed to start."
        ));
        let rollback = cfg.breaker.as_ref().is_some_and(|b| b.rollback);
        if rollback && self.deps[p].rollback.is_none() {
            self.roll_back(cfg, p, "circuit breaker", "tasks failed to start");
        }
    }

    /// Rolls the failed PRIMARY `p` back: blue/green before CLEAN_UP hands back to blue; else a
    /// new deployment of the last COMPLETED one starts.
    /// `source` is what failed (`circuit breaker`), `why` the detail.
    fn roll_back(&mut self, cfg: &Config, p: usize, source: &str, why: &str) {
        let id = self.deps[p].id.clone();
        self.deps[p].rollout_state = RolloutState::Failed;
        let blue_green = self.deps[p]
            .lifecycle_stage
            .is_some_and(|s| s != LifecycleStage::CleanUp);
        if blue_green && let Some(b) = self.blue() {
            let blue_id = self.deps[b].id.clone();
            self.deps[p].status = DeploymentStatus::Active;
            self.deps[p].desired_count = 0;
            self.deps[p].rollout_state_reason = Some(format!(
                "ECS deployment {source}: rolling back to deploymentId {blue_id}."
            ));
            self.deps[b].status = DeploymentStatus::Primary;
            self.deps[b].desired_count = cfg.desired;
            self.deps[b].spec_fingerprint = self.deps[p].spec_fingerprint.clone();
            self.deps[b].rollback = Some(RollbackInfo {
                reason: why.to_string(),
                started_at: self.now,
                from_deployment: id.clone(),
            });
            for role in [ListenerRole::Production, ListenerRole::Test] {
                self.out.routes.push(Route {
                    role,
                    deployment: blue_id.clone(),
                });
            }
            self.event(format!(
                "(deployment {id}) deployment failed: {source}: {why}; rolled back to deploymentId {blue_id}."
            ));
            return;
        }
        let Some(target) = self.rollback_target(p) else {
            self.event(format!(
                "(deployment {id}) has no COMPLETED deployment to roll back to."
            ));
            return;
        };
        let target_id = self.deps[target].id.clone();
        let reason = format!("ECS deployment {source}: rolling back to deploymentId {target_id}.");
        let fingerprint = self.deps[p].spec_fingerprint.clone();
        let mut back = Config {
            task_definition: self.deps[target].task_definition.clone(),
            capacity_provider_strategy: self.deps[target].capacity_provider_strategy.clone(),
            load_balancers: self.deps[target].load_balancers.clone(),
            strategy: DeploymentStrategy::Rolling,
            ..cfg.clone()
        };
        back.fingerprint = fingerprint.unwrap_or_default();
        let n = self.start(&back);
        self.deps[n].rollout_state_reason = Some(reason.clone());
        self.deps[n].rollback = Some(RollbackInfo {
            reason: why.to_string(),
            started_at: self.now,
            from_deployment: id.clone(),
        });
        self.event(format!("(deployment {id}) {reason}"));
    }

    fn complete(&mut self, p: usize) {
        let id = self.deps[p].id.clone();
        let d = &mut self.deps[p];
        d.rollout_state = RolloutState::Completed;
        d.rollout_state_reason = Some(format!("ECS deployment {id} completed."));
        if let Some(b) = &mut d.circuit_breaker
            && b.status == BreakerStatus::Monitoring
        {
            b.status = BreakerStatus::MonitoringComplete;
        }
        self.event(format!("(deployment {id}) deployment completed."));
        self.event("has reached a steady state.".into());
    }

    fn rolling(&mut self, cfg: &Config, p: usize) {
        let old = self.old();
        if self.deps[p].rollout_state == RolloutState::Completed {
            if !cfg.daemon {
                self.deps[p].desired_count = cfg.desired;
            }
            for i in old {
                self.deps[i].desired_count = 0;
            }
            return;
        }
        let state = |pl: &Self, i: usize| {
            let t = pl.tally(&pl.deps[i].id);
            DeploymentState {
                desired: pl.deps[i].desired_count,
                live: t.live,
                healthy: t.healthy,
            }
        };
        if cfg.daemon {
            // The scheduler replaces a daemon's tasks instance by instance.
            for i in &old {
                self.deps[*i].desired_count = 0;
            }
            let t = self.tally(&self.deps[p].id);
            let old_live: u32 = old.iter().map(|i| self.tally(&self.deps[*i].id).live).sum();
            if old_live == 0 && t.pending == 0 {
                self.complete(p);
            }
            return;
        }
        let bounds = Bounds {
            desired: cfg.desired,
            min_healthy_percent: cfg.min_healthy_percent,
            max_percent: cfg.max_percent,
        };
        let olds: Vec<DeploymentState> = old.iter().map(|i| state(self, *i)).collect();
        let step = rollout::step(bounds, state(self, p), &olds);
        self.deps[p].desired_count = step.primary;
        for (i, n) in old.iter().zip(&step.old) {
            self.deps[*i].desired_count = *n;
        }
        if step.stuck {
            self.event(
                "was unable to stop or start tasks during a deployment because of the service \
                 deployment configuration. Update the minimumHealthyPercent or maximumPercent \
                 value and try again."
                    .into(),
            );
        }
        if step.completed {
            self.complete(p);
        }
    }

    fn blue_green(&mut self, cfg: &Config, p: usize) {
        let Some(stage) = self.deps[p].lifecycle_stage else {
            return self.rolling(cfg, p);
        };
        if let Hooks::Rollback(why) = &self.view.hooks
            && stage.is_hookable()
        {
            let why = why.clone();
            self.event(format!(
                "(deployment {}) lifecycle hook at {} failed: {why}",
                self.deps[p].id,
                stage_name(stage)
            ));
            return self.roll_back(cfg, p, "lifecycle hook", &why);
        }
        let blue = self.blue();
        // Other old deployments go; blue keeps its count until CLEAN_UP.
        for i in self.old() {
            if Some(i) != blue {
                self.deps[i].desired_count = 0;
            }
        }
        if let Some(b) = blue {
            self.deps[b].desired_count = if stage == LifecycleStage::CleanUp {
                0
            } else {
                cfg.desired
            };
        }
        if stage >= LifecycleStage::ScaleUp {
            self.deps[p].desired_count = cfg.desired;
        }
        let green = self.deps[p].id.clone();
        let done = match stage {
            LifecycleStage::ReconcileService => self
                .old()
                .into_iter()
                .filter(|i| Some(*i) != blue)
                .all(|i| self.tally(&self.deps[i].id).live == 0),
            LifecycleStage::ScaleUp => {
                let t = self.tally(&green);
                if let Some(at) = t.next_healthy_at {
                    self.wake(at);
                }
                t.healthy >= cfg.desired && t.live >= cfg.desired
            }
            // The shift ends once the data plane reports the listeners moved: blue keeps its
            // tasks (and traffic) until then.
            LifecycleStage::TestTrafficShift => {
                self.out.routes.push(Route {
                    role: ListenerRole::Test,
                    deployment: green,
                });
                self.view.routed.test
            }
            LifecycleStage::ProductionTrafficShift => {
                self.out.routes.push(Route {
                    role: ListenerRole::Production,
                    deployment: green,
                });
                self.view.routed.production
            }
            LifecycleStage::BakeTime => {
                let until = self.deps[p].stage_started_at.unwrap_or(self.now) + cfg.bake_secs;
                if self.now < until {
                    self.wake(until);
                }
                self.now >= until
            }
            LifecycleStage::CleanUp => blue.is_none_or(|b| self.tally(&self.deps[b].id).live == 0),
            _ => true,
        };
        let hooks_done = !stage.is_hookable() || self.view.hooks == Hooks::Done;
        if !(done && hooks_done) {
            return;
        }
        match next_stage(stage) {
            Some(next) => {
                let d = &mut self.deps[p];
                d.lifecycle_stage = Some(next);
                d.stage_started_at = Some(self.now);
                d.lifecycle_hook_details.clear();
                self.wake(self.now);
            }
            None => self.complete(p),
        }
    }

    fn retire(&mut self, cfg: &Config) {
        for i in self.old() {
            let d = &self.deps[i];
            if d.desired_count == 0 && self.tally(&d.id).live == 0 {
                self.deps[i].status = DeploymentStatus::Inactive;
            }
        }
        let inactive: Vec<usize> = (0..self.deps.len())
            .filter(|i| self.deps[*i].status == DeploymentStatus::Inactive)
            .collect();
        let keep_from = inactive.len().saturating_sub(cfg.history);
        for i in &inactive[..keep_from] {
            self.out.delete.push(self.deps[*i].id.clone());
        }
    }
}

/// Green's load balancers: each blue/green load balancer gets the target group blue does not use.
pub fn green_load_balancers(spec: &[LoadBalancer], blue: &Deployment) -> Vec<LoadBalancer> {
    spec.iter()
        .enumerate()
        .map(|(i, lb)| {
            let mut green = lb.clone();
            if let Some(alt) = lb
                .advanced_configuration
                .as_ref()
                .and_then(|a| a.alternate_target_group_arn.clone())
            {
                let blue_tg = blue
                    .load_balancers
                    .get(i)
                    .and_then(|b| b.target_group_arn.clone());
                if blue_tg == lb.target_group_arn {
                    green.target_group_arn = Some(alt);
                }
            }
            green
        })
        .collect()
}

/// ECS's name of a stage (`POST_SCALE_UP`).
pub fn stage_name(s: LifecycleStage) -> String {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Whether two versions of a deployment differ only in `updatedAt`.
pub fn same(a: &Deployment, b: &Deployment) -> bool {
    let mut a = a.clone();
    a.updated_at = b.updated_at;
    &a == b
}

/// Plans one reconcile of a service's deployments.
pub fn plan<R: rand::Rng + ?Sized>(view: &View<'_>, now: Timestamp, _rng: &mut R) -> Decision {
    let mut deps = view.deployments.to_vec();
    deps.sort_by(|a, b| {
        a.created_at
            .unwrap_or(0.0)
            .total_cmp(&b.created_at.unwrap_or(0.0))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut pl = Planner {
        view,
        now,
        deps,
        out: Decision::default(),
    };
    match view.config {
        None => {
            // Deleted: scale everything to zero, then forget it.
            for i in 0..pl.deps.len() {
                pl.deps[i].desired_count = 0;
                if pl.tally(&pl.deps[i].id).live == 0 {
                    pl.out.delete.push(pl.deps[i].id.clone());
                }
            }
        }
        Some(cfg) => {
            let p = match pl.primary() {
                Some(p) if pl.deps[p].spec_fingerprint.as_deref() == Some(&cfg.fingerprint) => p,
                _ => pl.start(cfg),
            };
            if pl.deps[p].rollout_state == RolloutState::InProgress {
                pl.breaker(cfg, p);
            }
            if view.stop
                && let Some(p) = pl.primary()
                && pl.deps[p].rollout_state == RolloutState::InProgress
            {
                let id = pl.deps[p].id.clone();
                pl.event(format!(
                    "(deployment {id}) was stopped by StopServiceDeployment."
                ));
                pl.roll_back(cfg, p, "stop", "stopped by StopServiceDeployment");
            }
            // After a trip the PRIMARY may be a rollback deployment, or blue again.
            if let Some(p) = pl.primary()
                && pl.deps[p].rollout_state != RolloutState::Failed
            {
                if pl.deps[p].lifecycle_stage.is_some() {
                    pl.blue_green(cfg, p);
                } else {
                    pl.rolling(cfg, p);
                }
            }
            for (id, t) in view.tallies {
                if let Some(at) = t.next_healthy_at
                    && pl.deps.iter().any(|d| &d.id == id)
                {
                    pl.wake(at);
                }
            }
            pl.retire(cfg);
        }
    }
    // Counts, and what changed.
    for d in &mut pl.deps {
        let t = view.tallies.get(&d.id).copied().unwrap_or_default();
        d.pending_count = t.pending;
        d.running_count = t.running;
    }
    let deleted = pl.out.delete.clone();
    for d in pl.deps {
        if deleted.contains(&d.id) {
            continue;
        }
        let before = view.deployments.iter().find(|o| o.id == d.id);
        if before.is_none_or(|b| !same(&d, b)) {
            let mut d = d;
            d.updated_at = Some(now);
            pl.out.put.push(d);
        }
    }
    pl.out
}

#[cfg(test)]
mod tests {
    use capstan_core::service::{HookTargetType, ThresholdConfiguration, ThresholdType};

    use super::*;

    fn cfg(d: u32, min: u32, max: u32) -> Config {
        Config {
            desired: d,
            min_healthy_percent: min,
            max_percent: max,
            strategy: DeploymentStrategy::Rolling,
            breaker: None,
            bake_secs: 0.0,
            fingerprint: "f1".into(),
            task_definition: "web:1".into(),
            capacity_provider_strategy: Vec::new(),
            load_balancers: Vec::new(),
            daemon: false,
            history: 10,
        }
    }

    fn tally(live: u32, healthy: u32, failures: u32) -> Tally {
        Tally {
            live,
            running: live,
            healthy,
            failures,
            ..Tally::default()
        }
    }

    fn run(
        c: Option<&Config>,
        deps: &[Deployment],
        tallies: &[(&str, Tally)],
        hooks: Hooks,
    ) -> Decision {
        let tallies: HashMap<String, Tally> =
            tallies.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        plan(
            &View {
                service: "web",
                config: c,
                deployments: deps,
                tallies: &tallies,
                hooks,
                stop: false,
                new_id: "ecs-svc/new",
                routed: Routed::default(),
            },
            1000.0,
            &mut rand::rng(),
        )
    }

    /// Applies a decision to a deployment list.
    fn apply(deps: &[Deployment], d: &Decision) -> Vec<Deployment> {
        let mut out: Vec<Deployment> = deps
            .iter()
            .filter(|x| !d.delete.contains(&x.id) && !d.put.iter().any(|p| p.id == x.id))
            .cloned()
            .collect();
        out.extend(d.put.iter().cloned());
        out
    }

    fn by_id<'a>(deps: &'a [Deployment], id: &str) -> &'a Deployment {
        deps.iter().find(|d| d.id == id).expect("deployment")
    }

    fn completed(id: &str, td: &str, fp: &str, desired: u32) -> Deployment {
        Deployment {
            id: id.into(),
            status: DeploymentStatus::Primary,
            task_definition: td.into(),
            desired_count: desired,
            created_at: Some(1.0),
            rollout_state: RolloutState::Completed,
            spec_fingerprint: Some(fp.into()),
            ..Deployment::default()
        }
    }

    #[test]
    fn a_new_service_gets_a_primary_at_full_count() {
        let c = cfg(3, 100, 200);
        let d = run(Some(&c), &[], &[], Hooks::Done);
        assert_eq!(d.put.len(), 1);
        let p = &d.put[0];
        assert_eq!(
            (p.status, p.desired_count, p.rollout_state),
            (DeploymentStatus::Primary, 3, RolloutState::InProgress)
        );
        assert_eq!(
            p.rollout_state_reason.as_deref(),
            Some("ECS deployment ecs-svc/new in progress.")
        );
        assert_eq!(p.spec_fingerprint.as_deref(), Some("f1"));
    }

    #[test]
    fn a_spec_change_rolls_within_the_bounds_and_completes() {
        let old = completed("a", "web:1", "f0", 4);
        let c = cfg(4, 50, 100);
        let d = run(
            Some(&c),
            std::slice::from_ref(&old),
            &[("a", tally(4, 4, 0))],
            Hooks::Done,
        );
        let deps = apply(&[old], &d);
        let (a, n) = (by_id(&deps, "a"), by_id(&deps, "ecs-svc/new"));
        assert_eq!((a.status, a.desired_count), (DeploymentStatus::Active, 2));
        assert_eq!((n.status, n.desired_count), (DeploymentStatus::Primary, 0));
        // Old tasks stopped: room for the new ones.
        let d = run(
            Some(&c),
            &deps,
            &[("a", tally(2, 2, 0)), ("ecs-svc/new", tally(0, 0, 0))],
            Hooks::Done,
        );
        let deps = apply(&deps, &d);
        assert_eq!(by_id(&deps, "ecs-svc/new").desired_count, 2);
        // New ones healthy, old gone: completed, old INACTIVE.
        let mut deps = deps;
        for x in &mut deps {
            x.desired_count = if x.id == "a" { 0 } else { 4 };
        }
        let d = run(
            Some(&c),
            &deps,
            &[("a", tally(0, 0, 0)), ("ecs-svc/new", tally(4, 4, 0))],
            Hooks::Done,
        );
        let deps = apply(&deps, &d);
        assert_eq!(
            by_id(&deps, "ecs-svc/new").rollout_state,
            RolloutState::Completed
        );
        assert_eq!(by_id(&deps, "a").status, DeploymentStatus::Inactive);
        assert!(
            d.events
                .iter()
                .any(|e| e == "service (web) has reached a steady state.")
        );
    }

    #[test]
    fn desired_count_alone_rescales_the_primary() {
        let p = completed("a", "web:1", "f1", 4);
        let d = run(
            Some(&cfg(6, 100, 200)),
            &[p],
            &[("a", tally(4, 4, 0))],
            Hooks::Done,
        );
        assert_eq!(d.put.len(), 1);
        assert_eq!((d.put[0].id.as_str(), d.put[0].desired_count), ("a", 6));
    }

    #[test]
    fn stuck_configuration_emits_the_ecs_event() {
        let old = completed("a", "web:1", "f0", 3);
        let d = run(
            Some(&cfg(3, 100, 100)),
            &[old],
            &[("a", tally(3, 3, 0))],
            Hooks::Done,
        );
        assert!(
            d.events
                .iter()
                .any(|e| e.contains("was unable to stop or start tasks"))
        );
    }

    fn breaker(rollback: bool) -> DeploymentCircuitBreaker {
        DeploymentCircuitBreaker {
            enable: true,
            rollback,
            reset_on_healthy_task: None,
            threshold_configuration: Some(ThresholdConfiguration {
                kind: ThresholdType::BoundedPercent,
                value: 50,
            }),
        }
    }

    fn failing(rollback: bool) -> (Config, Vec<Deployment>) {
        let mut c = cfg(2, 100, 200);
        c.breaker = Some(breaker(rollback));
        c.task_definition = "web:2".into();
        c.fingerprint = "f2".into();
        let mut old = completed("a", "web:1", "f1", 2);
        old.status = DeploymentStatus::Active;
        let new = Deployment {
            id: "b".into(),
            status: DeploymentStatus::Primary,
            task_definition: "web:2".into(),
            desired_count: 2,
            created_at: Some(2.0),
            spec_fingerprint: Some("f2".into()),
            ..Deployment::default()
        };
        (c, vec![old, new])
    }

    #[test]
    fn the_breaker_trips_at_the_threshold_and_rolls_back() {
        let (c, deps) = failing(true);
        // Threshold for D=2 is clamp(1, 3, 200) = 3: two failures are not enough.
        let d = run(
            Some(&c),
            &deps,
            &[("a", tally(2, 2, 0)), ("b", tally(0, 0, 2))],
            Hooks::Done,
        );
        let b = by_id(&d.put, "b");
        assert_eq!(b.rollout_state, RolloutState::InProgress);
        let cb = b.circuit_breaker.expect("breaker state");
        assert_eq!(
            (cb.status, cb.failure_count, cb.threshold),
            (BreakerStatus::Monitoring, 2, 3)
        );
        let d = run(
            Some(&c),
            &deps,
            &[("a", tally(2, 2, 0)), ("b", tally(0, 0, 3))],
            Hooks::Done,
        );
        let after = apply(&deps, &d);
        let b = by_id(&after, "b");
        // No tasks left: INACTIVE at once.
        assert_eq!(
            (b.rollout_state, b.status),
            (RolloutState::Failed, DeploymentStatus::Inactive)
        );
        assert_eq!(
            b.circuit_breaker.map(|s| s.status),
            Some(BreakerStatus::Triggered)
        );
        let r = by_id(&after, "ecs-svc/new");
        assert_eq!(
            (r.status, r.task_definition.as_str()),
            (DeploymentStatus::Primary, "web:1")
        );
        assert_eq!(
            r.rollout_state_reason.as_deref(),
            Some("ECS deployment circuit breaker: rolling back to deploymentId a.")
        );
        // The rollback answers the failed spec: no new deployment for it next time.
        assert_eq!(r.spec_fingerprint.as_deref(), Some("f2"));
        let d = run(
            Some(&c),
            &after,
            &[
                ("a", tally(2, 2, 0)),
                ("b", tally(0, 0, 3)),
                ("ecs-svc/new", tally(0, 0, 0)),
            ],
            Hooks::Done,
        );
        assert!(
            d.put
                .iter()
                .all(|x| x.id != "ecs-svc/new" || x.task_definition == "web:1")
        );
        assert!(
            !d.put
                .iter()
                .any(|x| x.created_at == Some(1000.0) && x.id != "ecs-svc/new")
        );
    }

    #[test]
    fn without_rollback_the_failed_deployment_stays_primary() {
        let (c, deps) = failing(false);
        let d = run(
            Some(&c),
            &deps,
            &[("a", tally(2, 2, 0)), ("b", tally(0, 0, 3))],
            Hooks::Done,
        );
        let after = apply(&deps, &d);
        assert_eq!(after.len(), 2);
        let b = by_id(&after, "b");
        assert_eq!(
            (b.rollout_state, b.status),
            (RolloutState::Failed, DeploymentStatus::Primary)
        );
        assert_eq!(
            b.rollout_state_reason.as_deref(),
            Some("ECS deployment circuit breaker: tasks failed to start.")
        );
    }

    #[test]
    fn a_stop_rolls_back_an_in_progress_deployment_without_a_breaker() {
        let (mut c, deps) = failing(false);
        c.breaker = None;
        let tallies: HashMap<String, Tally> = [("a", tally(2, 2, 0)), ("b", tally(1, 0, 0))]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        let view = |deps: &[Deployment], stop| {
            plan(
                &View {
                    service: "web",
                    config: Some(&c),
                    deployments: deps,
                    tallies: &tallies,
                    hooks: Hooks::Done,
                    stop,
                    new_id: "ecs-svc/new",
                    routed: Routed::default(),
                },
                1000.0,
                &mut rand::rng(),
            )
        };
        // Without the stop the deployment goes on.
        let d = view(&deps, false);
        assert!(d.put.iter().all(|x| x.id != "ecs-svc/new"));
        let after = apply(&deps, &view(&deps, true));
        let b = by_id(&after, "b");
        assert_eq!(
            (b.rollout_state, b.status),
            (RolloutState::Failed, DeploymentStatus::Active)
        );
        let r = by_id(&after, "ecs-svc/new");
        assert_eq!(
            (r.status, r.task_definition.as_str()),
            (DeploymentStatus::Primary, "web:1")
        );
        assert_eq!(
            r.rollout_state_reason.as_deref(),
            Some("ECS deployment stop: rolling back to deploymentId a.")
        );
        assert_eq!(
            r.rollback.as_ref().map(|x| x.from_deployment.as_str()),
            Some("b")
        );
        // A deployment that completed is not stopped.
        let mut finished = deps.clone();
        finished[1].rollout_state = RolloutState::Completed;
        let d = view(&finished, true);
        assert!(d.put.iter().all(|x| x.id != "ecs-svc/new"));
        assert!(
            d.events
                .iter()
                .all(|e| !e.contains("StopServiceDeployment"))
        );
    }

    fn blue_green() -> (Config, Vec<Deployment>) {
        let mut c = cfg(2, 100, 200);
        c.strategy = DeploymentStrategy::BlueGreen;
        c.fingerprint = "f2".into();
        c.task_definition = "web:2".into();
        c.bake_secs = 60.0;
        (c, vec![completed("blue", "web:1", "f1", 2)])
    }

    /// Runs blue/green steps until the stage stops moving; returns the deployments.
    fn walk(
        c: &Config,
        mut deps: Vec<Deployment>,
        green_healthy: u32,
        hooks: Hooks,
    ) -> (Vec<Deployment>, Vec<Route>) {
        let mut routes = Vec::new();
        for _ in 0..20 {
            let d = run(
                Some(c),
                &deps,
                &[
                    ("blue", tally(2, 2, 0)),
                    ("ecs-svc/new", tally(green_healthy, green_healthy, 0)),
                ],
                hooks.clone(),
            );
            routes.extend(d.routes.clone());
            let next = apply(&deps, &d);
            if d.put.is_empty() {
                return (next, routes);
            }
            deps = next;
        }
        (deps, routes)
    }

    #[test]
    fn blue_green_walks_the_stages_and_waits_for_green() {
        let (c, deps) = blue_green();
        let (deps, _) = walk(&c, deps, 0, Hooks::Done);
        let g = by_id(&deps, "ecs-svc/new");
        assert_eq!(g.lifecycle_stage, Some(LifecycleStage::ScaleUp));
        assert_eq!(g.desired_count, 2);
        assert_eq!(by_id(&deps, "blue").desired_count, 2);
        let (deps, routes) = walk(&c, deps, 2, Hooks::Done);
        // Bake time holds it (now is fixed in these tests).
        let g = by_id(&deps, "ecs-svc/new");
        assert_eq!(g.lifecycle_stage, Some(LifecycleStage::BakeTime));
        assert!(routes.contains(&Route {
            role: ListenerRole::Production,
            deployment: "ecs-svc/new".into()
        }));
        assert!(routes.contains(&Route {
            role: ListenerRole::Test,
            deployment: "ecs-svc/new".into()
        }));
    }

    #[test]
    fn a_traffic_shift_ends_only_once_the_data_plane_reports_it() {
        let (c, deps) = blue_green();
        let (mut deps, _) = walk(&c, deps, 2, Hooks::Done);
        let g = deps
            .iter()
            .position(|d| d.id == "ecs-svc/new")
            .expect("green");
        deps[g].lifecycle_stage = Some(LifecycleStage::ProductionTrafficShift);
        let tallies: HashMap<String, Tally> = [
            ("blue".to_string(), tally(2, 2, 0)),
            ("ecs-svc/new".to_string(), tally(2, 2, 0)),
        ]
        .into_iter()
        .collect();
        let step = |routed: Routed| {
            plan(
                &View {
                    service: "web",
                    config: Some(&c),
                    deployments: &deps,
                    tallies: &tallies,
                    hooks: Hooks::Done,
                    stop: false,
                    new_id: "ecs-svc/other",
                    routed,
                },
                1000.0,
                &mut rand::rng(),
            )
        };
        let waiting = step(Routed {
            test: true,
            production: false,
        });
        assert!(
            waiting
                .routes
                .iter()
                .any(|r| r.role == ListenerRole::Production)
        );
        assert!(
            !waiting.put.iter().any(|d| d.id == "ecs-svc/new"
                && d.lifecycle_stage != Some(LifecycleStage::ProductionTrafficShift)),
            "stays in PRODUCTION_TRAFFIC_SHIFT: {:?}",
            waiting.put
        );
        let moved = step(Routed::default());
        assert!(moved.put.iter().any(|d| d.id == "ecs-svc/new"
            && d.lifecycle_stage == Some(LifecycleStage::PostProductionTrafficShift)));
    }

    #[test]
    fn blue_green_hooks_hold_a_stage_and_rollback_returns_to_blue() {
        let (mut c, deps) = blue_green();
        c.bake_secs = 0.0;
        let (deps, _) = walk(&c, deps, 0, Hooks::Waiting);
        assert_eq!(
            by_id(&deps, "ecs-svc/new").lifecycle_stage,
            Some(LifecycleStage::PreScaleUp)
        );
        let (deps, routes) = walk(
            &c,
            deps,
            0,
            Hooks::Rollback("hook 0 answered FAILED".into()),
        );
        let g = by_id(&deps, "ecs-svc/new");
        let b = by_id(&deps, "blue");
        assert_eq!(
            (g.rollout_state, g.desired_count),
            (RolloutState::Failed, 0)
        );
        assert_eq!((b.status, b.desired_count), (DeploymentStatus::Primary, 2));
        assert_eq!(b.spec_fingerprint.as_deref(), Some("f2"));
        assert!(routes.contains(&Route {
            role: ListenerRole::Production,
            deployment: "blue".into()
        }));
        let _ = HookTargetType::Pause;
    }

    #[test]
    fn blue_green_cleans_up_blue_and_completes() {
        let (mut c, deps) = blue_green();
        c.bake_secs = 0.0;
        let (deps, _) = walk(&c, deps, 2, Hooks::Done);
        let g = by_id(&deps, "ecs-svc/new");
        assert_eq!(g.lifecycle_stage, Some(LifecycleStage::CleanUp));
        assert_eq!(by_id(&deps, "blue").desired_count, 0);
        let d = run(
            Some(&c),
            &deps,
            &[("blue", tally(0, 0, 0)), ("ecs-svc/new", tally(2, 2, 0))],
            Hooks::Done,
        );
        let deps = apply(&deps, &d);
        assert_eq!(
            by_id(&deps, "ecs-svc/new").rollout_state,
            RolloutState::Completed
        );
        assert_eq!(by_id(&deps, "blue").status, DeploymentStatus::Inactive);
    }

    #[test]
    fn a_deleted_service_scales_to_zero_then_forgets() {
        let p = completed("a", "web:1", "f1", 4);
        let d = run(
            None,
            std::slice::from_ref(&p),
            &[("a", tally(4, 4, 0))],
            Hooks::Done,
        );
        assert_eq!(d.put[0].desired_count, 0);
        assert!(d.delete.is_empty());
        let d = run(None, &[p], &[("a", tally(0, 0, 0))], Hooks::Done);
        assert_eq!(d.delete, vec!["a".to_string()]);
    }

    #[test]
    fn history_is_bounded() {
        let mut deps: Vec<Deployment> = (0..13)
            .map(|i| {
                let mut d = completed(&format!("d{i:02}"), "web:1", "f0", 0);
                d.status = DeploymentStatus::Inactive;
                d.created_at = Some(f64::from(i));
                d
            })
            .collect();
        deps.push(completed("p", "web:1", "f1", 1));
        let d = run(
            Some(&cfg(1, 100, 200)),
            &deps,
            &[("p", tally(1, 1, 0))],
            Hooks::Done,
        );
        assert_eq!(d.delete, vec!["d00", "d01", "d02"]);
    }
}
