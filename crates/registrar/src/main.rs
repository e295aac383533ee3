//! `capstan-registrar`: the Capstan target registrar.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_registrar::RegistrarArgs::parse();
    let _telemetry =
        capstan_runtime::telemetry::init("capstan-registrar", args.common.log.log_format)?;
    capstan_registrar::run(args).await?;
    Ok(())
}
