//! The scaler in process against real etcd and a fake node-group provider over real gRPC: tasks
//! waiting in PROVISIONING for a provider size its group to what they need (M), set as a value,
//! and the provider's status document says so.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_core::capacity::CapacityProviderStatusDoc;
use capstan_core::task::{DesiredStatus, Task, TaskStatus};
use capstan_proto::nodegroup::v1 as pb;
use capstan_proto::nodegroup::v1::node_group_provider_server::{
    NodeGroupProvider, NodeGroupProviderServer,
};
use capstan_scaler::ScalerArgs;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use clap::Parser;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// A group of instances of 1024 CPU units and 1024 MiB that never launches any: it remembers
/// the desired capacities it was set to.
#[derive(Default, Clone)]
struct FakeGroup {
    desired: Arc<Mutex<Vec<u32>>>,
}

impl FakeGroup {
    fn sets(&self) -> Vec<u32> {
        self.desired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[tonic::async_trait]
impl NodeGroupProvider for FakeGroup {
    async fn describe_group(
        &self,
        r: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        Ok(Response::new(pb::DescribeGroupResponse {
            group_id: r.into_inner().group_id,
            min_size: 0,
            max_size: 10,
            desired_capacity: self.sets().last().copied().unwrap_or(0),
            instances: Vec::new(),
            instance_cpu: 1024,
            instance_memory: 1024,
            capacity_provider: "cp".into(),
        }))
    }

    async fn set_desired_capacity(
        &self,
        r: Request<pb::SetDesiredCapacityRequest>,
    ) -> Result<Response<pb::SetDesiredCapacityResponse>, Status> {
        let to = r.into_inner().desired_capacity;
        self.desired
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(to);
        Ok(Response::new(pb::SetDesiredCapacityResponse {
            desired_capacity: to,
        }))
    }

    async fn terminate_instances(
        &self,
        _r: Request<pb::TerminateInstancesRequest>,
    ) -> Result<Response<pb::TerminateInstancesResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn waiting(id: &str) -> Task {
    Task {
        task_arn: format!("arn:capstan:ecs:local:000000000000:task/default/{id}"),
        cluster_arn: "arn:capstan:ecs:local:000000000000:cluster/default".into(),
        task_definition_arn: "job:1".into(),
        last_status: TaskStatus::Provisioning,
        desired_status: DesiredStatus::Running,
        cpu: Some("512".into()),
        memory: Some("512".into()),
        capacity_provider_name: Some("cp".into()),
        group: Some("family:job".into()),
        version: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn provisioning_tasks_size_the_group_to_what_they_need() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let s = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("connect");
    let keys = s.keys().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("address"));
    let group = FakeGroup::default();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(NodeGroupProviderServer::new(group.clone()))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let cp = serde_json::json!({"name": "cp", "nodeGroupProvider": {"endpoint": endpoint,
        "groupId": "g", "managedScaling": {"status": "ENABLED", "targetCapacity": 100,
        "instanceWarmupPeriod": 1}}});
    s.put(&keys.capacity_provider("cp"), cp.to_string().into_bytes())
        .await
        .expect("capacity provider");
    // Three tasks of half an instance each: two instances.
    for id in ["t1", "t2", "t3"] {
        s.put_json(&keys.task("default", id), &waiting(id))
            .await
            .expect("task");
    }

    let endpoints = etcd.endpoints().join(",");
    let args = ScalerArgs::try_parse_from([
        "capstan-scaler",
        "--etcd-endpoints",
        &endpoints,
        "--election-ttl",
        "2",
        "--interval",
        "1s",
    ])
    .expect("args");
    let scaler = tokio::spawn(capstan_scaler::run(args));

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let doc = s
            .get_json::<CapacityProviderStatusDoc>(&keys.capacity_provider_status("cp"))
            .await
            .expect("read status")
            .map(|v| v.value);
        if let Some(d) = doc.filter(|d| d.desired_capacity == 2) {
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "the group was never sized: {:?}",
            group.sets()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    scaler.abort();
    assert_eq!(
        group.sets().first(),
        Some(&2),
        "set as a value, once: {:?}",
        group.sets()
    );
    assert_eq!((status.instances_needed, status.running_instances), (2, 0));
    assert_eq!(status.provisioning_tasks, 3);
    assert_eq!(status.capacity_provider_reservation, 200.0, "N = 0 < M");
}
