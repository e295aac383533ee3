//! `capstan-deployer`: the Capstan deployment controller.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_deployer::DeployerArgs::parse();
    let _telemetry =
        capstan_runtime::telemetry::init("capstan-deployer", args.common.log.log_format)?;
    capstan_deployer::run(args).await?;
    Ok(())
}
