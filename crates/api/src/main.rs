//! `capstan-api`: Capstan's gRPC API server.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_api::ApiArgs::parse();
    let _telemetry = capstan_runtime::telemetry::init("capstan-api", args.log.log_format)?;
    capstan_api::run(args).await?;
    Ok(())
}
