//! pcapng output: a writer usable on its own ([`PcapngSink`], e.g. for `d11 lab capture`) and a
//! device wrapper ([`Capture`]) that records every frame a port receives and sends.
//!
//! Each file holds one Interface Description Block naming the interface (`if_name`) with
//! nanosecond timestamps (`if_tsresol` = 9); each frame is an Enhanced Packet Block with its
//! direction in `epb_flags` and, when the sender gave one, a comment saying what it decided.

use crate::{FrameDevice, Gso};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::io::{self, Write};
use std::os::fd::RawFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Direction of a frame, as pcapng's `epb_flags` bits 0-1 encode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Unknown = 0,
    Inbound = 1,
    Outbound = 2,
}

/// Writes Ethernet frames of one interface as pcapng.
pub struct PcapngSink<W: Write> {
    writer: PcapNgWriter<W>,
}

fn pcap_err(e: pcap_file::PcapError) -> io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl<W: Write> PcapngSink<W> {
    /// Writes the section header and the interface description for `if_name`.
    pub fn new(writer: W, if_name: &str, description: Option<&str>) -> io::Result<Self> {
        let mut writer = PcapNgWriter::new(writer).map_err(pcap_err)?;
        let mut options = vec![
            InterfaceDescriptionOption::IfName(Cow::Owned(if_name.to_string())),
            InterfaceDescriptionOption::IfTsResol(9),
        ];
        if let Some(d) = description {
            options.push(InterfaceDescriptionOption::IfDescription(Cow::Owned(
                d.to_string(),
            )));
        }
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: 0,
                options,
            })
            .map_err(pcap_err)?;
        Ok(Self { writer })
    }

    /// Appends one frame stamped with the wall clock.
    pub fn write(&mut self, frame: &[u8], dir: Direction, comment: Option<&str>) -> io::Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        self.write_at(ts, frame, dir, comment)
    }

    /// Appends one frame with the given time since the Unix epoch.
    pub fn write_at(
        &mut self,
        ts: Duration,
        frame: &[u8],
        dir: Direction,
        comment: Option<&str>,
    ) -> io::Result<()> {
        let mut options = Vec::new();
        if dir != Direction::Unknown {
            options.push(EnhancedPacketOption::Flags(dir as u32));
        }
        if let Some(c) = comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(c)));
        }
        self.writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: 0,
                timestamp: ts,
                original_len: frame.len() as u32,
                data: Cow::Borrowed(frame),
                options,
            })
            .map(|_| ())
            .map_err(pcap_err)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }

    pub fn get_mut(&mut self) -> &mut W {
        self.writer.get_mut()
    }
}

/// Records every frame a device receives and sends.
pub struct Capture<D, W: Write> {
    inner: D,
    sink: PcapngSink<W>,
    errors: u64,
    /// Time of the last flush: captures are flushed at least every 100 ms, not per frame.
    flushed: Option<Instant>,
}

impl<D: FrameDevice, W: Write> Capture<D, W> {
    /// Records under the device's own name.
    pub fn new(inner: D, writer: W) -> io::Result<Self> {
        let name = inner.name().to_string();
        Self::with_name(inner, writer, &name)
    }

    /// Records with `if_name` in the interface block (e.g. `r1:eth1`, node and port).
    pub fn with_name(inner: D, writer: W, if_name: &str) -> io::Result<Self> {
        let desc = format!("device {}", inner.name());
        Ok(Self {
            inner,
            sink: PcapngSink::new(writer, if_name, Some(&desc))?,
            errors: 0,
            flushed: None,
        })
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    fn record(&mut self, frame: &[u8], dir: Direction, note: Option<&str>) {
        if self.sink.write(frame, dir, note).is_err() {
            // A full disk must not stop the element; the loss is counted.
            self.errors += 1;
        }
    }
}

impl<D: FrameDevice, W: Write> FrameDevice for Capture<D, W> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn recv(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let r = self.inner.recv(now, buf)?;
        if let Some(n) = r {
            self.record(&buf[..n], Direction::Inbound, None);
        }
        Ok(r)
    }
    fn send(&mut self, now: Instant, frame: &[u8]) -> io::Result<()> {
        self.record(frame, Direction::Outbound, None);
        self.inner.send(now, frame)
    }
    fn wants_notes(&self) -> bool {
        true
    }
    fn send_noted(&mut self, now: Instant, frame: &[u8], note: &str) -> io::Result<()> {
        self.record(frame, Direction::Outbound, Some(note));
        self.inner.send(now, frame)
    }
    fn offloads(&self) -> bool {
        self.inner.offloads()
    }
    fn tunnel_offloads(&self) -> bool {
        self.inner.tunnel_offloads()
    }
    fn take_udp_segments(&mut self) -> bool {
        self.inner.take_udp_segments()
    }
    // A super-frame is recorded as it travels, as tcpdump on an interface with TSO shows it.
    fn recv_gso(&mut self, now: Instant, buf: &mut [u8]) -> io::Result<Option<(usize, Gso)>> {
        let r = self.inner.recv_gso(now, buf)?;
        if let Some((n, _)) = r {
            self.record(&buf[..n], Direction::Inbound, None);
        }
        Ok(r)
    }
    fn send_gso(&mut self, now: Instant, frame: &[u8], gso: &Gso) -> io::Result<()> {
        self.record(frame, Direction::Outbound, None);
        self.inner.send_gso(now, frame, gso)
    }
    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }
    fn poll(&mut self, now: Instant) {
        self.inner.poll(now);
        if self
            .flushed
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_millis(100))
        {
            if self.sink.flush().is_err() {
                self.errors += 1;
            }
            self.flushed = Some(now);
        }
    }
    fn raw_fd(&self) -> RawFd {
        self.inner.raw_fd()
    }
    fn counters(&self, out: &mut dyn FnMut(&'static str, u64)) {
        self.inner.counters(out);
        out("capture_write_errors", self.errors);
    }
}

impl<D, W: Write> Drop for Capture<D, W> {
    fn drop(&mut self) {
        let _ = self.sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mem::MemPair;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn records_both_directions_with_notes() {
        let (a, mut b) = MemPair::new("eth0", "peer").unwrap();
        let mut cap = Capture::new(a, Vec::new()).unwrap();
        let now = Instant::now();
        cap.send_noted(now, &[0xaa; 60], "forwarded via eth1")
            .unwrap();
        b.send(now, &[0xbb; 64]).unwrap();
        let mut buf = [0u8; 128];
        assert_eq!(cap.recv(now, &mut buf).unwrap(), Some(64));
        let bytes = std::mem::take(cap.sink.get_mut());
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(block) = r.next_block() {
            match block.unwrap().into_owned() {
                Block::InterfaceDescription(idb) => {
                    assert!(idb
                        .options
                        .contains(&InterfaceDescriptionOption::IfName("eth0".into())))
                }
                Block::EnhancedPacket(epb) => seen.push((epb.data.len(), epb.options.clone())),
                _ => {}
            }
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, 60);
        assert!(seen[0]
            .1
            .contains(&EnhancedPacketOption::Comment("forwarded via eth1".into())));
        assert!(seen[0].1.contains(&EnhancedPacketOption::Flags(2)));
        assert!(seen[1].1.contains(&EnhancedPacketOption::Flags(1)));
    }
}
