//! d11-null: the null forwarder, the baseline of forwarding benchmarks.

use clap::Parser;
use d11_benchtools::{NullConfig, NullForwarder};
use d11_element::{main_with, open_ports, order_ports, run, ElementArgs};

/// Null forwarder: copies frames between its two ports unchanged (benchmark baseline).
#[derive(Parser)]
#[command(name = "d11-null", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    main_with("d11-null", || {
        cli.element.validate()?;
        cli.element.init_logging();
        let cfg: NullConfig = cli.element.load_config()?;
        if cfg.ports.len() != 2 {
            anyhow::bail!(
                "the null forwarder has exactly two ports; config has {}",
                cfg.ports.len()
            );
        }
        let names: Vec<&str> = cfg.ports.iter().map(|p| p.name.as_str()).collect();
        let ports = order_ports(open_ports(&cli.element)?, &names)?;
        run(&cli.element, NullForwarder::default(), ports)
    })
}
