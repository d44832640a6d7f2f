//! The control socket: one request line of JSON, one reply line of JSON, then close.
//!
//! Request: `{"table": "routes"}` (or `{}` for the list of tables). Reply: `{"ok": ...}` or
//! `{"error": "..."}`. The socket is a path in the lab's run directory, so `d11 show` reaches a
//! program whatever namespace it runs in.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The longest request line a program reads.
pub const MAX_REQUEST: usize = 4096;

/// Asks a running program for `table` (None = the list of tables) and returns the JSON.
pub fn query(socket: &Path, table: Option<&str>) -> Result<Value> {
    let mut s = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach control socket {} (is the node running?)",
            socket.display()
        )
    })?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let req = match table {
        Some(t) => json!({ "table": t }),
        None => json!({}),
    };
    writeln!(s, "{req}")?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .context("no answer on the control socket")?;
    let v: Value = serde_json::from_str(&line).context("bad answer on the control socket")?;
    if let Some(e) = v.get("error") {
        bail!("{}", e.as_str().unwrap_or("error"));
    }
    v.get("ok")
        .cloned()
        .context("bad answer on the control socket")
}
