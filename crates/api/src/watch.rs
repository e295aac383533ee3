//! Watching: the WatchService stream (RunTask waits with `Store::wait_for_put`).

use std::collections::HashMap;
use std::sync::Arc;

use capstan_core::Task;
use capstan_core::keys::Family;
use capstan_proto::api::v1 as pb;
use capstan_store::{Cache, Change, Decoder};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::actions::Api;

fn raw() -> Decoder<Vec<u8>> {
    Arc::new(|_key, bytes| Ok(bytes.to_vec()))
}

/// Streams a service's changes into `tx` until the receiver goes away: the service first, then
/// its deployments, tasks and events as they are now, then every change.
pub async fn watch_service(
    api: Api,
    cluster: String,
    service: String,
    tx: mpsc::Sender<Result<pb::ServiceUpdate, tonic::Status>>,
) {
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let store = api.store().clone();
    let keys = store.keys().clone();
    let spec_key = keys.service(&cluster, &service);
    let status_key = keys.service_status(&cluster, &service);
    let group = capstan_core::task::service_group(&service);
    let spawn = |prefix: String| {
        let (cache, _handle) = Cache::spawn(
            store.clone(),
            prefix,
            raw(),
            capstan_store::cache::DEFAULT_RESYNC,
            cancel.clone(),
        );
        let rx = cache.subscribe();
        (cache, rx)
    };
    let (specs, mut spec_rx) = spawn(spec_key.clone());
    let (statuses, mut status_rx) = spawn(status_key.clone());
    let (deps, mut dep_rx) = spawn(keys.list(Family::Deployments, &[&cluster, &service]));
    let (tasks, mut task_rx) = spawn(keys.list(Family::Tasks, &[&cluster]));
    let (events, mut event_rx) = spawn(keys.list(Family::Events, &[&cluster, &service]));
    for c in [&specs, &statuses, &deps, &tasks, &events] {
        c.ready().await;
    }

    // Last revision sent per key, so the initial listing and the change feed never repeat.
    let mut sent: HashMap<String, i64> = HashMap::new();
    let is_ours = |bytes: &[u8]| {
        serde_json::from_slice::<Task>(bytes)
            .ok()
            .is_some_and(|t| t.group.as_deref() == Some(group.as_str()))
    };
    let send = |kind: pb::service_update::Kind, key: &str, json: String, deleted: bool| {
        let tx = tx.clone();
        let update = pb::ServiceUpdate {
            kind: kind as i32,
            json,
            deleted,
            key: key.to_string(),
        };
        async move { tx.send(Ok(update)).await.is_ok() }
    };
    let service_doc = || async {
        match api.describe_service_doc(&cluster, &service).await {
            Ok(Some(v)) => v.to_string(),
            _ => String::new(),
        }
    };

    use pb::service_update::Kind;
    let doc = service_doc().await;
    if !send(Kind::Service, &spec_key, doc.clone(), doc.is_empty()).await {
        return;
    }
    for (cache, kind) in [
        (&deps, Kind::Deployment),
        (&tasks, Kind::Task),
        (&events, Kind::Event),
    ] {
        for e in cache.list() {
            let Ok(bytes) = &e.value else { continue };
            if kind == Kind::Task && !is_ours(bytes) {
                continue;
            }
            sent.insert(e.key.clone(), e.mod_revision);
            let json = String::from_utf8_lossy(bytes).into_owned();
            if !send(kind, &e.key, json, false).await {
                return;
            }
        }
    }

    loop {
        let (change, cache, kind) = tokio::select! {
            _ = tx.closed() => return,
            Some(c) = spec_rx.recv() => (c, &specs, Kind::Service),
            Some(c) = status_rx.recv() => (c, &statuses, Kind::Service),
            Some(c) = dep_rx.recv() => (c, &deps, Kind::Deployment),
            Some(c) = task_rx.recv() => (c, &tasks, Kind::Task),
            Some(c) = event_rx.recv() => (c, &events, Kind::Event),
            else => return,
        };
        if kind == Kind::Service {
            if change.key() != spec_key && change.key() != status_key {
                continue;
            }
            let doc = service_doc().await;
            if !send(Kind::Service, &spec_key, doc.clone(), doc.is_empty()).await {
                return;
            }
            continue;
        }
        let ok = match change {
            Change::Put { key, revision } => {
                if sent.get(&key).is_some_and(|r| *r >= revision) {
                    continue;
                }
                let Some(e) = cache.get(&key) else { continue };
                let Ok(bytes) = &e.value else { continue };
                if kind == Kind::Task && !is_ours(bytes) {
                    continue;
                }
                sent.insert(key.clone(), e.mod_revision);
                send(
                    kind,
                    &key,
                    String::from_utf8_lossy(bytes).into_owned(),
                    false,
                )
                .await
            }
            Change::Delete { key, .. } => {
                if sent.remove(&key).is_none() {
                    continue;
                }
                send(kind, &key, String::new(), true).await
            }
        };
        if !ok {
            return;
        }
    }
}
