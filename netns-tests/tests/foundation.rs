//! The foundation's root tests: a router between userspace and kernel hosts, captures, garbage
//! on the wire, crash and cleanup, and the codecs as tshark reads them.

use d11_netns_tests::*;
use std::path::Path;

const LAB: &str = include_str!("../../labs/two-hosts-router.toml");

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn ping_traceroute_and_tcp_echo_through_the_router() {
    let notes_dir = scratch("notes");
    let notes = notes_dir.0.clone();
    let lab = Lab::up_with(LAB, &["--program-captures", notes.to_str().unwrap()]);
    let right = lab.capture("right");
    let port = lab.capture("r1:eth1");

    // The segment's capture is frozen while the pings cross: each frame keeps the time it
    // crossed the segment, not the time the capture read it.
    right.pause();
    let out = lab.exec_ok(
        "k1",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "10.0.2.2"],
    );
    right.resume();
    assert!(out.contains("3 received"), "{out}");

    let (hops, out) = lab.traceroute("k1", "10.0.2.2");
    assert_eq!(
        hops,
        ["10.0.1.1", "10.0.2.2"],
        "the router, then the far host: {out}"
    );

    // TCP echo (RFC 862) on the far userspace host, through the router.
    let out = lab.exec_ok(
        "k1",
        &[
            "sh",
            "-c",
            "printf 'order-11.11\\n' | nc -N -w 5 10.0.2.2 7",
        ],
    );
    assert_eq!(out.trim(), "order-11.11");

    // The userspace host reaches across too: h2 pings nobody, but k1 pings h1 on its own segment.
    let out = lab.exec_ok("k1", &["ping", "-c", "1", "-W", "2", "10.0.1.2"]);
    assert!(out.contains("1 received"), "{out}");

    let right = right.stop();
    let port = port.stop();
    let r1_eth1 = lab.mac("r1", "eth1");
    let h2 = lab.mac("h2", "eth0");
    // On the far segment the echo request has TTL one less and the router's MAC as source.
    let reqs = tshark_fields(
        &right,
        "icmp.type == 8",
        &["eth.src", "eth.dst", "ip.ttl", "ip.src", "ip.dst"],
        &[],
    );
    assert_eq!(reqs.len(), 3, "{reqs:?}");
    for r in &reqs {
        assert_eq!(
            r,
            &vec![
                r1_eth1.clone(),
                h2.clone(),
                "63".into(),
                "10.0.1.3".into(),
                "10.0.2.2".into()
            ]
        );
    }
    let times: Vec<f64> = tshark_fields(&right, "icmp.type == 8", &["frame.time_epoch"], &[])
        .iter()
        .map(|r| r[0].parse().expect("a time"))
        .collect();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= 0.15,
            "echo requests sent 0.2 s apart, captured {:.6} s apart: {times:?}",
            w[1] - w[0]
        );
    }
    let replies = tshark_fields(
        &right,
        "icmp.type == 0",
        &["eth.src", "eth.dst", "ip.ttl"],
        &[],
    );
    assert_eq!(replies.len(), 3);
    assert_eq!(replies[0], vec![h2.clone(), r1_eth1.clone(), "64".into()]);
    // The port capture sees both directions, marked from the router's side.
    let dirs = tshark_fields(
        &port,
        "icmp.type == 8",
        &["frame.interface_name", "frame.packet_flags_direction"],
        &[],
    );
    assert_eq!(dirs.len(), 3);
    assert_eq!(
        (dirs[0][0].as_str(), num(&dirs[0][1]).as_str()),
        ("r1:eth1", "2"),
        "outbound from r1"
    );
    for f in [right, port, lab.pcap("left"), lab.pcap("right")] {
        assert!(
            malformed(&f, &[]).is_empty(),
            "{}: {:?}",
            f.display(),
            malformed(&f, &[])
        );
    }
    assert!(lab.counter("r1", "forwarded") >= 6);

    // The router's own capture of eth1 names the interface and says what it decided.
    let _files = lab.stop(); // programs flush their captures when they stop
    let r1_cap = notes.join("r1-eth1.pcapng");
    let noted = tshark_fields(
        &r1_cap,
        "icmp.type == 8",
        &["frame.interface_name", "frame.comment"],
        &[],
    );
    assert_eq!(noted.len(), 3, "{noted:?}");
    assert_eq!(noted[0][0], "r1:eth1");
    // The first waited for ARP; the others were forwarded at once.
    assert_eq!(
        noted[0][1], "released after ARP resolved 10.0.2.2 on eth1",
        "{noted:?}"
    );
    assert_eq!(
        noted[1][1], "forwarded eth0 -> eth1, route 10.0.2.0/24 via 10.0.2.2, ttl now 63",
        "{noted:?}"
    );
    assert!(malformed(&r1_cap, &[]).is_empty());
    let _ = std::fs::remove_dir_all(&notes);
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn kill_9_shows_dead_and_down_removes_everything() {
    let lab = Lab::up(LAB);
    let st = lab.status();
    let r1 = node_status(&st, "r1");
    assert_eq!(r1["state"], "running");
    let pid = r1["pid"].as_u64().unwrap() as i32;
    // SAFETY: killing the process the lab started.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    // kill(2) returns before the process is gone: wait for its exit on a pidfd.
    assert!(
        wait_exit(pid as u32, std::time::Duration::from_secs(10)),
        "r1 did not die"
    );
    let st = lab.status();
    let r1 = node_status(&st, "r1");
    assert_eq!(r1["state"], "dead", "{st}");
    let h1 = node_status(&st, "h1");
    assert_eq!(h1["state"], "running");
    let pids: Vec<i32> = st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["pid"].as_i64())
        .map(|p| p as i32)
        .collect();

    let o = lab.down();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for seg in ["left", "right"] {
        assert!(malformed(&lab.pcap(seg), &[]).is_empty(), "{seg}");
    }
    let netns = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let netns = String::from_utf8_lossy(&netns.stdout);
    assert!(
        !netns.contains(&format!("{}-", lab.prefix)),
        "namespaces left: {netns}"
    );
    for p in pids {
        assert!(
            !Path::new(&format!("/proc/{p}/stat")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/stat"))
                    .unwrap_or_default()
                    .contains(") Z"),
            "process {p} left"
        );
    }
    assert!(!Path::new("/run/d11").join(&lab.prefix).exists());
    // Idempotent.
    let o = lab.down();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("no lab"));
}

fn node_status(st: &serde_json::Value, name: &str) -> serde_json::Value {
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no node {name}: {st}"))
        .clone()
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn garbage_on_the_wire_is_counted_and_service_goes_on() {
    let lab = Lab::up(LAB);
    let r1 = mac_bytes(&lab.mac("r1", "eth0"));
    let h1 = mac_bytes(&lab.mac("h1", "eth0"));
    let me = [0x02, 0x66, 0, 0, 0, 1];
    let good = ipv4(
        [10, 0, 1, 3],
        [10, 0, 2, 2],
        1,
        &[8, 0, 0xf7, 0xff, 0, 0, 0, 0],
    );
    let mut frames = Vec::new();
    for dst in [r1, h1] {
        // Random bytes (a fixed seed, so a failure can be replayed).
        let mut x: u32 = 0x1111_2011;
        for len in [14usize, 20, 60, 200, 1500] {
            let payload: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            frames.push(frame(dst, me, 0x0800, &payload));
        }
        // Truncated IPv4 (total length claims more than is there).
        let mut t = good.clone();
        t[3] = 200;
        d11_wire::fill_ipv4_checksum(&mut t[..20]);
        frames.push(frame(dst, me, 0x0800, &t[..28]));
        // Bad IHL (3 words) and bad checksum.
        let mut b = good.clone();
        b[0] = 0x43;
        frames.push(frame(dst, me, 0x0800, &b));
        let mut c = good.clone();
        c[10] ^= 0x55;
        frames.push(frame(dst, me, 0x0800, &c));
        // ARP with a 4-octet hardware address length.
        let arp = [
            0, 1, 8, 0, 4, 4, 0, 1, 2, 0x66, 0, 0, 10, 0, 1, 3, 0, 0, 0, 0, 10, 0, 1, 1,
        ];
        frames.push(frame(dst, me, 0x0806, &arp));
    }
    let netns = format!("{}-k1", lab.prefix);
    inject(&netns, "eth0", &frames).expect("inject");

    // Still serving: ping through the router and to the host on the same segment.
    lab.exec_ok(
        "k1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2"],
    );
    lab.exec_ok(
        "k1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.1.2"],
    );
    for node in ["r1", "h1"] {
        let c = lab.show(node, "counters");
        let dropped: u64 = c
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("drop_"))
            .map(|(_, v)| v.as_u64().unwrap())
            .sum();
        assert!(
            c["drop_ipv4_bad_checksum"].as_u64().unwrap() >= 1,
            "{node}: {c}"
        );
        assert!(
            c["drop_ipv4_bad_header_length"].as_u64().unwrap() >= 1,
            "{node}: {c}"
        );
        assert!(
            c["drop_ipv4_bad_total_length"].as_u64().unwrap() >= 1,
            "{node}: {c}"
        );
        assert!(
            c["drop_arp_malformed"].as_u64().unwrap() >= 1,
            "{node}: {c}"
        );
        assert!(dropped >= 8, "{node} dropped {dropped}: {c}");
    }
    let st = lab.status();
    assert!(
        st["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] != "dead"),
        "{st}"
    );
}

/// ARP requests for the router's address from 1,500 senders it has never met (each a
/// sender to remember, RFC 826): its neighbour table stops at its bound (1,024, Linux's
/// `gc_thresh3`), the rest are counted, and it still forwards: the next hops it needs take
/// the place of the oldest entries.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn an_arp_flood_from_strangers_fills_the_table_no_further_than_its_bound() {
    let lab = Lab::up(LAB);
    let frames: Vec<Vec<u8>> = (0..1500u16)
        .map(|i| {
            let [hi, lo] = i.to_be_bytes();
            let mac = [0x02, 0x77, 0, 0, hi, lo];
            let mut arp = vec![0, 1, 8, 0, 6, 4, 0, 1];
            arp.extend_from_slice(&mac);
            arp.extend_from_slice(&[172, 16, hi, lo]);
            arp.extend_from_slice(&[0; 6]);
            arp.extend_from_slice(&[10, 0, 1, 1]);
            frame([0xff; 6], mac, 0x0806, &arp)
        })
        .collect();
    // A hundred at a time, each batch read before the next is sent: 1,500 at once overflow
    // the TAP's queue (1,000 frames) whenever the router is slower than the sender, as a debug
    // build on a busy machine is, and the kernel drops the rest before the router sees them.
    let netns = format!("{}-k1", lab.prefix);
    let before = lab.counter("r1", "rx_arp");
    let mut c = serde_json::Value::Null;
    for (i, batch) in frames.chunks(100).enumerate() {
        inject(&netns, "eth0", batch).expect("inject");
        let sent = (i * 100 + batch.len()) as u64;
        c = lab.wait_show("r1", "counters", 10, |c| {
            c["rx_arp"].as_u64().unwrap_or(0) >= before + sent
        });
    }
    let (n, full) = (c["neighbours"].as_u64(), c["neighbour_table_full"].as_u64());
    assert_eq!(n, Some(1024), "{c}");
    assert!(full.unwrap() >= 1500 - 1024, "{c}");
    let out = lab.exec_ok(
        "k1",
        &["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2"],
    );
    assert!(out.contains("2 received"), "{out}");
    assert!(lab.counter("r1", "neighbours") <= 1024);
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn codecs_decode_in_tshark_field_by_field() {
    use d11_wire::gtpu::{
        self, emit_signalling, ext, ExtensionChain, ExtensionHeader, Ie, MessageType, Repr,
    };
    use d11_wire::vxlan;
    use std::net::{IpAddr, Ipv4Addr};
    let enb = [172, 16, 1, 2];
    let sgw = [172, 16, 1, 3];
    let m1 = [2, 0xd1, 0, 0, 0, 2];
    let m2 = [2, 0xd1, 0, 0, 0, 3];
    let inner = ipv4(
        [10, 45, 0, 2],
        [203, 0, 113, 10],
        17,
        &[0x30, 0x39, 0x01, 0xbb, 0, 12, 0, 0, b'o', b'r', b'd', b'r'],
    );
    let mut frames = Vec::new();
    let gtp = |msg: Vec<u8>| {
        frame(
            m2,
            m1,
            0x0800,
            &udp(enb, sgw, gtpu::UDP_PORT, gtpu::UDP_PORT, &msg),
        )
    };
    let mut buf = vec![0u8; 2048];

    // G-PDU with a PDU Session Container (UL, QFI 9) and sequence number 5.
    let content = ExtensionHeader::pdu_session_container(1, 9);
    let mut chain = [0u8; 4];
    let chain = ExtensionChain::encode(
        &[ExtensionHeader {
            kind: ext::PDU_SESSION_CONTAINER,
            content: &content,
        }],
        &mut chain,
    )
    .unwrap();
    let r = Repr {
        extensions: chain,
        sequence_number: Some(5),
        ..Repr::g_pdu(0x1001, inner.len())
    };
    r.emit(&mut buf).unwrap();
    let hl = r.header_len();
    buf[hl..hl + inner.len()].copy_from_slice(&inner);
    frames.push(gtp(buf[..r.buffer_len()].to_vec()));
    // Echo Request, Echo Response (Recovery 3), Error Indication, SEHN, End Marker.
    let n = emit_signalling(MessageType::EchoRequest, 0, Some(100), &[], &mut buf).unwrap();
    frames.push(gtp(buf[..n].to_vec()));
    let n = emit_signalling(
        MessageType::EchoResponse,
        0,
        Some(100),
        &[Ie::Recovery(3)],
        &mut buf,
    )
    .unwrap();
    frames.push(gtp(buf[..n].to_vec()));
    let n = emit_signalling(
        MessageType::ErrorIndication,
        0,
        Some(7),
        &[
            Ie::TeidDataI(0xdead),
            Ie::GtpuPeerAddress(IpAddr::V4(Ipv4Addr::new(172, 16, 1, 3))),
        ],
        &mut buf,
    )
    .unwrap();
    frames.push(gtp(buf[..n].to_vec()));
    let n = emit_signalling(
        MessageType::SupportedExtensionHeadersNotification,
        0,
        Some(8),
        &[Ie::ExtensionHeaderTypeList(&[ext::PDU_SESSION_CONTAINER])],
        &mut buf,
    )
    .unwrap();
    frames.push(gtp(buf[..n].to_vec()));
    let n = emit_signalling(MessageType::EndMarker, 0x1001, None, &[], &mut buf).unwrap();
    frames.push(gtp(buf[..n].to_vec()));
    // VXLAN VNI 1001 carrying an Ethernet frame with the inner IPv4 packet.
    let inner_eth = frame(
        [2, 0xd1, 0, 0, 1, 0x10],
        [2, 0xd1, 0, 0, 1, 1],
        0x0800,
        &inner,
    );
    let mut vx = vec![0u8; 8];
    vxlan::Repr::new(1001).unwrap().emit(&mut vx).unwrap();
    vx.extend_from_slice(&inner_eth);
    frames.push(frame(
        m2,
        m1,
        0x0800,
        &udp([10, 1, 0, 1], [10, 1, 0, 11], 49152, vxlan::UDP_PORT, &vx),
    ));

    let scratch_dir = scratch("codec");
    let dir = scratch_dir.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("codecs.pcapng");
    let mut sink = d11_netdev::pcap::PcapngSink::new(
        std::fs::File::create(&file).unwrap(),
        "codec-test",
        None,
    )
    .unwrap();
    for f in &frames {
        sink.write(f, d11_netdev::pcap::Direction::Unknown, None)
            .unwrap();
    }
    sink.flush().unwrap();
    drop(sink);

    assert!(
        malformed(&file, &[]).is_empty(),
        "{:?}",
        malformed(&file, &[])
    );
    let rows = tshark_fields(
        &file,
        "gtp",
        &[
            "gtp.message",
            "gtp.teid",
            "gtp.seq_number",
            "gtp.flags.e",
            "gtp.flags.s",
            "gtp.length",
        ],
        &[],
    );
    let want = [
        ["0xff", "0x00001001", "5", "1", "1", "40"],
        ["0x01", "0x00000000", "100", "0", "1", "4"],
        ["0x02", "0x00000000", "100", "0", "1", "6"],
        ["0x1a", "0x00000000", "7", "0", "1", "16"],
        ["0x1f", "0x00000000", "8", "0", "1", "7"],
        ["0xfe", "0x00001001", "", "0", "0", "0"],
    ];
    assert_eq!(rows.len(), want.len(), "{rows:?}");
    for (got, want) in rows.iter().zip(want) {
        let got: Vec<String> = got.iter().map(|s| num(s)).collect();
        assert_eq!(got, want.iter().map(|s| num(s)).collect::<Vec<_>>());
    }
    let pdu = tshark_fields(
        &file,
        "gtp.message == 0xff",
        &[
            "gtp.ext_hdr.pdu_ses_con.pdu_type",
            "gtp.ext_hdr.pdu_ses_con.qos_flow_id",
            "ip.src",
            "ip.dst",
        ],
        &[],
    );
    assert_eq!(
        pdu,
        vec![vec![
            "1".to_string(),
            "9".into(),
            "172.16.1.2,10.45.0.2".into(),
            "172.16.1.3,203.0.113.10".into()
        ]]
    );
    let rec = tshark_fields(&file, "gtp.message == 2", &["gtp.recovery"], &[]);
    assert_eq!(rec, vec![vec!["3".to_string()]]);
    let ei = tshark_fields(
        &file,
        "gtp.message == 26",
        &["gtp.teid_data", "gtp.gsn_ipv4"],
        &[],
    );
    assert_eq!(ei.len(), 1);
    assert_eq!(num(&ei[0][0]), num("0xdead"));
    assert_eq!(ei[0][1], "172.16.1.3");
    let sehn = tshark_fields(
        &file,
        "gtp.message == 31",
        &["gtp.num_ext_hdr_types", "gtp.ext_hdr_type"],
        &[],
    );
    assert_eq!(sehn[0][0], "1");
    assert_eq!(num(&sehn[0][1]), "133", "PDU Session Container");
    let vx = tshark_fields(
        &file,
        "vxlan",
        &["vxlan.vni", "vxlan.flag_i", "eth.dst", "ip.dst"],
        &[],
    );
    assert_eq!(vx.len(), 1);
    assert_eq!(vx[0][0], "1001");
    assert!(matches!(vx[0][1].as_str(), "1" | "True"), "{vx:?}");
    assert_eq!(vx[0][2], "02:d1:00:00:00:03,02:d1:00:00:01:10");
    assert_eq!(vx[0][3], "10.1.0.11,203.0.113.10");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn bad_topology_and_cli_input_get_one_line_errors() {
    require_root();
    let scratch_dir = scratch("bad");
    let dir = scratch_dir.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        LAB.replace(
            "segment = \"right\", addresses = [\"10.0.2.2/24\"]",
            "segment = \"nowhere\", addresses = [\"10.0.2.2/24\"]",
        ),
    )
    .unwrap();
    let o = d11()
        .args(["--prefix", "tbad", "lab", "up"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no segment \"nowhere\""), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!Path::new("/run/d11/tbad").exists());

    // Each of these: one line, naming the file, the node and the key at fault.
    let one_line = |topology: String, want: &[&str]| {
        std::fs::write(&bad, topology).unwrap();
        let o = d11()
            .args(["--prefix", "tbad", "lab", "up"])
            .arg(&bad)
            .output()
            .unwrap();
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for w in want.iter().chain([&bad.to_str().unwrap()]) {
            assert!(err.contains(w), "{w:?} not in {err}");
        }
        assert!(!Path::new("/run/d11/tbad").exists());
    };
    // An unknown role lists the roles.
    one_line(
        LAB.replace("role = \"router\"", "role = \"routr\""),
        &[
            "node r1",
            "\"routr\" is not a role",
            "router, nat",
            "kernel",
        ],
    );
    // A TOML error: where, in which node and key.
    one_line(
        LAB.replace("10.0.2.2/24", "10.0.2.300/24"),
        &["line ", "node h2", "key ports", "invalid IP address"],
    );
    // A setting the program refuses: the key's path.
    one_line(
        LAB.replace(
            "role = \"router\"",
            "role = \"router\"\nicmp_limit = { per_second = \"many\" }",
        ),
        &["node r1", "key icmp_limit.per_second", "invalid type"],
    );

    let o = d11()
        .args(["--prefix", "bad/prefix", "lab", "down"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = d11()
        .args(["--prefix", "tnone", "show", "r1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("no lab with prefix"));
    let o = std::process::Command::new(bin_dir().join("d11-router"))
        .args(["--port", "eth0"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("expected NAME=TAP"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One-letter names (which `ip` could read as keywords), a smaller MTU behind the router, and
/// kernel peers on both sides: DF packets too big draw "fragmentation needed" with the MTU,
/// others are fragmented by the router and reassembled by the far kernel.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn short_names_mtu_and_fragmentation_with_kernel_peers() {
    let lab = Lab::up(
        r#"
name = "mtu"
[[segments]]
name = "a"
[[segments]]
name = "b"
mtu = 1400
[[nodes]]
name = "x"
role = "kernel"
gateway = "10.9.1.1"
ports = [{ name = "eth0", segment = "a", addresses = ["10.9.1.2/24"] }]
[[nodes]]
name = "r"
role = "router"
ports = [
  { name = "eth0", segment = "a", addresses = ["10.9.1.1/24"] },
  { name = "eth1", segment = "b", addresses = ["10.9.2.1/24"] },
]
[[nodes]]
name = "y"
role = "kernel"
gateway = "10.9.2.1"
ports = [{ name = "eth0", segment = "b", addresses = ["10.9.2.2/24"] }]
"#,
    );
    let b = lab.capture("b");
    // 1472 octets of ICMP data make a 1500-octet packet: too big for the 1400 link.
    let o = lab.exec(
        "x",
        &[
            "ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1472", "10.9.2.2",
        ],
    );
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{text}");
    assert!(
        text.contains("mtu = 1400") || text.contains("mtu=1400"),
        "frag needed with MTU: {text}"
    );
    assert_eq!(lab.counter("r", "frag_needed"), 1);
    // x's kernel learned the path MTU from that error; forget it, so that the next 1500-octet
    // packet (without DF) reaches the router whole: the router fragments, y reassembles.
    lab.exec_ok("x", &["ip", "route", "flush", "cache"]);
    let out = lab.exec_ok(
        "x",
        &[
            "ping", "-c", "1", "-W", "2", "-M", "dont", "-s", "1472", "10.9.2.2",
        ],
    );
    assert!(out.contains("1 received"), "{out}");
    assert_eq!(lab.counter("r", "fragmented"), 1);
    assert_eq!(lab.counter("r", "fragments_sent"), 2);
    let b = b.stop();
    let frags = tshark_fields(
        &b,
        "ip.src == 10.9.1.2 && ip.proto == 1 && (ip.len > 1000 || ip.frag_offset > 0)",
        &["ip.len", "ip.flags.mf", "ip.frag_offset"],
        &["-o", "ip.defragment:FALSE"],
    );
    assert_eq!(frags.len(), 2, "fragments on b: {frags:?}");
    assert_eq!(frags[0][1..], ["1".to_string(), "0".into()]);
    // tshark 4.0 prints the offset in 8-octet units, newer releases in octets.
    assert!(
        matches!(frags[1][2].as_str(), "172" | "1376"),
        "second fragment at 1376 octets: {frags:?}"
    );
    for f in &frags {
        assert!(f[0].parse::<u32>().unwrap() <= 1400, "{frags:?}");
    }
    assert!(malformed(&b, &[]).is_empty());
}

#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn gtpv2_c_decodes_in_tshark_field_by_field() {
    // The messages as the MME, SGW and PGW emit them (d11_wire::gtpv2::message).
    use d11_wire::gtpv2::message::*;
    use d11_wire::gtpv2::value::Fteid;
    use d11_wire::gtpv2::{cause, iface};
    use std::net::Ipv4Addr;
    let mme = [172, 16, 1, 5];
    let sgw = [172, 16, 1, 3];
    let enb_u = Fteid {
        interface: iface::S1U_ENODEB,
        teid: 0x4444,
        ipv4: Ipv4Addr::new(172, 16, 1, 2),
    };
    let sgw_u = Fteid {
        interface: iface::S1U_SGW,
        teid: 0x2222,
        ipv4: Ipv4Addr::new(172, 16, 1, 3),
    };
    let accepted = cause::REQUEST_ACCEPTED;
    let csr = CreateSessionRequest {
        imsi: "001010000000001".into(),
        apn: "internet".into(),
        pdn_type: PdnType::Ipv4,
        sender: Fteid {
            interface: iface::S11_MME,
            teid: 0x1111,
            ipv4: Ipv4Addr::from(mme),
        },
        pgw_c: None,
        paa: Ipv4Addr::UNSPECIFIED,
        ebi: 5,
        s5u_sgw: None,
    };
    let created = CreateSessionResponse {
        cause: accepted,
        sender: Some(Fteid {
            interface: iface::S11S4_SGW,
            teid: 0x3333,
            ipv4: Ipv4Addr::from(sgw),
        }),
        pgw_c: None,
        paa: Some(Ipv4Addr::new(10, 45, 0, 2)),
        ebi: 5,
        s1u_sgw: Some(sgw_u),
        s5u_pgw: None,
        recovery: Some(1),
    };
    let restart = PgwRestartNotification {
        pgw: Ipv4Addr::new(172, 16, 5, 4),
        sgw: Ipv4Addr::from(sgw),
    };
    // (towards the SGW, the message)
    let msgs: Vec<(bool, Vec<u8>)> = vec![
        (true, EchoRequest { recovery: Some(3) }.emit(0, 7)),
        (true, csr.emit(0, 8)),
        (false, created.emit(0x1111, 8)),
        (
            true,
            ModifyBearerRequest { ebi: 5, enb: enb_u }.emit(0x3333, 9),
        ),
        (
            false,
            ModifyBearerResponse {
                cause: accepted,
                ebi: 5,
                s1u_sgw: None,
            }
            .emit(0x1111, 9),
        ),
        (true, DeleteSessionRequest { ebi: 5 }.emit(0x3333, 10)),
        (
            false,
            DeleteSessionResponse { cause: accepted }.emit(0x1111, 10),
        ),
        (false, restart.emit(0, 11)),
        (
            true,
            PgwRestartNotificationAck { cause: accepted }.emit(0, 11),
        ),
    ];
    let (mme_mac, sgw_mac) = ([2, 0xd1, 0, 0, 0, 5], [2, 0xd1, 0, 0, 0, 3]);
    let scratch_dir = scratch("gtpv2");
    let dir = scratch_dir.0.clone();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gtpv2.pcapng");
    let mut sink =
        d11_netdev::pcap::PcapngSink::new(std::fs::File::create(&file).unwrap(), "epc", None)
            .unwrap();
    for (to_sgw, m) in &msgs {
        let (s, d, sm, dm) = if *to_sgw {
            (mme, sgw, mme_mac, sgw_mac)
        } else {
            (sgw, mme, sgw_mac, mme_mac)
        };
        let f = frame(
            dm,
            sm,
            0x0800,
            &udp(
                s,
                d,
                d11_wire::gtpv2::UDP_PORT,
                d11_wire::gtpv2::UDP_PORT,
                m,
            ),
        );
        sink.write(&f, d11_netdev::pcap::Direction::Unknown, None)
            .unwrap();
    }
    sink.flush().unwrap();
    drop(sink);
    let bad = malformed(&file, &[]);
    assert!(bad.is_empty(), "{bad:?}");
    let types: Vec<String> = tshark_fields(&file, "gtpv2", &["gtpv2.message_type"], &[])
        .into_iter()
        .map(|r| num(&r[0]))
        .collect();
    assert_eq!(
        types,
        ["1", "32", "33", "34", "35", "36", "37", "179", "180"]
    );
    let csr = tshark_fields(
        &file,
        "gtpv2.message_type == 32",
        &[
            "e212.imsi",
            "gtpv2.apn",
            "gtpv2.rat_type",
            "gtpv2.pdn_type",
            "gtpv2.ebi",
            "gtpv2.f_teid_gre_key",
            "gtpv2.f_teid_ipv4",
        ],
        &[],
    );
    assert_eq!(csr.len(), 1);
    let r = &csr[0];
    assert_eq!(
        (r[0].as_str(), r[1].as_str()),
        ("001010000000001", "internet")
    );
    // PDN type shows twice: the PDN Type IE and the type inside PAA.
    assert_eq!(
        (num(&r[2]), r[3].as_str(), num(&r[4])),
        ("6".into(), "1,1", "5".into())
    );
    assert_eq!(num(&r[5]), "4369", "sender F-TEID 0x1111");
    assert_eq!(r[6], "172.16.1.5");
    let resp = tshark_fields(
        &file,
        "gtpv2.message_type == 33",
        &[
            "gtpv2.cause",
            "gtpv2.f_teid_gre_key",
            "gtpv2.f_teid_ipv4",
            "gtpv2.teid",
        ],
        &[],
    );
    let r = &resp[0];
    assert!(r[0].split(',').all(|c| num(c) == "16"), "{r:?}");
    let teids: Vec<String> = r[1].split(',').map(num).collect();
    assert_eq!(
        teids,
        ["13107", "8738"],
        "S11 SGW 0x3333 and S1-U SGW 0x2222"
    );
    assert_eq!(r[2], "172.16.1.3,172.16.1.3");
    assert_eq!(num(&r[3]), "4369", "header TEID = the MME's");
    let mbr = tshark_fields(
        &file,
        "gtpv2.message_type == 34",
        &[
            "gtpv2.f_teid_gre_key",
            "gtpv2.f_teid_interface_type",
            "gtpv2.ebi",
        ],
        &[],
    );
    assert_eq!(
        (num(&mbr[0][0]), num(&mbr[0][1]), num(&mbr[0][2])),
        ("17476".into(), "0".into(), "5".into()),
        "S1-U eNodeB 0x4444"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `d11 lab web`: the page of a running lab and each node's tables, read with curl. The server
/// runs in k1's namespace (made by the test) and listens on its loopback, so nothing reaches
/// the host's own interfaces.
#[test]
#[cfg_attr(not(netns_root), ignore = "needs root: run sudo ./scripts/test")]
fn lab_web_serves_the_page_and_each_nodes_tables_live() {
    let lab = Lab::up(LAB);
    let ns = format!("{}-k1", lab.prefix);
    lab.exec_ok("k1", &["ip", "link", "set", "lo", "up"]);
    let mut server = KillOnDrop(
        std::process::Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(bin_dir().join("d11"))
            .args([
                "--prefix",
                &lab.prefix,
                "lab",
                "web",
                "--listen",
                "127.0.0.1:8011",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("d11 lab web"),
    );
    // Ready when it says where it serves (no sleep).
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.0.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(line.contains("http://127.0.0.1:8011"), "{line}");
    let curl = |args: &[&str]| {
        let mut a = vec!["curl", "-s", "-o", "-", "-w", "\n%{http_code}"];
        a.extend_from_slice(args);
        let out = lab.exec_ok("k1", &a);
        let (body, code) = out.trim_end().rsplit_once('\n').unwrap_or(("", out.trim()));
        (code.to_string(), body.to_string())
    };
    let (code, page) = curl(&["http://127.0.0.1:8011/"]);
    assert_eq!(code, "200");
    assert!(
        page.contains("<title>d11 journey: two-hosts-router</title>"),
        "{page:.300}"
    );
    assert!(page.contains("\"name\":\"r1\""), "the map names the router");
    let (code, tables) = curl(&["http://127.0.0.1:8011/api/show/r1"]);
    assert_eq!(code, "200", "{tables}");
    let v: serde_json::Value = serde_json::from_str(&tables).unwrap();
    assert!(v["routes"].is_array(), "{v}");
    assert!(v["counters"]["rx_frames"].is_u64(), "{v}");
    // Live: a ping through the router shows in its counters at the next ask.
    let before = v["counters"]["rx_frames"].as_u64().unwrap();
    lab.exec_ok("k1", &["ping", "-c", "2", "-i", "0.2", "10.0.2.2"]);
    let (_, again) = curl(&["http://127.0.0.1:8011/api/show/r1"]);
    let again: serde_json::Value = serde_json::from_str(&again).unwrap();
    assert!(again["counters"]["rx_frames"].as_u64().unwrap() >= before + 4);
    let (code, _) = curl(&["http://127.0.0.1:8011/api/show/nobody"]);
    assert_eq!(code, "404");
    let (code, _) = curl(&["-X", "POST", "http://127.0.0.1:8011/"]);
    assert_eq!(code, "405");
    let (code, _) = curl(&["http://127.0.0.1:8011/../../etc/passwd", "--path-as-is"]);
    assert_eq!(code, "404");
}
