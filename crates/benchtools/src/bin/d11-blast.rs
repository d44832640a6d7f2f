//! d11-blast: sends UDP frames as fast as it can (or at a rate) out of an interface of the
//! current namespace, with AF_PACKET and sendmmsg, and prints what it sent as JSON.

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

/// Frame generator for benchmarks: UDP/IPv4 frames of a fixed size out of IFNAME.
#[derive(Parser)]
#[command(name = "d11-blast", version)]
struct Cli {
    /// Interface to send from (in the current network namespace).
    #[arg(long)]
    ifname: String,
    /// Destination MAC (the next hop).
    #[arg(long)]
    dst_mac: String,
    #[arg(long)]
    src_ip: Ipv4Addr,
    #[arg(long)]
    dst_ip: Ipv4Addr,
    /// Ethernet frame size in octets, without FCS (60 to 1514).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Frames per second at most (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Send TCP SYNs to this port instead of UDP: a SYN flood, each SYN from another source
    /// port (and address, see --src-count).
    #[arg(long, value_name = "PORT")]
    syn: Option<u16>,
    /// Spread source addresses over this many, counting up from --src-ip.
    #[arg(long, default_value_t = 1)]
    src_count: u32,
    /// Stop after this many frames (0 = when --duration ends).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Send GTP-U G-PDUs (UDP 2152) with this TEID, carrying a UDP/IPv4 packet from
    /// --inner-src to --inner-dst: what an eNodeB, SGW or PGW receives.
    #[arg(long, value_name = "TEID")]
    gtpu_teid: Option<u32>,
    #[arg(long, default_value = "10.45.0.2")]
    inner_src: Ipv4Addr,
    #[arg(long, default_value = "172.16.9.1")]
    inner_dst: Ipv4Addr,
}

/// An IPv4/UDP packet of `len` octets (discard port), checksum of the header filled.
fn udp_packet(ip: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, dport: u16) {
    let len = ip.len();
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    d11_wire::fill_ipv4_checksum(&mut ip[..20]);
    ip[20..22].copy_from_slice(&dport.to_be_bytes());
    ip[22..24].copy_from_slice(&dport.to_be_bytes());
    ip[24..26].copy_from_slice(&((len - 20) as u16).to_be_bytes());
}

fn mac(s: &str) -> Result<[u8; 6]> {
    let mut m = [0u8; 6];
    let p: Vec<_> = s.split(':').collect();
    if p.len() != 6 {
        bail!("bad MAC {s}");
    }
    for (o, x) in m.iter_mut().zip(p) {
        *o = u8::from_str_radix(x, 16).with_context(|| format!("bad MAC {s}"))?;
    }
    Ok(m)
}

fn frame(cli: &Cli, src_mac: [u8; 6]) -> Result<Vec<u8>> {
    if !(60..=1514).contains(&cli.size) {
        bail!("--size must be 60..=1514");
    }
    let mut f = vec![0u8; cli.size];
    f[0..6].copy_from_slice(&mac(&cli.dst_mac)?);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    match cli.gtpu_teid {
        None => udp_packet(&mut f[14..], cli.src_ip, cli.dst_ip, 9),
        Some(teid) => {
            // Outer IPv4/UDP 2152 (checksum zero, as RFC 768 allows over IPv4), GTP-U header,
            // then the inner packet.
            if cli.size < 14 + 36 + 28 {
                bail!("--size must be at least 78 for a G-PDU");
            }
            udp_packet(&mut f[14..], cli.src_ip, cli.dst_ip, 2152);
            let g = &mut f[14 + 28..];
            let inner = g.len() - 8;
            g[0] = 0x30;
            g[1] = 0xff;
            g[2..4].copy_from_slice(&(inner as u16).to_be_bytes());
            g[4..8].copy_from_slice(&teid.to_be_bytes());
            udp_packet(&mut g[8..], cli.inner_src, cli.inner_dst, 9);
        }
    }
    Ok(f)
}

/// The i-th SYN of a flood: source address and port vary, checksums are right.
fn syn_frame(cli: &Cli, src_mac: [u8; 6], dport: u16, i: u64) -> Result<Vec<u8>> {
    let mut f = vec![0u8; 14 + 20 + 20];
    f[0..6].copy_from_slice(&mac(&cli.dst_mac)?);
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let src = Ipv4Addr::from(
        u32::from(cli.src_ip).wrapping_add((i % u64::from(cli.src_count.max(1))) as u32),
    );
    let sport = 1024 + (i % 60000) as u16;
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&(i as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&cli.dst_ip.octets());
    d11_wire::fill_ipv4_checksum(&mut ip[..20]);
    let t = &mut ip[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&(i as u32).wrapping_mul(2_654_435_761).to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let mut pseudo = Vec::with_capacity(32);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&cli.dst_ip.octets());
    pseudo.extend_from_slice(&[0, 6, 0, 20]);
    pseudo.extend_from_slice(&t[..20]);
    let c = d11_wire::internet_checksum(&pseudo);
    t[16..18].copy_from_slice(&c.to_be_bytes());
    f.resize(60, 0);
    Ok(f)
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    d11_element::main_with("d11-blast", || blast(&cli))
}

fn blast(cli: &Cli) -> Result<()> {
    let sock = d11_netdev::packet::PacketSocket::open(&cli.ifname, false)
        .with_context(|| format!("AF_PACKET socket on {}", cli.ifname))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock.fd());
    let src_mac = {
        let a = std::fs::read_to_string(format!("/sys/class/net/{}/address", cli.ifname))
            .unwrap_or_default();
        mac(a.trim()).unwrap_or([2, 0, 0, 0, 0, 1])
    };
    let mut sll = sock.addr();
    const BATCH: usize = 64;
    // One frame repeated (UDP), or 64 distinct SYNs rewritten in place before each batch.
    let mut frames: Vec<Vec<u8>> = match cli.syn {
        Some(p) => (0..BATCH as u64)
            .map(|i| syn_frame(cli, src_mac, p, i))
            .collect::<Result<_>>()?,
        None => vec![frame(cli, src_mac)?; BATCH],
    };
    let mut iovs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut _,
            iov_len: f.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .map(|iov| {
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let start = Instant::now();
    let dur = Duration::from_secs_f64(cli.duration);
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    while start.elapsed() < dur && (cli.count == 0 || sent < cli.count) {
        if let Some(p) = cli.syn {
            for (k, f) in frames.iter_mut().enumerate() {
                f.copy_from_slice(&syn_frame(cli, src_mac, p, sent + k as u64)?);
            }
        }
        let left = if cli.count > 0 {
            (cli.count - sent) as usize
        } else {
            BATCH
        };
        let batch = if cli.rate > 0 {
            let due = (start.elapsed().as_secs_f64() * cli.rate as f64) as u64;
            if due <= sent {
                std::hint::spin_loop();
                continue;
            }
            ((due - sent) as usize).min(BATCH).min(left)
        } else {
            BATCH.min(left)
        };
        // SAFETY: msgs points at valid headers, iovec and address for the call's duration.
        let n = unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), batch as u32, 0) };
        if n < 0 {
            errors += 1;
        } else {
            sent += n as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    drop(sock);
    println!(
        "{}",
        serde_json::json!({ "sent": sent, "seconds": secs, "errors": errors, "size": cli.size })
    );
    Ok(())
}
