//! The recorders that fill the history while the soak runs: each agent's WatchTasks stream, a
//! watch cache per record family, and HTTP requests through every LB host. Each reconnects on
//! its own after a fault, recording that it lost its source.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use capstan_core::keys::Family;
use capstan_proto::agent::v1::agent_client::AgentClient;
use capstan_proto::agent::v1::{ListTasksRequest, TaskStatus, WatchTasksRequest, task_event};
use capstan_store::Store;
use capstan_store::cache::{Cache, Change, json_decoder};
use tokio_util::sync::CancellationToken;

use crate::compose::{AGENT_HOSTS, Compose, LB_HOSTS};
use crate::history::{History, Kind};

/// The record families the invariants read.
const FAMILIES: [Family; 8] = [
    Family::Clusters,
    Family::TaskDefinitions,
    Family::Services,
    Family::Deployments,
    Family::Tasks,
    Family::TargetGroups,
    Family::Listeners,
    // Not checked, but it says what each LB host was told to serve.
    Family::TargetGroupStatus,
];

fn status_name(s: i32) -> String {
    TaskStatus::try_from(s)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TASK_STATUS_")
                .to_string()
        })
        .unwrap_or_else(|_| format!("{s}"))
}

fn endpoint(c: &Compose, agent: &str) -> String {
    format!("https://{}:7500", c.address(agent).unwrap_or_default())
}

/// Follows one agent's WatchTasks until cancelled, reconnecting every 500 ms after a break.
async fn watch_agent(c: Compose, agent: &'static str, h: History, cancel: CancellationToken) {
    let tls = c.tls();
    let mut lost = false;
    while !cancel.is_cancelled() {
        let result = async {
            let ch = capstan_proto::tls::connect(&endpoint(&c, agent), Some(&tls))
                .await
                .map_err(|e| e.to_string())?;
            let mut stream = AgentClient::new(ch)
                .watch_tasks(WatchTasksRequest::default())
                .await
                .map_err(|e| e.message().to_string())?
                .into_inner();
            loop {
                let ev = tokio::select! {
                    () = cancel.cancelled() => return Ok(()),
                    m = stream.message() => m.map_err(|e| e.message().to_string())?,
                };
                let Some(ev) = ev else {
                    return Err("stream ended".to_string());
                };
                match ev.event {
                    Some(task_event::Event::Snapshot(s)) => {
                        lost = false;
                        h.record(Kind::AgentSnapshot {
                            agent: agent.to_string(),
                            running: s
                                .tasks
                                .iter()
                                .filter(|t| status_name(t.last_status) == "RUNNING")
                                .map(|t| t.task_id.clone())
                                .collect(),
                        });
                    }
                    Some(task_event::Event::Update(t)) => h.record(Kind::AgentTask {
                        agent: agent.to_string(),
                        task: t.task_id.clone(),
                        status: status_name(t.last_status),
                    }),
                    None => {}
                }
            }
        }
        .await;
        if let Err(error) = result {
            if !lost {
                h.record(Kind::AgentLost {
                    agent: agent.to_string(),
                    error,
                });
                lost = true;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }
}

/// The ids each agent runs now (ListTasks, lastStatus RUNNING); an agent that does not answer
/// is an error.
pub async fn agent_tasks(c: &Compose, agent: &str) -> Result<BTreeSet<String>, String> {
    let ch = capstan_proto::tls::connect(&endpoint(c, agent), Some(&c.tls()))
        .await
        .map_err(|e| e.to_string())?;
    let l = AgentClient::new(ch)
        .list_tasks(ListTasksRequest::default())
        .await
        .map_err(|e| e.message().to_string())?
        .into_inner();
    Ok(l.tasks
        .iter()
        .filter(|t| status_name(t.last_status) == "RUNNING")
        .map(|t| t.task_id.clone())
        .collect())
}

/// Records every change of one family's records until cancelled.
async fn watch_family(
    store: Store,
    prefix: String,
    seen: Seen,
    h: History,
    cancel: CancellationToken,
) {
    let (cache, _task) = Cache::<serde_json::Value>::spawn(
        store,
        prefix,
        json_decoder(),
        Duration::from_secs(60),
        cancel.clone(),
    );
    let mut changes = cache.subscribe();
    cache.ready().await;
    for e in cache.list() {
        h.record(Kind::Record {
            key: e.key.clone(),
            value: e.value.clone().ok(),
            revision: e.mod_revision,
            initial: true,
        });
        seen.put(&e.key, Some(e.mod_revision));
    }
    loop {
        let c = tokio::select! {
            () = cancel.cancelled() => return,
            c = changes.recv() => c,
        };
        let Some(c) = c else { return };
        match c {
            Change::Put { key, revision } => {
                let value = cache.get(&key);
                let revision = value.as_ref().map_or(revision, |e| e.mod_revision);
                seen.put(&key, value.is_some().then_some(revision));
                h.record(Kind::Record {
                    value: value.as_ref().and_then(|e| e.value.clone().ok()),
                    revision,
                    key,
                    initial: false,
                });
            }
            Change::Delete { key, revision } => {
                seen.put(&key, None);
                h.record(Kind::Record {
                    key,
                    value: None,
                    revision,
                    initial: false,
                });
            }
        }
    }
}

/// One `GET /` through `host:port` on a new connection within `limit`: none when answered 200,
/// else what went wrong. Plain HTTP/1.0 over TCP, so each request is one connection through
/// the listener.
async fn get(c: &Compose, host: &str, port: u16, limit: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = (c.address(host).unwrap_or_default(), port);
    let request = async {
        let mut c = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        c.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut out = Vec::new();
        c.read_to_end(&mut out)
            .await
            .map_err(|e| format!("read: {e}"))?;
        let text = String::from_utf8_lossy(&out);
        match text.split_whitespace().nth(1) {
            Some("200") => Ok(()),
            _ => Err(format!(
                "answered {:?}",
                text.chars().take(120).collect::<String>()
            )),
        }
    };
    match tokio::time::timeout(limit, request).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("no answer within {limit:?}")),
    }
}

/// Requests `host:port` every 50 ms until cancelled.
async fn probe(c: Compose, host: &'static str, port: u16, h: History, cancel: CancellationToken) {
    while !cancel.is_cancelled() {
        let started = h.now();
        let error = get(&c, host, port, Duration::from_secs(15)).await;
        h.record(Kind::Http {
            lb: host.to_string(),
            port,
            ok: error.is_none(),
            started,
            error,
        });
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

/// What one family's recorder has put in the history: each key's last recorded revision.
#[derive(Debug, Clone, Default)]
struct Seen(Arc<Mutex<BTreeMap<String, i64>>>);

impl Seen {
    fn put(&self, key: &str, revision: Option<i64>) {
        let mut m = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match revision {
            Some(r) => m.insert(key.to_string(), r),
            None => m.remove(key),
        };
    }

    fn get(&self) -> BTreeMap<String, i64> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The first key whose recorded revision is behind the store's listing `now` at `revision`:
/// one listed but recorded older or not at all, or one recorded that the listing no longer
/// holds unless it was written after it (the watch may be ahead of the listing).
fn lagging(
    now: &BTreeMap<String, i64>,
    revision: i64,
    seen: &BTreeMap<String, i64>,
) -> Option<String> {
    let behind = now
        .iter()
        .find(|(k, r)| seen.get(*k).is_none_or(|s| s < *r))
        .map(|(k, _)| k);
    let gone = seen
        .iter()
        .find(|(k, r)| !now.contains_key(*k) && **r <= revision)
        .map(|(k, _)| k);
    behind.or(gone).cloned()
}

/// The running recorders.
pub struct Recorders {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Each family's prefix and what its recorder has recorded.
    families: Vec<(String, Seen)>,
}

impl Recorders {
    /// Whether the history holds every record as the store holds it now (the watches have
    /// delivered the last changes); else the first family and key that lag.
    pub async fn caught_up(&self, store: &Store) -> Result<(), String> {
        for (prefix, seen) in &self.families {
            let l = store.list(prefix).await.map_err(|e| e.to_string())?;
            let now: BTreeMap<String, i64> = l
                .kvs
                .iter()
                .map(|kv| (kv.key.clone(), kv.mod_revision))
                .collect();
            if let Some(key) = lagging(&now, l.revision, &seen.get()) {
                return Err(format!(
                    "the history of {key} lags the store at revision {}",
                    l.revision
                ));
            }
        }
        Ok(())
    }

    /// Waits until every recorder has stopped (after `cancel`).
    pub async fn stopped(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts every recorder; they stop with `cancel`. HTTP probes go to `ports` on every LB host.
pub fn start(
    store: &Store,
    compose: &Compose,
    ports: &[u16],
    h: &History,
    cancel: &CancellationToken,
) -> Recorders {
    let mut tasks = Vec::new();
    let mut families = Vec::new();
    for agent in AGENT_HOSTS {
        tasks.push(tokio::spawn(watch_agent(
            compose.clone(),
            agent,
            h.clone(),
            cancel.clone(),
        )));
    }
    for family in FAMILIES {
        let prefix = store.keys().list(family, &[]);
        let seen = Seen::default();
        families.push((prefix.clone(), seen.clone()));
        tasks.push(tokio::spawn(watch_family(
            store.clone(),
            prefix,
            seen,
            h.clone(),
            cancel.clone(),
        )));
    }
    for lb in LB_HOSTS {
        for port in ports {
            tasks.push(tokio::spawn(probe(
                compose.clone(),
                lb,
                *port,
                h.clone(),
                cancel.clone(),
            )));
        }
    }
    Recorders { tasks, families }
}

/// Whether `host:port` answers 200 now (within 5 s).
pub async fn answers(c: &Compose, host: &str, port: u16) -> bool {
    get(c, host, port, Duration::from_secs(5)).await.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kv: &[(&str, i64)]) -> BTreeMap<String, i64> {
        kv.iter().map(|(k, r)| ((*k).to_string(), *r)).collect()
    }

    #[test]
    fn the_history_lags_until_it_holds_the_listing() {
        let now = m(&[("a", 5), ("b", 7)]);
        let cases: [(&str, BTreeMap<String, i64>, Option<&str>); 6] = [
            ("the same", m(&[("a", 5), ("b", 7)]), None),
            (
                "ahead of the listing",
                m(&[("a", 9), ("b", 7), ("c", 11)]),
                None,
            ),
            ("an older revision", m(&[("a", 5), ("b", 6)]), Some("b")),
            ("a key not yet recorded", m(&[("b", 7)]), Some("a")),
            (
                "a delete not yet recorded",
                m(&[("a", 5), ("b", 7), ("c", 3)]),
                Some("c"),
            ),
            ("empty", m(&[]), Some("a")),
        ];
        for (what, seen, want) in cases {
            assert_eq!(lagging(&now, 10, &seen).as_deref(), want, "{what}");
        }
    }
}
