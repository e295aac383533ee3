//! etcd auth with a role per component (`capstan etcd setup-auth`): the API, the scheduler and
//! an agent do their work with only their own users, each is refused outside its prefixes, and
//! an expired etcd token is refreshed. Real etcd with auth on (tokens live 2 s), real binaries.

use std::path::Path;
use std::time::Duration;

use capstan_e2e::*;
use capstan_proto::api::v1 as pb;
use capstan_store::{Store, StoreConfig};
use capstan_testing::EtcdCluster;
use serde_json::json;

fn password(dir: &Path, user: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{user}.password")))
        .unwrap_or_else(|e| panic!("{user}'s password: {e}"))
}

async fn store_as(etcd: &[String], dir: &Path, user: &str) -> Store {
    let mut cfg = StoreConfig::new(etcd.to_vec(), "/capstan");
    cfg.credentials = Some((user.to_string(), password(dir, user)));
    Store::connect(&cfg).await.expect("connect with a role")
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn denied(r: Result<impl std::fmt::Debug, capstan_store::StoreError>) -> bool {
    match r {
        Err(e) => e.to_string().contains("permission denied"),
        Ok(_) => false,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_component_works_with_only_its_role_and_is_refused_outside_it() {
    let etcd = EtcdCluster::single_with(&["--auth-token-ttl", "2"])
        .await
        .expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let pw = dir.path().join("etcd");
    let setup = || {
        std::process::Command::new(binary("capstan"))
            .args(["etcd", "setup-auth", "--etcd-endpoints", &eps.join(",")])
            .arg("--out")
            .arg(&pw)
            .output()
            .expect("capstan runs")
    };
    let out = setup();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("capstan-scheduler"));
    let again = setup();
    assert!(!again.status.success(), "setup runs once");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("auth is on already"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    // Anonymous access is over.
    let anon = Store::connect(&StoreConfig::new(eps.clone(), "/capstan"))
        .await
        .expect("connect");
    assert!(anon.get("/capstan/clusters/default").await.is_err());

    // Each process gets its own etcd user, and only that.
    let flags = |user: &str, extra: &[&str]| -> Vec<String> {
        let pass = password(&pw, user);
        extra
            .iter()
            .map(|s| s.to_string())
            .chain([
                "--etcd-user".into(),
                user.into(),
                "--etcd-password".into(),
                pass,
            ])
            .collect()
    };
    let api_args = flags("capstan-api", &["--authorization", "none"]);
    let api = api_with(&eps, dir.path(), None, &refs(&api_args));
    let sched_args = flags("capstan-scheduler", &["--node-loss-grace", "2s"]);
    let _scheduler = controller("scheduler", &eps, dir.path(), "s1", &refs(&sched_args));
    // The agent reads its password from the file setup-auth wrote.
    let agent_file = pw.join("capstan-agent.password").display().to_string();
    let agent_args: Vec<String> = [
        "--etcd-user",
        "capstan-agent",
        "--etcd-password-file",
        &agent_file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _agent = agent_with(&eps, dir.path(), "a", &refs(&agent_args));

    // The work: register, RunTask, RUNNING — through the API's, scheduler's and agent's roles.
    let mut c = api_client(api.field("grpc")).await;
    c.register_task_definition(pb::RegisterTaskDefinitionRequest {
        task_definition_json: json!({"family": "job", "containerDefinitions": [{"name": "app",
            "image": "x", "memory": 32, "cpu": 64, "entryPoint": ["sh", "-c"],
            "command": ["exec sleep 600"]}]})
        .to_string(),
    })
    .await
    .expect("register with the api role");
    let admin_store = store_as(&eps, &pw, "capstan-api").await;
    eventually(Duration::from_secs(20), "the agent registered", || async {
        let l = admin_store
            .list("/capstan/containerinstances/default/")
            .await
            .ok()?;
        (!l.kvs.is_empty()).then_some(())
    })
    .await;
    // The agent's instance is in etcd before the scheduler's cache has it: until then RunTask
    // answers a failure and starts nothing, so it is asked again.
    let placed = eventually(Duration::from_secs(20), "RunTask places the task", || {
        let mut c = c.clone();
        async move {
            let run = c
                .run_task(pb::RunTaskRequest {
                    cluster: String::new(),
                    run_task_json: json!({"taskDefinition": "job:1"}).to_string(),
                })
                .await
                .expect("RunTask")
                .into_inner();
            run.items_json.into_iter().next()
        }
    })
    .await;
    let task: serde_json::Value = serde_json::from_str(&placed).expect("task");
    let arn = task["taskArn"].as_str().expect("arn").to_string();
    eventually(Duration::from_secs(30), "the task RUNNING", || {
        let mut c = c.clone();
        let arn = arn.clone();
        async move {
            let d = c
                .describe_tasks(pb::DescribeTasksRequest {
                    cluster: String::new(),
                    tasks: vec![arn],
                })
                .await
                .ok()?
                .into_inner();
            d.items_json
                .first()
                .filter(|t| t.contains("\"lastStatus\":\"RUNNING\""))
                .cloned()
        }
    })
    .await;

    // Outside their prefixes, each is refused.
    let agent = store_as(&eps, &pw, "capstan-agent").await;
    let registrar = store_as(&eps, &pw, "capstan-registrar").await;
    let scheduler = store_as(&eps, &pw, "capstan-scheduler").await;
    assert!(denied(
        agent
            .put("/capstan/services/default/evil", b"{}".to_vec())
            .await
    ));
    assert!(
        denied(agent.list("/capstan/tasks/").await),
        "an agent reads no task records"
    );
    assert!(denied(
        registrar
            .put("/capstan/tasks/default/evil", b"{}".to_vec())
            .await
    ));
    assert!(denied(
        scheduler
            .put("/capstan/iam/policies/evil", b"{}".to_vec())
            .await
    ));
    assert!(denied(
        scheduler
            .put("/capstan/elections/deployer/evil", b"x".to_vec())
            .await
    ));
    // And inside them, allowed.
    registrar
        .put("/capstan/status/targetgroups/probe", b"{}".to_vec())
        .await
        .expect("the registrar writes its status");
    // etcd tokens live 2 s here: the time is the condition. A call after expiry re-authenticates.
    tokio::time::sleep(Duration::from_secs(3)).await;
    registrar
        .get("/capstan/status/targetgroups/probe")
        .await
        .expect("an expired token is refreshed and the call retried");
    kill_task_processes(dir.path());
}
