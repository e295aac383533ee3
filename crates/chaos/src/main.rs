//! `capstan-chaos`: see the library.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = capstan_chaos::args::Args::parse();
    let report = capstan_chaos::run(&args).await?;
    println!("{}", report.render());
    if !report.violations.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
