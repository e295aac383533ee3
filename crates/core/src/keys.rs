//! The etcd key layout of DESIGN.md, in one place. `docs/etcd-layout.md` documents every key.
//!
//! Every key lives under one prefix (default `/capstan`). Each key family has exactly one writer
//! role; see the table in the docs.

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/capstan";

/// A key family: one kind of object, with one writer role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// `clusters/<cluster>` (users).
    Clusters,
    /// `taskdefinitions/<family>/<revision>` (users).
    TaskDefinitions,
    /// `services/<cluster>/<service>` (users).
    Services,
    /// `deployments/<cluster>/<service>/<deploymentId>` (deployer).
    Deployments,
    /// `status/services/<cluster>/<service>` (deployer).
    ServiceStatus,
    /// `events/<cluster>/<service>/<eventId>` (any controller).
    Events,
    /// `tasks/<cluster>/<taskId>` (scheduler).
    Tasks,
    /// `containerinstances/<cluster>/<id>` (agents).
    ContainerInstances,
    /// `capacityproviders/<name>` (users).
    CapacityProviders,
    /// `status/capacityproviders/<name>` (scaler).
    CapacityProviderStatus,
    /// `targetgroups/<name>` (users).
    TargetGroups,
    /// `listeners/<name>` (users).
    Listeners,
    /// `status/targetgroups/<name>` (registrar).
    TargetGroupStatus,
    /// `requests/runtask/<cluster>/<requestId>` (users; consumed by the scheduler).
    RunTaskRequests,
    /// `requests/stoptask/<cluster>/<taskId>` (users; consumed by the scheduler).
    StopTaskRequests,
    /// `requests/continuedeployment/<cluster>/<service>/<deploymentId>` (users; consumed by the
    /// deployer).
    ContinueDeploymentRequests,
    /// `routes/<listener>` (deployer): blue/green's listener routing.
    ListenerRoutes,
    /// `status/runtask/<cluster>/<requestId>` (scheduler): what a RunTask request started.
    RunTaskResults,
    /// `elections/<controller>` (controllers).
    Elections,
    /// `taskprotection/<cluster>/<taskId>` (users): a task's scale-in protection, under an etcd
    /// lease that ends with it.
    TaskProtection,
    /// `accountsettings/<name>` (users): an ECS account setting Capstan honours.
    AccountSettings,
}

impl Family {
    /// Path segment(s) after the prefix.
    pub fn segment(self) -> &'static str {
        match self {
            Family::Clusters => "clusters",
            Family::TaskDefinitions => "taskdefinitions",
            Family::Services => "services",
            Family::Deployments => "deployments",
            Family::ServiceStatus => "status/services",
            Family::Events => "events",
            Family::Tasks => "tasks",
            Family::ContainerInstances => "containerinstances",
            Family::CapacityProviders => "capacityproviders",
            Family::CapacityProviderStatus => "status/capacityproviders",
            Family::TargetGroups => "targetgroups",
            Family::Listeners => "listeners",
            Family::TargetGroupStatus => "status/targetgroups",
            Family::RunTaskRequests => "requests/runtask",
            Family::StopTaskRequests => "requests/stoptask",
            Family::ContinueDeploymentRequests => "requests/continuedeployment",
            Family::RunTaskResults => "status/runtask",
            Family::Elections => "elections",
            Family::ListenerRoutes => "routes",
            Family::TaskProtection => "taskprotection",
            Family::AccountSettings => "accountsettings",
        }
    }

    /// How many name segments follow the family segment.
    pub fn arity(self) -> usize {
        match self {
            Family::Clusters
            | Family::CapacityProviders
            | Family::CapacityProviderStatus
            | Family::TargetGroups
            | Family::Listeners
            | Family::TargetGroupStatus
            | Family::ListenerRoutes
            | Family::Elections
            | Family::AccountSettings => 1,
            Family::TaskDefinitions
            | Family::Services
            | Family::ServiceStatus
            | Family::Tasks
            | Family::ContainerInstances
            | Family::RunTaskRequests
            | Family::StopTaskRequests
            | Family::RunTaskResults
            | Family::TaskProtection => 2,
            Family::Deployments | Family::Events | Family::ContinueDeploymentRequests => 3,
        }
    }

    /// Every family, longest segment first so that `status/…` matches before shorter ones.
    pub const ALL: [Family; 21] = [
        Family::ContinueDeploymentRequests,
        Family::AccountSettings,
        Family::TaskProtection,
        Family::RunTaskResults,
        Family::CapacityProviderStatus,
        Family::TargetGroupStatus,
        Family::ServiceStatus,
        Family::RunTaskRequests,
        Family::StopTaskRequests,
        Family::ContainerInstances,
        Family::CapacityProviders,
        Family::TaskDefinitions,
        Family::TargetGroups,
        Family::Deployments,
        Family::Listeners,
        Family::Elections,
        Family::ListenerRoutes,
        Family::Clusters,
        Family::Services,
        Family::Events,
        Family::Tasks,
    ];
}

/// A key split into its family and name segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedKey {
    /// Which family.
    pub family: Family,
    /// The name segments (cluster, service, id, …).
    pub parts: Vec<String>,
}

/// A service by cluster and name: the object behind its spec, deployments, status and events.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    /// Cluster.
    pub cluster: String,
    /// Service name.
    pub service: String,
}

impl ServiceKey {
    /// The service `service` of `cluster`.
    pub fn new(cluster: &str, service: &str) -> Self {
        Self {
            cluster: cluster.to_string(),
            service: service.to_string(),
        }
    }

    /// Its tasks' group, `service:<name>`.
    pub fn group(&self) -> String {
        crate::task::service_group(&self.service)
    }
}

/// An object of a cluster by id: a task, a container instance, a RunTask or StopTask request.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterKey {
    /// Cluster.
    pub cluster: String,
    /// Task id, instance id or request id.
    pub id: String,
}

/// An etcd role of one component: the key prefixes it may read and those it may also write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// Role and user name, e.g. `capstan-scheduler`.
    pub name: String,
    /// Prefixes it may read.
    pub read: Vec<String>,
    /// Prefixes it may read and write.
    pub write: Vec<String>,
}

/// Builds and parses keys under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Default for Keys {
    fn default() -> Self {
        Self::new(DEFAULT_PREFIX)
    }
}

impl Keys {
    /// Keys under `prefix` (a trailing `/` is ignored).
    pub fn new(prefix: &str) -> Self {
        let trimmed = prefix.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Self { prefix }
    }

    /// The prefix, without a trailing `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of one object: `<prefix>/<family>/<parts…>`.
    pub fn key(&self, family: Family, parts: &[&str]) -> String {
        debug_assert_eq!(parts.len(), family.arity(), "{family:?} key parts");
        let mut k = format!("{}/{}", self.prefix, family.segment());
        for p in parts {
            k.push('/');
            k.push_str(p);
        }
        k
    }

    /// A listing prefix: `<prefix>/<family>/<parts…>/` (parts may be fewer than the arity).
    pub fn list(&self, family: Family, parts: &[&str]) -> String {
        let mut k = format!("{}/{}/", self.prefix, family.segment());
        for p in parts {
            k.push_str(p);
            k.push('/');
        }
        k
    }

    /// Splits a key back into its family and parts; `None` if it is not a well-formed key.
    pub fn parse(&self, key: &str) -> Option<ParsedKey> {
        let rest = key.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        for family in Family::ALL {
            if let Some(tail) = rest
                .strip_prefix(family.segment())
                .and_then(|t| t.strip_prefix('/'))
            {
                let parts: Vec<String> = tail.split('/').map(str::to_string).collect();
                if parts.len() == family.arity() && parts.iter().all(|p| !p.is_empty()) {
                    return Some(ParsedKey { family, parts });
                }
                return None;
            }
        }
        None
    }

    /// The service a key belongs to: a service spec, a deployment, a service status, an event or
    /// a ContinueServiceDeployment request. `None` for any other key.
    pub fn service_of(&self, key: &str) -> Option<ServiceKey> {
        let p = self.parse(key)?;
        match p.family {
            Family::Services
            | Family::Deployments
            | Family::ServiceStatus
            | Family::Events
            | Family::ContinueDeploymentRequests => {
                let mut parts = p.parts.into_iter();
                Some(ServiceKey {
                    cluster: parts.next()?,
                    service: parts.next()?,
                })
            }
            _ => None,
        }
    }

    /// The cluster and id of a key of `family`, one of the `<cluster>/<id>` families (tasks,
    /// container instances, RunTask and StopTask requests and results). `None` for any other.
    pub fn cluster_key(&self, family: Family, key: &str) -> Option<ClusterKey> {
        let p = self.parse(key)?;
        if p.family != family || family.arity() != 2 || family == Family::TaskDefinitions {
            return None;
        }
        let mut parts = p.parts.into_iter();
        Some(ClusterKey {
            cluster: parts.next()?,
            id: parts.next()?,
        })
    }

    /// The name in a key of `family`, one of the one-name families (clusters, capacity
    /// providers, target groups, listeners and their status and routes). `None` for any other.
    pub fn name_of(&self, family: Family, key: &str) -> Option<String> {
        let p = self.parse(key)?;
        if p.family != family || family.arity() != 1 {
            return None;
        }
        p.parts.into_iter().next()
    }

    /// The cluster a key of any cluster-scoped family names.
    pub fn cluster_of(&self, key: &str) -> Option<String> {
        let p = self.parse(key)?;
        match p.family {
            Family::Clusters
            | Family::Services
            | Family::Deployments
            | Family::ServiceStatus
            | Family::Events
            | Family::Tasks
            | Family::ContainerInstances
            | Family::RunTaskRequests
            | Family::StopTaskRequests
            | Family::ContinueDeploymentRequests
            | Family::RunTaskResults => p.parts.into_iter().next(),
            _ => None,
        }
    }

    /// `clusters/<cluster>`.
    pub fn cluster(&self, cluster: &str) -> String {
        self.key(Family::Clusters, &[cluster])
    }

    /// `taskdefinitions/<family>/<revision>`.
    pub fn task_definition(&self, family: &str, revision: u32) -> String {
        self.key(Family::TaskDefinitions, &[family, &revision.to_string()])
    }

    /// `services/<cluster>/<service>`.
    pub fn service(&self, cluster: &str, service: &str) -> String {
        self.key(Family::Services, &[cluster, service])
    }

    /// `deployments/<cluster>/<service>/<deploymentId>`; `/` in ids is written as `-`.
    pub fn deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        self.key(
            Family::Deployments,
            &[cluster, service, &id.replace('/', "-")],
        )
    }

    /// `status/services/<cluster>/<service>`.
    pub fn service_status(&self, cluster: &str, service: &str) -> String {
        self.key(Family::ServiceStatus, &[cluster, service])
    }

    /// `events/<cluster>/<service>/<eventId>`.
    pub fn event(&self, cluster: &str, service: &str, id: &str) -> String {
        self.key(Family::Events, &[cluster, service, id])
    }

    /// `tasks/<cluster>/<taskId>`.
    pub fn task(&self, cluster: &str, task_id: &str) -> String {
        self.key(Family::Tasks, &[cluster, task_id])
    }

    /// `containerinstances/<cluster>/<id>`.
    pub fn container_instance(&self, cluster: &str, id: &str) -> String {
        self.key(Family::ContainerInstances, &[cluster, id])
    }

    /// The etcd role of each component (`capstan etcd setup-auth`): each may write only the key
    /// families it owns (the table in docs/etcd-layout.md), its election, and the events it
    /// records. Controllers and the API read the whole prefix (their caches watch it); an agent
    /// reads only container instances, the scheduler's election (to check fencing tokens) and
    /// secrets (sealed).
    pub fn roles(&self) -> Vec<Role> {
        let p = |s: &str| format!("{}/{s}", self.prefix);
        let all = vec![format!("{}/", self.prefix)];
        let role = |name: &str, read: Vec<String>, write: &[&str]| Role {
            name: format!("capstan-{name}"),
            read,
            write: write.iter().map(|w| p(w)).collect(),
        };
        vec![
            role(
                "api",
                all.clone(),
                &[
                    "clusters/",
                    "taskdefinitions/",
                    "services/",
                    "capacityproviders/",
                    "targetgroups/",
                    "listeners/",
                    "requests/",
                    "containerinstances/",
                    "iam/",
                    "audit/",
                    "secrets/",
                    "taskprotection/",
                    "accountsettings/",
                ],
            ),
            role(
                "scheduler",
                all.clone(),
                &[
                    "tasks/",
                    "status/runtask/",
                    "requests/runtask/",
                    "requests/stoptask/",
                    "events/",
                    "elections/scheduler",
                ],
            ),
            role(
                "deployer",
                all.clone(),
                &[
                    "deployments/",
                    "status/services/",
                    "routes/",
                    "requests/continuedeployment/",
                    "events/",
                    "elections/deployer",
                ],
            ),
            role(
                "registrar",
                all.clone(),
                &["status/targetgroups/", "events/", "elections/registrar"],
            ),
            role(
                "scaler",
                all,
                &[
                    "status/capacityproviders/",
                    "containerinstances/",
                    "events/",
                    "elections/scaler",
                ],
            ),
            role(
                "agent",
                // Secrets to start containers with: sealed, opened with the encryption key.
                vec![
                    p("containerinstances/"),
                    p("elections/scheduler"),
                    p("secrets/"),
                ],
                &["containerinstances/"],
            ),
        ]
    }

    /// `secrets/<name>`: a secret's sealed versions.
    pub fn secret(&self, name: &str) -> String {
        format!("{}/secrets/{name}", self.prefix)
    }

    /// `secrets/`: every secret.
    pub fn secrets(&self) -> String {
        format!("{}/secrets/", self.prefix)
    }

    /// `iam/`: policies, groups, principals' attachments and tokens (see `capstan-iam`).
    pub fn iam(&self) -> String {
        format!("{}/iam/", self.prefix)
    }

    /// `audit/`: the last day's audit records, each `audit/<epoch-ms>-<requestId>`.
    pub fn audit(&self) -> String {
        format!("{}/audit/", self.prefix)
    }

    /// `capacityproviders/<name>`.
    pub fn capacity_provider(&self, name: &str) -> String {
        self.key(Family::CapacityProviders, &[name])
    }

    /// `status/capacityproviders/<name>`.
    pub fn capacity_provider_status(&self, name: &str) -> String {
        self.key(Family::CapacityProviderStatus, &[name])
    }

    /// `targetgroups/<name>`.
    pub fn target_group(&self, name: &str) -> String {
        self.key(Family::TargetGroups, &[name])
    }

    /// `status/targetgroups/<name>`.
    pub fn target_group_status(&self, name: &str) -> String {
        self.key(Family::TargetGroupStatus, &[name])
    }

    /// `routes/<listener>`.
    pub fn listener_route(&self, listener: &str) -> String {
        self.key(Family::ListenerRoutes, &[listener])
    }

    /// `requests/continuedeployment/<cluster>/<service>/<deploymentId>`; `/` in ids is `-`.
    pub fn continue_deployment(&self, cluster: &str, service: &str, id: &str) -> String {
        self.key(
            Family::ContinueDeploymentRequests,
            &[cluster, service, &id.replace('/', "-")],
        )
    }

    /// `listeners/<name>`.
    pub fn listener(&self, name: &str) -> String {
        self.key(Family::Listeners, &[name])
    }

    /// `elections/<controller>`: the election name for a controller.
    pub fn election(&self, controller: &str) -> String {
        self.key(Family::Elections, &[controller])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/capstan/");
        assert_eq!(k.task("default", "abc"), "/capstan/tasks/default/abc");
        assert_eq!(
            k.service_status("default", "web"),
            "/capstan/status/services/default/web"
        );
        let p = k
            .parse("/capstan/status/services/default/web")
            .expect("parses");
        assert_eq!(p.family, Family::ServiceStatus);
        assert_eq!(p.parts, vec!["default", "web"]);
        let p = k
            .parse("/capstan/deployments/default/web/ecs-svc-1")
            .expect("parses");
        assert_eq!(p.family, Family::Deployments);
        assert!(k.parse("/capstan/tasks/default").is_none());
        assert!(k.parse("/other/tasks/default/x").is_none());
        assert_eq!(
            k.list(Family::Tasks, &["default"]),
            "/capstan/tasks/default/"
        );
    }

    #[test]
    fn every_family_parses_its_own_keys() {
        let k = Keys::default();
        for f in Family::ALL {
            let parts: Vec<String> = (0..f.arity()).map(|i| format!("p{i}")).collect();
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let key = k.key(f, &refs);
            let parsed = k.parse(&key).expect("parses");
            assert_eq!(parsed.family, f, "{key}");
            assert_eq!(parsed.parts, parts);
        }
    }

    #[test]
    fn typed_keys_name_their_object_and_refuse_other_families() {
        let k = Keys::default();
        let web = ServiceKey::new("default", "web");
        for key in [
            k.service("default", "web"),
            k.deployment("default", "web", "ecs-svc-1"),
            k.service_status("default", "web"),
            k.event("default", "web", "e1"),
            k.continue_deployment("default", "web", "ecs-svc-1"),
        ] {
            assert_eq!(k.service_of(&key), Some(web.clone()), "{key}");
            assert_eq!(k.cluster_of(&key).as_deref(), Some("default"), "{key}");
        }
        assert_eq!(k.service_of(&k.task("default", "t1")), None);
        assert_eq!(web.group(), "service:web");
        let task = k.task("default", "t1");
        assert_eq!(
            k.cluster_key(Family::Tasks, &task),
            Some(ClusterKey {
                cluster: "default".into(),
                id: "t1".into()
            })
        );
        assert_eq!(k.cluster_key(Family::ContainerInstances, &task), None);
        assert_eq!(
            k.cluster_key(Family::TaskDefinitions, &k.task_definition("web", 1)),
            None
        );
        assert_eq!(
            k.name_of(Family::TargetGroupStatus, &k.target_group_status("tg")),
            Some("tg".into())
        );
        assert_eq!(
            k.name_of(Family::TargetGroups, &k.target_group_status("tg")),
            None
        );
        assert_eq!(k.cluster_of(&k.target_group("tg")), None);
    }

    #[test]
    fn prefix_without_leading_slash_is_normalised() {
        assert_eq!(Keys::new("x").cluster("c"), "/x/clusters/c");
    }
}
