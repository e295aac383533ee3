//! `capstan-agent`: the Capstan node agent.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_agent::AgentArgs::parse();
    let _telemetry = capstan_runtime::telemetry::init("capstan-agent", args.log.log_format)?;
    capstan_agent::run(args).await?;
    Ok(())
}
