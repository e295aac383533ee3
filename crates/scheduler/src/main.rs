//! `capstan-scheduler`: the Capstan service scheduler.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_scheduler::SchedulerArgs::parse();
    let _telemetry =
        capstan_runtime::telemetry::init("capstan-scheduler", args.common.log.log_format)?;
    capstan_scheduler::run(args).await?;
    Ok(())
}
