//! What others may read of an agent's state dir: the process groups of its tasks, for whoever
//! must stop them without the agent (`capstan dev` on exit, a node-group provider terminating
//! its machine, a test cleaning up). The agent owns the layout; this is its one reader outside.

use std::fs;
use std::path::Path;

/// The folder of an agent's state dir that holds one JSON record per task.
pub const TASKS_DIR: &str = "tasks";

/// The process groups of the task containers recorded under an agent's state dir `root` (each
/// process-runtime container leads its own group).
pub fn task_process_groups(root: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(root.join(TASKS_DIR)) else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pids_of_recorded_containers_and_skips_what_is_not_a_record() {
        let dir = std::env::temp_dir().join(format!("capstan-state-{}", std::process::id()));
        let tasks = dir.join(TASKS_DIR);
        fs::create_dir_all(&tasks).expect("dir");
        let rec = serde_json::json!({"containers": [{"handle": {"pid": 4242}}, {"handle": {"pid": 1}}, {"handle": {}}]});
        fs::write(tasks.join("a.json"), rec.to_string()).expect("write");
        fs::write(tasks.join("b.json"), b"not json").expect("write");
        let pids = task_process_groups(&dir);
        let _ = fs::remove_dir_all(&dir);
        assert_eq!(pids, vec![4242]);
        assert!(task_process_groups(Path::new("/nonexistent")).is_empty());
    }
}
