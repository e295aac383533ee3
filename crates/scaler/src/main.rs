//! `capstan-scaler`: the Capstan capacity-provider scaler.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_scaler::ScalerArgs::parse();
    let _telemetry =
        capstan_runtime::telemetry::init("capstan-scaler", args.common.log.log_format)?;
    capstan_scaler::run(args).await?;
    Ok(())
}
