//! Secrets end to end: `capstan secret put|get|list|delete` through the API, a task whose
//! container definition asks for one (`secrets[].valueFrom`) gets it in its environment from
//! its agent, and the value appears nowhere else: not in etcd, the task record, DescribeTasks,
//! the task's logs, the agent's state dir or any component's log. Agents a local node group
//! starts get the key too.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use capstan_core::task::TaskStatus;
use capstan_e2e::*;
use capstan_testing::EtcdCluster;
use serde_json::{Value, json};

/// The store once one agent is registered, a scheduler, and an open API holding `key`.
async fn scheduler_and_api(
    eps: &[String],
    dir: &Path,
    key: &str,
) -> (capstan_store::Store, Proc, Proc) {
    let s = store(eps).await;
    registered(&s, "default", 1).await;
    let scheduler = scheduler(eps, dir, "s1");
    let api = api_with(
        eps,
        dir,
        None,
        &["--authorization", "none", "--encryption-key-file", key],
    );
    (s, scheduler, api)
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if std::fs::read(&p)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_reaches_its_containers_environment_and_nowhere_else() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let key = dir.path().join("encryption.key");
    std::fs::write(&key, "7f".repeat(32)).expect("key");
    let key_arg = key.display().to_string();
    let env_dir = dir.path().join("envfiles");
    std::fs::create_dir_all(&env_dir).expect("mkdir");
    std::fs::write(env_dir.join("host.env"), "HOST_VAR=host-value\n").expect("write");
    let env_dir_arg = env_dir.display().to_string();
    let agent = agent_with(
        &eps,
        dir.path(),
        "a",
        &[
            "--encryption-key-file",
            &key_arg,
            "--environment-files-dir",
            &env_dir_arg,
        ],
    );
    let (s, _scheduler, api) = scheduler_and_api(&eps, dir.path(), &key_arg).await;
    let ep = api.field("grpc").to_string();

    // Two versions; the value is read from a file, never from the command line.
    let value = format!("s3cr3t-{}", now_secs().to_bits());
    let file = dir.path().join("value");
    std::fs::write(&file, "first-version\n").expect("write");
    let put = |f: &Path| {
        let (ok, out, err) = cli(
            &ep,
            &[
                "secret",
                "put",
                "db-password",
                "--from-file",
                f.to_str().expect("path"),
            ],
        );
        assert!(ok, "{err}");
        out
    };
    put(&file);
    std::fs::write(&file, format!("{value}\n")).expect("write");
    let out = put(&file);
    assert!(
        out.contains("db-password") && !out.contains(&value),
        "{out}"
    );
    let (ok, got, err) = cli(&ep, &["secret", "get", "db-password"]);
    assert!(ok, "{err}");
    assert_eq!(got.trim(), value);
    let (_, first, _) = cli(&ep, &["secret", "get", "db-password", "--version-id", "1"]);
    assert_eq!(first.trim(), "first-version");
    let (_, list, _) = cli(&ep, &["secret", "list"]);
    assert!(
        list.contains("db-password") && !list.contains(&value),
        "{list}"
    );
    let (ok, _, err) = cli(&ep, &["secret", "get", "nope"]);
    assert!(!ok && err.contains("ResourceNotFoundException"), "{err}");

    // An env file kept as a secret, and one on the host in the agent's allowed directory.
    std::fs::write(
        &file,
        "FROM_FILE=one\nLEVEL=from-file\nDB_PASSWORD=overridden-by-the-secret\n",
    )
    .expect("write");
    let (ok, _, err) = cli(
        &ep,
        &[
            "secret",
            "put",
            "app-env",
            "--from-file",
            file.to_str().expect("path"),
        ],
    );
    assert!(ok, "{err}");

    // A task that asks for them, and one that asks for a secret that does not exist.
    let td = |family: &str, from: &str| {
        json!({"family": family, "revision": 1, "containerDefinitions": [{
            "name": "app", "image": "x", "cpu": 64, "memory": 32, "stopTimeout": 2,
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": from}],
            "environment": [{"name": "LEVEL", "value": "from-environment"}],
            "environmentFiles": [
                {"value": "secret:app-env", "type": "s3"},
                {"value": format!("file://{}/host.env", env_dir.display()), "type": "s3"}],
            "entryPoint": ["sh", "-c"],
            "command": ["printf %s \"$DB_PASSWORD\" | sha256sum; \
                echo \"FROM_FILE=$FROM_FILE LEVEL=$LEVEL HOST_VAR=$HOST_VAR\"; exec sleep 600"]}]})
    };
    put_doc(
        &s,
        &s.keys().task_definition("db", 1),
        &td("db", "db-password"),
    )
    .await;
    put_doc(
        &s,
        &s.keys().task_definition("missing", 1),
        &td("missing", "nope"),
    )
    .await;
    let mut client = api_client(&ep).await;
    let mut run = async |family: &str| -> String {
        let r = client
            .run_task(capstan_proto::api::v1::RunTaskRequest {
                cluster: "default".into(),
                run_task_json: json!({"taskDefinition": format!("{family}:1")}).to_string(),
            })
            .await
            .expect("run task")
            .into_inner();
        let t: Value = serde_json::from_str(&r.items_json[0]).expect("task");
        let arn = t["taskArn"].as_str().expect("arn");
        arn.rsplit('/').next().expect("id").to_string()
    };
    let ok_id = run("db").await;
    let bad_id = run("missing").await;
    eventually(Duration::from_secs(30), "the task RUNNING", || async {
        tasks(&s, "default")
            .await
            .into_iter()
            .find(|t| t.id() == ok_id && t.last_status == TaskStatus::Running)
    })
    .await;
    let failed = eventually(Duration::from_secs(30), "the other STOPPED", || async {
        tasks(&s, "default")
            .await
            .into_iter()
            .find(|t| t.id() == bad_id && t.last_status == TaskStatus::Stopped)
    })
    .await;
    let reason = failed.stopped_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("ResourceInitializationError") && reason.contains("nope"),
        "{reason}"
    );

    // In the container's environment: the process has it, and its output is its hash.
    let record: Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("agent-a/tasks/{ok_id}.json"))).expect("record"),
    )
    .expect("json");
    let pid = record["containers"][0]["handle"]["pid"]
        .as_i64()
        .expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let wanted = format!("DB_PASSWORD={value}");
    assert!(
        environ.split(|b| *b == 0).any(|kv| kv == wanted.as_bytes()),
        "the container's environment lacks the secret"
    );
    let sha = {
        let out = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().expect("stdin").write_all(value.as_bytes())?;
                c.wait_with_output()
            })
            .expect("sha256sum");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let logs = eventually(Duration::from_secs(20), "the task's output", || async {
        let (ok, out, _) = cli(&ep, &["task", "logs", &ok_id]);
        (ok && out.contains(&sha)).then_some(out)
    })
    .await;
    assert!(!logs.contains(&value));
    // Environment files fill in what `environment` does not set; secrets win over both.
    assert!(
        logs.contains("FROM_FILE=one LEVEL=from-environment HOST_VAR=host-value"),
        "{logs}"
    );

    // Nowhere else: etcd, DescribeTasks, the agent's state dir, every log.
    let all = s.list("/").await.expect("list etcd");
    for kv in &all.kvs {
        assert!(
            !String::from_utf8_lossy(&kv.value).contains(&value),
            "{} holds the secret in plain text",
            kv.key
        );
    }
    let (ok, described, err) = cli(&ep, &["-o", "json", "task", "describe", &ok_id]);
    assert!(ok, "{err}");
    assert!(described.contains(&ok_id) && !described.contains(&value));
    // The value file itself is the one place it was written on purpose.
    std::fs::remove_file(&file).expect("rm");
    let leaked = files_containing(dir.path(), &value);
    assert!(leaked.is_empty(), "the secret in plain text in {leaked:?}");

    // Deleted, it is gone for the next container (the running one keeps its environment).
    let (ok, _, err) = cli(&ep, &["secret", "delete", "db-password"]);
    assert!(ok, "{err}");
    let (ok, _, _) = cli(&ep, &["secret", "get", "db-password"]);
    assert!(!ok);
    drop((agent, api));
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_a_local_node_group_starts_open_secrets_with_the_key_it_was_given() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = test_dir();
    let key = dir.path().join("encryption.key");
    std::fs::write(&key, "3c".repeat(32)).expect("key");
    let key_arg = key.display().to_string();
    let _groups = NodeGroups::start_with(
        &eps,
        dir.path(),
        &["g1:min=0,max=2,desired=1,cpu=1024,memory=1024,provider=cp1"],
        None,
        &["--encryption-key-file", &key_arg],
    );
    let (s, _scheduler, api) = scheduler_and_api(&eps, dir.path(), &key_arg).await;
    let ep = api.field("grpc").to_string();
    let file = dir.path().join("value");
    std::fs::write(&file, "seventeen-chars-x").expect("write");
    let (ok, _, err) = cli(
        &ep,
        &[
            "secret",
            "put",
            "token",
            "--from-file",
            &file.display().to_string(),
        ],
    );
    assert!(ok, "{err}");
    put_doc(
        &s,
        &s.keys().task_definition("tok", 1),
        &json!({"family": "tok", "revision": 1, "containerDefinitions": [{
            "name": "app", "image": "x", "cpu": 64, "memory": 32, "stopTimeout": 2,
            "secrets": [{"name": "TOKEN", "valueFrom": "token"}],
            "entryPoint": ["sh", "-c"],
            "command": ["echo token has ${#TOKEN} characters; exec sleep 600"]}]}),
    )
    .await;
    let (ok, out, err) = cli(
        &ep,
        &["-o", "json", "task", "run", "--task-definition", "tok:1"],
    );
    assert!(ok, "{err}");
    let id = run_task_id(&out);
    let logs = eventually(Duration::from_secs(30), "the task's output", || async {
        let (ok, out, _) = cli(&ep, &["task", "logs", &id]);
        (ok && out.contains("token has ")).then_some(out)
    })
    .await;
    assert!(logs.contains("token has 17 characters"), "{logs}");
}
