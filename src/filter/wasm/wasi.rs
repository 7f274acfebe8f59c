//! A minimal WASI preview 1, only for modules whose toolchain needs it (Go, C with libc) and
//! only when the filter's load options ask for it. No filesystem, no network, no environment,
//! no arguments, no preopens: stdout and stderr go to the log a line at a time (rate-limited),
//! clocks and random work, `poll_oneoff` never blocks (clock subscriptions fire at once),
//! `proc_exit` traps, and every other call returns `ENOSYS` or `EBADF`.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, FuncType, Linker, Val, ValType};

use super::host::{HostState, LOG_MAX, log_line};
use crate::error::{Error, Kind, Result};

/// The import module name of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

const ESUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOSYS: i32 = 52;

use ValType::{I32, I64};

/// Every WASI preview 1 function with its parameter types (all return `i32` except `proc_exit`).
const SIGNATURES: &[(&str, &[ValType])] = &[
    ("args_get", &[I32, I32]),
    ("args_sizes_get", &[I32, I32]),
    ("environ_get", &[I32, I32]),
    ("environ_sizes_get", &[I32, I32]),
    ("clock_res_get", &[I32, I32]),
    ("clock_time_get", &[I32, I64, I32]),
    ("fd_advise", &[I32, I64, I64, I32]),
    ("fd_allocate", &[I32, I64, I64]),
    ("fd_close", &[I32]),
    ("fd_datasync", &[I32]),
    ("fd_fdstat_get", &[I32, I32]),
    ("fd_fdstat_set_flags", &[I32, I32]),
    ("fd_fdstat_set_rights", &[I32, I64, I64]),
    ("fd_filestat_get", &[I32, I32]),
    ("fd_filestat_set_size", &[I32, I64]),
    ("fd_filestat_set_times", &[I32, I64, I64, I32]),
    ("fd_pread", &[I32, I32, I32, I64, I32]),
    ("fd_prestat_get", &[I32, I32]),
    ("fd_prestat_dir_name", &[I32, I32, I32]),
    ("fd_pwrite", &[I32, I32, I32, I64, I32]),
    ("fd_read", &[I32, I32, I32, I32]),
    ("fd_readdir", &[I32, I32, I32, I64, I32]),
    ("fd_renumber", &[I32, I32]),
    ("fd_seek", &[I32, I64, I32, I32]),
    ("fd_sync", &[I32]),
    ("fd_tell", &[I32, I32]),
    ("fd_write", &[I32, I32, I32, I32]),
    ("path_create_directory", &[I32, I32, I32]),
    ("path_filestat_get", &[I32, I32, I32, I32, I32]),
    (
        "path_filestat_set_times",
        &[I32, I32, I32, I32, I64, I64, I32],
    ),
    ("path_link", &[I32, I32, I32, I32, I32, I32, I32]),
    ("path_open", &[I32, I32, I32, I32, I32, I64, I64, I32, I32]),
    ("path_readlink", &[I32, I32, I32, I32, I32, I32]),
    ("path_remove_directory", &[I32, I32, I32]),
    ("path_rename", &[I32, I32, I32, I32, I32, I32]),
    ("path_symlink", &[I32, I32, I32, I32, I32]),
    ("path_unlink_file", &[I32, I32, I32]),
    ("poll_oneoff", &[I32, I32, I32, I32]),
    ("proc_exit", &[I32]),
    ("proc_raise", &[I32]),
    ("sched_yield", &[]),
    ("random_get", &[I32, I32]),
    ("sock_accept", &[I32, I32, I32]),
    ("sock_recv", &[I32, I32, I32, I32, I32, I32]),
    ("sock_send", &[I32, I32, I32, I32, I32]),
    ("sock_shutdown", &[I32, I32]),
];

/// Whether `name` is a WASI preview 1 function this host defines.
pub(crate) fn provides(name: &str) -> bool {
    SIGNATURES.iter().any(|(n, _)| *n == name)
}

fn memory(caller: &mut Caller<'_, HostState>) -> Option<wasmtime::Memory> {
    caller
        .get_export(sluicebox_abi::EXPORT_MEMORY)
        .and_then(|e| e.into_memory())
}

/// Writes `bytes` at `ptr` of guest memory; false when out of bounds.
fn put(caller: &mut Caller<'_, HostState>, ptr: i32, bytes: &[u8]) -> bool {
    let Some(mem) = memory(caller) else {
        return false;
    };
    let data = mem.data_mut(caller);
    let p = ptr as u32 as usize;
    match p.checked_add(bytes.len()).and_then(|e| data.get_mut(p..e)) {
        Some(d) => {
            d.copy_from_slice(bytes);
            true
        }
        None => false,
    }
}

/// Appends guest output to the fd's pending text and logs every completed line (stderr as
/// warnings, stdout as info). Runtimes such as Go's write a message in pieces, so a line is
/// logged only once its newline arrives, or once it reaches the log's length cap.
fn write_lines(st: &mut HostState, fd: i32, text: &[u8]) {
    let (slot, level) = if fd == 2 { (1, 1) } else { (0, 2) };
    let mut pending = std::mem::take(&mut st.partial[slot]);
    for &b in text {
        if b == b'\n' || pending.len() >= LOG_MAX {
            if !pending.is_empty() {
                log_line(st, level, &String::from_utf8_lossy(&pending));
                pending.clear();
            }
            if b == b'\n' {
                continue;
            }
        }
        pending.push(b);
    }
    st.partial[slot] = pending;
}

/// Size of a WASI `subscription` and of an `event`.
const SUBSCRIPTION: usize = 48;
const EVENT: usize = 32;

/// `poll_oneoff` without blocking: a clock subscription fires at once (a filter has no
/// reason to sleep, and a sleep would hold its worker), an fd subscription fails with
/// `EBADF`. Go's runtime calls this to sleep and to wait for the garbage collector.
fn poll_oneoff(c: &mut Caller<'_, HostState>, subs: i32, events: i32, n: i32, out: i32) -> i32 {
    let n = n as u32 as usize;
    if n == 0 || n > 4096 {
        return EINVAL;
    }
    let Some(mem) = memory(c) else {
        return EFAULT;
    };
    let data = mem.data_mut(&mut *c);
    let (s0, e0) = (subs as u32 as usize, events as u32 as usize);
    let (Some(s_end), Some(e_end)) = (s0.checked_add(n * SUBSCRIPTION), e0.checked_add(n * EVENT))
    else {
        return EFAULT;
    };
    if s_end > data.len() || e_end > data.len() {
        return EFAULT;
    }
    for k in 0..n {
        let sub = s0 + k * SUBSCRIPTION;
        let mut ev = [0u8; EVENT];
        ev[0..8].copy_from_slice(&data[sub..sub + 8]);
        let tag = data[sub + 8];
        let errno: u16 = match tag {
            0 => 0,
            1 | 2 => EBADF as u16,
            _ => return EINVAL,
        };
        ev[8..10].copy_from_slice(&errno.to_le_bytes());
        ev[10] = tag;
        let at = e0 + k * EVENT;
        data[at..at + EVENT].copy_from_slice(&ev);
    }
    if put(c, out, &(n as u32).to_le_bytes()) {
        ESUCCESS
    } else {
        EFAULT
    }
}

/// Defines the WASI functions in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> Result<()> {
    let def = |e: wasmtime::Error| Error::new(Kind::Config, format!("defining WASI: {e}"));
    for &(name, params) in SIGNATURES {
        match name {
            "args_sizes_get" | "environ_sizes_get" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, count: i32, size: i32| {
                            if put(&mut c, count, &0u32.to_le_bytes())
                                && put(&mut c, size, &0u32.to_le_bytes())
                            {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "args_get" | "environ_get" => {
                linker
                    .func_wrap(MODULE, name, |_: Caller<'_, HostState>, _: i32, _: i32| {
                        ESUCCESS
                    })
                    .map_err(def)?;
            }
            "clock_time_get" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, id: i32, _precision: i64, out: i32| {
                            let nanos = match id {
                                0 => SystemTime::now()
                                    .duration_since(UNIX_EPOCH)
                                    .map_or(0, |d| d.as_nanos() as u64),
                                1..=3 => c.data().started.elapsed().as_nanos() as u64,
                                _ => return EINVAL,
                            };
                            if put(&mut c, out, &nanos.to_le_bytes()) {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "clock_res_get" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, _id: i32, out: i32| {
                            if put(&mut c, out, &1000u64.to_le_bytes()) {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "random_get" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, buf: i32, len: i32| {
                            let len = (len as u32 as usize).min(1 << 20);
                            let mut bytes = vec![0u8; len];
                            let st = c.data_mut();
                            for b in &mut bytes {
                                st.rng ^= st.rng << 13;
                                st.rng ^= st.rng >> 7;
                                st.rng ^= st.rng << 17;
                                *b = st.rng as u8;
                            }
                            if put(&mut c, buf, &bytes) {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "fd_write" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, fd: i32, iovs: i32, n: i32, written: i32| {
                            if fd != 1 && fd != 2 {
                                return EBADF;
                            }
                            let Some(mem) = memory(&mut c) else {
                                return EFAULT;
                            };
                            let mut text = Vec::new();
                            let mut total = 0u32;
                            {
                                let data = mem.data(&c);
                                let rd = |p: usize| -> Option<u32> {
                                    data.get(p..p + 4)
                                        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                };
                                for k in 0..(n as u32 as usize).min(1024) {
                                    let at = iovs as u32 as usize + k * 8;
                                    let (Some(p), Some(l)) = (rd(at), rd(at + 4)) else {
                                        return EFAULT;
                                    };
                                    let (p, l) = (p as usize, l as usize);
                                    let Some(chunk) = p.checked_add(l).and_then(|e| data.get(p..e))
                                    else {
                                        return EFAULT;
                                    };
                                    let room = (64usize << 10).saturating_sub(text.len());
                                    text.extend_from_slice(&chunk[..chunk.len().min(room)]);
                                    // The whole iovec counts as written even when the log cut it.
                                    total = total.wrapping_add(l as u32);
                                }
                            }
                            write_lines(c.data_mut(), fd, &text);
                            if put(&mut c, written, &total.to_le_bytes()) {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "fd_fdstat_get" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, fd: i32, out: i32| {
                            if !(0..=2).contains(&fd) {
                                return EBADF;
                            }
                            // filetype 2 (character device), no flags, no rights beyond write.
                            let mut st = [0u8; 24];
                            st[0] = 2;
                            st[8] = if fd == 0 { 0x02 } else { 0x40 };
                            if put(&mut c, out, &st) {
                                ESUCCESS
                            } else {
                                EFAULT
                            }
                        },
                    )
                    .map_err(def)?;
            }
            "poll_oneoff" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |mut c: Caller<'_, HostState>, subs: i32, events: i32, n: i32, out: i32| {
                            poll_oneoff(&mut c, subs, events, n, out)
                        },
                    )
                    .map_err(def)?;
            }
            "sched_yield" => {
                linker
                    .func_wrap(MODULE, name, |_: Caller<'_, HostState>| ESUCCESS)
                    .map_err(def)?;
            }
            "proc_exit" => {
                linker
                    .func_wrap(
                        MODULE,
                        name,
                        |_: Caller<'_, HostState>, code: i32| -> wasmtime::Result<()> {
                            Err(wasmtime::Error::new(super::host::ProcExit(code)))
                        },
                    )
                    .map_err(def)?;
            }
            _ => {
                let ty = FuncType::new(linker.engine(), params.iter().cloned(), [I32]);
                let errno = if name.starts_with("fd_") || name.starts_with("sock_") {
                    EBADF
                } else {
                    ENOSYS
                };
                linker
                    .func_new(MODULE, name, ty, move |_, _, results: &mut [Val]| {
                        results[0] = Val::I32(errno);
                        Ok(())
                    })
                    .map_err(def)?;
            }
        }
    }
    Ok(())
}
