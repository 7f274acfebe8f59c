//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::PathBuf;
use std::process::Command;

/// The `sluicebox` binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluicebox"))
}

/// A fresh, empty temporary directory for test `name` of this process.
pub fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sluicebox-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends `signal` (a number or a name such as `TERM`) to `pid` with the `kill` command.
pub fn signal(pid: u32, signal: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} {pid} failed");
}

/// `GET /metrics` of a running `sluicebox run` with `[api]` on `port` (empty when it does not
/// answer).
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut s = String::new();
    let _ = c.read_to_string(&mut s);
    s
}

/// The sum of the samples of `metrics` (OpenMetrics text) whose line contains every one of
/// `needles` (a metric name, label pairs).
pub fn metric_sum(metrics: &str, needles: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#') && needles.iter().all(|n| l.contains(n)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The Python of the test servers' virtualenv (`target/servers/venv`, written by
/// scripts/install-servers.sh), when installed. Through the `bin/python` symlink Python does
/// not find the venv's packages, so this is the venv's own.
pub fn servers_python() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let p = target.join("servers/venv/bin/python");
    p.exists().then_some(p)
}

/// The resident set of process `pid` in bytes (0 once it is gone).
pub fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}
