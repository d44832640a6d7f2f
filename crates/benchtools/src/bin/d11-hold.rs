//! d11-hold: opens N TCP connections (kernel sockets, one after the other) and holds them idle
//! until its standard input closes: to measure a server's memory per idle connection.

use anyhow::Context;
use clap::Parser;
use std::io::Read;

/// Holds N idle TCP connections to ADDR; prints "HELD N" once all are established.
#[derive(Parser)]
#[command(name = "d11-hold", version)]
struct Cli {
    /// Where to connect (e.g. 10.0.2.20:443).
    addr: std::net::SocketAddr,
    #[arg(long, default_value_t = 1000)]
    count: usize,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    d11_element::main_with("d11-hold", || {
        let mut held = Vec::with_capacity(cli.count);
        for i in 0..cli.count {
            let s =
                std::net::TcpStream::connect_timeout(&cli.addr, std::time::Duration::from_secs(5))
                    .with_context(|| format!("connection {i} to {}", cli.addr))?;
            held.push(s);
        }
        println!("HELD {}", held.len());
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        Ok(())
    })
}
