//! `capstan dev` leaves no process behind however it is stopped — SIGTERM, a terminal's Ctrl-C
//! while its output goes through a `tee` that the same Ctrl-C kills, and SIGKILL of `capstan
//! dev` itself — and the next `capstan dev --data-dir` on the same data starts cleanly and runs
//! the service again. Checked by process: every descendant (etcd, the API, the controllers,
//! the agents, their task processes, HAProxy) is recorded while it runs, with its start time,
//! and each must be gone afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capstan_e2e::{binary, test_dir, tools_or_not_in_ci};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::json;

/// One process as /proc shows it: (pid, start time in clock ticks) identifies it for good.
type Proc = (i32, u64);

/// `(parent, state, start time, command name)` of `pid`.
fn stat(pid: i32) -> Option<(i32, char, u64, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (head, rest) = text.rsplit_once(')')?;
    let comm = head.split_once('(')?.1.to_string();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    // Field 22 of stat; the first after the command name is field 3.
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, state, start, comm))
}

/// Every live descendant of `root`, with its command name.
fn descendants(root: i32) -> BTreeMap<Proc, String> {
    let mut children: BTreeMap<i32, Vec<(i32, u64, String)>> = BTreeMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Some((ppid, state, start, comm)) = stat(pid)
            && state != 'Z'
        {
            children.entry(ppid).or_default().push((pid, start, comm));
        }
    }
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for (pid, start, comm) in children.get(&p).into_iter().flatten() {
            out.insert((*pid, *start), comm.clone());
            todo.push(*pid);
        }
    }
    out
}

/// Whether that very process still runs (a zombie no one reaps does not).
fn alive(p: &Proc) -> bool {
    stat(p.0).is_some_and(|(_, state, start, _)| state != 'Z' && start == p.1)
}

/// A running `capstan dev`, in a process group of its own as a shell job is, its stdout and
/// stderr on one pipe as with `2>&1 | tee`.
struct Dev {
    child: Child,
    output: Option<BufReader<std::io::PipeReader>>,
    endpoint: String,
    token: String,
    seen: BTreeMap<Proc, String>,
}

impl Dev {
    fn start(data: &Path) -> Dev {
        let (reader, writer) = std::io::pipe().expect("pipe");
        let child = Command::new(binary("capstan"))
            .args(["dev", "--api-listen", "127.0.0.1:0", "--etcd-port", "0"])
            .args(["--ecs-listen", "127.0.0.1:0", "--agents", "2"])
            .arg("--data-dir")
            .arg(data)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().expect("pipe"))
            .stderr(writer)
            .spawn()
            .expect("capstan dev starts");
        let mut dev = Dev {
            child,
            output: Some(BufReader::new(reader)),
            endpoint: String::new(),
            token: String::new(),
            seen: BTreeMap::new(),
        };
        let mut line = String::new();
        let out = dev.output.as_mut().expect("output");
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("capstan dev's output");
            assert!(n > 0, "capstan dev exited before it was ready");
            let l = line.trim();
            if let Some(r) = l.strip_prefix("API:") {
                dev.endpoint = r.split_whitespace().next().unwrap_or_default().into();
            }
            if let Some((_, t)) = l.split_once("CAPSTAN_TOKEN=") {
                dev.token = t.trim_end_matches(')').trim().into();
            }
            if l.contains("Ctrl-C stops everything") {
                break;
            }
        }
        assert!(!dev.endpoint.is_empty() && !dev.token.is_empty());
        dev
    }

    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    fn capstan(&self, args: &[&str]) {
        let out = Command::new(binary("capstan"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .env("CAPSTAN_TOKEN", &self.token)
            .output()
            .expect("capstan runs");
        assert!(
            out.status.success(),
            "capstan {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Waits until `sleeps` task processes and, when asked, HAProxy run under `capstan dev`,
    /// recording every process seen on the way.
    fn wait_for_workload(&mut self, sleeps: usize, haproxy: bool) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let now = descendants(self.pid());
            self.seen.extend(now.clone());
            let count = |name: &str| now.values().filter(|c| c.as_str() == name).count();
            if count("sleep") >= sleeps && (!haproxy || count("haproxy") >= 1) {
                // Every component: etcd, the API, four controllers, the node-group provider and
                // the agents.
                for name in ["etcd", "capstan-api", "capstan-agent", "capstan-schedul"] {
                    assert!(count(name) >= 1, "no {name} among {now:?}");
                }
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the workload did not start: {now:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `capstan dev` to exit, then for every process it ran to be gone.
    fn wait_all_gone(&mut self, how: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(Instant::now() < deadline, "{how}: capstan dev did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let left: BTreeSet<_> = self
                .seen
                .iter()
                .filter(|(p, _)| alive(p))
                .map(|((pid, _), comm)| format!("{pid} {comm}"))
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{how}: processes left behind: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Keeps reading its output, so it never blocks on a full pipe.
    fn drain_output(&mut self) {
        if let Some(out) = self.output.take() {
            std::thread::spawn(move || for _ in out.lines() {});
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        // A failed assertion leaves nothing running either.
        let _ = kill(Pid::from_raw(self.pid()), Signal::SIGKILL);
        let _ = self.child.wait();
        for p in self.seen.keys().filter(|p| alive(p)) {
            let _ = kill(Pid::from_raw(p.0), Signal::SIGKILL);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

#[test]
fn capstan_dev_leaves_no_process_behind_however_it_is_stopped() {
    if !tools_or_not_in_ci(&[
        &["etcd", "--version"],
        &["haproxy", "-v"],
        &["setpriv", "--version"],
    ]) {
        return;
    }
    let dir = test_dir();
    let data = dir.path().join("dev");

    // First run: a service of two task processes and a listener, so HAProxy runs too.
    let mut dev = Dev::start(&data);
    let td = dir.path().join("td.json");
    std::fs::write(
        &td,
        json!({"family": "sleeper", "containerDefinitions": [{"name": "app", "image": "x",
            "cpu": 64, "memory": 32, "command": ["sleep", "3600"], "stopTimeout": 5}]})
        .to_string(),
    )
    .expect("write");
    let svc = dir.path().join("svc.json");
    std::fs::write(
        &svc,
        json!({"serviceName": "sleeper", "taskDefinition": "sleeper", "desiredCount": 2})
            .to_string(),
    )
    .expect("write");
    let tg = dir.path().join("tg.json");
    std::fs::write(
        &tg,
        json!({"protocol": "HTTP", "healthCheck": {"path": "/"}}).to_string(),
    )
    .expect("write");
    let listener = dir.path().join("listener.json");
    std::fs::write(
        &listener,
        json!({"port": free_port(), "protocol": "HTTP",
            "defaultActions": [{"type": "forward", "targetGroupArn": "web"}]})
        .to_string(),
    )
    .expect("write");
    let path = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    dev.capstan(&["taskdef", "register", "-f", &path(&td)]);
    dev.capstan(&["service", "create", "-f", &path(&svc)]);
    dev.capstan(&["targetgroup", "create", "web", "-f", &path(&tg)]);
    dev.capstan(&["listener", "create", "web", "-f", &path(&listener)]);
    dev.wait_for_workload(2, true);
    dev.drain_output();
    kill(Pid::from_raw(dev.pid()), Signal::SIGTERM).expect("SIGTERM");
    dev.wait_all_gone("SIGTERM");
    drop(dev);

    // Second run on the same data: it starts cleanly and runs the service again. Then Ctrl-C
    // in a terminal piping through `tee`: the reading end is closed (tee died) and SIGINT goes
    // to the job's process group.
    let mut dev = Dev::start(&data);
    dev.wait_for_workload(2, true);
    drop(dev.output.take());
    killpg(Pid::from_raw(dev.pid()), Signal::SIGINT).expect("SIGINT");
    dev.wait_all_gone("Ctrl-C with a closed output pipe");
    drop(dev);

    // Third run: SIGKILL of capstan dev itself. What it started gets the parent-death signal.
    let mut dev = Dev::start(&data);
    dev.wait_for_workload(2, true);
    dev.drain_output();
    kill(Pid::from_raw(dev.pid()), Signal::SIGKILL).expect("SIGKILL");
    dev.wait_all_gone("SIGKILL of capstan dev");
    drop(dev);

    // And the data is still good for a fourth, clean run.
    let mut dev = Dev::start(&data);
    dev.wait_for_workload(2, true);
    dev.drain_output();
    kill(Pid::from_raw(dev.pid()), Signal::SIGTERM).expect("SIGTERM");
    dev.wait_all_gone("SIGTERM after a SIGKILLed run");
}
