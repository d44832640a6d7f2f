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

/// What tshark says of a file that ends inside a block.
const CUT_SHORT: &str = "cut short in the middle of a packet";

/// One tshark run over a capture file.
pub struct Tshark {
    cmd: Command,
    file: String,
    live: bool,
}

impl Tshark {
    /// `tshark -n -r FILE`, of a finished capture: a file that ends inside a block is an error.
    pub fn read(file: &Path) -> Self {
        let mut cmd = Command::new("tshark");
        cmd.args(["-n", "-r"]).arg(file);
        Self {
            cmd,
            file: file.display().to_string(),
            live: false,
        }
    }

    /// `tshark -n -r FILE`, of a capture its writer is still writing (a lab that is up): a
    /// segment's capture appends frame by frame, a port's every 100 ms, and an append is not
    /// atomic to a reader, so the file may end inside the block being written. tshark then
    /// reads every frame before that block and exits with an error; here that is what was
    /// asked for, not an error.
    pub fn read_live(file: &Path) -> Self {
        Self {
            live: true,
            ..Self::read(file)
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
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Read live, a file cut inside a block gave every frame before that block.
        let cut_live = self.live && stderr.contains(CUT_SHORT);
        if !o.status.success() && !cut_live {
            bail!("tshark on {}: {}", self.file, stderr.trim());
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

#[cfg(test)]
mod tests {
    use super::*;
    use d11_netdev::pcap::{Direction, PcapngSink};

    /// A capture whose writer is still at it ends inside a block: as a finished capture that
    /// is an error; read live, the frames before that block are what the file holds.
    #[test]
    fn a_capture_cut_inside_a_block_reads_live_up_to_the_cut() {
        if Command::new("tshark").arg("-v").output().is_err() {
            eprintln!("skipped: tshark is not installed (sudo ./scripts/test installs it)");
            return;
        }
        let mut sink = PcapngSink::new(Vec::new(), "eth0", None).unwrap();
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        sink.write(&frame, Direction::Inbound, None).unwrap();
        let whole = sink.get_mut().len();
        sink.write(&frame, Direction::Inbound, None).unwrap();
        let bytes = sink.get_mut().clone();
        let dir = std::env::temp_dir().join(format!("d11-tshark-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let both = dir.join("both.pcapng");
        let cut = dir.join("cut.pcapng");
        std::fs::write(&both, &bytes).unwrap();
        std::fs::write(&cut, &bytes[..whole + 30]).unwrap();
        let finished = Tshark::read(&cut).lines("eth");
        let live = Tshark::read_live(&cut).lines("eth");
        let whole_file = Tshark::read(&both).lines("eth");
        let _ = std::fs::remove_dir_all(&dir);
        let e = finished.expect_err("a file cut inside a block is an error when finished");
        assert!(e.to_string().contains(CUT_SHORT), "{e}");
        assert_eq!(live.unwrap().len(), 1);
        assert_eq!(whole_file.unwrap().len(), 2);
    }
}
