//! Command-line options every element program shares. The lab builder sets them; a user can
//! run a program by hand with the same flags.

use anyhow::{bail, Context, Result};
use clap::Args;
use d11_netdev::impair::Impairment;
use std::path::PathBuf;

/// Options shared by all element programs.
#[derive(Debug, Clone, Args)]
pub struct ElementArgs {
    /// The node's name, used in logs and in `d11 show`.
    #[arg(long, default_value = "node")]
    pub node: String,

    /// A port: NAME=TAP[@BRIDGE]. Creates TAP (in --fabric's namespace if given) and joins
    /// BRIDGE there. Repeat for each port, in the order the config names them.
    #[arg(long = "port", value_name = "NAME=TAP[@BRIDGE]")]
    pub ports: Vec<String>,

    /// Network namespace (a path such as /run/netns/d11-fabric) in which to create the TAPs.
    #[arg(long, value_name = "PATH")]
    pub fabric: Option<PathBuf>,

    /// The program's configuration: its node's entry of the topology, as JSON.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Unix socket on which to answer `d11 show`.
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,

    /// A descriptor to write "READY\n" to (and close) once ports and control socket are up.
    #[arg(long, value_name = "FD")]
    pub ready_fd: Option<i32>,

    /// Write every frame of every port to DIR/<node>-<port>.pcapng, with decision notes.
    #[arg(long, value_name = "DIR")]
    pub capture_dir: Option<PathBuf>,

    /// Impair a port: PORT:tx|rx|both:SPEC, SPEC like loss=0.02,reorder=0.05,delay=5ms.
    #[arg(long = "impair", value_name = "PORT:DIR:SPEC")]
    pub impairments: Vec<String>,

    /// Offloads on a port's TAP (IFF_VNET_HDR): TCP super-frames and partial checksums from
    /// the kernel, passed on whole where the program and the next port can. Repeat per port.
    #[arg(long = "offload", value_name = "PORT")]
    pub offload: Vec<String>,

    /// Seed for impairments (same seed, same drops).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// A parsed `--port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    pub name: String,
    pub tap: String,
    pub bridge: Option<String>,
}

impl PortSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let (name, rest) = s
            .split_once('=')
            .with_context(|| format!("--port {s:?}: expected NAME=TAP[@BRIDGE]"))?;
        let (tap, bridge) = match rest.split_once('@') {
            Some((t, b)) => (t, Some(b.to_string())),
            None => (rest, None),
        };
        if name.is_empty() || tap.is_empty() || tap.len() > 15 {
            bail!("--port {s:?}: port and TAP names must be non-empty, TAP at most 15 bytes");
        }
        Ok(Self {
            name: name.to_string(),
            tap: tap.to_string(),
            bridge,
        })
    }
}

/// Impairments for one port.
#[derive(Debug, Clone, Default)]
pub struct PortImpairment {
    pub tx: Impairment,
    pub rx: Impairment,
}

impl ElementArgs {
    pub fn port_specs(&self) -> Result<Vec<PortSpec>> {
        let specs: Vec<_> = self
            .ports
            .iter()
            .map(|p| PortSpec::parse(p))
            .collect::<Result<_>>()?;
        for (i, a) in specs.iter().enumerate() {
            if specs[..i].iter().any(|b| b.name == a.name) {
                bail!("--port: port {:?} given twice", a.name);
            }
        }
        Ok(specs)
    }

    /// The impairment of port `name`, from every `--impair` that names it.
    pub fn impairment(&self, name: &str) -> Result<PortImpairment> {
        let mut out = PortImpairment::default();
        for s in &self.impairments {
            let mut it = s.splitn(3, ':');
            let (Some(port), Some(dir), Some(spec)) = (it.next(), it.next(), it.next()) else {
                bail!("--impair {s:?}: expected PORT:tx|rx|both:SPEC");
            };
            if port != name {
                continue;
            }
            let imp =
                Impairment::parse(spec).map_err(|e| anyhow::anyhow!("--impair {s:?}: {e}"))?;
            match dir {
                "tx" => out.tx = imp,
                "rx" => out.rx = imp,
                "both" => {
                    out.tx = imp.clone();
                    out.rx = imp;
                }
                _ => bail!("--impair {s:?}: direction must be tx, rx or both"),
            }
        }
        Ok(out)
    }

    /// Checks every option that needs no system access (ports, impairments), so that a typo
    /// fails before anything is opened.
    pub fn validate(&self) -> Result<()> {
        for p in self.port_specs()? {
            self.impairment(&p.name)?;
        }
        for s in &self.impairments {
            let port = s.split(':').next().unwrap_or_default();
            if !self.ports.iter().any(|p| p.split('=').next() == Some(port)) {
                bail!("--impair {s:?}: no --port named {port:?}");
            }
        }
        for port in &self.offload {
            if !self
                .ports
                .iter()
                .any(|p| p.split('=').next() == Some(port.as_str()))
            {
                bail!("--offload {port:?}: no --port named {port:?}");
            }
            let imp = self.impairment(port)?;
            if !imp.tx.is_none() || !imp.rx.is_none() {
                bail!("--offload {port:?}: a port with offloads cannot be impaired (impairment works on segments)");
            }
        }
        Ok(())
    }

    /// Whether `--offload` names this port.
    pub fn offloads(&self, name: &str) -> bool {
        self.offload.iter().any(|p| p == name)
    }

    /// Reads and parses the config file into `T`.
    pub fn load_config<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let path = self.config.as_ref().context("--config FILE is required")?;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let text = self.mark_offloads(&text);
        let cfg: T =
            parse_json_config(&text).with_context(|| format!("config {}", path.display()))?;
        Ok(cfg)
    }

    /// The config with each port's `offload` as the command line says (`--offload`), so that
    /// the device and the program that fills it agree. Text that is not a JSON object with
    /// `ports` is left for the parser to judge.
    fn mark_offloads(&self, text: &str) -> String {
        let Ok(mut v) = serde_json::from_str::<serde_json::Value>(text) else {
            return text.to_string();
        };
        let Some(ports) = v.get_mut("ports").and_then(|p| p.as_array_mut()) else {
            return text.to_string();
        };
        for p in ports.iter_mut() {
            let on = p
                .get("name")
                .and_then(|n| n.as_str())
                .is_some_and(|n| self.offloads(n));
            if let Some(o) = p.as_object_mut() {
                o.insert("offload".into(), serde_json::Value::Bool(on));
            }
        }
        serde_json::to_string(&v).unwrap_or_else(|_| text.to_string())
    }

    /// Sets up logging to stderr (the lab builder sends it to the node's log file).
    pub fn init_logging(&self) {
        use tracing_subscriber::EnvFilter;
        let filter = EnvFilter::try_from_env("D11_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
        let b = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        if self.log_json {
            b.json().init();
        } else {
            b.with_ansi(false).init();
        }
    }
}

/// A program's config is its node's entry of the topology file, which the lab builder writes
/// out as JSON: one parser for every program, and the file a user can read with `jq`.
/// An error names the key at fault (`stock.book: invalid type: ...`), which is the topology
/// file's key too.
fn parse_json_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        // serde_json adds where in the JSON it was: the user wrote TOML, so leave it out.
        let inner = inner
            .rsplit_once(" at line ")
            .map_or(inner.as_str(), |(m, _)| m)
            .to_string();
        if path == "." || path.is_empty() {
            anyhow::anyhow!("{inner}")
        } else {
            anyhow::anyhow!("key {path}: {inner}")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_spec() {
        assert_eq!(
            PortSpec::parse("eth0=r1-eth0@left").unwrap(),
            PortSpec {
                name: "eth0".into(),
                tap: "r1-eth0".into(),
                bridge: Some("left".into())
            }
        );
        assert!(PortSpec::parse("eth0").is_err());
        assert!(PortSpec::parse("eth0=waytoolongtapname0").is_err());
    }

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        a: ElementArgs,
    }

    /// The config a program reads says of each port what `--offload` says, whatever the file
    /// said.
    #[test]
    fn the_config_says_which_ports_offload_as_the_command_line_does() {
        use clap::Parser;
        let cli = Cli::parse_from([
            "p",
            "--port",
            "eth0=t0",
            "--port",
            "eth1=t1",
            "--offload",
            "eth1",
        ]);
        let text =
            r#"{"name": "n", "ports": [{"name": "eth0", "offload": true}, {"name": "eth1"}]}"#;
        let v: serde_json::Value = serde_json::from_str(&cli.a.mark_offloads(text)).unwrap();
        assert_eq!(v["ports"][0]["offload"], false);
        assert_eq!(v["ports"][1]["offload"], true);
        assert_eq!(v["name"], "n");
        // Not a config with ports: left as it was, for the parser to judge.
        assert_eq!(cli.a.mark_offloads("{oops"), "{oops");
    }
}
