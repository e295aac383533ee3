//! ECS Exec on the real agent binary with the process runtime: output and exit codes, the
//! container's environment and user, stdin, a terminal with resizes, refusal without
//! enableExecuteCommand, and the command's end when its task stops or its caller goes away.

mod support;

use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use capstan_testing::EtcdCluster;
use pb::exec_input::Input;
use support::exec::*;
use support::*;

/// An agent with one RUNNING task `t` (`sleep`), started with exec allowed or not.
async fn running_task(
    etcd: &EtcdCluster,
    dir: &std::path::Path,
    exec_allowed: bool,
) -> (
    AgentProc,
    pb::agent_client::AgentClient<tonic::transport::Channel>,
) {
    let agent = AgentProc::start(&etcd.endpoints(), &dir.join("agent"), &[]);
    let mut c = agent.client().await;
    let mut req = start_request("t", 1, sh("app", "exec sleep 600"));
    req.enable_execute_command = exec_allowed;
    c.start_task(req).await.expect("start");
    wait_for(&mut c, "t", Duration::from_secs(15), "RUNNING", |t| {
        status(t) == pb::TaskStatus::Running
    })
    .await;
    (agent, c)
}

const WITHIN: Duration = Duration::from_secs(15);
/// A command that says its pid, then waits for good.
const SLEEPER: &str = "echo pid=$$; exec sleep 600";

#[tokio::test]
async fn exec_runs_commands_in_the_containers_environment_with_stdin_and_exit_codes() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let (_agent, mut c) = running_task(&etcd, dir.path(), true).await;

    let s = open(
        &mut c,
        start(
            "t",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            false,
            false,
        ),
    )
    .await
    .expect("exec");
    let e = s.finish(WITHIN).await;
    assert_eq!(
        (e.stdout.as_str(), e.stderr.as_str(), e.code),
        ("out\n", "err\n", Some(3))
    );

    // The container's identity: its task's variables, its directory, the agent's task user.
    let s = open(
        &mut c,
        start(
            "t",
            &[
                "sh",
                "-c",
                "echo $CAPSTAN_TASK_ID $CAPSTAN_CONTAINER_NAME $(id -un) $(pwd)",
            ],
            false,
            false,
        ),
    )
    .await
    .expect("exec");
    let e = s.finish(WITHIN).await;
    let task_dir = dir.path().join("agent").join("tasks").join("t");
    assert_eq!(
        e.stdout.trim(),
        format!("t app nobody {}", task_dir.display()),
        "{e:?}"
    );

    // stdin reaches the command, and its end ends `cat`.
    let s = open(&mut c, start("t", &["cat"], false, true))
        .await
        .expect("exec");
    s.write("hello\n").await;
    s.write("world\n").await;
    s.input
        .send(send(Input::CloseStdin(true)))
        .await
        .expect("close");
    let e = s.finish(WITHIN).await;
    assert_eq!((e.stdout.as_str(), e.code), ("hello\nworld\n", Some(0)));

    // A command that does not exist: a shell's 127 and why.
    let s = open(&mut c, start("t", &["/no/such/program"], false, false))
        .await
        .expect("exec");
    let e = s.finish(WITHIN).await;
    assert_eq!(e.code, Some(127), "{e:?}");
    assert!(e.stderr.contains("/no/such/program"), "{e:?}");
}

#[tokio::test]
async fn exec_with_a_terminal_runs_an_interactive_shell_that_sees_resizes() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let (_agent, mut c) = running_task(&etcd, dir.path(), true).await;

    let mut s = open(&mut c, start("t", &["sh"], true, true))
        .await
        .expect("exec");
    s.write("tty; stty size; echo sum=$((6*7))\n").await;
    let seen = s.read_until("sum=42", WITHIN).await;
    assert!(seen.contains("/dev/pts/"), "a terminal: {seen:?}");
    assert!(seen.contains("24 80"), "the start's size: {seen:?}");
    s.input
        .send(send(Input::Resize(pb::TerminalSize {
            rows: 50,
            cols: 132,
        })))
        .await
        .expect("resize");
    s.write("stty size; echo done=$((1+1))\n").await;
    let seen = s.read_until("done=2", WITHIN).await;
    assert!(seen.contains("50 132"), "resized: {seen:?}");
    s.write("exit 5\n").await;
    assert_eq!(s.finish(WITHIN).await.code, Some(5));
}

#[tokio::test]
async fn exec_is_refused_on_a_task_run_without_enable_execute_command() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let (_agent, mut c) = running_task(&etcd, dir.path(), false).await;
    let Err(e) = open(&mut c, start("t", &["true"], false, false)).await else {
        panic!("exec allowed on a task without enableExecuteCommand");
    };
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("enableExecuteCommand"), "{e:?}");
    let Err(e) = open(&mut c, start("nope", &["true"], false, false)).await else {
        panic!("exec on an unknown task");
    };
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

/// Whether process `pid` still exists (a zombie counts as gone).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn gone_within(pid: i32, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while alive(pid) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// A session running a command that waits for good, and the command's pid.
async fn sleeper(
    c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
) -> (Session, i32) {
    let mut s = open(c, start("t", &["sh", "-c", SLEEPER], false, false))
        .await
        .expect("exec");
    let seen = s.read_until("\n", WITHIN).await;
    let pid = seen
        .trim()
        .strip_prefix("pid=")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {seen:?}"));
    (s, pid)
}

#[tokio::test]
async fn an_exec_command_ends_with_its_task_or_when_its_caller_goes_away() {
    let etcd = EtcdCluster::single().await.expect("etcd");
    let dir = tempfile::tempdir().expect("tmp");
    let (_agent, mut c) = running_task(&etcd, dir.path(), true).await;

    // The caller goes away: the command is killed.
    let (s, pid) = sleeper(&mut c).await;
    assert!(alive(pid));
    drop(s);
    assert!(
        gone_within(pid, WITHIN).await,
        "the command outlived its caller"
    );

    // The task stops: the session ends with the command killed.
    let (s, pid) = sleeper(&mut c).await;
    c.stop_task(pb::StopTaskRequest {
        task_id: "t".into(),
        reason: "test".into(),
        timeout: None,
        fencing_token: 1,
        stop_code: 0,
    })
    .await
    .expect("stop");
    let e = s.finish(Duration::from_secs(60)).await;
    assert_eq!(e.code, Some(137), "killed: {e:?}");
    assert!(!alive(pid));
}
