//! What the scheduler's in-process tests share: etcd, fake agents registered as container
//! instances i-1…i-n, the task definition `job:1`, and a scheduler to start.

#![allow(dead_code)]

use capstan_core::TaskDefinition;
use capstan_core::instance::{ContainerInstance, Resource};
use capstan_scheduler::SchedulerArgs;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use capstan_testing::agent::{FakeAgents, serve_fake_agents};
use clap::Parser;
use tokio_util::sync::CancellationToken;

/// etcd, `n` fake agents registered as i-1…i-n, and `job:1` running `command`.
pub struct Setup {
    pub etcd: EtcdCluster,
    pub cancel: CancellationToken,
    pub fakes: FakeAgents,
    pub store: Store,
    pub td: TaskDefinition,
    pub instances: Vec<ContainerInstance>,
}

pub async fn setup(n: usize, command: &str) -> Setup {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let cancel = CancellationToken::new();
    let fakes = serve_fake_agents(n, &cancel).await.expect("fake agents");
    let store = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let keys = store.keys().clone();
    let mut td = capstan_testing::builders::task_definition("job", command);
    td.revision = Some(1);
    store
        .put_json(&keys.task_definition("job", 1), &td)
        .await
        .expect("task definition");
    let mut instances = vec![];
    for (i, endpoint) in fakes.endpoints.iter().enumerate() {
        let id = format!("i-{}", i + 1);
        let ci = ContainerInstance {
            container_instance_arn: format!(
                "arn:capstan:ecs:local:000000000000:container-instance/default/{id}"
            ),
            agent_endpoint: endpoint.clone(),
            registered_resources: vec![
                Resource::integer("CPU", 1024),
                Resource::integer("MEMORY", 1024),
            ],
            agent_connected: true,
            ..Default::default()
        };
        store
            .put_json(&keys.container_instance("default", &id), &ci)
            .await
            .expect("instance");
        instances.push(ci);
    }
    Setup {
        etcd,
        cancel,
        fakes,
        store,
        td,
        instances,
    }
}

impl Setup {
    /// The scheduler, in this process.
    pub fn scheduler(&self) -> tokio::task::JoinHandle<()> {
        let endpoints = self.etcd.endpoints().join(",");
        let args = SchedulerArgs::try_parse_from([
            "capstan-scheduler",
            "--etcd-endpoints",
            &endpoints,
            "--election-ttl",
            "2",
        ])
        .expect("args");
        tokio::spawn(async move {
            if let Err(e) = capstan_scheduler::run(args).await {
                panic!("scheduler: {e}");
            }
        })
    }
}
