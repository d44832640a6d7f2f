//! d11-null: the null forwarder, the baseline of forwarding benchmarks.

use clap::Parser;
use d11_benchtools::{NullConfig, NullForwarder};
use d11_element::{program_main, ElementArgs};

/// Null forwarder: copies frames between its two ports unchanged (benchmark baseline).
#[derive(Parser)]
#[command(name = "d11-null", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    program_main("d11-null", &cli.element, |cfg: &NullConfig| {
        if cfg.ports.len() != 2 {
            anyhow::bail!(
                "the null forwarder has exactly two ports; config has {}",
                cfg.ports.len()
            );
        }
        Ok(NullForwarder::default())
    })
}
