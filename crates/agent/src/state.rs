//! The agent's state dir: its instance id, the highest fencing token seen, and one file per task.
//! Every write goes to a temporary file that is renamed into place, so a crash leaves the old or
//! the new content, never a torn one. The identity and the fencing token are also synced to disk;
//! task records are not: they only need to survive a crash of the agent (the page cache does),
//! since a power loss takes the tasks' processes with it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::model::TaskRecord;

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if durable {
            f.sync_all()?;
        }
    }
    fs::rename(&tmp, path)?;
    if durable && let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl StateDir {
    /// Opens (creating) the state dir.
    pub fn open(root: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(root.join("tasks"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This instance's id, created on first start and stable across restarts.
    pub fn instance_id(&self) -> std::io::Result<String> {
        let path = self.root.join("instance-id");
        match fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
            _ => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                write_atomic(&path, id.as_bytes(), true)?;
                Ok(id)
            }
        }
    }

    /// The highest fencing token seen (0 if none).
    pub fn fencing_token(&self) -> u64 {
        fs::read_to_string(self.root.join("fencing-token"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Records a new highest fencing token durably.
    pub fn set_fencing_token(&self, token: u64) -> std::io::Result<()> {
        write_atomic(
            &self.root.join("fencing-token"),
            token.to_string().as_bytes(),
            true,
        )
    }

    /// Directory for a task's logs.
    pub fn task_dir(&self, task_id: &str) -> PathBuf {
        self.root.join("tasks").join(task_id)
    }

    /// Saves a task record.
    pub fn save_task(&self, rec: &TaskRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        write_atomic(
            &self
                .root
                .join("tasks")
                .join(format!("{}.json", rec.task_id)),
            &bytes,
            false,
        )
    }

    /// Removes a task record and its logs.
    pub fn remove_task(&self, task_id: &str) {
        let _ = fs::remove_file(self.root.join("tasks").join(format!("{task_id}.json")));
        let _ = fs::remove_dir_all(self.task_dir(task_id));
    }

    /// Every saved task record (unreadable ones are logged and skipped).
    pub fn load_tasks(&self) -> Vec<TaskRecord> {
        let Ok(entries) = fs::read_dir(self.root.join("tasks")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "json") {
                match fs::read(&path).map(|b| serde_json::from_slice::<TaskRecord>(&b)) {
                    Ok(Ok(rec)) => out.push(rec),
                    Ok(Err(err)) => {
                        tracing::error!(path = %path.display(), error = %err, "unreadable task record")
                    }
                    Err(err) => {
                        tracing::error!(path = %path.display(), error = %err, "cannot read task record")
                    }
                }
            }
        }
        out
    }
}

/// The process groups of the task containers recorded under an agent's state dir `root` (each
/// process-runtime container leads its own group), for whoever must stop them without the agent:
/// `capstan dev` on exit, a node-group provider terminating the machine.
pub fn task_process_groups(root: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(root.join("tasks")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Ok(rec) = fs::read(e.path())
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        out.extend(
            rec["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["handle"]["pid"].as_i64())
                .filter_map(|p| i32::try_from(p).ok())
                .filter(|p| *p > 1),
        );
    }
    out
}
