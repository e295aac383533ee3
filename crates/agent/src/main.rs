//! `capstan-agent`: the Capstan node agent.

use clap::Parser;

fn main() -> anyhow::Result<()> {
    // The same binary is each process container's log shim (see `capstan_agent::logs`).
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .get(1)
        .is_some_and(|a| a == capstan_agent::logs::SHIM_ARG)
    {
        let (Some(path), Some(max)) = (argv.get(2), argv.get(3)) else {
            anyhow::bail!("usage: capstan-agent __log-shim FILE MAX_BYTES [BUFFER_BYTES]");
        };
        let max: u64 = max.to_string_lossy().parse()?;
        let buffer = argv.get(4).map(|b| b.to_string_lossy().into_owned());
        let mode = capstan_agent::logs::shim_mode(buffer.as_deref())?;
        capstan_agent::logs::run_shim(std::io::stdin(), std::path::Path::new(path), max, mode)?;
        return Ok(());
    }
    agent()
}

#[tokio::main]
async fn agent() -> anyhow::Result<()> {
    let args = capstan_agent::AgentArgs::parse();
    let _telemetry = capstan_runtime::telemetry::init("capstan-agent", args.log.log_format)?;
    capstan_agent::run(args).await?;
    Ok(())
}
