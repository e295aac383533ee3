//! A small web service for load-balancer tests: busybox httpd tasks answering `<rev> <task id>`,
//! plain HTTP/1.0 requests, and a client that counts what succeeds while faults happen.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use capstan_core::lb::{TargetGroupStatusDoc, TargetState};
use capstan_store::Store;
use serde_json::json;

use crate::put_doc;

/// `web:<rev>`: busybox httpd on the dynamic port, answering `/` with `<rev> <task id>`.
pub async fn task_definition(s: &Store, rev: u32) {
    put_task_definition(s, rev, "").await;
}

/// `web:<rev>` that also answers `/cgi-bin/slow` after `secs` seconds (busybox httpd CGI).
pub async fn slow_task_definition(s: &Store, rev: u32, secs: u32) {
    let cgi = format!(
        "mkdir -p $d/cgi-bin; \
         printf '#!/bin/sh\\nsleep {secs}\\necho Content-Type: text/plain\\necho\\necho slow done\\n' > $d/cgi-bin/slow; \
         chmod +x $d/cgi-bin/slow; "
    );
    put_task_definition(s, rev, &cgi).await;
}

/// `web:<rev>`, with `setup` run in the task's web root `$d` before httpd starts.
async fn put_task_definition(s: &Store, rev: u32, setup: &str) {
    let cmd = format!(
        "d=/tmp/capstan-www-$CAPSTAN_TASK_ID; mkdir -p $d; echo {rev} $CAPSTAN_TASK_ID > $d/index.html; \
         {setup}exec busybox httpd -f -p 127.0.0.1:$PORT -h $d"
    );
    let td = json!({
        "family": "web", "revision": rev, "status": "ACTIVE",
        "containerDefinitions": [{"name": "app", "image": "x", "cpu": 64, "memory": 32,
            "portMappings": [{"containerPort": 8080, "hostPort": 0}],
            "entryPoint": ["sh", "-c"], "command": [cmd], "stopTimeout": 2}]
    });
    put_doc(s, &s.keys().task_definition("web", rev), &td).await;
}

/// The task ids of a status document's healthy targets.
pub fn healthy(doc: &TargetGroupStatusDoc) -> BTreeSet<String> {
    doc.targets
        .iter()
        .filter(|t| t.state == TargetState::Healthy)
        .map(|t| t.task_id.clone())
        .collect()
}

/// The body of a 200 answer to `GET /`, trimmed.
pub async fn body(host: &str, port: u16) -> Option<String> {
    let (code, body) = get(host, port).await?;
    (code == 200).then(|| body.trim().to_string())
}

/// A plain HTTP/1.0 GET over a TCP stream: status code and body.
pub async fn get(host: &str, port: u16) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect((host, port)).await.ok()?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
    let mut out = String::new();
    c.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out.split("\r\n\r\n").nth(1)?.to_string()))
}

/// Requests `host:port` every 20 ms until stopped; (succeeded, failed or non-2xx) readable
/// while it runs.
pub fn counting_client(host: &str, port: u16) -> (Arc<AtomicBool>, Arc<(AtomicU32, AtomicU32)>) {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new((AtomicU32::new(0), AtomicU32::new(0)));
    let (st, c, host) = (stop.clone(), counts.clone(), host.to_string());
    tokio::spawn(async move {
        while !st.load(Ordering::SeqCst) {
            match get(&host, port).await {
                Some((200, _)) => c.0.fetch_add(1, Ordering::SeqCst),
                _ => c.1.fetch_add(1, Ordering::SeqCst),
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    (stop, counts)
}

/// SIGKILLs the HAProxy a registrar started under `haproxy_dir` (it outlives the registrar).
pub fn kill_haproxy(haproxy_dir: &Path) {
    let pids = std::fs::read_to_string(haproxy_dir.join("haproxy.pid"));
    for pid in pids.iter().flat_map(|t| t.split_whitespace()) {
        if let Ok(pid) = pid.parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A load-balancing plane: etcd, [`workers`](crate::workers) (three agents, scheduler, deployer)
/// and registrar `r1`. Dropped, it stops them, their task processes and the HAProxy.
pub struct Plane {
    /// The etcd member.
    pub etcd: capstan_testing::EtcdCluster,
    /// Its client URLs.
    pub endpoints: Vec<String>,
    /// Logs and state.
    pub dir: tempfile::TempDir,
    /// A store client.
    pub store: Store,
    /// The processes.
    pub procs: Vec<crate::Proc>,
}

impl Drop for Plane {
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.kill();
        }
        crate::kill_task_processes(self.dir.path());
        // The registrar's HAProxy outlives a SIGKILLed registrar (it keeps serving): stop it.
        kill_haproxy(&self.dir.path().join("haproxy"));
    }
}

/// A [`Plane`] whose registrar gets `registrar_args` (its own HAProxy under `<dir>/haproxy`
/// when `None`).
pub async fn lb_plane(registrar_args: Option<Vec<String>>) -> Plane {
    let etcd = capstan_testing::EtcdCluster::single().await.expect("etcd");
    let eps = etcd.endpoints();
    let dir = crate::test_dir();
    let (mut procs, store) = crate::workers(&eps, dir.path()).await;
    let hp = dir.path().join("haproxy");
    let args = registrar_args
        .unwrap_or_else(|| vec!["--haproxy-dir".to_string(), hp.display().to_string()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    procs.push(crate::controller(
        "registrar",
        &eps,
        dir.path(),
        "r1",
        &args,
    ));
    Plane {
        etcd,
        endpoints: eps,
        dir,
        store,
        procs,
    }
}
