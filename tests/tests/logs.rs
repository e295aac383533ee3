//! Task logs end to end: real etcd, real agents (process runtime, each container's output
//! through its log shim), the scheduler, the API and the `capstan` CLI. A task writes to stdout
//! and stderr; `capstan task logs` shows both with their times, `--follow` sees new lines as
//! they are written, and the logs survive an agent restart (SIGKILL, the task and its shims
//! keep running) and the task's stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_core::task::TaskStatus;
use capstan_e2e::*;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};

/// The log lines `capstan task logs` prints as JSON.
fn logs(endpoint: &str, task: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["-o", "json", "task", "logs", task];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(endpoint, &args);
    assert!(ok, "capstan task logs {extra:?}: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn messages(lines: &[Value], stream: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l["stream"] == stream)
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_logs_show_both_streams_follow_and_survive_an_agent_restart_and_the_stop() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let (mut procs, s) = workers(&eps, dir.path()).await;
    let api = api(&eps, dir.path());
    let ep = api.field("grpc").to_string();

    put_doc(
        &s,
        &s.keys().task_definition("talker", 1),
        &json!({"family": "talker", "revision": 1, "containerDefinitions": [{
            "name": "app", "image": "x", "cpu": 64, "memory": 32, "stopTimeout": 2,
            "entryPoint": ["sh", "-c"],
            "command": ["echo out-first; echo err-first >&2; i=0; \
                while true; do i=$((i+1)); echo tick-$i; sleep 0.5; done"]}]}),
    )
    .await;
    let mut client = api_client(&ep).await;
    let r = client
        .run_task(capstan_proto::api::v1::RunTaskRequest {
            cluster: "default".into(),
            run_task_json: json!({"taskDefinition": "talker:1"}).to_string(),
        })
        .await
        .expect("run task")
        .into_inner();
    let task: Value = serde_json::from_str(&r.items_json[0]).expect("task");
    let arn = task["taskArn"].as_str().expect("arn").to_string();
    let id = arn.rsplit('/').next().expect("id").to_string();
    let placed = eventually(Duration::from_secs(30), "the task RUNNING", || async {
        tasks(&s, "default")
            .await
            .into_iter()
            .find(|t| t.id() == id && t.last_status == TaskStatus::Running)
    })
    .await;

    // Both streams, each line with its time, in order.
    let lines = eventually(Duration::from_secs(20), "a few ticks", || async {
        let l = logs(&ep, &id, &[]);
        (messages(&l, "stdout").len() >= 3).then_some(l)
    })
    .await;
    assert_eq!(messages(&lines, "stderr"), ["err-first"]);
    let out = messages(&lines, "stdout");
    assert_eq!(out[0], "out-first");
    assert!(out[1..].iter().all(|m| m.starts_with("tick-")), "{out:?}");
    assert!(lines.iter().all(|l| l["container"] == "app"));
    let times: Vec<f64> = lines
        .iter()
        .filter_map(|l| l["timestamp"].as_f64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times.iter().all(|t| *t > now_secs() - 60.0));
    // --tail, --since and a container that does not exist.
    assert_eq!(logs(&ep, &id, &["--tail", "2"]).len(), 2);
    assert!(logs(&ep, &id, &["--since", "1h"]).len() >= 3);
    let (ok, _, err) = cli(&ep, &["task", "logs", &id, "--container", "nope"]);
    assert!(!ok && err.contains("no container \"nope\""), "{err}");
    // The table form: time, container, stream, line.
    let (ok, text, err) = cli(&ep, &["task", "logs", &id, "--tail", "1"]);
    assert!(ok, "{err}");
    assert!(text.contains(" app stdout tick-"), "{text}");

    // --follow: lines written after it started arrive as they are written.
    let mut follower = Command::new(binary("capstan"))
        .args([
            "--endpoint",
            &ep,
            "-o",
            "json",
            "task",
            "logs",
            &id,
            "--follow",
            "--tail",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("follower");
    let stdout = follower.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel::<(Value, f64)>();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&l)
                && tx.send((v, now_secs())).is_err()
            {
                return;
            }
        }
    });
    let mut delays = Vec::new();
    while delays.len() < 4 {
        let (line, seen) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("a followed line");
        assert!(
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("tick-")),
            "{line}"
        );
        delays.push(seen - line["timestamp"].as_f64().expect("timestamp"));
    }
    eprintln!("--follow: written → printed {delays:.3?} s");

    // SIGKILL the task's agent: the task and its log shim keep running; the restarted agent
    // serves the lines written meanwhile.
    let host = placed.instance_id().expect("placed").to_string();
    let at = procs
        .iter()
        .position(|p| p.field("instance") == host)
        .expect("the task's agent");
    let zone = ["a", "b", "c"][at];
    let before = messages(&logs(&ep, &id, &[]), "stdout").len();
    procs[at].kill();
    let killed_at = now_secs();
    // The follower's stream ends with its agent, and while it is down its logs cannot be read.
    let _ = follower.wait();
    let (ok, _, err) = cli(&ep, &["task", "logs", &id]);
    assert!(!ok && err.contains("cannot reach task"), "{err}");
    // The shim keeps writing: two more lines in the file than when the agent died.
    let file = dir
        .path()
        .join(format!("agent-{zone}/tasks/{id}/app.stdout.log"));
    let lines_in =
        |f: &std::path::Path| std::fs::read_to_string(f).map_or(0, |t| t.lines().count());
    let at_kill = lines_in(&file);
    eventually(
        Duration::from_secs(10),
        "lines written while the agent is down",
        || async { (lines_in(&file) >= at_kill + 2).then_some(()) },
    )
    .await;
    procs[at] = agent(&eps, dir.path(), zone);
    let after = eventually(
        Duration::from_secs(30),
        "the restarted agent's logs",
        || async {
            let (ok, out, _) = cli(&ep, &["-o", "json", "task", "logs", &id]);
            ok.then(|| {
                out.lines()
                    .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                    .collect::<Vec<_>>()
            })
        },
    )
    .await;
    let during: Vec<&Value> = after
        .iter()
        .filter(|l| l["timestamp"].as_f64().is_some_and(|t| t > killed_at + 0.5))
        .collect();
    assert!(
        !during.is_empty() && messages(&after, "stdout").len() > before,
        "no line written while the agent was down: {after:?}"
    );

    // Stopped, the task's logs stay, its last lines included.
    client
        .stop_task(capstan_proto::api::v1::StopTaskRequest {
            cluster: "default".into(),
            task: id.clone(),
            reason: "done".into(),
        })
        .await
        .expect("stop");
    eventually(Duration::from_secs(30), "the task STOPPED", || async {
        tasks(&s, "default")
            .await
            .into_iter()
            .find(|t| t.id() == id && t.last_status == TaskStatus::Stopped)
    })
    .await;
    let last = logs(&ep, &id, &[]);
    assert_eq!(messages(&last, "stderr"), ["err-first"]);
    assert!(messages(&last, "stdout").len() >= messages(&after, "stdout").len());
    drop(api);
}
