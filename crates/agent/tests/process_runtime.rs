//! The real agent binary running real processes: serving, health checks, exits, stop timeouts,
//! re-adoption after a crash, fencing.

mod support;

use std::time::{Duration, Instant};

use capstan_proto::agent::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::json;
use support::*;

const HTTP: &str = "exec python3 -m http.server $PORT --bind 127.0.0.1";

fn web() -> serde_json::Value {
    let mut c = sh("web", HTTP);
    c["portMappings"] = json!([{"containerPort": 8000}]);
    c["healthCheck"] = json!({
        "command": ["CMD-SHELL", "python3 -c \"import os,urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/' % os.environ['PORT'], timeout=2)\""],
        "interval": 5, "timeout": 3, "retries": 2
    });
    c
}

#[tokio::test]
async fn a_python_http_server_task_serves_goes_healthy_and_reports_its_exit_code() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;

    let started = c
        .start_task(start_request("web-1", 1, web()))
        .await
        .expect("start")
        .into_inner();
    assert_eq!(started.task.expect("state").task_id, "web-1");
    let running = wait_for(
        &mut c,
        "web-1",
        Duration::from_secs(20),
        "RUNNING and HEALTHY",
        |t| status(t) == pb::TaskStatus::Running && health(t) == pb::HealthStatus::Healthy,
    )
    .await;
    let binding = &running.containers[0].network_bindings[0];
    assert_eq!(binding.container_port, 8000);
    let reply = http_get(binding.host_port).await.expect("http");
    assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");

    // Kill the process from outside: the task stops with the container's exit code.
    let pid: i32 = running.containers[0].runtime_id.parse().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    let stopped = wait_for(&mut c, "web-1", Duration::from_secs(10), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(stopped.containers[0].exit_code, Some(137));
    assert_eq!(
        stopped.stop_code,
        pb::StopCode::EssentialContainerExited as i32
    );
    assert_eq!(stopped.stopped_reason, "Essential container in task exited");
}

#[tokio::test]
async fn stop_honours_sigterm_and_kills_after_stop_timeout() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;

    // Ignores SIGTERM: killed once its 2 s stopTimeout passes.
    let mut stubborn = sh("app", "trap '' TERM; while true; do sleep 0.2; done");
    stubborn["stopTimeout"] = json!(2);
    c.start_task(start_request("stubborn", 1, stubborn))
        .await
        .expect("start");
    // Exits on SIGTERM at once.
    c.start_task(start_request("polite", 1, sh("app", "exec sleep 600")))
        .await
        .expect("start");
    for id in ["stubborn", "polite"] {
        wait_for(&mut c, id, Duration::from_secs(10), "RUNNING", |t| {
            status(t) == pb::TaskStatus::Running
        })
        .await;
    }

    let t0 = Instant::now();
    let req = |id: &str| pb::StopTaskRequest {
        task_id: id.into(),
        reason: "test stop".into(),
        timeout: None,
        fencing_token: 1,
        stop_code: pb::StopCode::UserInitiated as i32,
    };
    c.stop_task(req("stubborn")).await.expect("stop");
    c.stop_task(req("polite")).await.expect("stop");
    // A second StopTask is a no-op.
    c.stop_task(req("polite")).await.expect("stop again");
    let polite = wait_for(&mut c, "polite", Duration::from_secs(10), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(
        polite.containers[0].exit_code,
        Some(143),
        "SIGTERM honoured"
    );
    let stubborn = wait_for(
        &mut c,
        "stubborn",
        Duration::from_secs(15),
        "STOPPED",
        |t| status(t) == pb::TaskStatus::Stopped,
    )
    .await;
    let took = t0.elapsed();
    assert_eq!(
        stubborn.containers[0].exit_code,
        Some(137),
        "SIGKILL after the timeout"
    );
    assert!(
        took >= Duration::from_secs(2),
        "killed before stopTimeout: {took:?}"
    );
    assert_eq!(stubborn.stop_code, pb::StopCode::UserInitiated as i32);
    assert_eq!(stubborn.stopped_reason, "test stop");
}

#[tokio::test]
async fn a_restarted_agent_readopts_running_tasks_and_starts_nothing_twice() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("agent");
    let mut agent = AgentProc::start(&etcd.endpoints(), &state, &[]);
    let mut c = agent.client().await;
    c.start_task(start_request("keep", 1, web()))
        .await
        .expect("start");
    c.start_task(start_request("dies", 1, sh("app", "exec sleep 600")))
        .await
        .expect("start");
    let keep = wait_for(&mut c, "keep", Duration::from_secs(20), "HEALTHY", |t| {
        health(t) == pb::HealthStatus::Healthy
    })
    .await;
    let dies = wait_for(&mut c, "dies", Duration::from_secs(10), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let keep_pid: i32 = keep.containers[0].runtime_id.parse().expect("pid");
    let dies_pid: i32 = dies.containers[0].runtime_id.parse().expect("pid");

    agent.kill();
    // While the agent is down, one task's process dies.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dies_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    assert!(process_alive(keep_pid), "tasks outlive the agent");

    let agent = AgentProc::start(&etcd.endpoints(), &state, &[]);
    let mut c = agent.client().await;
    let dead = wait_for(&mut c, "dies", Duration::from_secs(10), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(
        dead.stop_code,
        pb::StopCode::EssentialContainerExited as i32
    );
    let tasks = c
        .list_tasks(pb::ListTasksRequest {})
        .await
        .expect("list")
        .into_inner()
        .tasks;
    let again = tasks
        .iter()
        .find(|t| t.task_id == "keep")
        .expect("keep re-adopted");
    assert_eq!(status(again), pb::TaskStatus::Running);
    assert_eq!(
        again.containers[0].runtime_id,
        keep.containers[0].runtime_id
    );

    // StartTask with the same id returns the adopted task; no second process appears.
    let same = c
        .start_task(start_request("keep", 1, web()))
        .await
        .expect("start again")
        .into_inner();
    assert_eq!(
        same.task.expect("state").containers[0].runtime_id,
        keep_pid.to_string()
    );
    let port = keep.containers[0].network_bindings[0].host_port;
    assert!(
        http_get(port)
            .await
            .expect("still serving")
            .starts_with("HTTP/1.0 200")
    );
    // Health checks run again for the adopted task, with its port.
    let healthy = wait_for(
        &mut c,
        "keep",
        Duration::from_secs(15),
        "HEALTHY after re-adoption",
        |t| health(t) == pb::HealthStatus::Healthy && t.version > again.version,
    )
    .await;
    assert_eq!(healthy.containers[0].runtime_id, keep_pid.to_string());
    let processes = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == b"CAPSTAN_TASK_ID=keep"))
                .unwrap_or(false)
        })
        .count();
    assert_eq!(processes, 1, "the task runs exactly once");

    c.stop_task(pb::StopTaskRequest {
        task_id: "keep".into(),
        fencing_token: 1,
        ..Default::default()
    })
    .await
    .expect("stop");
    wait_for(&mut c, "keep", Duration::from_secs(40), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(
        !process_alive(keep_pid),
        "an adopted process is stopped too"
    );
}

#[tokio::test]
async fn a_lower_fencing_token_is_refused_even_after_a_restart() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("agent");
    let mut agent = AgentProc::start(&etcd.endpoints(), &state, &[]);
    let mut c = agent.client().await;
    c.start_task(start_request("a", 10, sh("app", "exec sleep 600")))
        .await
        .expect("token 10");
    let err = c
        .start_task(start_request("b", 9, sh("app", "exec sleep 600")))
        .await
        .expect_err("token 9 after 10");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert!(
        err.message().contains("fencing token 9 is lower than 10"),
        "{}",
        err.message()
    );
    let err = c
        .stop_task(pb::StopTaskRequest {
            task_id: "a".into(),
            fencing_token: 3,
            ..Default::default()
        })
        .await
        .expect_err("stale stop");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    agent.kill();
    let agent = AgentProc::start(&etcd.endpoints(), &state, &[]);
    let mut c = agent.client().await;
    let err = c
        .start_task(start_request("b", 9, sh("app", "exec sleep 600")))
        .await
        .expect_err("the token survives a restart");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    let d = c
        .describe(pb::DescribeRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(d.fencing_token, 10);
    c.start_task(start_request("b", 11, sh("app", "exec sleep 600")))
        .await
        .expect("a newer leader");
    for id in ["a", "b"] {
        c.stop_task(pb::StopTaskRequest {
            task_id: id.into(),
            fencing_token: 11,
            ..Default::default()
        })
        .await
        .expect("stop");
    }
}

#[tokio::test]
async fn a_process_task_runs_as_the_unprivileged_task_user_or_its_own_user_never_root() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;
    let out = world_writable(dir.path());
    let nobody = nix::unistd::User::from_name("nobody")
        .expect("passwd")
        .expect("nobody exists");
    // `id -u` of a task with no `user`, of one that names uid 4242:4343, and of a health check.
    let record = |name: &str| out.join(name).display().to_string();
    let plain = sh(
        "app",
        &format!(
            "id -u > {0}.tmp; id -G >> {0}.tmp; mv {0}.tmp {0}; exec sleep 600",
            record("plain")
        ),
    );
    let mut named = sh(
        "app",
        &format!(
            "id -u > {0}.tmp; id -g >> {0}.tmp; mv {0}.tmp {0}; exec sleep 600",
            record("named")
        ),
    );
    named["user"] = json!("4242:4343");
    c.start_task(start_request("plain", 1, plain))
        .await
        .expect("start");
    c.start_task(start_request("named", 1, named))
        .await
        .expect("start");
    let read = |name: &str| {
        let path = out.join(name);
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if let Ok(s) = std::fs::read_to_string(&path) {
                    return s;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} never written",
                    path.display()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let plain = read("plain").await;
    let mut lines = plain.lines();
    if nix::unistd::geteuid().is_root() {
        assert_eq!(
            lines.next(),
            Some(nobody.uid.to_string().as_str()),
            "{plain}"
        );
        assert!(
            lines
                .next()
                .is_some_and(|g| !g.split(' ').any(|g| g == "0")),
            "no root group left: {plain}"
        );
        assert_eq!(read("named").await, "4242\n4343\n");
    } else {
        let me = nix::unistd::geteuid().to_string();
        assert_eq!(lines.next(), Some(me.as_str()), "{plain}");
    }
    for id in ["plain", "named"] {
        c.stop_task(pb::StopTaskRequest {
            task_id: id.into(),
            fencing_token: 1,
            ..Default::default()
        })
        .await
        .expect("stop");
    }
    // A user that does not exist fails the task with why.
    let mut ghost = sh("app", "exec sleep 600");
    ghost["user"] = json!("no-such-user-here");
    c.start_task(start_request("ghost", 1, ghost))
        .await
        .expect("start");
    let t = wait_for(&mut c, "ghost", Duration::from_secs(20), "STOPPED", |t| {
        t.last_status == pb::TaskStatus::Stopped as i32
    })
    .await;
    assert!(
        t.stopped_reason.contains("no-such-user-here"),
        "{}",
        t.stopped_reason
    );
}

#[tokio::test]
async fn a_forged_higher_fencing_token_is_refused_and_the_real_leader_keeps_being_served() {
    use capstan_store::election::{Candidate, campaign};
    use capstan_store::{Store, StoreConfig};
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(
        &etcd.endpoints(),
        &dir.path().join("agent"),
        &["--fencing-check", "election"],
    );
    let mut c = agent.client().await;
    let store = Store::connect(&StoreConfig::new(etcd.endpoints(), "/capstan"))
        .await
        .expect("store");
    let candidate = |id: &str| Candidate {
        election: "/capstan/elections/scheduler".into(),
        id: id.into(),
        ttl_secs: 5,
    };
    let cancel = tokio_util::sync::CancellationToken::new();
    let (mut leader, _h1) = campaign(store.clone(), candidate("real"), cancel.clone());
    let claim = leader.acquired().await.expect("leads");
    let token = claim.fencing_token();
    // A second candidate waits in line: its key exists, with a higher revision than the leader's.
    let (_standby, _h2) = campaign(store.clone(), candidate("standby"), cancel.clone());
    let standby_token = loop {
        let l = store
            .list("/capstan/elections/scheduler/")
            .await
            .expect("list");
        if let Some(r) = l.kvs.iter().map(|kv| kv.create_revision).max()
            && l.kvs.len() == 2
        {
            break u64::try_from(r).expect("revision");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.start_task(start_request("real-1", token, sh("app", "exec sleep 600")))
        .await
        .expect("the leader's token is believed");
    for forged in [u64::MAX, token + 1_000_000, standby_token] {
        let err = c
            .start_task(start_request("forged", forged, sh("app", "exec sleep 600")))
            .await
            .expect_err("a token that is not the leader's");
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{}",
            err.message()
        );
        assert!(
            err.message().contains("not the scheduler leader's"),
            "{}",
            err.message()
        );
        let err = c
            .stop_task(pb::StopTaskRequest {
                task_id: "real-1".into(),
                fencing_token: forged,
                ..Default::default()
            })
            .await
            .expect_err("a forged stop");
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
    }
    let d = c
        .describe(pb::DescribeRequest {})
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(
        d.fencing_token, token,
        "the forged tokens were not recorded"
    );
    c.start_task(start_request("real-2", token, sh("app", "exec sleep 600")))
        .await
        .expect("the real leader is still served");
    for id in ["real-1", "real-2"] {
        c.stop_task(pb::StopTaskRequest {
            task_id: id.into(),
            fencing_token: token,
            ..Default::default()
        })
        .await
        .expect("stop");
    }
    cancel.cancel();
}

#[tokio::test]
async fn depends_on_orders_container_starts() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;
    // Tasks run as the agent's unprivileged task user: the marker's directory must be theirs too.
    let shared = world_writable(dir.path());
    let marker = shared.join("init-done");
    let mut init = sh("init", &format!("sleep 0.5; touch {}", marker.display()));
    init["essential"] = json!(false);
    let mut app = sh(
        "app",
        &format!("test -f {} && exec sleep 600", marker.display()),
    );
    app["dependsOn"] = json!([{"containerName": "init", "condition": "SUCCESS"}]);
    let td = json!({"family": "dep", "containerDefinitions": [app, init]});
    let req = pb::StartTaskRequest {
        task_id: "dep".into(),
        task_definition_json: td.to_string(),
        fencing_token: 1,
        ..Default::default()
    };
    c.start_task(req).await.expect("start");
    let t = wait_for(&mut c, "dep", Duration::from_secs(10), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let init = t
        .containers
        .iter()
        .find(|c| c.name == "init")
        .expect("init");
    assert_eq!(init.exit_code, Some(0));
    let app = t.containers.iter().find(|c| c.name == "app").expect("app");
    assert_eq!(
        app.last_status,
        pb::TaskStatus::Running as i32,
        "app started after init succeeded"
    );

    // A failed SUCCESS dependency fails the task without starting the dependent.
    let mut bad = sh("init", "exit 3");
    bad["essential"] = json!(false);
    let mut app = sh("app", "exec sleep 600");
    app["dependsOn"] = json!([{"containerName": "init", "condition": "SUCCESS"}]);
    let td = json!({"family": "dep", "containerDefinitions": [app, bad]});
    c.start_task(pb::StartTaskRequest {
        task_id: "dep-bad".into(),
        task_definition_json: td.to_string(),
        fencing_token: 1,
        ..Default::default()
    })
    .await
    .expect("start");
    let t = wait_for(&mut c, "dep-bad", Duration::from_secs(10), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(t.stop_code, pb::StopCode::TaskFailedToStart as i32);
    assert!(
        t.stopped_reason.contains("exited with code 3"),
        "{}",
        t.stopped_reason
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_fails_the_task_with_its_reason() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;
    let container =
        json!({"name": "app", "image": "x", "memory": 64, "command": ["/nonexistent/binary"]});
    c.start_task(start_request("nope", 1, container))
        .await
        .expect("accepted");
    let t = wait_for(&mut c, "nope", Duration::from_secs(10), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(t.stop_code, pb::StopCode::TaskFailedToStart as i32);
    assert!(
        t.stopped_reason.contains("/nonexistent/binary"),
        "{}",
        t.stopped_reason
    );

    // An invalid task definition is refused up front, naming the field.
    let mut req = start_request(
        "bad",
        1,
        json!({"name": "app", "image": "x", "memory": 64, "bogus": 1}),
    );
    req.task_id = "bad".into();
    let err = c.start_task(req).await.expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("containerDefinitions[0].bogus"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn start_tasks_starts_each_task_on_its_own_and_answers_in_order() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;
    let reqs = vec![
        start_request("batch-1", 5, sh("app", "exec sleep 600")),
        start_request("bad id!", 5, sh("app", "exec sleep 600")),
        start_request("batch-2", 5, sh("app", "exec sleep 600")),
    ];
    let results = c
        .start_tasks(pb::StartTasksRequest { tasks: reqs })
        .await
        .expect("StartTasks")
        .into_inner()
        .results;
    let ids: Vec<&str> = results.iter().map(|r| r.task_id.as_str()).collect();
    assert_eq!(ids, ["batch-1", "bad id!", "batch-2"]);
    assert_eq!(results[0].code, 0);
    assert_eq!(results[2].code, 0);
    assert_eq!(results[1].code, tonic::Code::InvalidArgument as i32);
    assert!(results[1].task.is_none() && results[1].message.contains("task id"));
    for id in ["batch-1", "batch-2"] {
        wait_for(&mut c, id, Duration::from_secs(20), "RUNNING", |t| {
            status(t) == pb::TaskStatus::Running
        })
        .await;
    }
    // Idempotent like StartTask; a stale token is refused per task.
    let again = c
        .start_tasks(pb::StartTasksRequest {
            tasks: vec![
                start_request("batch-1", 5, sh("app", "exec sleep 600")),
                start_request("batch-3", 4, sh("app", "exec sleep 600")),
            ],
        })
        .await
        .expect("StartTasks again")
        .into_inner()
        .results;
    assert_eq!(again[0].code, 0);
    assert_eq!(
        again[0].task.as_ref().map(status),
        Some(pb::TaskStatus::Running)
    );
    assert_eq!(again[1].code, tonic::Code::FailedPrecondition as i32);
    let listed = c
        .list_tasks(pb::ListTasksRequest {})
        .await
        .expect("list")
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 2, "only batch-1 and batch-2 run");
    for id in ["batch-1", "batch-2"] {
        c.stop_task(pb::StopTaskRequest {
            task_id: id.into(),
            fencing_token: 5,
            ..Default::default()
        })
        .await
        .expect("stop");
    }
}

#[tokio::test]
async fn process_tasks_find_their_volumes_directories_in_the_environment() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let host = world_writable(dir.path());
    let allow = host.display().to_string();
    let state = dir.path().join("agent");
    let agent = AgentProc::start(&etcd.endpoints(), &state, &["--allow-host-path", &allow]);
    let mut c = agent.client().await;
    let mut app = sh(
        "app",
        "echo bound > $CAPSTAN_VOLUME_DATA/out && echo scratch > $CAPSTAN_VOLUME_MY_SCRATCH/s && exec sleep 600",
    );
    app["mountPoints"] = json!([
        {"sourceVolume": "data", "containerPath": "/data"},
        {"sourceVolume": "my-scratch", "containerPath": "/scratch"},
    ]);
    let mut req = start_request("vols", 1, app);
    let mut td: serde_json::Value = serde_json::from_str(&req.task_definition_json).expect("td");
    td["volumes"] = json!([
        {"name": "data", "host": {"sourcePath": allow}},
        {"name": "my-scratch"},
    ]);
    req.task_definition_json = td.to_string();
    c.start_task(req).await.expect("start");
    wait_for(&mut c, "vols", Duration::from_secs(15), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let scratch = state.join("tasks/vols/volumes/my-scratch/s");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(host.join("out").exists() && scratch.exists()) {
        assert!(
            Instant::now() < deadline,
            "the task did not write its volumes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        std::fs::read_to_string(host.join("out")).expect("out"),
        "bound\n"
    );
    assert_eq!(
        std::fs::read_to_string(&scratch).expect("scratch"),
        "scratch\n"
    );
}

#[tokio::test]
async fn awsvpc_process_tasks_asking_for_one_port_each_get_a_free_host_port() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &[]);
    let mut c = agent.client().await;
    let mut ports = Vec::new();
    for id in ["vpc-1", "vpc-2"] {
        let mut w = sh("web", HTTP);
        // A Fargate file's hostPort: the task's own port, which a host process cannot hold.
        w["portMappings"] = json!([{"containerPort": 8000, "hostPort": 8000}]);
        let mut req = start_request(id, 1, w);
        let mut td: serde_json::Value =
            serde_json::from_str(&req.task_definition_json).expect("td");
        td["networkMode"] = json!("awsvpc");
        req.task_definition_json = td.to_string();
        c.start_task(req).await.expect("start");
        let t = wait_for(&mut c, id, Duration::from_secs(20), "RUNNING", |t| {
            status(t) == pb::TaskStatus::Running
        })
        .await;
        let b = &t.containers[0].network_bindings[0];
        assert_eq!(b.container_port, 8000);
        ports.push(b.host_port);
    }
    assert_ne!(ports[0], ports[1], "each task its own host port");
    for p in ports {
        let reply = eventually_http(p).await;
        assert!(reply.starts_with("HTTP/1.0 200"), "{reply}");
    }
}

/// The reply of the server that is starting on `port`, within 10 s.
async fn eventually_http(port: u32) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match http_get(port).await {
            Ok(r) => return r,
            Err(e) => assert!(Instant::now() < deadline, "port {port}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
