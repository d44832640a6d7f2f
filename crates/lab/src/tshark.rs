//! Reading captures back with tshark: one way for the journey, the CLI and the netns tests to
//! ask what a pcapng holds (fields of matching frames, malformed frames).

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// The filter that finds frames tshark marks malformed or with an error-level expert note.
///
/// Not counted: a TCP retransmission that lands in a reassembly already made (Wireshark's
/// "New fragment overlaps old data (retransmission?)", which it files as a reassembly error)
/// when its octets are the same as the first time; a retransmission whose octets differ
/// (`tcp.segment.overlap.conflict`) still counts. A lossy path (the phone's 2 MB picture
/// through the mobile network) retransmits, and that is no malformed frame.
pub const MALFORMED: &str = "(_ws.malformed || _ws.expert.severity == error) && !(_ws.expert.message == \"New fragment overlaps old data (retransmission?)\" && !tcp.segment.overlap.conflict)";

/// One tshark run over a capture file.
pub struct Tshark {
    cmd: Command,
    file: String,
}

impl Tshark {
    /// `tshark -n -r FILE`.
    pub fn read(file: &Path) -> Self {
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(file);
        Self {
            cmd,
            file: file.display().to_string(),
        }
    }

    /// A preference (`-o NAME:VALUE`).
    pub fn pref(mut self, pref: &str) -> Self {
        self.cmd.arg("-o").arg(pref);
        self
    }

    /// GTP-U T-PDUs are Ethernet frames (an Ethernet PDU session), not IP packets.
    pub fn ethernet_tpdu(self, on: bool) -> Self {
        if on {
            self.pref("gtp.dissect_tpdu_as:ETHERNET")
        } else {
            self
        }
    }

    /// Decrypts TLS with this key log, if it exists.
    pub fn keylog(self, file: &Path) -> Self {
        if file.exists() {
            let p = format!("tls.keylog_file:{}", file.display());
            self.pref(&p)
        } else {
            self
        }
    }

    /// Loads a Lua dissector.
    pub fn lua(mut self, script: &Path) -> Self {
        self.cmd
            .arg("-X")
            .arg(format!("lua_script:{}", script.display()));
        self
    }

    /// Any other arguments, as tshark takes them.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, a: I) -> Self {
        self.cmd.args(a);
        self
    }

    fn run(mut self) -> Result<String> {
        let o = self
            .cmd
            .output()
            .context("cannot run tshark (apt-get install tshark)")?;
        if !o.status.success() {
            bail!(
                "tshark on {}: {}",
                self.file,
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// The `fields` of each frame matching `filter`, one row per frame.
    pub fn fields(self, filter: &str, fields: &[&str]) -> Result<Vec<Vec<String>>> {
        let mut t = self.args(["-Y", filter, "-T", "fields", "-E", "separator=|"]);
        for f in fields {
            t = t.args(["-e", f]);
        }
        Ok(t.run()?
            .lines()
            .map(|l| l.split('|').map(str::to_string).collect())
            .collect())
    }

    /// The summary line of each frame matching `filter`.
    pub fn lines(self, filter: &str) -> Result<Vec<String>> {
        Ok(self
            .args(["-Y", filter])
            .run()?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// The frames tshark finds malformed, or with an error-level expert note.
    pub fn malformed(self) -> Result<Vec<String>> {
        self.lines(MALFORMED)
    }
}
