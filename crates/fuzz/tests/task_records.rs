//! The agent's on-disk task records, however damaged (a crash mid-write on another
//! filesystem, a disk error, a hand edit): loading a state dir never panics, skips what does
//! not decode, and still loads the good records beside it.

use capstan_agent::state::StateDir;
use capstan_fuzz::{config, corpus, inputs};
use proptest::prelude::*;

fn load(files: &[Vec<u8>]) {
    let dir = tempfile::tempdir().expect("temp dir");
    let state = StateDir::open(dir.path()).expect("state dir");
    let tasks = dir.path().join(capstan_agent_client::state::TASKS_DIR);
    std::fs::create_dir_all(&tasks).expect("tasks dir");
    for (i, bytes) in files.iter().enumerate() {
        std::fs::write(tasks.join(format!("t{i}.json")), bytes).expect("write");
    }
    // A good record beside the damaged ones is always loaded.
    let good = &corpus("task-records", false)[0];
    std::fs::write(tasks.join("good.json"), good).expect("write");
    let loaded = state.load_tasks();
    assert!(
        loaded
            .iter()
            .any(|r| r.task_id == "0123456789abcdef0123456789abcdef"),
        "the good record was not loaded"
    );
    let _ = capstan_agent_client::state::task_process_groups(dir.path());
}

#[test]
fn the_seed_records_load() {
    let seeds = corpus("task-records", false);
    load(&seeds);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn damaged_records_are_skipped_and_never_panic(
        files in proptest::collection::vec(inputs(corpus("task-records", false)), 1..4)
    ) {
        load(&files);
    }
}
