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
