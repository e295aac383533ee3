//! The example a new user runs first, as `examples/README.md` writes it, on `capstan dev
//! --runtime docker`: a secret put, the `greeter` task definition (logs, a secret, a scratch
//! volume) registered and run with exec enabled; its logs show the secret reached it, exec reads
//! its volume, and stopping `capstan dev` leaves no container behind. An awsvpc service behind
//! a listener is served through HAProxy at its tasks' own addresses. The `busybox` image they
//! name is built locally from Debian's busybox-static when the engine has none.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use capstan_e2e::{binary, eventually, run_task_id, test_dir, tools_or_not_in_ci};
use serde_json::Value;

/// `busybox:latest` with every applet, unless the engine already has a `busybox` image.
fn busybox_image() {
    let present = Command::new("docker")
        .args(["image", "inspect", "busybox"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        return;
    }
    let script = r#"set -e
d=$(mktemp -d)
mkdir -p "$d/bin"
cp "$(command -v busybox)" "$d/bin/busybox"
for a in $("$d/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$d/bin/$a"; done
tar -C "$d" -c . | docker import - busybox:latest >/dev/null
rm -rf "$d""#;
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "building busybox: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running `capstan dev`; killed (and its containers with it) on drop.
struct Dev {
    child: Child,
    endpoint: String,
    token: String,
}

impl Dev {
    /// `capstan dev --runtime docker` with one agent, and HAProxy when `haproxy`.
    fn start(data: &std::path::Path, haproxy: bool) -> Self {
        let mut child = Command::new(binary("capstan"))
            .args(["dev", "--runtime", "docker", "--agents", "1"])
            .args((!haproxy).then_some("--no-haproxy"))
            .args(["--api-listen", "127.0.0.1:0", "--ecs-listen", "127.0.0.1:0"])
            .args(["--etcd-port", "0", "--data-dir"])
            .arg(data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("capstan dev starts");
        let (mut endpoint, mut token) = (String::new(), String::new());
        // Read on a thread for good, so dev never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        let err = BufReader::new(child.stderr.take().expect("stderr"));
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                let _ = tx2.send(line);
            }
        });
        std::thread::spawn(move || {
            for line in err.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        for line in rx.iter() {
            let l = line.trim();
            if let Some(r) = l.strip_prefix("API:") {
                endpoint = r.split_whitespace().next().unwrap_or_default().into();
            }
            if let Some((_, t)) = l.split_once("CAPSTAN_TOKEN=") {
                token = t.trim_end_matches(')').trim().into();
            }
            if l.contains("Ctrl-C stops everything") {
                break;
            }
        }
        assert!(
            !endpoint.is_empty() && !token.is_empty(),
            "capstan dev did not get ready; see {}",
            data.join("logs").display()
        );
        Self {
            child,
            endpoint,
            token,
        }
    }

    /// `capstan ARGS` against this dev plane, `stdin` fed in: (exit code, stdout, stderr).
    fn capstan(&self, args: &[&str], stdin: &str) -> (i32, String, String) {
        let mut child = Command::new(binary("capstan"))
            .args(["--endpoint", &self.endpoint])
            .args(args)
            .env("CAPSTAN_TOKEN", &self.token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("capstan runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("stdin");
        let out = child.wait_with_output().expect("capstan ends");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.capstan(args, "");
        assert_eq!(code, 0, "capstan {args:?}: {err}");
        out
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(0)),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn containers_of(task: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args([
            "ps",
            "-aq",
            "--filter",
            &format!("label=capstan.task-id={task}"),
        ])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_logs_secret_volume_and_exec_example_runs_on_capstan_dev_with_docker() {
    if !tools_or_not_in_ci(&[&["docker", "info"]]) {
        return;
    }
    busybox_image();
    let data = test_dir();
    let mut dev = Dev::start(&data.path().join("dev"), false);
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/logs-secret-taskdef.json"
    );

    let (code, _, err) = dev.capstan(&["secret", "put", "greeter/api-token"], "not-a-real-token");
    assert_eq!(code, 0, "{err}");
    dev.ok(&["taskdef", "register", "-f", example]);
    let out = dev.ok(&[
        "-o",
        "json",
        "task",
        "run",
        "--task-definition",
        "greeter",
        "--enable-execute-command",
    ]);
    let id = run_task_id(&out);

    let logs = eventually(Duration::from_secs(60), "the task's first lines", || {
        let out = dev.capstan(&["task", "logs", &id], "").1;
        async move { out.contains("tick ").then_some(out) }
    })
    .await;
    assert!(logs.contains("token has 16 characters"), "{logs}");
    assert!(
        !logs.contains("not-a-real-token"),
        "the secret's value leaked: {logs}"
    );

    // Exec reads the scratch volume the task writes.
    let ticks = eventually(Duration::from_secs(30), "ticks in the volume", || {
        let (code, out, _) = dev.capstan(&["task", "exec", &id, "--", "cat", "/state/ticks"], "");
        async move { (code == 0 && out.contains("tick ")).then_some(out) }
    })
    .await;
    assert!(ticks.lines().all(|l| l.starts_with("tick ")), "{ticks}");
    let (code, _, _) = dev.capstan(&["task", "exec", &id, "--", "sh", "-c", "exit 9"], "");
    assert_eq!(code, 9);
    assert_eq!(containers_of(&id).len(), 1);

    // Stopping capstan dev stops the task's container too.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(dev.child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = dev.child.wait().expect("capstan dev exits");
    assert!(status.success() || status.code().is_some(), "{status:?}");
    let running: Vec<String> = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=capstan.task-id={id}"),
        ])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert!(running.is_empty(), "containers still running: {running:?}");
    for c in containers_of(&id) {
        let _ = Command::new("docker").args(["rm", "-f", &c]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_awsvpc_service_is_served_through_haproxy_at_its_tasks_own_addresses() {
    if !tools_or_not_in_ci(&[&["docker", "info"], &["haproxy", "-v"]]) {
        return;
    }
    busybox_image();
    let data = test_dir();
    let dev = Dev::start(&data.path().join("dev"), true);
    let file = |name: &str, doc: Value| {
        let p = data.path().join(name);
        std::fs::write(&p, doc.to_string()).expect("write");
        p.display().to_string()
    };
    let port = capstan_testing::free_port().expect("a free port");
    let tg = file(
        "tg.json",
        serde_json::json!({"protocol": "HTTP", "port": 8080,
            "healthCheck": {"path": "/", "intervalSeconds": 5, "healthyThresholdCount": 2}}),
    );
    let listener = file(
        "listener.json",
        serde_json::json!({"port": port,
            "defaultActions": [{"type": "forward", "targetGroupArn": "vpcweb-tg"}]}),
    );
    // Two tasks on one host, both on container port 8080: no host port to collide on.
    let td = file(
        "td.json",
        serde_json::json!({"family": "vpcweb", "networkMode": "awsvpc",
            "containerDefinitions": [{"name": "app", "image": "busybox", "memory": 64,
                "portMappings": [{"containerPort": 8080}], "entryPoint": ["sh", "-c"],
                "command": ["mkdir -p /w && hostname > /w/index.html && exec httpd -f -p 8080 -h /w"]}]}),
    );
    let svc = file(
        "svc.json",
        serde_json::json!({"serviceName": "vpcweb", "taskDefinition": "vpcweb", "desiredCount": 2,
            "loadBalancers": [{"targetGroupArn": "vpcweb-tg", "containerName": "app",
                "containerPort": 8080}]}),
    );
    dev.ok(&["targetgroup", "create", "vpcweb-tg", "-f", &tg]);
    dev.ok(&["listener", "create", "vpcweb", "-f", &listener]);
    dev.ok(&["taskdef", "register", "-f", &td]);
    dev.ok(&["service", "create", "-f", &svc]);

    // The targets are the tasks' own addresses at the container port, not the host's.
    let targets = eventually(Duration::from_secs(90), "2 healthy targets", || {
        let out = dev
            .capstan(&["-o", "json", "targetgroup", "health", "vpcweb-tg"], "")
            .1;
        async move {
            let v: Value = serde_json::from_str(&out).ok()?;
            let healthy: Vec<(String, String, u64)> = v
                .as_array()?
                .iter()
                .filter(|t| t["targetHealth"]["state"] == "healthy")
                .filter_map(|t| {
                    let t = &t["target"];
                    Some((
                        t["taskId"].as_str()?.to_string(),
                        t["id"].as_str()?.to_string(),
                        t["port"].as_u64()?,
                    ))
                })
                .collect();
            (healthy.len() == 2).then_some(healthy)
        }
    })
    .await;
    let ids: Vec<String> = targets.iter().map(|(t, _, _)| t.clone()).collect();
    let described = dev.ok(&[
        &["-o", "json", "task", "describe"][..],
        &ids.iter().map(String::as_str).collect::<Vec<_>>(),
    ]
    .concat());
    let tasks: Value =
        serde_json::from_str(&described).unwrap_or_else(|e| panic!("{e}: {described}"));
    for (task, host, port) in &targets {
        let t = tasks
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["taskArn"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(task.as_str()))
            })
            .unwrap_or_else(|| panic!("task {task} described: {tasks}"));
        let eni = t["attachments"][0]["details"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["name"] == "privateIPv4Address")
            .and_then(|d| d["value"].as_str());
        assert_eq!(
            eni,
            Some(host.as_str()),
            "target at the task's ENI address: {t}"
        );
        assert_eq!(*port, 8080);
    }

    // Through HAProxy both tasks answer, each with its own hostname.
    let seen = eventually(
        Duration::from_secs(30),
        "both tasks through HAProxy",
        || async {
            let mut seen = std::collections::BTreeSet::new();
            for _ in 0..10 {
                if let Some((200, body)) = capstan_e2e::web::get("127.0.0.1", port).await {
                    seen.insert(body.trim().to_string());
                }
            }
            (seen.len() == 2).then_some(seen)
        },
    )
    .await;
    assert_eq!(seen.len(), 2, "{seen:?}");
    dev.ok(&["service", "delete", "vpcweb", "--force"]);
    drop(dev);
    for id in ids {
        for c in containers_of(&id) {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
    }
}
