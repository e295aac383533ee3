//! `capstan`: the Capstan command line.

use clap::Parser;

#[tokio::main]
async fn main() {
    let cli = capstan_cli::Cli::parse();
    match capstan_cli::run(cli).await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}
