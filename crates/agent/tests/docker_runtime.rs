//! The real agent with the docker runtime against the machine's Docker engine, whenever
//! `docker info` succeeds. No registry is reachable, so the test image is built locally by
//! `docker import` of a root filesystem holding Debian's busybox-static.

mod support;

use std::time::{Duration, Instant};

use capstan_proto::agent::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::json;
use support::docker::*;
use support::exec::{open, send, start};
use support::*;

#[tokio::test]
async fn a_container_with_a_dynamic_host_port_serves_http_and_stops_within_its_timeout() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let (dweb, dstub) = (unique("dweb"), unique("dstub"));

    let mut web = container("web", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
    web["portMappings"] = json!([{"containerPort": 8080, "hostPort": 0}]);
    web["healthCheck"] =
        json!({"command": ["CMD-SHELL", "test -f /www/index.html"], "interval": 5, "retries": 2});
    c.start_task(start_request(&dweb, 1, web))
        .await
        .expect("start");
    let t = wait_for(
        &mut c,
        &dweb,
        Duration::from_secs(30),
        "RUNNING and HEALTHY",
        |t| status(t) == pb::TaskStatus::Running && health(t) == pb::HealthStatus::Healthy,
    )
    .await;
    let b = &t.containers[0].network_bindings[0];
    assert_eq!(b.container_port, 8080);
    assert!(b.host_port > 0);
    let reply = http_get(b.host_port)
        .await
        .expect("http through the dynamic port");
    assert!(
        reply.contains("200") && reply.contains("hello-from-capstan"),
        "{reply}"
    );

    // Ignores SIGTERM (PID 1 without a handler): killed after its 2 s stopTimeout.
    let mut stubborn = container(
        "app",
        &["sh", "-c", "trap '' TERM; while true; do sleep 1; done"],
    );
    stubborn["stopTimeout"] = json!(2);
    c.start_task(start_request(&dstub, 1, stubborn))
        .await
        .expect("start");
    wait_for(&mut c, &dstub, Duration::from_secs(30), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let t0 = Instant::now();
    for id in [&dstub, &dweb] {
        c.stop_task(pb::StopTaskRequest {
            task_id: id.clone(),
            fencing_token: 1,
            ..Default::default()
        })
        .await
        .expect("stop");
    }
    let stub = wait_for(&mut c, &dstub, Duration::from_secs(30), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(
        t0.elapsed() >= Duration::from_secs(2),
        "stopped before its stopTimeout"
    );
    assert_eq!(stub.containers[0].exit_code, Some(137));
    let web = wait_for(&mut c, &dweb, Duration::from_secs(40), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(web.containers[0].exit_code.is_some());
    assert_eq!(
        containers_of(&dweb) + containers_of(&dstub),
        0,
        "nothing left running"
    );
    remove_containers(&dweb);
    remove_containers(&dstub);
}

#[tokio::test]
async fn a_restarted_agent_readopts_its_containers_by_label() {
    if image().is_none() {
        return;
    }
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("agent");
    let mut agent = AgentProc::start(&etcd.endpoints(), &state, &docker_args());
    let mut c = agent.client().await;
    let dkeep = unique("dkeep");
    c.start_task(start_request(
        &dkeep,
        1,
        container("app", &["sleep", "600"]),
    ))
    .await
    .expect("start");
    let t = wait_for(&mut c, &dkeep, Duration::from_secs(30), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let id = t.containers[0].runtime_id.clone();

    agent.kill();
    let agent = AgentProc::start(&etcd.endpoints(), &state, &docker_args());
    let mut c = agent.client().await;
    let again = c
        .start_task(start_request(
            &dkeep,
            1,
            container("app", &["sleep", "600"]),
        ))
        .await
        .expect("start again");
    let again = again.into_inner().task.expect("state");
    assert_eq!(status(&again), pb::TaskStatus::Running);
    assert_eq!(
        again.containers[0].runtime_id, id,
        "the same container, re-adopted"
    );
    assert_eq!(containers_of(&dkeep), 1, "nothing started twice");

    stop_and_wait(&mut c, &dkeep).await;
    remove_containers(&dkeep);
}

#[tokio::test]
async fn a_missing_image_fails_the_task_naming_the_image() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let mut missing = container("app", &["true"]);
    missing["image"] = json!("capstan-test/not-there:9");
    let dmissing = unique("dmissing");
    c.start_task(start_request(&dmissing, 1, missing))
        .await
        .expect("accepted");
    let t = wait_for(&mut c, &dmissing, Duration::from_secs(30), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(t.stop_code, pb::StopCode::TaskFailedToStart as i32);
    assert!(
        t.stopped_reason.contains("capstan-test/not-there:9"),
        "{}",
        t.stopped_reason
    );
}

#[tokio::test]
async fn containers_get_their_user_a_read_only_root_ports_on_the_agents_address_and_no_privilege_unless_allowed()
 {
    let Some((etcd, dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let (locked, root) = (unique("locked"), unique("root"));
    let mut app = container("app", &["sleep", "600"]);
    app["user"] = json!("65534:65534");
    app["readonlyRootFilesystem"] = json!(true);
    app["portMappings"] = json!([{"containerPort": 8080, "hostPort": 0}]);
    c.start_task(start_request(&locked, 1, app))
        .await
        .expect("start");
    wait_for(&mut c, &locked, Duration::from_secs(30), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    assert_eq!(inspect(&locked, "{{.Config.User}}"), "65534:65534");
    assert_eq!(inspect(&locked, "{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect(&locked, "{{.HostConfig.Privileged}}"), "false");
    // The container definition's limits: `cpu` 128 units as CPU shares, `memory` 64 MiB as a
    // hard limit.
    assert_eq!(inspect(&locked, "{{.HostConfig.CpuShares}}"), "128");
    assert_eq!(
        inspect(&locked, "{{.HostConfig.Memory}}"),
        (64u64 << 20).to_string()
    );
    // Published on the agent's own (loopback) address, not on every interface.
    assert_eq!(
        inspect(
            &locked,
            "{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}}{{end}}{{end}}"
        ),
        "127.0.0.1"
    );

    // privileged is refused by default, with why.
    let mut privileged = container("app", &["sleep", "600"]);
    privileged["privileged"] = json!(true);
    c.start_task(start_request(&root, 1, privileged.clone()))
        .await
        .expect("start");
    let t = wait_for(&mut c, &root, Duration::from_secs(30), "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(
        t.stopped_reason.contains("privileged"),
        "{}",
        t.stopped_reason
    );
    assert_eq!(containers_of(&root), 0, "no container was made");
    c.stop_task(pb::StopTaskRequest {
        task_id: locked.clone(),
        fencing_token: 1,
        ..Default::default()
    })
    .await
    .expect("stop");
    drop(agent);

    // An agent that allows it runs it.
    let allowed = [docker_args(), vec!["--allow-privileged"]].concat();
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent2"), &allowed);
    let mut c = agent.client().await;
    let root2 = unique("root");
    c.start_task(start_request(&root2, 1, privileged))
        .await
        .expect("start");
    let t = wait_for(
        &mut c,
        &root2,
        Duration::from_secs(30),
        "RUNNING or STOPPED",
        |t| matches!(status(t), pb::TaskStatus::Running | pb::TaskStatus::Stopped),
    )
    .await;
    if status(&t) == pb::TaskStatus::Running {
        assert_eq!(inspect(&root2, "{{.HostConfig.Privileged}}"), "true");
    } else {
        // An engine that may not grant capabilities itself (a container host without them, as
        // this CI machine's) refuses at start: the agent passed the request on.
        assert!(
            t.stopped_reason
                .starts_with("CannotStartContainerError: docker")
                && !t.stopped_reason.contains("this agent refuses"),
            "{}",
            t.stopped_reason
        );
    }
    c.stop_task(pb::StopTaskRequest {
        task_id: root2.clone(),
        fencing_token: 1,
        ..Default::default()
    })
    .await
    .expect("stop");
    for t in [&locked, &root, &root2] {
        remove_containers(t);
    }
}

/// The lines of a `TaskLogs` answer: (stream, message, timestamp).
async fn read_logs(
    stream: &mut tonic::Streaming<pb::LogEvent>,
    at_least: usize,
) -> Vec<(String, String, f64)> {
    let mut out = Vec::new();
    while out.len() < at_least {
        match tokio::time::timeout(Duration::from_secs(15), stream.message()).await {
            Ok(Ok(Some(e))) => out.push((e.stream, e.message, e.timestamp)),
            Ok(Ok(None)) => break,
            other => panic!("no more log lines after {out:?}: {other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn a_containers_logs_come_from_docker_with_both_streams_their_times_and_follow() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let dlogs = unique("dlogs");
    let app = container(
        "app",
        &[
            "sh",
            "-c",
            "echo out-first; echo err-first >&2; i=0; while true; do i=$((i+1)); echo tick-$i; sleep 1; done",
        ],
    );
    c.start_task(start_request(&dlogs, 1, app))
        .await
        .expect("start");
    wait_for(&mut c, &dlogs, Duration::from_secs(30), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    // Followed from the start: both streams, each line with Docker's time, then new ticks.
    let mut s = c
        .task_logs(pb::TaskLogsRequest {
            task_id: dlogs.clone(),
            follow: true,
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner();
    let lines = read_logs(&mut s, 4).await;
    assert!(
        lines
            .iter()
            .any(|(st, m, _)| st == "stderr" && m == "err-first"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|(st, m, _)| st == "stdout" && m == "out-first"),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .filter(|(_, m, _)| m.starts_with("tick-"))
            .count()
            >= 2,
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .all(|(_, _, t)| (started - 60.0..started + 60.0).contains(t)),
        "{lines:?}"
    );
    // --tail 1, not followed: one line, and the stream ends.
    let mut s = c
        .task_logs(pb::TaskLogsRequest {
            task_id: dlogs.clone(),
            tail: Some(1),
            ..Default::default()
        })
        .await
        .expect("logs")
        .into_inner();
    let last = read_logs(&mut s, usize::MAX).await;
    assert_eq!(last.len(), 1, "{last:?}");
    // An unknown container is refused.
    let e = c
        .task_logs(pb::TaskLogsRequest {
            task_id: dlogs.clone(),
            container: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    stop_and_wait(&mut c, &dlogs).await;
    remove_containers(&dlogs);
}

#[tokio::test]
async fn docker_exec_runs_as_the_containers_user_on_its_read_only_root_with_a_terminal() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let task = unique("dexec");
    let mut app = container("app", &["sleep", "600"]);
    app["user"] = json!("65534:65534");
    app["readonlyRootFilesystem"] = json!(true);
    let mut req = start_request(&task, 1, app);
    req.enable_execute_command = true;
    c.start_task(req).await.expect("start");
    wait_for(&mut c, &task, Duration::from_secs(30), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let within = Duration::from_secs(30);

    // `user` runs the command as that uid; `readonlyRootFilesystem` makes a write fail; the
    // exit code is the command's.
    let s = open(
        &mut c,
        start(
            &task,
            &[
                "sh",
                "-c",
                "id -u; touch /written || echo write-refused >&2; exit 7",
            ],
            false,
            false,
        ),
    )
    .await
    .expect("exec");
    let e = s.finish(within).await;
    assert_eq!(e.stdout.trim(), "65534", "{e:?}");
    assert!(e.stderr.contains("write-refused"), "{e:?}");
    assert_eq!(e.code, Some(7));

    // stdin, and its end.
    let s = open(&mut c, start(&task, &["cat"], false, true))
        .await
        .expect("exec");
    s.write("through docker\n").await;
    s.input
        .send(send(pb::exec_input::Input::CloseStdin(true)))
        .await
        .expect("close");
    let e = s.finish(within).await;
    assert_eq!((e.stdout.as_str(), e.code), ("through docker\n", Some(0)));

    // An interactive shell on a terminal, resized.
    let mut s = open(&mut c, start(&task, &["sh"], true, true))
        .await
        .expect("exec");
    s.input
        .send(send(pb::exec_input::Input::Resize(pb::TerminalSize {
            rows: 33,
            cols: 99,
        })))
        .await
        .expect("resize");
    s.write("tty; stty size; echo sum=$((6*7))\n").await;
    let seen = s.read_until("sum=42", within).await;
    assert!(seen.contains("/dev/pts/"), "a terminal: {seen:?}");
    assert!(seen.contains("33 99"), "resized: {seen:?}");
    s.write("exit 3\n").await;
    assert_eq!(s.finish(within).await.code, Some(3));

    stop_and_wait(&mut c, &task).await;
    remove_containers(&task);
}
