//! d11-ue: the phone.

use clap::Parser;
use d11_element::{main_with, open_ports, order_ports, run_app, ElementArgs, Port};
use d11_netdev::tap::{Tap, TapConfig};
use d11_ue::{Mode, Ue, UeConfig};
use d11_wire::gtpv2::message::PdnType;

/// The phone: attaches through the eNodeB on its `radio` port with the IMSI and key of its
/// USIM (`imsi`, `key`, `opc`, `sqn`), then runs its app on the userspace stack (`mode =
/// "app"`, `app = { url, ... }`; `d11 show NODE app`) or brings up a modem device (`mode =
/// "modem"`: `tun_name`, "uesim0", a TAP for an Ethernet PDU session, a TUN for an IPv4 one)
/// with the assigned address, MTU and default route, for the kernel's programs;
/// `d11 show NODE ue`.
///
/// The config (--config) is the node's entry of a topology file, as JSON.
#[derive(Parser)]
#[command(name = "d11-ue", version)]
struct Cli {
    #[command(flatten)]
    element: ElementArgs,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    main_with("d11-ue", || {
        let args = &cli.element;
        args.validate()?;
        args.init_logging();
        let cfg: UeConfig = args.load_config()?;
        let mut ports = order_ports(open_ports(args)?, &["radio"])?;
        let modem = if cfg.mode == Mode::Modem {
            let tun = cfg.pdn_type == PdnType::Ipv4;
            let dev = Tap::open(&TapConfig {
                name: &cfg.tun_name,
                netns: None,
                bridge: None,
                mtu: None,
                tun,
                offloads: false,
            })
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", cfg.tun_name))?;
            if !tun {
                // The kernel's frames leave with the phone's own MAC.
                let mac = cfg.ports[0].mac_for(&cfg.name)?;
                let status = std::process::Command::new("ip")
                    .args(["link", "set", "dev", &cfg.tun_name, "address"])
                    .arg(d11_element::mac_string(&mac))
                    .status()?;
                if !status.success() {
                    anyhow::bail!("cannot set the MAC of {}", cfg.tun_name);
                }
            }
            ports.push(Port::new(cfg.tun_name.clone(), Box::new(dev)));
            Some(1)
        } else {
            None
        };
        run_app(args, ports, || {
            let (ue, sh, attached) = Ue::new(&cfg, modem)?;
            let app = d11_ue::app(&cfg, sh, attached);
            Ok((ue, app))
        })
    })
}
