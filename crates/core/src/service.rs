//! Services in the shape of ECS's `CreateService` / `UpdateService` input: the desired state.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::taskdef::TaskDefinitionRef;
use crate::validate::{Issue, Report, ValidationError, check_name, index, join};
use crate::{CapacityProviderStrategyItem, Tag, validate_capacity_provider_strategy};

/// Most placement strategies per service or task.
pub const MAX_PLACEMENT_STRATEGIES: usize = 5;
/// Most placement constraints per service or task (with the task definition's).
pub const MAX_PLACEMENT_CONSTRAINTS: usize = 10;
/// Most load balancers (target groups) per service.
pub const MAX_LOAD_BALANCERS: usize = 5;

/// How the scheduler keeps tasks: a count, or one per instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SchedulingStrategy {
    /// Keep `desiredCount` tasks.
    #[default]
    Replica,
    /// One task on every ACTIVE instance that satisfies the constraints.
    Daemon,
}

/// Lifecycle of a service.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServiceStatus {
    /// Running normally.
    #[default]
    Active,
    /// Deleted; its tasks are being stopped.
    Draining,
    /// Deleted and empty.
    Inactive,
}

/// A service: the desired state users write.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Service {
    /// Name, unique in its cluster.
    pub service_name: String,
    /// Cluster name; the key's cluster when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// `family:revision` or `family` (latest ACTIVE revision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_definition: Option<String>,
    /// Tasks to keep (REPLICA).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_count: Option<u32>,
    /// REPLICA (default) or DAEMON.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduling_strategy: Option<SchedulingStrategy>,
    /// Which controller deploys it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_controller: Option<DeploymentController>,
    /// Rolling / blue-green parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_configuration: Option<DeploymentConfiguration>,
    /// Target groups the tasks register with.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub load_balancers: Vec<LoadBalancer>,
    /// Binding placement rules.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_constraints: Vec<PlacementConstraint>,
    /// Best-effort placement preferences, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub placement_strategy: Vec<PlacementStrategy>,
    /// Capacity providers the tasks run on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub capacity_provider_strategy: Vec<CapacityProviderStrategyItem>,
    /// `EC2` or `EXTERNAL`; mutually exclusive with a capacity provider strategy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub launch_type: Option<String>,
    /// Seconds after start during which failed health checks are ignored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_check_grace_period_seconds: Option<u32>,
    /// UpdateService: start a new deployment even if nothing else changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force_new_deployment: Option<bool>,
    /// ACTIVE, DRAINING (deleted, stopping) or INACTIVE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<ServiceStatus>,
    /// Up to 50 tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,

    // ECS defines these; Capstan keeps them and warns that it does not act on them.
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_token: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform_version: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_registries: Option<Value>,
    /// Not acted on.
    #[serde(
        rename = "enableECSManagedTags",
        skip_serializing_if = "Option::is_none"
    )]
    pub enable_ecs_managed_tags: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub propagate_tags: Option<Value>,
    /// Its new tasks allow ECS Exec (`capstan task exec`); tasks already running keep what they
    /// were started with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_execute_command: Option<bool>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_connect_configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume_configurations: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vpc_lattice_configurations: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone_rebalancing: Option<Value>,
}

/// `deploymentController`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeploymentController {
    /// Only `ECS` is acted on.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Deployment strategy of the ECS controller.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DeploymentStrategy {
    /// Replace tasks within minimumHealthyPercent / maximumPercent.
    #[default]
    Rolling,
    /// Start green beside blue, shift traffic, bake, clean up.
    BlueGreen,
}

/// `deploymentConfiguration`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeploymentConfiguration {
    /// Lower bound on healthy tasks during a deployment, percent of desiredCount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_healthy_percent: Option<u32>,
    /// Upper bound on PENDING + RUNNING tasks during a deployment, percent of desiredCount.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub maximum_percent: Option<u32>,
    /// Failure detection with optional rollback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment_circuit_breaker: Option<DeploymentCircuitBreaker>,
    /// ROLLING (default) or BLUE_GREEN.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<DeploymentStrategy>,
    /// Blue/green: minutes both revisions run after the production shift.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bake_time_in_minutes: Option<u32>,
    /// Hooks run at lifecycle stages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lifecycle_hooks: Vec<LifecycleHook>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alarms: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub linear_configuration: Option<Value>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_configuration: Option<Value>,
}

/// `deploymentCircuitBreaker`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DeploymentCircuitBreaker {
    /// Whether failures are counted.
    pub enable: bool,
    /// Whether a tripped breaker rolls back to the last COMPLETED deployment.
    pub rollback: bool,
    /// Whether a healthy task resets the failure count (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reset_on_healthy_task: Option<bool>,
    /// How the threshold is computed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold_configuration: Option<ThresholdConfiguration>,
}

/// How the breaker's threshold is computed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ThresholdType {
    /// `clamp(ceil(D × value / 100), 3, 200)`.
    #[default]
    BoundedPercent,
    /// `value` failures.
    Count,
    /// `ceil(D × value / 100)`, at least 1.
    UnboundedPercent,
}

/// `thresholdConfiguration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ThresholdConfiguration {
    /// Type of threshold.
    #[serde(rename = "type")]
    pub kind: ThresholdType,
    /// Percent or count.
    pub value: u32,
}

impl DeploymentCircuitBreaker {
    /// Failures at which the breaker trips, for `desired` tasks (ECS §4.2).
    pub fn threshold(&self, desired: u32) -> u32 {
        let cfg = self
            .threshold_configuration
            .unwrap_or(ThresholdConfiguration {
                kind: ThresholdType::BoundedPercent,
                value: 50,
            });
        let pct = (u64::from(desired) * u64::from(cfg.value)).div_ceil(100);
        let pct = u32::try_from(pct).unwrap_or(u32::MAX);
        match cfg.kind {
            ThresholdType::BoundedPercent => pct.clamp(3, 200),
            ThresholdType::Count => cfg.value.max(1),
            ThresholdType::UnboundedPercent => pct.max(1),
        }
    }

    /// Whether a healthy task resets the count (ECS default: true).
    pub fn resets_on_healthy_task(&self) -> bool {
        self.reset_on_healthy_task.unwrap_or(true)
    }
}

/// Lifecycle stages of an ECS deployment, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LifecycleStage {
    /// Only when more than one revision is ACTIVE at start.
    ReconcileService,
    /// Before green is started.
    PreScaleUp,
    /// Green scaled to the full desired count.
    ScaleUp,
    /// After green is up.
    PostScaleUp,
    /// Test listener moves to green.
    TestTrafficShift,
    /// After test traffic moved.
    PostTestTrafficShift,
    /// Before production traffic moves.
    PreProductionTrafficShift,
    /// Production listener moves to green.
    ProductionTrafficShift,
    /// After production traffic moved.
    PostProductionTrafficShift,
    /// Both revisions run for bakeTimeInMinutes.
    BakeTime,
    /// Blue scaled to zero.
    CleanUp,
}

impl LifecycleStage {
    /// Whether hooks may run at this stage (all but SCALE_UP, BAKE_TIME, CLEAN_UP).
    pub fn is_hookable(self) -> bool {
        !matches!(
            self,
            LifecycleStage::ScaleUp | LifecycleStage::BakeTime | LifecycleStage::CleanUp
        )
    }
}

/// What a hook calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookTargetType {
    /// HTTP POST to `url`; the answer decides.
    Webhook,
    /// Wait for ContinueServiceDeployment.
    Pause,
    /// ECS's Lambda hooks; rejected by Capstan with a pointer to WEBHOOK.
    AwsLambda,
}

/// What a timed-out hook does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookTimeoutAction {
    /// Roll back (default).
    #[default]
    Rollback,
    /// Go on to the next stage.
    Continue,
}

/// `timeoutConfiguration` of a hook.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct HookTimeout {
    /// 1–20160 minutes, default 1440.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_in_minutes: Option<u32>,
    /// ROLLBACK (default) or CONTINUE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<HookTimeoutAction>,
}

/// A deployment lifecycle hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleHook {
    /// WEBHOOK or PAUSE.
    pub target_type: HookTargetType,
    /// Webhook URL (WEBHOOK only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Stages at which the hook runs.
    pub lifecycle_stages: Vec<LifecycleStage>,
    /// Passed through to the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_details: Option<Value>,
    /// Timeout and what to do on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_configuration: Option<HookTimeout>,
    /// ECS's Lambda target; not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_target_arn: Option<Value>,
    /// Not acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<Value>,
}

/// A service's target group binding (ECS `LoadBalancer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct LoadBalancer {
    /// Capstan target group name (an ELBv2-style ARN ending in `targetgroup/<name>/…` also works).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_group_arn: Option<String>,
    /// Container that receives the traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_name: Option<String>,
    /// Its container port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_port: Option<u32>,
    /// Blue/green: alternate target group and listeners.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advanced_configuration: Option<AdvancedConfiguration>,
    /// Classic load balancers; not supported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_balancer_name: Option<Value>,
}

/// Blue/green wiring of a load balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AdvancedConfiguration {
    /// Green's target group.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternate_target_group_arn: Option<String>,
    /// Listener carrying production traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub production_listener_rule: Option<String>,
    /// Listener carrying test traffic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_listener_rule: Option<String>,
    /// Not acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<Value>,
}

/// Name of a Capstan load-balancing object from a name or an ELBv2-style ARN.
pub fn lb_object_name(reference: &str) -> &str {
    for marker in ["targetgroup/", "listener/"] {
        if let Some((_, rest)) = reference.split_once(marker) {
            return rest.split('/').next().unwrap_or(rest);
        }
    }
    reference
}

/// Placement constraint type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementConstraintType {
    /// Every task of the group on a different instance.
    DistinctInstance,
    /// Instances matching a cluster query expression.
    MemberOf,
}

/// A placement constraint (binding).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementConstraint {
    /// distinctInstance or memberOf.
    #[serde(rename = "type")]
    pub kind: PlacementConstraintType,
    /// Cluster query language (memberOf only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expression: Option<String>,
}

/// Placement strategy type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PlacementStrategyType {
    /// Least remaining cpu or memory first.
    Binpack,
    /// Even distribution over a field.
    Spread,
    /// Random.
    Random,
}

/// A placement strategy (best effort).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlacementStrategy {
    /// binpack, spread or random.
    #[serde(rename = "type")]
    pub kind: PlacementStrategyType,
    /// binpack: `cpu`/`memory`; spread: `instanceId`, `host` or `attribute:<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl Service {
    /// REPLICA unless DAEMON is asked for.
    pub fn scheduling_strategy(&self) -> SchedulingStrategy {
        self.scheduling_strategy.unwrap_or_default()
    }

    /// ACTIVE unless set.
    pub fn status(&self) -> ServiceStatus {
        self.status.unwrap_or_default()
    }

    /// `minimumHealthyPercent` with ECS's default (100 REPLICA, 0 DAEMON).
    pub fn minimum_healthy_percent(&self) -> u32 {
        let default = match self.scheduling_strategy() {
            SchedulingStrategy::Replica => 100,
            SchedulingStrategy::Daemon => 0,
        };
        self.deployment_configuration
            .as_ref()
            .and_then(|d| d.minimum_healthy_percent)
            .unwrap_or(default)
    }

    /// `maximumPercent` with ECS's default (200 REPLICA, 100 DAEMON).
    pub fn maximum_percent(&self) -> u32 {
        let default = match self.scheduling_strategy() {
            SchedulingStrategy::Replica => 200,
            SchedulingStrategy::Daemon => 100,
        };
        self.deployment_configuration
            .as_ref()
            .and_then(|d| d.maximum_percent)
            .unwrap_or(default)
    }

    /// ROLLING unless BLUE_GREEN is asked for.
    pub fn deployment_strategy(&self) -> DeploymentStrategy {
        self.deployment_configuration
            .as_ref()
            .and_then(|d| d.strategy)
            .unwrap_or_default()
    }

    /// The ECS task group of its tasks: `service:<name>`.
    pub fn task_group(&self) -> String {
        crate::task::service_group(&self.service_name)
    }

    /// Validates against ECS's rules; returns warnings for kept-but-ignored fields.
    pub fn validate(&self) -> Result<Vec<Issue>, ValidationError> {
        let mut r = Report::default();
        check_name(&mut r, "serviceName", &self.service_name);
        if let Some(c) = &self.cluster {
            check_name(&mut r, "cluster", c);
        }
        match &self.task_definition {
            Some(td) => {
                if let Err(e) = TaskDefinitionRef::parse(td) {
                    for i in e.issues {
                        r.error(i.path, i.message);
                    }
                }
            }
            None => r.error("taskDefinition", "taskDefinition is required"),
        }
        let strategy = self.scheduling_strategy();
        match (strategy, self.desired_count) {
            (SchedulingStrategy::Replica, None) => r.error(
                "desiredCount",
                "desiredCount is required for REPLICA services",
            ),
            (SchedulingStrategy::Replica, Some(d)) => r.range("desiredCount", d, 0, 5000),
            (SchedulingStrategy::Daemon, _) => {}
        }
        if let Some(dc) = &self.deployment_controller
            && dc.kind != "ECS"
        {
            r.error(
                "deploymentController.type",
                format!(
                    "only the ECS deployment controller is supported, got {:?}",
                    dc.kind
                ),
            );
        }
        if let Some(cfg) = &self.deployment_configuration {
            self.validate_deployment_configuration(&mut r, cfg);
        }
        self.validate_placement(&mut r);
        self.validate_load_balancers(&mut r);
        if !self.capacity_provider_strategy.is_empty() {
            if self.launch_type.is_some() {
                r.error(
                    "launchType",
                    "Specify either Launch Type or Capacity Provider Strategy, but not both.",
                );
            }
            validate_capacity_provider_strategy(
                &mut r,
                "capacityProviderStrategy",
                &self.capacity_provider_strategy,
            );
        }
        if let Some(lt) = &self.launch_type
            && lt != "EC2"
            && lt != "EXTERNAL"
        {
            r.error(
                "launchType",
                format!("Capstan runs EC2 and EXTERNAL launch types, got {lt:?}"),
            );
        }
        if self.tags.len() > 50 {
            r.error("tags", "at most 50 tags are allowed");
        }
        r.ignored("clientToken", self.client_token.is_some());
        r.ignored("platformVersion", self.platform_version.is_some());
        r.ignored("role", self.role.is_some());
        r.ignored("networkConfiguration", self.network_configuration.is_some());
        r.ignored("serviceRegistries", self.service_registries.is_some());
        r.ignored(
            "enableECSManagedTags",
            self.enable_ecs_managed_tags.is_some(),
        );
        r.ignored("propagateTags", self.propagate_tags.is_some());
        r.ignored(
            "serviceConnectConfiguration",
            self.service_connect_configuration.is_some(),
        );
        r.ignored("volumeConfigurations", self.volume_configurations.is_some());
        r.ignored(
            "vpcLatticeConfigurations",
            self.vpc_lattice_configurations.is_some(),
        );
        r.ignored(
            "availabilityZoneRebalancing",
            self.availability_zone_rebalancing.is_some(),
        );
        r.finish()
    }

    fn validate_deployment_configuration(&self, r: &mut Report, cfg: &DeploymentConfiguration) {
        let base = "deploymentConfiguration";
        if let Some(min) = cfg.minimum_healthy_percent {
            r.range(&join(base, "minimumHealthyPercent"), min, 0, 100);
        }
        if let Some(max) = cfg.maximum_percent {
            match self.scheduling_strategy() {
                SchedulingStrategy::Replica => {
                    r.range(&join(base, "maximumPercent"), max, 100, 2000)
                }
                SchedulingStrategy::Daemon if max != 100 => r.error(
                    join(base, "maximumPercent"),
                    format!("DAEMON services need maximumPercent 100, got {max}"),
                ),
                SchedulingStrategy::Daemon => {}
            }
        }
        if let Some(cb) = &cfg.deployment_circuit_breaker
            && let Some(t) = cb.threshold_configuration
        {
            let p = join(
                base,
                "deploymentCircuitBreaker.thresholdConfiguration.value",
            );
            match t.kind {
                ThresholdType::Count => r.range(&p, t.value, 1, 10_000),
                _ => r.range(&p, t.value, 1, 100),
            }
        }
        if let Some(b) = cfg.bake_time_in_minutes {
            r.range(&join(base, "bakeTimeInMinutes"), b, 0, 1440);
        }
        for (i, hook) in cfg.lifecycle_hooks.iter().enumerate() {
            validate_hook(r, &index(base, "lifecycleHooks", i), hook);
        }
        if !cfg.lifecycle_hooks.is_empty() && cfg.strategy != Some(DeploymentStrategy::BlueGreen) {
            r.error(
                join(base, "lifecycleHooks"),
                "lifecycle hooks need strategy BLUE_GREEN",
            );
        }
        r.ignored(join(base, "alarms"), cfg.alarms.is_some());
        r.ignored(
            join(base, "linearConfiguration"),
            cfg.linear_configuration.is_some(),
        );
        r.ignored(
            join(base, "canaryConfiguration"),
            cfg.canary_configuration.is_some(),
        );
    }

    fn validate_placement(&self, r: &mut Report) {
        if self.placement_constraints.len() > MAX_PLACEMENT_CONSTRAINTS {
            r.error(
                "placementConstraints",
                format!("at most {MAX_PLACEMENT_CONSTRAINTS} constraints are allowed"),
            );
        }
        for (i, c) in self.placement_constraints.iter().enumerate() {
            validate_constraint(r, &index("", "placementConstraints", i), c);
        }
        if self.placement_strategy.len() > MAX_PLACEMENT_STRATEGIES {
            r.error(
                "placementStrategy",
                format!("at most {MAX_PLACEMENT_STRATEGIES} strategies are allowed"),
            );
        }
        for (i, s) in self.placement_strategy.iter().enumerate() {
            validate_strategy(r, &index("", "placementStrategy", i), s);
        }
    }

    fn validate_load_balancers(&self, r: &mut Report) {
        if self.load_balancers.len() > MAX_LOAD_BALANCERS {
            r.error(
                "loadBalancers",
                format!("at most {MAX_LOAD_BALANCERS} target groups per service"),
            );
        }
        for (i, lb) in self.load_balancers.iter().enumerate() {
            let p = index("", "loadBalancers", i);
            if lb.load_balancer_name.is_some() {
                r.error(
                    join(&p, "loadBalancerName"),
                    "Classic Load Balancers are not supported; name a target group in targetGroupArn",
                );
            }
            match &lb.target_group_arn {
                Some(tg) => check_name(r, &join(&p, "targetGroupArn"), lb_object_name(tg)),
                None => r.error(join(&p, "targetGroupArn"), "targetGroupArn is required"),
            }
            if lb.container_name.as_deref().is_none_or(str::is_empty) {
                r.error(join(&p, "containerName"), "containerName is required");
            }
            match lb.container_port {
                Some(port) => r.range(&join(&p, "containerPort"), port, 1, 65535),
                None => r.error(join(&p, "containerPort"), "containerPort is required"),
            }
            if let Some(adv) = &lb.advanced_configuration {
                let ap = join(&p, "advancedConfiguration");
                for (field, v) in [
                    ("alternateTargetGroupArn", &adv.alternate_target_group_arn),
                    ("productionListenerRule", &adv.production_listener_rule),
                ] {
                    match v {
                        Some(v) => check_name(r, &join(&ap, field), lb_object_name(v)),
                        None => r.error(join(&ap, field), format!("{field} is required")),
                    }
                }
                if let Some(t) = &adv.test_listener_rule {
                    check_name(r, &join(&ap, "testListenerRule"), lb_object_name(t));
                }
                r.ignored(join(&ap, "roleArn"), adv.role_arn.is_some());
            }
        }
    }
}

/// Checks one placement constraint.
pub fn validate_constraint(r: &mut Report, path: &str, c: &PlacementConstraint) {
    match (c.kind, &c.expression) {
        (PlacementConstraintType::DistinctInstance, Some(_)) => r.error(
            join(path, "expression"),
            "distinctInstance takes no expression",
        ),
        (PlacementConstraintType::MemberOf, Some(e)) if !e.trim().is_empty() && e.len() <= 2000 => {
        }
        (PlacementConstraintType::MemberOf, _) => r.error(
            join(path, "expression"),
            "memberOf needs an expression of 1-2000 characters",
        ),
        _ => {}
    }
}

/// Checks one placement strategy.
pub fn validate_strategy(r: &mut Report, path: &str, s: &PlacementStrategy) {
    let field = s.field.as_deref();
    match s.kind {
        PlacementStrategyType::Binpack => {
            if !matches!(field, Some("cpu") | Some("memory")) {
                r.error(join(path, "field"), "binpack needs field cpu or memory");
            }
        }
        PlacementStrategyType::Spread => match field {
            Some("instanceId") | Some("host") => {}
            Some(f) if f.strip_prefix("attribute:").is_some_and(|a| !a.is_empty()) => {}
            _ => r.error(
                join(path, "field"),
                "spread needs field instanceId, host or attribute:<name>",
            ),
        },
        PlacementStrategyType::Random => {
            if field.is_some() {
                r.error(join(path, "field"), "random takes no field");
            }
        }
    }
}

fn validate_hook(r: &mut Report, path: &str, hook: &LifecycleHook) {
    match hook.target_type {
        HookTargetType::AwsLambda => r.error(
            join(path, "targetType"),
            "AWS_LAMBDA hooks cannot run here; use WEBHOOK with a url, or PAUSE",
        ),
        HookTargetType::Webhook => match hook.url.as_deref() {
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => {}
            _ => r.error(join(path, "url"), "WEBHOOK hooks need an http(s) url"),
        },
        HookTargetType::Pause => {
            if hook.url.is_some() {
                r.error(join(path, "url"), "PAUSE hooks take no url");
            }
        }
    }
    if hook.lifecycle_stages.is_empty() {
        r.error(
            join(path, "lifecycleStages"),
            "name at least one lifecycle stage",
        );
    }
    for (i, stage) in hook.lifecycle_stages.iter().enumerate() {
        let sp = index(path, "lifecycleStages", i);
        if !stage.is_hookable() {
            r.error(&sp, "hooks cannot run at SCALE_UP, BAKE_TIME or CLEAN_UP");
        }
        if hook.target_type == HookTargetType::Pause
            && matches!(
                stage,
                LifecycleStage::TestTrafficShift | LifecycleStage::ProductionTrafficShift
            )
        {
            r.error(
                &sp,
                "PAUSE hooks cannot run at TEST_TRAFFIC_SHIFT or PRODUCTION_TRAFFIC_SHIFT",
            );
        }
    }
    if let Some(t) = hook.timeout_configuration
        && let Some(m) = t.timeout_in_minutes
    {
        r.range(
            &join(path, "timeoutConfiguration.timeoutInMinutes"),
            m,
            1,
            20160,
        );
    }
    r.ignored(join(path, "hookTargetArn"), hook.hook_target_arn.is_some());
    r.ignored(join(path, "roleArn"), hook.role_arn.is_some());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(kind: ThresholdType, value: u32) -> DeploymentCircuitBreaker {
        DeploymentCircuitBreaker {
            enable: true,
            rollback: true,
            reset_on_healthy_task: None,
            threshold_configuration: Some(ThresholdConfiguration { kind, value }),
        }
    }

    #[test]
    fn breaker_threshold_follows_ecs() {
        let default = DeploymentCircuitBreaker::default();
        assert_eq!(default.threshold(1), 3);
        assert_eq!(default.threshold(25), 13);
        assert_eq!(default.threshold(400), 200);
        assert_eq!(default.threshold(1000), 200);
        assert_eq!(breaker(ThresholdType::Count, 7).threshold(100), 7);
        assert_eq!(
            breaker(ThresholdType::UnboundedPercent, 50).threshold(1000),
            500
        );
        assert_eq!(breaker(ThresholdType::UnboundedPercent, 10).threshold(1), 1);
    }

    #[test]
    fn lb_names_come_from_arns() {
        assert_eq!(lb_object_name("web-blue"), "web-blue");
        assert_eq!(
            lb_object_name("arn:aws:elasticloadbalancing:r:1:targetgroup/web-blue/abc"),
            "web-blue"
        );
    }
}
