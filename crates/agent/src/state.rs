//! The agent's state dir: its instance id, the highest fencing token seen, and one file per task.
//! Every write goes to a temporary file that is renamed into place, so a crash leaves the old or
//! the new content, never a torn one. The identity and the fencing token are also synced to disk;
//! task records are not: they only need to survive a crash of the agent (the page cache does),
//! since a power loss takes the tasks' processes with it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use capstan_agent_client::state::TASKS_DIR;

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
        fs::create_dir_all(root.join(TASKS_DIR))?;
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
        self.root.join(TASKS_DIR).join(task_id)
    }

    /// Saves a task record.
    pub fn save_task(&self, rec: &TaskRecord) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(rec).map_err(std::io::Error::other)?;
        write_atomic(
            &self
                .root
                .join(TASKS_DIR)
                .join(format!("{}.json", rec.task_id)),
            &bytes,
            false,
        )
    }

    /// Removes a task record and its logs.
    pub fn remove_task(&self, task_id: &str) {
        let _ = fs::remove_file(self.root.join(TASKS_DIR).join(format!("{task_id}.json")));
        let _ = fs::remove_dir_all(self.task_dir(task_id));
    }

    /// Every saved task record (unreadable ones are logged and skipped).
    pub fn load_tasks(&self) -> Vec<TaskRecord> {
        let Ok(entries) = fs::read_dir(self.root.join(TASKS_DIR)) else {
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

pub use capstan_agent_client::state::task_process_groups;
