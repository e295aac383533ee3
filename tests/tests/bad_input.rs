//! The bad-input battery: documents no API would accept, written straight into etcd (as a
//! careless `etcdctl put` would) under every key family, while a load-balanced service serves.
//! Each one must be reported on the object itself where the object has a status, never stop or
//! restart a controller, never disturb another object (the service keeps serving and scaling,
//! agent reports keep being recorded) and never reach HAProxy's configuration.

use std::sync::atomic::Ordering;
use std::time::Duration;

use capstan_core::deployment::RolloutState;
use capstan_core::lb::TargetGroupStatusDoc;
use capstan_core::requests::RunTaskResult;
use capstan_core::task::TaskStatus;
use capstan_e2e::web::{counting_client, get, healthy, lb_plane, task_definition};
use capstan_e2e::*;
use capstan_store::Store;
use serde_json::json;

/// Running tasks of `service` whose records decode, and the task definitions they run.
async fn running_of(s: &Store, service: &str) -> Vec<String> {
    tasks(s, "default")
        .await
        .into_iter()
        .filter(|t| t.service() == Some(service) && t.last_status == TaskStatus::Running)
        .map(|t| t.task_definition_arn)
        .collect()
}

async fn put_raw(s: &Store, key: &str, bytes: &[u8]) {
    s.put(key, bytes.to_vec()).await.expect("put");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_documents_in_every_family_are_reported_and_touch_nothing_else() {
    if !tools_or_not_in_ci(&[&["haproxy", "-v"], &["busybox", "true"]]) {
        return;
    }
    let mut p = lb_plane(None).await;
    let eps = p.endpoints.clone();
    let scaler = scaler(&eps, p.dir.path(), "c1");
    p.procs.push(scaler);
    let s = &p.store;
    let k = s.keys().clone();
    let prefix = k.prefix().to_string();

    // The good service: web:1 behind a listener.
    task_definition(s, 1).await;
    put_doc(
        s,
        &k.target_group("web-tg"),
        &json!({"protocol": "HTTP", "port": 80,
            "healthCheck": {"path": "/", "intervalSeconds": 5, "healthyThresholdCount": 2}}),
    )
    .await;
    let port = capstan_testing::free_port().expect("port");
    put_doc(
        s,
        &k.listener("web"),
        &json!({"port": port, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]}),
    )
    .await;
    let web = |desired: u32| {
        json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": desired,
            "deploymentConfiguration": {"minimumHealthyPercent": 50, "maximumPercent": 200},
            "loadBalancers": [{"targetGroupArn": "web-tg", "containerName": "app", "containerPort": 8080}]})
    };
    put_doc(s, &k.service("default", "web"), &web(2)).await;
    eventually(
        Duration::from_secs(60),
        "web serves through the listener",
        || async {
            get("127.0.0.1", port)
                .await
                .is_some_and(|(c, _)| c == 200)
                .then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(60), "2 healthy targets", || async {
        let d: TargetGroupStatusDoc = s
            .get_json(&k.target_group_status("web-tg"))
            .await
            .ok()??
            .value;
        (healthy(&d).len() == 2).then_some(())
    })
    .await;
    let pids: Vec<u32> = p.procs.iter().map(|p| p.child.id()).collect();
    let (stop, counts) = counting_client("127.0.0.1", port);

    // One of web's own task records overwritten with garbage: its agent's other reports must
    // still be recorded (the report writer once retried such a batch forever).
    let victim = tasks(s, "default")
        .await
        .into_iter()
        .find(|t| t.service() == Some("web"))
        .expect("a web task");
    put_raw(s, &k.task(victim.cluster(), victim.id()), b"{garbage").await;
    // And the task then dies, so its agent reports about it.
    let pid = ["a", "b", "c"]
        .iter()
        .find_map(|z| {
            let rec = p
                .dir
                .path()
                .join(format!("agent-{z}/tasks/{}.json", victim.id()));
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(rec).ok()?).ok()?;
            v["containers"][0]["handle"]["pid"].as_i64()
        })
        .and_then(|p| i32::try_from(p).ok())
        .expect("the victim's process");
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the victim");

    let huge = "x".repeat(1 << 20);
    let td = |family: &str| {
        json!({"family": family, "containerDefinitions": [{"name": "app", "image": "x",
            "cpu": 64, "memory": 32, "entryPoint": ["sh", "-c"], "command": ["exec sleep 600"]}]})
    };
    let battery: Vec<(String, Vec<u8>)> = vec![
        // Clusters.
        (k.cluster("junk"), b"{".to_vec()),
        (k.cluster("typed"), br#"{"clusterName": 5}"#.to_vec()),
        (k.cluster("other"), br#"{"clusterName": "not-other"}"#.to_vec()),
        (format!("{prefix}/clusters/has space"), br#"{"clusterName": "has space"}"#.to_vec()),
        // Task definitions: garbage, absurd, unknown fields, and one without its revision.
        (k.task_definition("junk", 1), b"not json at all".to_vec()),
        (
            k.task_definition("huge", 1),
            json!({"family": "huge", "containerDefinitions": [{"name": "app", "image": "x",
                "cpu": 1_000_000_000u64, "memory": 32}]})
            .to_string()
            .into_bytes(),
        ),
        (
            k.task_definition("long", 1),
            json!({"family": "long", "containerDefinitions": [{"name": huge, "image": "x", "memory": 32}]})
                .to_string()
                .into_bytes(),
        ),
        (
            k.task_definition("unknown", 1),
            json!({"family": "unknown", "bogusField": true, "containerDefinitions": []})
                .to_string()
                .into_bytes(),
        ),
        (
            k.task_definition("norev", 1),
            td("norev").to_string().into_bytes(),
        ),
        // Services.
        (k.service("default", "junk"), b"{\"serviceName\":".to_vec()),
        (
            k.service("default", "negative"),
            json!({"serviceName": "negative", "taskDefinition": "web:1", "desiredCount": -1})
                .to_string()
                .into_bytes(),
        ),
        (
            k.service("default", "typed"),
            json!({"serviceName": "typed", "taskDefinition": "web:1", "desiredCount": "three"})
                .to_string()
                .into_bytes(),
        ),
        (
            k.service("default", "misnamed"),
            json!({"serviceName": "web", "taskDefinition": "web:1", "desiredCount": 5})
                .to_string()
                .into_bytes(),
        ),
        (
            format!("{prefix}/services/default/evil\nname;#"),
            json!({"serviceName": "evil\nname;#", "taskDefinition": "web:1", "desiredCount": 1})
                .to_string()
                .into_bytes(),
        ),
        (
            k.service("default", "badtd"),
            json!({"serviceName": "badtd", "taskDefinition": "junk:1", "desiredCount": 1})
                .to_string()
                .into_bytes(),
        ),
        (
            k.service("default", "norev"),
            json!({"serviceName": "norev", "taskDefinition": "norev:1", "desiredCount": 1})
                .to_string()
                .into_bytes(),
        ),
        // Documents the controllers own.
        (k.deployment("default", "web", "ecs-svc/garbage"), b"[1,2".to_vec()),
        (k.service_status("default", "junk"), b"{".to_vec()),
        (k.task("default", "0123456789abcdef0123456789abcdef"), b"{".to_vec()),
        (k.container_instance("default", "garbage"), b"{\"x\":".to_vec()),
        (k.capacity_provider_status("junk"), b"{".to_vec()),
        (format!("{prefix}/status/targetgroups/junk"), b"{".to_vec()),
        // Capacity providers.
        (k.capacity_provider("junk"), b"{".to_vec()),
        (
            k.capacity_provider("absurd"),
            json!({"name": "absurd", "autoScalingGroupProvider": {"managedScaling":
                {"targetCapacity": -5}}})
            .to_string()
            .into_bytes(),
        ),
        // Load balancing.
        (k.target_group("junk"), b"{".to_vec()),
        (
            format!("{prefix}/targetgroups/has space"),
            br#"{"protocol": "HTTP"}"#.to_vec(),
        ),
        (k.listener("junk"), b"{".to_vec()),
        (
            k.listener("absurd"),
            json!({"port": 1_000_000_000u64, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]})
                .to_string()
                .into_bytes(),
        ),
        (
            format!("{prefix}/listeners/evil\nbackend x"),
            json!({"port": 1, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]})
                .to_string()
                .into_bytes(),
        ),
        (
            k.listener("dup"),
            json!({"port": port, "defaultActions": [{"type": "forward", "targetGroupArn": "web-tg"}]})
                .to_string()
                .into_bytes(),
        ),
        (format!("{prefix}/routes/web"), b"{".to_vec()),
        // Requests.
        (
            k.key(capstan_core::keys::Family::RunTaskRequests, &["default", "junk"]),
            b"{".to_vec(),
        ),
        (
            k.key(
                capstan_core::keys::Family::RunTaskRequests,
                &["default", "absurd"],
            ),
            json!({"taskDefinition": "web:1", "count": 1_000_000})
                .to_string()
                .into_bytes(),
        ),
        (
            k.key(capstan_core::keys::Family::StopTaskRequests, &["default", "junk"]),
            b"{".to_vec(),
        ),
    ];
    for (key, bytes) in &battery {
        put_raw(s, key, bytes).await;
    }

    // The good service still follows its spec: scaled to 6 (two more per agent, the victim's
    // agent included, whose reports must be recorded), all running web:1.
    put_doc(s, &k.service("default", "web"), &web(6)).await;
    eventually(Duration::from_secs(90), "web scaled to 6", || async {
        let r = running_of(s, "web").await;
        (r.len() >= 6).then_some(())
    })
    .await;
    eventually(
        Duration::from_secs(60),
        "web's deployment COMPLETED",
        || async {
            deployments_of(s, "web")
                .await
                .into_iter()
                .find(|d| d.rollout_state == RolloutState::Completed && d.desired_count == 6)
        },
    )
    .await;
    // A task definition without its revision runs as the revision its key names.
    let arns = eventually(Duration::from_secs(60), "norev running", || async {
        let r = running_of(s, "norev").await;
        (!r.is_empty()).then_some(r)
    })
    .await;
    assert!(arns.iter().all(|a| a.ends_with("norev:1")), "{arns:?}");

    // Reported on the objects that have a status.
    for name in ["junk", "negative", "typed", "misnamed", "badtd"] {
        let what = format!("the problem on services/default/{name}'s status");
        let st = eventually(Duration::from_secs(30), &what, || async {
            let v: serde_json::Value = s
                .get_json(&k.service_status("default", name))
                .await
                .ok()??
                .value;
            let text = v.to_string();
            (text.contains("not valid") || text.contains("does not match")).then_some(text)
        })
        .await;
        eprintln!("services/default/{name}: {st}");
    }
    let junk_tg = eventually(
        Duration::from_secs(30),
        "the target group's problem",
        || async {
            let d: TargetGroupStatusDoc = s
                .get_json(&k.target_group_status("junk"))
                .await
                .ok()??
                .value;
            d.problem
        },
    )
    .await;
    assert!(junk_tg.contains("does not decode"), "{junk_tg}");
    for id in ["junk", "absurd"] {
        let r = eventually(Duration::from_secs(30), "the RunTask failure", || async {
            let r: RunTaskResult = s
                .get_json(&k.key(capstan_core::keys::Family::RunTaskResults, &["default", id]))
                .await
                .ok()??
                .value;
            (!r.failures.is_empty()).then_some(r)
        })
        .await;
        assert!(r.tasks.is_empty(), "{id}: {r:?}");
    }

    // Nothing bad reached HAProxy, which served web throughout.
    let cfg =
        std::fs::read_to_string(p.dir.path().join("haproxy/haproxy.cfg")).expect("haproxy.cfg");
    for bad in [
        "junk",
        "absurd",
        "has space",
        "evil",
        "1000000000",
        "fe_dup",
    ] {
        assert!(!cfg.contains(bad), "{bad:?} reached haproxy.cfg:\n{cfg}");
    }
    // Traffic for a while after the last check above (200 requests, some 4 s).
    eventually(
        Duration::from_secs(60),
        "200 requests after the battery",
        || async {
            let n = counts.0.load(Ordering::SeqCst) + counts.1.load(Ordering::SeqCst);
            (n >= 200).then_some(())
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = (
        counts.0.load(Ordering::SeqCst),
        counts.1.load(Ordering::SeqCst),
    );
    eprintln!("requests through the listener during the battery: {ok} ok, {failed} failed");
    assert!(ok > 0 && failed == 0, "{ok} ok, {failed} failed");

    // No controller or agent stopped or restarted.
    for (proc, pid) in p.procs.iter_mut().zip(pids) {
        assert_eq!(proc.child.id(), pid);
        assert!(
            matches!(proc.child.try_wait(), Ok(None)),
            "{} exited",
            proc.log.display()
        );
    }
}
