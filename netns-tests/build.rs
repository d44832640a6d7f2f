//! The netns tests need root (network namespaces, bridges, TAP devices). Built by root, they
//! run; built by anyone else, `cargo test` lists them as ignored, saying why, so that a plain
//! `cargo test` of the workspace passes without root. (`D11_NETNS_TESTS=1` builds them to run
//! all the same, to see what fails without root.)

fn main() {
    println!("cargo::rustc-check-cfg=cfg(netns_root)");
    // Who builds: a change of user (sudo sets USER and SUDO_USER) decides again.
    println!("cargo::rerun-if-env-changed=USER");
    println!("cargo::rerun-if-env-changed=SUDO_USER");
    println!("cargo::rerun-if-env-changed=D11_NETNS_TESTS");
    let euid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        });
    let forced = std::env::var("D11_NETNS_TESTS").is_ok_and(|v| v == "1");
    if euid.as_deref() == Some("0") || forced {
        println!("cargo::rustc-cfg=netns_root");
    }
}
