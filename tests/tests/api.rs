//! capstan-api end to end: every action against real etcd (and, where an action needs them, the
//! real scheduler, deployer and agents), happy paths and ECS's errors for the usual mistakes.

use std::collections::BTreeSet;
use std::time::Duration;

use capstan_e2e::*;
use capstan_proto::api::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};
use tonic::Code;

fn td(family: &str, cmd: &str) -> String {
    json!({
        "family": family,
        "containerDefinitions": [{"name": "app", "image": "x", "cpu": 64, "memory": 32,
            "entryPoint": ["sh", "-c"], "command": [cmd], "stopTimeout": 2}]
    })
    .to_string()
}

fn doc(s: &str) -> Value {
    serde_json::from_str(s).expect("JSON from the API")
}

#[tokio::test]
async fn task_definitions_get_consecutive_revisions_even_under_20_concurrent_registrations() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let api = api(&etcd.endpoints(), dir.path());
    let endpoint = api.field("grpc").to_string();
    let mut c = api_client(&endpoint).await;

    let r = c
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: td("web", "exec sleep 60"),
        })
        .await
        .expect("register")
        .into_inner();
    let first = doc(&r.task_definition_json);
    assert_eq!(first["revision"], 1);
    assert_eq!(first["status"], "ACTIVE");
    assert_eq!(
        first["taskDefinitionArn"],
        "arn:capstan:ecs:local:000000000000:task-definition/web:1"
    );

    let calls = (0..20).map(|_| {
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let mut c = api_client(&endpoint).await;
            let r = c
                .register_task_definition(pb::RegisterTaskDefinitionRequest {
                    task_definition_json: td("web", "exec sleep 60"),
                })
                .await
                .expect("register")
                .into_inner();
            doc(&r.task_definition_json)["revision"]
                .as_u64()
                .expect("revision")
        })
    });
    let mut revs = BTreeSet::new();
    for call in calls {
        revs.insert(call.await.expect("join"));
    }
    assert_eq!(
        revs,
        (2..=21).collect::<BTreeSet<u64>>(),
        "20 distinct consecutive revisions"
    );

    // Describe: a revision, and the family's latest ACTIVE one.
    let latest = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "web".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(doc(&latest.task_definition_json)["revision"], 21);
    c.deregister_task_definition(pb::DeregisterTaskDefinitionRequest {
        task_definition: "web:21".into(),
    })
    .await
    .expect("deregister");
    let latest = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "web".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(doc(&latest.task_definition_json)["revision"], 20);
    let gone = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "web:21".into(),
        })
        .await
        .expect("an INACTIVE revision is still described")
        .into_inner();
    assert_eq!(doc(&gone.task_definition_json)["status"], "INACTIVE");

    // List, paged, and families.
    let page1 = c
        .list_task_definitions(pb::ListTaskDefinitionsRequest {
            family_prefix: "web".into(),
            max_results: 15,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page1.arns.len(), 15);
    assert!(page1.arns[0].ends_with("task-definition/web:1"));
    let page2 = c
        .list_task_definitions(pb::ListTaskDefinitionsRequest {
            family_prefix: "web".into(),
            max_results: 15,
            next_token: page1.next_token,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(page2.arns.len(), 5, "20 ACTIVE revisions in all");
    assert!(page2.next_token.is_empty());
    let fams = c
        .list_task_definition_families(pb::ListTaskDefinitionFamiliesRequest::default())
        .await
        .expect("families")
        .into_inner();
    assert_eq!(fams.arns, ["web"]);

    // Mistakes.
    let e = c
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: json!({"family": "web", "containerDefinitions": [{"name": "app", "image": "x", "memory": 2}]}).to_string(),
        })
        .await
        .expect_err("memory below 6 MiB");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(exception(&e), "InvalidParameterException");
    assert!(
        e.message().contains("containerDefinitions[0].memory"),
        "{e:?}"
    );
    let e = c
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: "{\"family\": ".into(),
        })
        .await
        .expect_err("bad JSON");
    assert_eq!(exception(&e), "InvalidParameterException");
    let e = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "web:99".into(),
        })
        .await
        .expect_err("unknown revision");
    assert_eq!(exception(&e), "ClientException");
    assert!(e.message().contains("web:99"), "{e:?}");
}

#[tokio::test]
async fn clusters_services_and_ecs_errors_with_the_deployer_running() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let _a = agent(&ep, dir.path(), "zone-a");
    let _sched = scheduler(&ep, dir.path(), "s1");
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let mut c = api_client(api.field("grpc")).await;
    let s = store(&ep).await;
    registered(&s, "default", 1).await;

    // Clusters.
    let created = c
        .create_cluster(pb::CreateClusterRequest {
            cluster_json: json!({"clusterName": "prod"}).to_string(),
        })
        .await
        .expect("create")
        .into_inner();
    assert_eq!(doc(&created.cluster_json)["status"], "ACTIVE");
    let again = c
        .create_cluster(pb::CreateClusterRequest {
            cluster_json: json!({"clusterName": "prod"}).to_string(),
        })
        .await
        .expect("CreateCluster is idempotent");
    assert_eq!(doc(&again.into_inner().cluster_json)["clusterName"], "prod");
    let list = c
        .list_clusters(pb::ListClustersRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.arns.len(), 2, "default and prod: {:?}", list.arns);
    let d = c
        .describe_clusters(pb::DescribeClustersRequest {
            clusters: vec!["default".into(), "nope".into()],
            include: vec!["STATISTICS".into()],
        })
        .await
        .expect("describe")
        .into_inner();
    let default = doc(&d.items_json[0]);
    assert_eq!(default["registeredContainerInstancesCount"], 1);
    let stats: Vec<&str> = default["statistics"]
        .as_array()
        .expect("statistics with include STATISTICS")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert!(
        stats.contains(&"runningEC2TasksCount") && stats.len() == 8,
        "{stats:?}"
    );
    assert!(
        default.get("tags").is_none(),
        "no TAGS asked for: {default}"
    );
    assert_eq!(d.failures[0].reason, "MISSING");
    let e = c
        .describe_clusters(pb::DescribeClustersRequest {
            clusters: vec![],
            include: vec!["EVERYTHING".into()],
        })
        .await
        .expect_err("unknown include");
    assert_eq!(exception(&e), "InvalidParameterException");
    let e = c
        .create_service(pb::CreateServiceRequest {
            cluster: "nope".into(),
            service_json: json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1})
                .to_string(),
        })
        .await
        .expect_err("unknown cluster");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(exception(&e), "ClusterNotFoundException");

    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
        task_definition_json: td("web", "exec sleep 600"),
    })
    .await
    .expect("register");

    // CreateService and its mistakes.
    let svc = json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 2,
        "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200}});
    let e = c
        .create_service(pb::CreateServiceRequest {
            cluster: String::new(),
            service_json:
                json!({"serviceName": "web", "taskDefinition": "web:7", "desiredCount": 1})
                    .to_string(),
        })
        .await
        .expect_err("unknown revision");
    assert_eq!(exception(&e), "ClientException");
    let e = c
        .create_service(pb::CreateServiceRequest {
            cluster: String::new(),
            service_json: json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 1,
                "deploymentConfiguration": {"minimumHealthyPercent": 100, "maximumPercent": 50}})
            .to_string(),
        })
        .await
        .expect_err("invalid percent");
    assert_eq!(exception(&e), "InvalidParameterException");
    assert!(e.message().contains("maximumPercent"), "{e:?}");
    let r = c
        .create_service(pb::CreateServiceRequest {
            cluster: String::new(),
            service_json: svc.to_string(),
        })
        .await
        .expect("create")
        .into_inner();
    let created = doc(&r.service_json);
    assert_eq!(created["status"], "ACTIVE");
    assert_eq!(
        created["serviceArn"],
        "arn:capstan:ecs:local:000000000000:service/default/web"
    );
    let e = c
        .create_service(pb::CreateServiceRequest {
            cluster: String::new(),
            service_json: svc.to_string(),
        })
        .await
        .expect_err("already ACTIVE");
    assert_eq!(exception(&e), "InvalidParameterException");
    assert!(e.message().contains("not idempotent"), "{e:?}");

    // The deployer and scheduler bring it up; DescribeServices shows it.
    let endpoint = api.field("grpc").to_string();
    let ep2 = &endpoint;
    let described = eventually(Duration::from_secs(30), "2 running", || async move {
        let mut c = api_client(ep2).await;
        let r = c
            .describe_services(pb::DescribeServicesRequest {
                cluster: String::new(),
                services: vec!["web".into(), "ghost".into()],
            })
            .await
            .ok()?
            .into_inner();
        let d = doc(&r.items_json[0]);
        (d["runningCount"] == 2 && r.failures.len() == 1).then_some(d)
    })
    .await;
    assert_eq!(described["taskDefinition"], "web:1");
    assert_eq!(described["deployments"][0]["status"], "PRIMARY");
    assert!(
        described["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty()),
        "events are part of DescribeServices"
    );
    let list = c
        .list_services(pb::ListServicesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.arns.len(), 1);

    // WatchService: the current state first, then the deployment UpdateService starts.
    let mut watch = c
        .watch_service(pb::WatchServiceRequest {
            cluster: String::new(),
            service: "web".into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.expect("stream").expect("first");
    assert_eq!(first.kind, pb::service_update::Kind::Service as i32);
    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
        task_definition_json: td("web", "exec sleep 601"),
    })
    .await
    .expect("register 2");
    let r = c
        .update_service(pb::UpdateServiceRequest {
            cluster: String::new(),
            service: "web".into(),
            service_json: json!({"taskDefinition": "web:2"}).to_string(),
        })
        .await
        .expect("update")
        .into_inner();
    assert_eq!(doc(&r.service_json)["desiredCount"], 2, "other fields kept");
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let u = watch.message().await.expect("stream").expect("update");
            if u.kind == pb::service_update::Kind::Deployment as i32 {
                let d = doc(&u.json);
                if d["taskDefinition"] == "web:2" && d["rolloutState"] == "COMPLETED" {
                    return d;
                }
            }
        }
    })
    .await
    .expect("the watch shows the new deployment complete");
    let deps = c
        .list_service_deployments(pb::ListServiceDeploymentsRequest {
            cluster: String::new(),
            service: "web".into(),
            status: vec!["COMPLETED".into()],
        })
        .await
        .expect("deployments")
        .into_inner();
    assert!(
        deps.items_json.iter().any(|j| doc(j)["id"] == seen["id"]),
        "{deps:?}"
    );
    let e = c
        .update_service(pb::UpdateServiceRequest {
            cluster: String::new(),
            service: "web".into(),
            service_json: json!({"deploymentConfiguration": {"maximumPercent": 20}}).to_string(),
        })
        .await
        .expect_err("invalid percent");
    assert_eq!(exception(&e), "InvalidParameterException");
    let e = c
        .continue_service_deployment(pb::ContinueServiceDeploymentRequest {
            cluster: String::new(),
            service: "web".into(),
            ..Default::default()
        })
        .await
        .expect_err("nothing in progress");
    assert_eq!(exception(&e), "ServiceDeploymentNotFoundException");

    // A cluster with services cannot be deleted.
    let e = c
        .delete_cluster(pb::DeleteClusterRequest {
            cluster: "default".into(),
        })
        .await
        .expect_err("services");
    assert_eq!(exception(&e), "ClusterContainsServicesException");

    // DeleteService: refused above 0 without force; then DRAINING, then INACTIVE.
    let e = c
        .delete_service(pb::DeleteServiceRequest {
            cluster: String::new(),
            service: "web".into(),
            force: false,
        })
        .await
        .expect_err("scaled above 0");
    assert_eq!(exception(&e), "InvalidParameterException");
    let r = c
        .delete_service(pb::DeleteServiceRequest {
            cluster: String::new(),
            service: "web".into(),
            force: true,
        })
        .await
        .expect("delete")
        .into_inner();
    assert_eq!(doc(&r.service_json)["status"], "DRAINING");
    eventually(Duration::from_secs(30), "INACTIVE", || async move {
        let mut c = api_client(ep2).await;
        let r = c
            .describe_services(pb::DescribeServicesRequest {
                cluster: String::new(),
                services: vec!["web".into()],
            })
            .await
            .ok()?
            .into_inner();
        let d = doc(r.items_json.first()?);
        (d["status"] == "INACTIVE" && d["runningCount"] == 0).then_some(())
    })
    .await;
    let e = c
        .update_service(pb::UpdateServiceRequest {
            cluster: String::new(),
            service: "web".into(),
            service_json: json!({"desiredCount": 1}).to_string(),
        })
        .await
        .expect_err("INACTIVE");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(exception(&e), "ServiceNotActiveException");
    let e = c
        .update_service(pb::UpdateServiceRequest {
            cluster: String::new(),
            service: "never".into(),
            service_json: json!({"desiredCount": 1}).to_string(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(exception(&e), "ServiceNotFoundException");
    // An INACTIVE name can be used again.
    c.create_service(pb::CreateServiceRequest {
        cluster: String::new(),
        service_json: json!({"serviceName": "web", "taskDefinition": "web", "desiredCount": 0})
            .to_string(),
    })
    .await
    .expect("recreate");

    c.delete_cluster(pb::DeleteClusterRequest {
        cluster: "prod".into(),
    })
    .await
    .expect("an empty cluster is deleted");
    kill_task_processes(dir.path());
}

#[tokio::test]
async fn tasks_and_container_instances() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let _a = agent(&ep, dir.path(), "zone-a");
    let _b = agent(&ep, dir.path(), "zone-b");
    let _sched = scheduler(&ep, dir.path(), "s1");
    let mut c = api_client(api.field("grpc")).await;
    let s = store(&ep).await;
    registered(&s, "default", 2).await;

    // Instances: list with a query filter, describe, drain, activate.
    let all = c
        .list_container_instances(pb::ListContainerInstancesRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(all.arns.len(), 2);
    let in_b = c
        .list_container_instances(pb::ListContainerInstancesRequest {
            filter: "attribute:ecs.availability-zone == zone-b".into(),
            ..Default::default()
        })
        .await
        .expect("filter")
        .into_inner();
    assert_eq!(in_b.arns.len(), 1);
    let b_id = in_b.arns[0].rsplit('/').next().expect("id").to_string();
    let e = c
        .list_container_instances(pb::ListContainerInstancesRequest {
            filter: "attribute:zone ==".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad query");
    assert_eq!(exception(&e), "InvalidParameterException");
    let drained = c
        .update_container_instances_state(pb::UpdateContainerInstancesStateRequest {
            cluster: String::new(),
            container_instances: vec![b_id.clone(), "ghost".into()],
            status: "DRAINING".into(),
        })
        .await
        .expect("drain")
        .into_inner();
    assert_eq!(doc(&drained.items_json[0])["status"], "DRAINING");
    assert_eq!(drained.failures[0].reason, "MISSING");
    let draining = c
        .list_container_instances(pb::ListContainerInstancesRequest {
            status: "DRAINING".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(draining.arns, in_b.arns);
    c.update_container_instances_state(pb::UpdateContainerInstancesStateRequest {
        cluster: String::new(),
        container_instances: vec![b_id.clone()],
        status: "ACTIVE".into(),
    })
    .await
    .expect("activate");

    // RunTask through the scheduler.
    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
        task_definition_json: td("job", "exec sleep 600"),
    })
    .await
    .expect("register");
    let run = c
        .run_task(pb::RunTaskRequest {
            cluster: String::new(),
            run_task_json: json!({"taskDefinition": "job", "count": 2, "startedBy": "me"})
                .to_string(),
        })
        .await
        .expect("run")
        .into_inner();
    assert_eq!(run.items_json.len(), 2, "{run:?}");
    assert!(run.failures.is_empty());
    let t0 = doc(&run.items_json[0]);
    assert_eq!(t0["group"], "family:job");
    assert_eq!(t0["startedBy"], "me");
    let e = c
        .run_task(pb::RunTaskRequest {
            cluster: String::new(),
            run_task_json: json!({"taskDefinition": "job", "count": 11}).to_string(),
        })
        .await
        .expect_err("count above 10");
    assert_eq!(exception(&e), "InvalidParameterException");
    let e = c
        .run_task(pb::RunTaskRequest {
            cluster: String::new(),
            run_task_json: json!({"taskDefinition": "nojob"}).to_string(),
        })
        .await
        .expect_err("unknown family");
    assert_eq!(exception(&e), "ClientException");

    // StartTask on one named instance.
    let started = c
        .start_task(pb::StartTaskRequest {
            cluster: String::new(),
            task_definition: "job:1".into(),
            container_instances: vec![b_id.clone()],
            started_by: "pinned".into(),
            ..Default::default()
        })
        .await
        .expect("start")
        .into_inner();
    assert_eq!(started.items_json.len(), 1, "{started:?}");
    let pinned = doc(&started.items_json[0]);
    assert!(
        pinned["containerInstanceArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(&b_id)),
        "{pinned}"
    );

    // ListTasks with filters, DescribeTasks, StopTask.
    let mine = c
        .list_tasks(pb::ListTasksRequest {
            started_by: "me".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(mine.arns.len(), 2);
    let on_b = c
        .list_tasks(pb::ListTasksRequest {
            family: "job".into(),
            container_instance: b_id.clone(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(
        on_b.arns
            .iter()
            .any(|a| a == pinned["taskArn"].as_str().unwrap_or_default())
    );
    let described = c
        .describe_tasks(pb::DescribeTasksRequest {
            cluster: String::new(),
            tasks: vec![mine.arns[0].clone(), "ghost".into()],
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(described.items_json.len(), 1);
    assert_eq!(described.failures[0].reason, "MISSING");
    let id = mine.arns[0].rsplit('/').next().expect("id").to_string();
    let stopped = c
        .stop_task(pb::StopTaskRequest {
            cluster: String::new(),
            task: id.clone(),
            reason: "done with it".into(),
        })
        .await
        .expect("stop")
        .into_inner();
    assert_eq!(doc(&stopped.task_json)["desiredStatus"], "STOPPED");
    let endpoint = api.field("grpc").to_string();
    let (ep2, id2) = (&endpoint, &id);
    eventually(Duration::from_secs(20), "task STOPPED", || async move {
        let mut c = api_client(ep2).await;
        let r = c
            .describe_tasks(pb::DescribeTasksRequest {
                cluster: String::new(),
                tasks: vec![id2.clone()],
            })
            .await
            .ok()?
            .into_inner();
        let t = doc(r.items_json.first()?);
        (t["lastStatus"] == "STOPPED" && t["stoppedReason"] == "done with it").then_some(())
    })
    .await;
    let stopped_list = c
        .list_tasks(pb::ListTasksRequest {
            desired_status: "STOPPED".into(),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(stopped_list.arns.len(), 1);
    let e = c
        .stop_task(pb::StopTaskRequest {
            cluster: String::new(),
            task: "ghost".into(),
            reason: String::new(),
        })
        .await
        .expect_err("unknown task");
    assert_eq!(exception(&e), "InvalidParameterException");
    let e = c
        .delete_cluster(pb::DeleteClusterRequest {
            cluster: "default".into(),
        })
        .await
        .expect_err("instances registered");
    assert_eq!(exception(&e), "ClusterContainsContainerInstancesException");
    kill_task_processes(dir.path());
}

#[tokio::test]
async fn load_balancing_capacity_providers_reflection_and_health() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let endpoint = api.field("grpc").to_string();
    let mut c = api_client(&endpoint).await;

    // Capacity providers and PutClusterCapacityProviders.
    let cp = json!({"name": "spot", "nodeGroupProvider": {"endpoint": "http://127.0.0.1:9", "groupId": "g1",
        "managedScaling": {"status": "ENABLED", "targetCapacity": 90}}});
    c.create_capacity_provider(pb::CreateCapacityProviderRequest {
        capacity_provider_json: cp.to_string(),
    })
    .await
    .expect("create");
    let e = c
        .create_capacity_provider(pb::CreateCapacityProviderRequest {
            capacity_provider_json: cp.to_string(),
        })
        .await
        .expect_err("exists");
    assert_eq!(exception(&e), "ClientException");
    let e = c
        .create_capacity_provider(pb::CreateCapacityProviderRequest {
            capacity_provider_json:
                json!({"name": "x", "nodeGroupProvider": {"endpoint": "e", "groupId": "g",
                "managedScaling": {"targetCapacity": 150}}})
                .to_string(),
        })
        .await
        .expect_err("targetCapacity above 100");
    assert_eq!(exception(&e), "InvalidParameterException");
    let d = c
        .describe_capacity_providers(pb::DescribeByNameRequest::default())
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(d.items_json.len(), 1);

    // UpdateCapacityProvider: what it names changes, the node group stays; a bad value or an
    // attempt to move the node group is refused and changes nothing.
    let r = c
        .update_capacity_provider(pb::UpdateCapacityProviderRequest {
            capacity_provider: "spot".into(),
            node_group_provider_json:
                json!({"managedScaling": {"status": "ENABLED", "targetCapacity": 70},
                "managedDraining": "ENABLED"})
                .to_string(),
        })
        .await
        .expect("update")
        .into_inner();
    let u = doc(&r.json);
    assert_eq!(u["updateStatus"], "UPDATE_COMPLETE");
    assert_eq!(u["nodeGroupProvider"]["groupId"], "g1");
    assert_eq!(u["nodeGroupProvider"]["managedDraining"], "ENABLED");
    for (bad, why) in [
        (
            json!({"managedScaling": {"targetCapacity": 0}}),
            "targetCapacity 0",
        ),
        (json!({"groupId": "g2"}), "the node group is fixed"),
        (json!({}), "nothing to change"),
    ] {
        let e = c
            .update_capacity_provider(pb::UpdateCapacityProviderRequest {
                capacity_provider: "spot".into(),
                node_group_provider_json: bad.to_string(),
            })
            .await
            .expect_err(why);
        assert_eq!(exception(&e), "InvalidParameterException", "{why}: {e:?}");
    }
    let e = c
        .update_capacity_provider(pb::UpdateCapacityProviderRequest {
            capacity_provider: "nope".into(),
            node_group_provider_json: json!({"managedDraining": "ENABLED"}).to_string(),
        })
        .await
        .expect_err("unknown provider");
    assert_eq!(exception(&e), "InvalidParameterException");
    let d = c
        .describe_capacity_providers(pb::DescribeByNameRequest {
            names: vec!["spot".into()],
        })
        .await
        .expect("describe")
        .into_inner();
    let stored = doc(&d.items_json[0]);
    assert_eq!(
        stored["nodeGroupProvider"]["managedScaling"]["targetCapacity"],
        70
    );
    assert_eq!(stored["nodeGroupProvider"]["groupId"], "g1");

    let r = c
        .put_cluster_capacity_providers(pb::PutClusterCapacityProvidersRequest {
            cluster: "default".into(),
            capacity_providers: vec!["spot".into()],
            default_capacity_provider_strategy_json:
                json!([{"capacityProvider": "spot", "weight": 1}]).to_string(),
        })
        .await
        .expect("put")
        .into_inner();
    assert_eq!(doc(&r.cluster_json)["capacityProviders"], json!(["spot"]));
    let e = c
        .put_cluster_capacity_providers(pb::PutClusterCapacityProvidersRequest {
            cluster: "default".into(),
            capacity_providers: vec!["ondemand".into()],
            default_capacity_provider_strategy_json: String::new(),
        })
        .await
        .expect_err("unknown provider");
    assert_eq!(exception(&e), "InvalidParameterException");

    // DeleteCapacityProvider: refused while a cluster lists it, then it is gone.
    let e = c
        .delete_capacity_provider(pb::DeleteCapacityProviderRequest {
            capacity_provider: "spot".into(),
        })
        .await
        .expect_err("in use by default");
    assert_eq!(exception(&e), "ResourceInUseException");
    assert!(e.message().contains("default"), "{}", e.message());
    c.put_cluster_capacity_providers(pb::PutClusterCapacityProvidersRequest {
        cluster: "default".into(),
        capacity_providers: vec![],
        default_capacity_provider_strategy_json: "[]".into(),
    })
    .await
    .expect("remove spot from default");
    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
        task_definition_json: td("cp-user", "exec sleep 600"),
    })
    .await
    .expect("register");
    c.create_service(pb::CreateServiceRequest {
        cluster: String::new(),
        service_json:
            json!({"serviceName": "cp-user", "taskDefinition": "cp-user", "desiredCount": 0,
            "capacityProviderStrategy": [{"capacityProvider": "spot", "weight": 1}]})
            .to_string(),
    })
    .await
    .expect("a service whose strategy names spot");
    let e = c
        .delete_capacity_provider(pb::DeleteCapacityProviderRequest {
            capacity_provider: "spot".into(),
        })
        .await
        .expect_err("in use by a service");
    assert_eq!(exception(&e), "ResourceInUseException");
    assert!(e.message().contains("cp-user"), "{}", e.message());
    c.delete_service(pb::DeleteServiceRequest {
        cluster: String::new(),
        service: "cp-user".into(),
        force: true,
    })
    .await
    .expect("delete the service");
    let r = c
        .delete_capacity_provider(pb::DeleteCapacityProviderRequest {
            capacity_provider: "arn:aws:ecs:local:000000000000:capacity-provider/spot".into(),
        })
        .await
        .expect("delete by ARN")
        .into_inner();
    assert_eq!(doc(&r.json)["status"], "INACTIVE");
    let d = c
        .describe_capacity_providers(pb::DescribeByNameRequest {
            names: vec!["spot".into()],
        })
        .await
        .expect("describe")
        .into_inner();
    assert!(d.items_json.is_empty(), "{:?}", d.items_json);
    assert_eq!(d.failures[0].reason, "MISSING");
    let e = c
        .delete_capacity_provider(pb::DeleteCapacityProviderRequest {
            capacity_provider: "spot".into(),
        })
        .await
        .expect_err("already gone");
    assert_eq!(exception(&e), "InvalidParameterException");

    // Target groups and listeners.
    let tg = json!({"protocol": "HTTP", "healthCheck": {"path": "/health"}});
    c.create_target_group(pb::CreateTargetGroupRequest {
        name: "web-tg".into(),
        target_group_json: tg.to_string(),
    })
    .await
    .expect("create");
    c.create_target_group(pb::CreateTargetGroupRequest {
        name: "web-tg".into(),
        target_group_json: tg.to_string(),
    })
    .await
    .expect("the same settings again return it");
    let e = c
        .create_target_group(pb::CreateTargetGroupRequest {
            name: "web-tg".into(),
            target_group_json: json!({"protocol": "TCP"}).to_string(),
        })
        .await
        .expect_err("different settings");
    assert_eq!(exception(&e), "ResourceInUseException");
    let e = c
        .create_listener(pb::CreateListenerRequest {
            name: "front".into(),
            listener_json: json!({"port": 18080, "defaultActions": [{"type": "forward", "targetGroupArn": "nope"}]}).to_string(),
        })
        .await
        .expect_err("unknown target group");
    assert_eq!(e.code(), Code::NotFound);
    assert_eq!(exception(&e), "TargetGroupNotFoundException");
    c.create_listener(pb::CreateListenerRequest {
        name: "front".into(),
        listener_json: json!({"port": 18080, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]}).to_string(),
    })
    .await
    .expect("create");
    let e = c
        .create_listener(pb::CreateListenerRequest {
            name: "front2".into(),
            listener_json: json!({"port": 18080, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]}).to_string(),
        })
        .await
        .expect_err("port taken");
    assert_eq!(exception(&e), "DuplicateListenerException");
    let d = c
        .describe_listeners(pb::DescribeByNameRequest {
            names: vec!["front".into()],
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(doc(&d.items_json[0])["port"], 18080);
    let h = c
        .describe_target_health(pb::DescribeTargetHealthRequest {
            target_group: "web-tg".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert!(h.items_json.is_empty(), "no targets yet");
    let e = c
        .describe_target_groups(pb::DescribeByNameRequest {
            names: vec!["nope".into()],
        })
        .await
        .expect_err("unknown");
    assert_eq!(exception(&e), "TargetGroupNotFoundException");

    // The standard health service and server reflection answer any gRPC client.
    let channel = capstan_proto::tls::connect(&endpoint, None)
        .await
        .expect("connect");
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "capstan.v1.Capstan".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        status.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel);
    let req = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = refl
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .expect("reflection")
        .into_inner();
    let msg = resp.message().await.expect("stream").expect("answer");
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected reflection answer {msg:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"capstan.v1.Capstan".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn a_python_grpcio_client_generated_from_proto_uses_the_api() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let api = api(&etcd.endpoints(), dir.path());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("python3")
        .arg(root.join("tests/python/client_test.py"))
        .arg("--proto-dir")
        .arg(root.join("proto"))
        .arg("--out-dir")
        .arg(dir.path().join("gen"))
        .arg("--endpoint")
        .arg(api.field("grpc").trim_start_matches("http://"))
        .output()
        .expect("python3 runs");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python client failed:\n{text}");
    assert!(text.contains("python client: ok"), "{text}");
}

/// Every document in `examples/` is accepted by the rules the API and controllers apply.
#[test]
fn the_examples_validate() {
    use capstan_core::{Listener, Service, TargetGroup, TaskDefinition, accept};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for e in std::fs::read_dir(&dir).expect("examples/") {
        let path = e.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if !name.ends_with(".json") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let ok = if name.contains("taskdef") {
            accept::<TaskDefinition>(&bytes).map(|_| ())
        } else if name.contains("service") {
            accept::<Service>(&bytes).map(|_| ())
        } else if name.contains("targetgroup") {
            accept::<TargetGroup>(&bytes).map(|_| ())
        } else if name.contains("listener") {
            accept::<Listener>(&bytes).map(|_| ())
        } else {
            panic!("{name}: unknown kind of example");
        };
        assert!(ok.is_ok(), "{name}: {ok:?}");
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} examples");
}

#[tokio::test]
async fn continue_service_deployment_answers_a_paused_blue_green_deployment() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let _a = agent(&ep, dir.path(), "zone-a");
    let _sched = scheduler(&ep, dir.path(), "s1");
    let _dep = deployer(&ep, dir.path(), "d1", "1s");
    let endpoint = api.field("grpc").to_string();
    let mut c = api_client(&endpoint).await;
    let s = store(&ep).await;
    registered(&s, "default", 1).await;
    for cmd in ["exec sleep 600", "exec sleep 601"] {
        c.register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: td("web", cmd),
        })
        .await
        .expect("register");
    }
    c.create_service(pb::CreateServiceRequest {
        cluster: String::new(),
        service_json: json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 1,
            "deploymentConfiguration": {"strategy": "BLUE_GREEN", "bakeTimeInMinutes": 0,
                "lifecycleHooks": [{"targetType": "PAUSE", "lifecycleStages": ["POST_SCALE_UP"]}]}})
        .to_string(),
    })
    .await
    .expect("create");
    let ep2 = endpoint.as_str();
    let deployments = |wanted: &'static str| async move {
        let mut c = api_client(ep2).await;
        c.list_service_deployments(pb::ListServiceDeploymentsRequest {
            cluster: String::new(),
            service: "web".into(),
            status: vec![wanted.into()],
        })
        .await
        .ok()
        .map(|r| {
            r.into_inner()
                .items_json
                .iter()
                .map(|j| doc(j))
                .collect::<Vec<Value>>()
        })
        .unwrap_or_default()
    };
    // The first deployment pauses too: answer it through the API.
    let first = eventually(Duration::from_secs(30), "web:1 waits", || async move {
        deployments("IN_PROGRESS")
            .await
            .into_iter()
            .find(|d| d["lifecycleStage"] == "POST_SCALE_UP")
    })
    .await;
    let r = c
        .continue_service_deployment(pb::ContinueServiceDeploymentRequest {
            cluster: String::new(),
            service: "web".into(),
            ..Default::default()
        })
        .await
        .expect("continue")
        .into_inner();
    assert_eq!(r.deployment_id, first["id"].as_str().unwrap_or_default());
    eventually(Duration::from_secs(30), "web:1 COMPLETED", || async move {
        deployments("COMPLETED")
            .await
            .into_iter()
            .find(|d| d["taskDefinition"] == "web:1")
    })
    .await;
    // A mistake: an unknown action.
    c.update_service(pb::UpdateServiceRequest {
        cluster: String::new(),
        service: "web".into(),
        service_json: json!({"taskDefinition": "web:2"}).to_string(),
    })
    .await
    .expect("update");
    let second = eventually(Duration::from_secs(30), "web:2 waits", || async move {
        deployments("IN_PROGRESS")
            .await
            .into_iter()
            .find(|d| d["taskDefinition"] == "web:2" && d["lifecycleStage"] == "POST_SCALE_UP")
    })
    .await;
    let e = c
        .continue_service_deployment(pb::ContinueServiceDeploymentRequest {
            cluster: String::new(),
            service: "web".into(),
            action: "MAYBE".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad action");
    assert_eq!(exception(&e), "InvalidParameterException");
    // ROLLBACK by deployment id: web:2 fails and web:1 serves again.
    c.continue_service_deployment(pb::ContinueServiceDeploymentRequest {
        cluster: String::new(),
        service: "web".into(),
        deployment_id: second["id"].as_str().unwrap_or_default().into(),
        action: "ROLLBACK".into(),
        hook_id: String::new(),
    })
    .await
    .expect("rollback");
    eventually(Duration::from_secs(30), "web:2 FAILED", || async move {
        deployments("FAILED")
            .await
            .into_iter()
            .find(|d| d["taskDefinition"] == "web:2")
    })
    .await;
    kill_task_processes(dir.path());
}

#[tokio::test]
async fn with_tls_the_api_and_the_cli_need_a_client_certificate_from_the_ca() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = test_dir();
    let pki = capstan_testing::pki::Pki::new().expect("pki");
    let files = |who: &str| pki.files(who);
    // The pki's `client` certificate is capstan://user/client: the administrator here.
    let api = api_with(
        &etcd.endpoints(),
        dir.path(),
        Some(&files("server")),
        &["--admin", "capstan://user/client"],
    );
    let endpoint = api.field("grpc").to_string();
    assert!(endpoint.starts_with("https://"), "{endpoint}");
    // A client with a certificate from the cluster CA gets in.
    let channel = capstan_proto::tls::connect(&endpoint, Some(&files("client")))
        .await
        .expect("mTLS connect");
    let mut c = pb::capstan_client::CapstanClient::new(channel);
    c.list_clusters(pb::ListClustersRequest::default())
        .await
        .expect("a CA-signed client is served");
    // One from another CA is refused, and so is plain text.
    let rogue = match capstan_proto::tls::connect(&endpoint, Some(&files("rogue"))).await {
        Ok(ch) => pb::capstan_client::CapstanClient::new(ch)
            .list_clusters(pb::ListClustersRequest::default())
            .await
            .is_ok(),
        Err(_) => false,
    };
    assert!(!rogue, "a certificate from another CA must be refused");
    let plain =
        match capstan_proto::tls::connect(&endpoint.replace("https://", "http://"), None).await {
            Ok(ch) => pb::capstan_client::CapstanClient::new(ch)
                .list_clusters(pb::ListClustersRequest::default())
                .await
                .is_ok(),
            Err(_) => false,
        };
    assert!(!plain, "plain text must be refused");
    // The CLI with the same flags.
    let cli = |who: &str| {
        std::process::Command::new(binary("capstan"))
            .args(["--endpoint", &endpoint])
            .args(["--tls-ca", &pki.path("ca.pem")])
            .args(["--tls-cert", &pki.path(&format!("{who}.pem"))])
            .args(["--tls-key", &pki.path(&format!("{who}.key"))])
            .args(["cluster", "list"])
            .output()
            .expect("capstan runs")
    };
    let ok = cli("client");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("default"));
    assert!(
        !cli("rogue").status.success(),
        "the CLI with a rogue certificate is refused"
    );
}

#[tokio::test]
async fn task_protection_is_a_key_under_a_lease_that_ends_with_it() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let mut c = api_client(api.field("grpc")).await;
    let s = store(&ep).await;
    // Task records as the scheduler writes them: one of a service, one standalone.
    let arn = |id: &str| format!("arn:capstan:ecs:local:000000000000:task/default/{id}");
    for (id, group) in [("svc1", "service:web"), ("job1", "family:job")] {
        let task = json!({"taskArn": arn(id), "clusterArn": "arn:capstan:ecs:local:000000000000:cluster/default",
            "taskDefinitionArn": "web:1", "group": group, "lastStatus": "RUNNING",
            "desiredStatus": "RUNNING", "containers": []});
        s.put(
            &format!("/capstan/tasks/default/{id}"),
            task.to_string().into_bytes(),
        )
        .await
        .expect("put task");
    }
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let r = c
        .update_task_protection(pb::UpdateTaskProtectionRequest {
            cluster: String::new(),
            tasks: vec!["svc1".into(), "job1".into(), "ghost".into()],
            protection_enabled: true,
            expires_in_minutes: 1,
        })
        .await
        .expect("protect")
        .into_inner();
    assert_eq!(r.items_json.len(), 1, "{r:?}");
    let p = doc(&r.items_json[0]);
    assert_eq!(p["taskArn"], arn("svc1"));
    assert_eq!(p["protectionEnabled"], true);
    let expires = p["expirationDate"].as_f64().expect("expirationDate");
    assert!((before + 59.0..=before + 61.0).contains(&expires), "{p}");
    let reasons: Vec<&str> = r.failures.iter().map(|f| f.reason.as_str()).collect();
    assert_eq!(reasons, ["TASK_NOT_VALID", "MISSING"]);

    // The key is bound to a lease etcd ends after the 60 s asked for.
    let kv = s
        .get("/capstan/taskprotection/default/svc1")
        .await
        .expect("get")
        .expect("the protection key");
    assert_ne!(kv.lease, 0, "the protection key has a lease");
    let ttl = std::process::Command::new("etcdctl")
        .args([
            "--endpoints",
            &ep.join(","),
            "lease",
            "timetolive",
            &format!("{:x}", kv.lease),
        ])
        .output()
        .expect("etcdctl runs");
    let text = String::from_utf8_lossy(&ttl.stdout);
    assert!(text.contains("granted with TTL(60s)"), "{text}");

    let all = c
        .get_task_protection(pb::GetTaskProtectionRequest::default())
        .await
        .expect("get all")
        .into_inner();
    assert_eq!(all.items_json.len(), 1);
    assert_eq!(doc(&all.items_json[0])["taskArn"], arn("svc1"));

    for (tasks, minutes) in [
        (vec![], 10),
        (vec!["svc1".to_string(); 11], 10),
        (vec!["svc1".into()], 2881),
    ] {
        let e = c
            .update_task_protection(pb::UpdateTaskProtectionRequest {
                cluster: String::new(),
                tasks,
                protection_enabled: true,
                expires_in_minutes: minutes,
            })
            .await
            .expect_err("refused");
        assert_eq!(exception(&e), "InvalidParameterException", "{e:?}");
    }

    let off = c
        .update_task_protection(pb::UpdateTaskProtectionRequest {
            cluster: String::new(),
            tasks: vec!["svc1".into()],
            protection_enabled: false,
            expires_in_minutes: 0,
        })
        .await
        .expect("lift")
        .into_inner();
    assert_eq!(doc(&off.items_json[0])["protectionEnabled"], false);
    assert!(
        s.get("/capstan/taskprotection/default/svc1")
            .await
            .expect("get")
            .is_none(),
        "lifting deletes the key"
    );
    let got = c
        .get_task_protection(pb::GetTaskProtectionRequest {
            cluster: String::new(),
            tasks: vec![arn("svc1")],
        })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(
        doc(&got.items_json[0]),
        json!({"taskArn": arn("svc1"), "protectionEnabled": false})
    );

    // The CLI over the same calls: a failure is reported and makes the exit code 1.
    let ep = api.field("grpc");
    let (ok, out, err) = cli(ep, &["task", "protect", "svc1", "--minutes", "5"]);
    assert!(
        ok && out.contains("svc1") && out.contains("true"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(ep, &["task", "protection"]);
    assert!(ok && out.contains("svc1"), "{out}{err}");
    let (ok, _, err) = cli(ep, &["task", "protect", "job1"]);
    assert!(!ok && err.contains("TASK_NOT_VALID"), "{err}");
    let (ok, out, err) = cli(ep, &["task", "protect", "svc1", "--off"]);
    assert!(ok && out.contains("false"), "{out}{err}");
}

#[tokio::test]
async fn account_settings_set_the_default_log_mode_of_later_registrations() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let ep = etcd.endpoints();
    let dir = test_dir();
    let api = api(&ep, dir.path());
    let endpoint = api.field("grpc");
    let mut c = api_client(endpoint).await;
    let logged = |family: &str| {
        json!({"family": family, "containerDefinitions": [{"name": "app", "image": "x",
            "memory": 32, "logConfiguration": {"logDriver": "awslogs",
            "options": {"awslogs-group": "g"}}}]})
        .to_string()
    };
    let mode = |td: &str| {
        doc(td)["containerDefinitions"][0]["logConfiguration"]["options"]["mode"].clone()
    };

    let (ok, out, err) = cli(endpoint, &["account-setting", "list", "--effective"]);
    assert!(
        ok && out.contains("defaultLogDriverMode") && out.contains("non-blocking"),
        "{out}{err}"
    );
    let (ok, out, err) = cli(
        endpoint,
        &["account-setting", "put", "defaultLogDriverMode", "blocking"],
    );
    assert!(ok && out.contains("blocking"), "{out}{err}");
    let r = c
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: logged("a"),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(mode(&r.task_definition_json), "blocking");
    let listed = c
        .list_account_settings(pb::ListAccountSettingsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.items_json.len(), 1);
    assert_eq!(doc(&listed.items_json[0])["type"], "user");

    let (ok, out, err) = cli(
        endpoint,
        &["account-setting", "put", "containerInsights", "enabled"],
    );
    assert!(
        !ok && err.contains("InvalidParameterException"),
        "{out}{err}"
    );
    let (ok, _, err) = cli(
        endpoint,
        &["account-setting", "delete", "defaultLogDriverMode"],
    );
    assert!(ok, "{err}");
    let r = c
        .register_task_definition(pb::RegisterTaskDefinitionRequest {
            task_definition_json: logged("a"),
        })
        .await
        .expect("register")
        .into_inner();
    assert_eq!(
        mode(&r.task_definition_json),
        Value::Null,
        "later registrations keep no mode"
    );
    // The revision registered under the setting keeps its mode.
    let first = c
        .describe_task_definition(pb::DescribeTaskDefinitionRequest {
            task_definition: "a:1".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(mode(&first.task_definition_json), "blocking");
}
