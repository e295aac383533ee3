//! `capstan-nodegroup-local`: node groups of local capstan-agent processes.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_nodegroup_local::Args::parse();
    let _telemetry = capstan_runtime::telemetry::init(
        "capstan-nodegroup-local",
        capstan_runtime::telemetry::LogFormat::Text,
    )?;
    capstan_nodegroup_local::run(args).await?;
    Ok(())
}
