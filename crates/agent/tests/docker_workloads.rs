//! What a task definition asks of a node, honoured by the docker runtime against the machine's
//! Docker engine: volumes (bind mounts, scratch, task and shared Docker volumes, volumesFrom,
//! read-only), the rest of the container definition as Docker sees it, host and none network
//! modes, GPUs as far as this machine allows, and a restart policy restarting in place.

mod support;

use std::process::Command;
use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};
use support::docker::*;
use support::exec::{open, start};
use support::*;

const WITHIN: Duration = Duration::from_secs(30);

/// Starts a task of `containers` (and task-level `extra` fields) with exec allowed.
async fn run(
    c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    id: &str,
    containers: Vec<Value>,
    extra: Value,
) {
    let mut td = json!({"family": "w", "revision": 1, "containerDefinitions": containers});
    if let (Some(td), Some(extra)) = (td.as_object_mut(), extra.as_object()) {
        td.extend(extra.clone());
    }
    let mut req = start_request(id, 1, json!({}));
    req.task_definition_json = td.to_string();
    req.enable_execute_command = true;
    c.start_task(req).await.expect("start");
}

async fn running(c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>, id: &str) {
    wait_for(c, id, WITHIN, "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
}

/// Runs `script` with `sh -c` in `container` of task `id`: (stdout, stderr, exit code).
async fn sh_in(
    c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    id: &str,
    container: &str,
    script: &str,
) -> (String, String, Option<i32>) {
    let mut first = start(id, &["sh", "-c", script], false, false);
    if let Some(pb::exec_input::Input::Start(s)) = first.input.as_mut() {
        s.container = container.to_string();
    }
    let e = open(c, first).await.expect("exec").finish(WITHIN).await;
    (e.stdout, e.stderr, e.code)
}

fn volumes_named(label: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["volume", "ls", "-q", "--filter", label])
        .output()
        .expect("docker volume ls");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn volumes_are_shared_between_tasks_and_containers_and_task_volumes_go_with_their_task() {
    if image().is_none() {
        return;
    }
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let host = world_writable(dir.path());
    let allow = host.display().to_string();
    let args = [
        docker_args(),
        vec!["--allow-host-path", &allow, "--task-retention", "1s"],
    ]
    .concat();
    let agent = AgentProc::start(&etcd.endpoints(), &dir.path().join("agent"), &args);
    let mut c = agent.client().await;
    let shared = unique("capstan-test-shared");
    let volumes = json!({"volumes": [
        {"name": "data", "host": {"sourcePath": allow}},
        {"name": "cache", "dockerVolumeConfiguration": {"scope": "shared", "autoprovision": true,
            "labels": {"capstan.test": "workloads"}}},
        {"name": "own", "dockerVolumeConfiguration": {"scope": "task"}},
        {"name": "scratch"},
    ]});
    let mut volumes = volumes;
    volumes["volumes"][1]["name"] = json!(shared);
    let mounts = |ro: bool| {
        json!([
            {"sourceVolume": "data", "containerPath": "/data", "readOnly": ro},
            {"sourceVolume": shared, "containerPath": "/cache", "readOnly": ro},
            {"sourceVolume": "own", "containerPath": "/own"},
        ])
    };
    let (a, b) = (unique("vola"), unique("volb"));

    // Task a writes to the bind mount, the shared volume and its own task volume; a second
    // container of it reads its first container's scratch volume through volumesFrom.
    let mut writer = container("writer", &["sleep", "600"]);
    writer["mountPoints"] = mounts(false);
    writer["mountPoints"]
        .as_array_mut()
        .expect("list")
        .push(json!({"sourceVolume": "scratch", "containerPath": "/scratch"}));
    let mut reader = container("reader", &["sleep", "600"]);
    reader["volumesFrom"] = json!([{"sourceContainer": "writer", "readOnly": true}]);
    run(&mut c, &a, vec![writer, reader], volumes.clone()).await;
    running(&mut c, &a).await;
    let (_, err, code) = sh_in(
        &mut c,
        &a,
        "writer",
        &format!("echo from-{a} > /data/bind.txt && echo from-{a} > /cache/shared.txt && echo mine > /own/x && echo scratch > /scratch/s"),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        std::fs::read_to_string(host.join("bind.txt")).expect("on the host"),
        format!("from-{a}\n")
    );
    let (out, err, code) = sh_in(&mut c, &a, "reader", "cat /scratch/s; touch /scratch/t").await;
    assert_eq!(out, "scratch\n", "{err}");
    assert_ne!(code, Some(0), "volumesFrom read-only");

    // Task b sees a's files through the bind mount and the shared volume, read-only, and a
    // task volume of its own that is empty.
    let mut viewer = container("viewer", &["sleep", "600"]);
    viewer["mountPoints"] = mounts(true);
    run(&mut c, &b, vec![viewer], volumes).await;
    running(&mut c, &b).await;
    let (out, err, code) = sh_in(
        &mut c,
        &b,
        "viewer",
        "cat /data/bind.txt /cache/shared.txt; ls /own; touch /data/no || echo read-only",
    )
    .await;
    assert_eq!(
        (out.as_str(), code),
        (format!("from-{a}\nfrom-{a}\nread-only\n").as_str(), Some(0)),
        "{err}"
    );
    assert_eq!(
        volumes_named(&format!("name={shared}")),
        std::slice::from_ref(&shared)
    );
    let own = |t: &str| volumes_named(&format!("label=capstan.task-id={t}"));
    assert_eq!(own(&a).len(), 1, "a's task volume");

    // Stopped and past retention: the task volumes go, the shared one stays.
    for t in [&a, &b] {
        stop_and_wait(&mut c, t).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(own(&a).is_empty() && own(&b).is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "task volumes left: {:?} {:?}",
            own(&a),
            own(&b)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        volumes_named(&format!("name={shared}")),
        std::slice::from_ref(&shared)
    );
    let _ = Command::new("docker")
        .args(["volume", "rm", &shared])
        .output();

    // A host path outside --allow-host-path is refused, with why.
    let refused = unique("volno");
    let mut c1 = container("app", &["sleep", "600"]);
    c1["mountPoints"] = json!([{"sourceVolume": "etc", "containerPath": "/host-etc"}]);
    run(
        &mut c,
        &refused,
        vec![c1],
        json!({"volumes": [{"name": "etc", "host": {"sourcePath": "/etc"}}]}),
    )
    .await;
    let t = wait_for(&mut c, &refused, WITHIN, "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(
        t.stopped_reason.contains("/etc") && t.stopped_reason.contains("--allow-host-path"),
        "{}",
        t.stopped_reason
    );
}

#[tokio::test]
async fn the_rest_of_the_container_definition_reaches_docker() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let id = unique("fields");
    let mut app = container("app", &["sleep", "600"]);
    app["linuxParameters"] = json!({
        "capabilities": {"drop": ["ALL"], "add": ["CHOWN"]},
        "initProcessEnabled": true,
        "tmpfs": [{"containerPath": "/fast", "size": 16, "mountOptions": ["noexec"]}],
        "sharedMemorySize": 32,
    });
    app["ulimits"] = json!([{"name": "nofile", "softLimit": 512, "hardLimit": 1024}]);
    app["hostname"] = json!("capstan-box");
    app["dnsServers"] = json!(["10.9.9.9"]);
    app["dnsSearchDomains"] = json!(["svc.capstan"]);
    app["extraHosts"] = json!([{"hostname": "db.local", "ipAddress": "10.1.2.3"}]);
    app["dockerLabels"] = json!({"team": "platform"});
    app["systemControls"] = json!([{"namespace": "net.ipv4.tcp_keepalive_time", "value": "120"}]);
    app["dockerSecurityOptions"] = json!(["no-new-privileges"]);
    app["logConfiguration"] = json!({
        "logDriver": "local",
        "options": {"max-size": "5m", "mode": "non-blocking", "max-buffer-size": "2m"},
    });
    run(&mut c, &id, vec![app], json!({"ipcMode": "none"})).await;
    running(&mut c, &id).await;
    for (format, want) in [
        ("{{.HostConfig.CapDrop}}", "[ALL]"),
        ("{{.HostConfig.CapAdd}}", "[CHOWN]"),
        ("{{.HostConfig.Init}}", "true"),
        ("{{.HostConfig.Tmpfs}}", "map[/fast:size=16m,noexec]"),
        ("{{.HostConfig.ShmSize}}", &(32u64 << 20).to_string()),
        (
            "{{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}}{{end}}",
            "nofile=512:1024",
        ),
        ("{{.Config.Hostname}}", "capstan-box"),
        ("{{.HostConfig.Dns}}", "[10.9.9.9]"),
        ("{{.HostConfig.DnsSearch}}", "[svc.capstan]"),
        ("{{.HostConfig.ExtraHosts}}", "[db.local:10.1.2.3]"),
        ("{{index .Config.Labels \"team\"}}", "platform"),
        (
            "{{index .HostConfig.Sysctls \"net.ipv4.tcp_keepalive_time\"}}",
            "120",
        ),
        ("{{.HostConfig.SecurityOpt}}", "[no-new-privileges]"),
        ("{{.HostConfig.LogConfig.Type}}", "local"),
        ("{{index .HostConfig.LogConfig.Config \"max-size\"}}", "5m"),
        (
            "{{index .HostConfig.LogConfig.Config \"mode\"}}",
            "non-blocking",
        ),
        (
            "{{index .HostConfig.LogConfig.Config \"max-buffer-size\"}}",
            &format!("{}b", 2u64 << 20),
        ),
        ("{{.HostConfig.IpcMode}}", "none"),
    ] {
        assert_eq!(inspect(&id, format), want, "{format}");
    }
    // Seen from inside, too.
    let (out, err, code) = sh_in(
        &mut c,
        &id,
        "app",
        "hostname; ulimit -n; grep db.local /etc/hosts; cat /proc/sys/net/ipv4/tcp_keepalive_time",
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "capstan-box");
    assert_eq!(lines[1], "512");
    assert!(lines[2].starts_with("10.1.2.3"), "{out}");
    assert_eq!(lines[3], "120");
    stop_and_wait(&mut c, &id).await;
    remove_containers(&id);
}

#[tokio::test]
async fn host_and_none_network_modes_and_gpus_as_far_as_this_machine_allows() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let (host, none, gpu) = (unique("nethost"), unique("netnone"), unique("gpu"));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("addr").port()
    };
    let port_s = port.to_string();
    let mut web = container("web", &["httpd", "-f", "-p", &port_s, "-h", "/www"]);
    web["portMappings"] = json!([{"containerPort": port}]);
    run(&mut c, &host, vec![web], json!({"networkMode": "host"})).await;
    let t = wait_for(&mut c, &host, WITHIN, "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let b = &t.containers[0].network_bindings[0];
    assert_eq!(
        (b.container_port, b.host_port),
        (u32::from(port), u32::from(port))
    );
    assert_eq!(inspect(&host, "{{.HostConfig.NetworkMode}}"), "host");
    // No logConfiguration: json-file rotated as the process runtime rotates, ECS's default
    // mode (non-blocking, a 10 MiB buffer).
    assert_eq!(
        inspect(
            &host,
            "{{.HostConfig.LogConfig.Type}} {{range $k, $v := .HostConfig.LogConfig.Config}}{{$k}}={{$v}} {{end}}"
        ),
        format!(
            "json-file max-buffer-size={mib}b max-file=2 max-size={mib}b mode=non-blocking",
            mib = 10u64 << 20
        )
    );
    let reply = http_get(u32::from(port))
        .await
        .expect("served on the host's network");
    assert!(reply.contains("hello-from-capstan"), "{reply}");

    run(
        &mut c,
        &none,
        vec![container("app", &["sleep", "600"])],
        json!({"networkMode": "none"}),
    )
    .await;
    running(&mut c, &none).await;
    assert_eq!(inspect(&none, "{{.HostConfig.NetworkMode}}"), "none");

    // This machine has no GPU: Docker refuses the device request and the task says so.
    let mut g = container("cuda", &["sleep", "600"]);
    g["resourceRequirements"] = json!([{"type": "GPU", "value": "1"}]);
    run(&mut c, &gpu, vec![g], json!({})).await;
    let t = wait_for(&mut c, &gpu, WITHIN, "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert!(
        t.stopped_reason.contains("CannotStartContainerError")
            && t.stopped_reason.to_lowercase().contains("gpu"),
        "{}",
        t.stopped_reason
    );
    for t in [&host, &none] {
        stop_and_wait(&mut c, t).await;
        remove_containers(t);
    }
    remove_containers(&gpu);
}

#[tokio::test]
async fn a_restart_policy_restarts_a_container_in_place_and_counts_it() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let (again, early) = (unique("restart"), unique("early"));
    let policy = json!({"enabled": true, "ignoredExitCodes": [0], "restartAttemptPeriod": 60});
    // Runs past the attempt period, then fails: restarted in place (the same container).
    let mut app = container("app", &["sh", "-c", "sleep 61; exit 3"]);
    app["restartPolicy"] = policy.clone();
    run(&mut c, &again, vec![app], json!({})).await;
    // Fails before the period: the exit is final, as ECS does.
    let mut quick = container("app", &["sh", "-c", "exit 3"]);
    quick["restartPolicy"] = policy;
    run(&mut c, &early, vec![quick], json!({})).await;
    let first = wait_for(&mut c, &again, WITHIN, "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    let t = wait_for(&mut c, &early, WITHIN, "STOPPED", |t| {
        status(t) == pb::TaskStatus::Stopped
    })
    .await;
    assert_eq!(t.containers[0].restart_count, 0);
    assert_eq!(t.containers[0].exit_code, Some(3));
    let restarted = wait_for(
        &mut c,
        &again,
        Duration::from_secs(120),
        "restarted once",
        |t| t.containers[0].restart_count == 1,
    )
    .await;
    assert_eq!(status(&restarted), pb::TaskStatus::Running);
    assert_eq!(
        restarted.containers[0].runtime_id, first.containers[0].runtime_id,
        "in place: the same container"
    );
    assert_eq!(
        inspect(&again, "{{.RestartCount}} {{.State.Running}}"),
        "0 true",
        "restarted by the agent, not by Docker's own policy"
    );
    stop_and_wait(&mut c, &again).await;
    remove_containers(&again);
    remove_containers(&early);
}

#[tokio::test]
async fn an_awsvpc_task_has_its_own_address_shared_by_its_containers_and_publishes_nothing() {
    let Some((_etcd, _dir, agent)) = docker_agent().await else {
        return;
    };
    let mut c = agent.client().await;
    let (a, b) = (unique("vpca"), unique("vpcb"));
    let pair = || {
        let mut web = container("web", &["httpd", "-f", "-p", "8080", "-h", "/www"]);
        web["portMappings"] = json!([{"containerPort": 8080}]);
        vec![web, container("sidecar", &["sleep", "600"])]
    };
    run(&mut c, &a, pair(), json!({"networkMode": "awsvpc"})).await;
    run(&mut c, &b, pair(), json!({"networkMode": "awsvpc"})).await;
    let mut ips = Vec::new();
    for id in [&a, &b] {
        let t = wait_for(&mut c, id, WITHIN, "RUNNING", |t| {
            status(t) == pb::TaskStatus::Running
        })
        .await;
        let own: std::collections::BTreeSet<&str> = t
            .containers
            .iter()
            .map(|c| c.private_ipv4_address.as_str())
            .collect();
        assert_eq!(own.len(), 1, "one address per task: {own:?}");
        let ip = own.into_iter().next().unwrap_or_default().to_string();
        assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip:?}");
        assert!(
            t.containers.iter().all(|c| c.network_bindings.is_empty()),
            "awsvpc binds no host ports"
        );
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "each task its own address");

    // Nothing is published on the host; the sidecar shares the first container's namespace.
    for cid in container_ids(&a, false) {
        let out = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{json .HostConfig.PortBindings}} {{.HostConfig.NetworkMode}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}}{{end}}",
                &cid,
            ])
            .output()
            .expect("docker inspect");
        let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let (ports, network) = s.split_once(' ').unwrap_or_default();
        assert!(matches!(ports, "{}" | "null"), "published: {s}");
        assert!(
            network.starts_with("container:") || network.ends_with(" capstan-default"),
            "{s}"
        );
    }
    let (out, err, code) = sh_in(&mut c, &a, "sidecar", "wget -qO- http://127.0.0.1:8080/").await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("hello-from-capstan"), "{out}");

    // Another task, and this host (where a load balancer runs), reach it at its address and
    // container port.
    let url = format!("http://{}:8080/", ips[0]);
    let (out, err, code) = sh_in(&mut c, &b, "sidecar", &format!("wget -qO- {url}")).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("hello-from-capstan"), "{out}");
    let reply = http_get_at(&ips[0], 8080)
        .await
        .expect("reached from the host");
    assert!(reply.contains("hello-from-capstan"), "{reply}");

    for t in [&a, &b] {
        stop_and_wait(&mut c, t).await;
        remove_containers(t);
    }
}
