//! ECS Exec end to end: real etcd, real agents (process runtime), the scheduler, the API and
//! the `capstan` CLI. `capstan task exec` runs a command in a task run with
//! enableExecuteCommand (by RunTask or by its service) and exits with its code; an interactive
//! shell runs on a terminal (util-linux's `script` gives the CLI one); a task run without it is
//! refused with ECS's message; every session is audited.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_core::task::TaskStatus;
use capstan_e2e::*;
use capstan_proto::api::v1 as pb;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};

/// `capstan task exec` with `args`: (exit code, stdout, stderr).
fn exec(endpoint: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("capstan"))
        .args(["--endpoint", endpoint, "task", "exec"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("capstan runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn task_id(items: &[String]) -> String {
    let t: Value = serde_json::from_str(&items[0]).expect("a task");
    let arn = t["taskArn"].as_str().expect("taskArn");
    arn.rsplit('/').next().expect("id").to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn task_exec_runs_commands_and_shells_only_where_enabled() {
    if !tools_or_not_in_ci(&[&["script", "--version"]]) {
        return;
    }
    let etcd = EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let (_procs, s) = workers(&eps, dir.path()).await;
    let api = api(&eps, dir.path());
    let ep = api.field("grpc").to_string();
    put_doc(
        &s,
        &s.keys().task_definition("box", 1),
        &json!({"family": "box", "revision": 1, "containerDefinitions": [{
            "name": "app", "image": "x", "cpu": 64, "memory": 32, "stopTimeout": 2,
            "entryPoint": ["sh", "-c"], "command": ["exec sleep 600"],
            "environment": [{"name": "GREETING", "value": "hello-from-the-task"}]}]}),
    )
    .await;
    let mut client = api_client(&ep).await;
    let run = |exec: bool| {
        let mut body = json!({"taskDefinition": "box:1"});
        if exec {
            body["enableExecuteCommand"] = json!(true);
        }
        pb::RunTaskRequest {
            cluster: "default".into(),
            run_task_json: body.to_string(),
        }
    };
    let plain = task_id(
        &client
            .run_task(run(false))
            .await
            .expect("run")
            .into_inner()
            .items_json,
    );
    let (ok, out, err) = cli(
        &ep,
        &[
            "-o",
            "json",
            "task",
            "run",
            "--task-definition",
            "box:1",
            "--enable-execute-command",
        ],
    );
    assert!(ok, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let enabled = task_id(&[doc.to_string()]);
    // A service's tasks carry its enableExecuteCommand.
    client
        .create_service(pb::CreateServiceRequest {
            cluster: "default".into(),
            service_json: json!({"serviceName": "shell", "taskDefinition": "box:1",
                "desiredCount": 1, "enableExecuteCommand": true})
            .to_string(),
        })
        .await
        .expect("create service");
    let service_task = eventually(Duration::from_secs(30), "every task RUNNING", || async {
        let all = tasks(&s, "default").await;
        let running = |id: &str| {
            all.iter()
                .any(|t| t.id() == id && t.last_status == TaskStatus::Running)
        };
        let svc = all.iter().find(|t| {
            t.group.as_deref() == Some("service:shell") && t.last_status == TaskStatus::Running
        })?;
        (running(&plain) && running(&enabled)).then(|| svc.clone())
    })
    .await;
    assert!(service_task.enable_execute_command);
    let records = tasks(&s, "default").await;
    let record = |id: &str| records.iter().find(|t| t.id() == id).expect("record");
    assert!(record(&enabled).enable_execute_command);
    assert!(!record(&plain).enable_execute_command);

    // A command: its output, the container's environment, its exit code as the CLI's.
    let (code, out, err) = exec(
        &ep,
        &[
            &enabled,
            "--",
            "sh",
            "-c",
            "echo $GREETING; echo to-stderr >&2; exit 4",
        ],
    );
    assert_eq!((code, out.as_str()), (4, "hello-from-the-task\n"), "{err}");
    assert!(err.contains("to-stderr"), "{err}");
    let (code, out, err) = exec(&ep, &[service_task.id(), "--", "echo", "in-a-service-task"]);
    assert_eq!((code, out.as_str()), (0, "in-a-service-task\n"), "{err}");

    // Refused where it was not enabled, and for a container the task does not have.
    let (code, _, err) = exec(&ep, &[&plain, "--", "true"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("InvalidParameterException")
            && err.contains("execute command was not enabled"),
        "{err}"
    );
    let (code, _, err) = exec(&ep, &[&enabled, "--container", "nope", "--", "true"]);
    assert!(code == 1 && err.contains("no container \"nope\""), "{err}");

    // An interactive shell on a terminal: `script` runs the CLI on a pty and feeds it stdin.
    let line = format!(
        "{} --endpoint {ep} task exec -it {enabled} -- sh",
        binary("capstan").display()
    );
    let mut shell = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("script");
    shell
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"tty; echo sum=$((6*7)); exit 5\n")
        .expect("type");
    let out = tokio::task::spawn_blocking(move || shell.wait_with_output())
        .await
        .expect("join")
        .expect("script ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sum=42"), "{text}");
    assert!(
        text.contains("/dev/pts/"),
        "the remote shell has a terminal: {text}"
    );
    assert_eq!(out.status.code(), Some(5), "{text}");

    // Every session is audited as ecs:ExecuteCommand on its task.
    let audit = std::fs::read_to_string(audit_log(dir.path())).expect("audit log");
    assert!(
        audit
            .lines()
            .any(|l| l.contains("ecs:ExecuteCommand") && l.contains(&enabled)),
        "{audit}"
    );
}
