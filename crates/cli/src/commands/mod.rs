//! `capstan <noun> <verb>`: one function per noun, each verb one API call; one file per noun,
//! sharing the helpers here.

mod capacity;
mod clusters;
mod exec;
mod instances;
mod lb;
mod secrets;
mod services;
mod settings;
mod taskdefs;
mod tasks;

pub use capacity::{CapacityProviderCmd, capacity_provider};
pub use clusters::{ClusterCmd, cluster};
pub use instances::{InstanceCmd, instance};
pub use lb::{ListenerCmd, TargetGroupCmd, listener, target_group};
pub use secrets::{SecretCmd, secret};
pub use services::{ServiceCmd, service};
pub use settings::{AccountSettingCmd, account_setting};
pub use taskdefs::{TaskDefCmd, taskdef};
pub use tasks::{TaskCmd, task};

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use capstan_proto::api::v1 as pb;
use clap::Subcommand;
use serde_json::{Value, json};

use crate::output::{self, Column, Format, field, short, time};
use crate::{Conn, api_error};

/// Reads a JSON document from a file, or stdin for `-`.
pub fn read_doc(path: &Path) -> anyhow::Result<String> {
    let text = if path == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?
    };
    // Catch a syntax error here, with the file's name, before the API sees it.
    serde_json::from_str::<Value>(&text)
        .with_context(|| format!("{} is not valid JSON", path.display()))?;
    Ok(text)
}

/// Prints a created document and its warnings.
fn document(out: Format, r: &pb::DocumentResponse, columns: &[Column]) {
    output::warnings(&r.warnings);
    output::docs(
        out,
        &output::parse_all(std::slice::from_ref(&r.json)),
        columns,
    );
}

fn done(failed: bool) -> anyhow::Result<i32> {
    Ok(i32::from(failed))
}

/// Columns of a cluster (clusters and PutClusterCapacityProviders show them).
const CLUSTER_COLUMNS: &[Column] = &[
    ("CLUSTER", |v| field(v, "clusterName")),
    ("STATUS", |v| field(v, "status")),
    ("INSTANCES", |v| {
        field(v, "registeredContainerInstancesCount")
    }),
    ("SERVICES", |v| field(v, "activeServicesCount")),
    ("RUNNING", |v| field(v, "runningTasksCount")),
    ("PENDING", |v| field(v, "pendingTasksCount")),
];
