//! `sluicebox run CONFIG` and `sluicebox validate CONFIG`: a pipeline from a TOML file, with
//! the `[api]` endpoint (`/metrics`, `/healthz`), and a drain on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use sluicebox::config::{Config, Reload, Reloader};
use sluicebox::metrics::Metrics;
use sluicebox::source::Shutdown;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The pipeline's TOML file.
    config: PathBuf,
    /// Reload when the file or a module changes (checked once a second: the file is read
    /// and its modules hashed). SIGHUP reloads too.
    #[arg(long)]
    watch_config: bool,
}

#[derive(Args)]
pub(crate) struct ValidateArgs {
    /// The pipeline's TOML file.
    config: PathBuf,
}

fn config_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Loads and builds everything (every module is loaded) and prints every problem; exit 2
/// when there is one.
pub(crate) fn validate(a: ValidateArgs) -> ExitCode {
    let built = Config::load(&a.config).and_then(|c| c.build(&config_dir(&a.config)));
    match built {
        Ok(b) => {
            drop(b);
            errln!("sluicebox: {}: ok", a.config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.message().lines() {
                errln!("sluicebox: error: {}", sluicebox::printable(line));
            }
            ExitCode::from(2)
        }
    }
}

/// Runs the pipeline until every source is done or a signal asks it to stop. SIGHUP (or a
/// change seen by `--watch-config`) reloads: changed transforms are swapped in place, other
/// changes drain the pipeline and start it again from the new config; a config that does
/// not build is reported and the running pipeline keeps running unchanged.
pub(crate) fn run(a: RunArgs) -> ExitCode {
    let fail = |e: &sluicebox::Error| {
        for line in e.message().lines() {
            errln!("sluicebox: error: {}", sluicebox::printable(line));
        }
    };
    let mut config = match Config::load(&a.config) {
        Ok(c) => c,
        Err(e) => {
            fail(&e);
            return ExitCode::from(2);
        }
    };
    let dir = config_dir(&a.config);
    let mut built = match config.clone().build(&dir) {
        Ok(b) => b,
        Err(e) => {
            fail(&e);
            return ExitCode::from(2);
        }
    };
    let api = built.api.clone();
    // Bind the API first, so a port in use is a configuration error before anything runs.
    let listener = if api.enabled {
        match std::net::TcpListener::bind(&api.address) {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                Some(l)
            }
            Err(e) => {
                errln!(
                    "sluicebox: error: api: key `address`: cannot listen on {}: {e}",
                    api.address
                );
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    // The control plane outlives restarts: the API, the signals, the reload triggers.
    let control = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("sluicebox-control")
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            errln!("sluicebox: error: cannot start the control thread: {e}");
            return ExitCode::from(1);
        }
    };
    let current = Arc::new(Current {
        metrics: RwLock::new(built.metrics.clone()),
        shutdown: Mutex::new(built.shutdown.clone()),
        stopping: AtomicBool::new(false),
    });
    if let Some(l) = listener {
        let current = current.clone();
        control.spawn(async move {
            if let Ok(l) = tokio::net::TcpListener::from_std(l) {
                serve_api(l, current).await;
            }
        });
    }
    let (reload_tx, reload_rx) = crossbeam_channel::unbounded::<()>();
    {
        let current = current.clone();
        let reload_tx = reload_tx.clone();
        control.spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                errln!("sluicebox: warning: cannot install signal handlers");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                    _ = hup.recv() => {
                        let _ = reload_tx.send(());
                        continue;
                    }
                }
                errln!("sluicebox: stopping: draining in-flight events");
                current.stopping.store(true, Ordering::SeqCst);
                current
                    .shutdown
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .trigger();
            }
        });
    }
    // An interactive terminal gets a live one-line status, redrawn once a second.
    let status_on = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if status_on {
        let current = current.clone();
        control.spawn(async move {
            let mut last: Option<(u64, u64)> = None;
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                let m = current
                    .metrics
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let line = status_line(&m, &mut last);
                errp!("\r\x1b[2K{line}");
            }
        });
    }
    if a.watch_config {
        let reload_tx = reload_tx.clone();
        control.spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if reload_tx.send(()).is_err() {
                    return;
                }
            }
        });
    }
    errln!(
        "sluicebox: running {}{}",
        a.config.display(),
        if api.enabled {
            format!(" (metrics on http://{}/metrics)", api.address)
        } else {
            String::new()
        }
    );
    let mut code;
    loop {
        let running = match built.topology.start() {
            Ok(r) => r,
            Err(e) => {
                errln!("sluicebox: error: {}", sluicebox::printable(&e.to_string()));
                return ExitCode::from(2);
            }
        };
        // Reloads are handled off the main thread, which waits for the run to end.
        let done = Arc::new(AtomicBool::new(false));
        let reloader = Reloader::new(
            &a.config,
            config.clone(),
            built.metrics.clone(),
            built.shutdown.clone(),
        );
        let reload_thread = {
            let (done, rx, swapper) = (done.clone(), reload_rx.clone(), running.swapper());
            let (metrics, shutdown) = (built.metrics.clone(), built.shutdown.clone());
            std::thread::Builder::new()
                .name("sluicebox-reload".into())
                .spawn(move || reload_loop(reloader, rx, &done, &swapper, &metrics, &shutdown))
        };
        let report = running.wait();
        done.store(true, Ordering::SeqCst);
        let restart = match reload_thread {
            Ok(t) => t.join().ok().flatten(),
            Err(_) => None,
        };
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                errln!("sluicebox: error: {}", sluicebox::printable(&e.to_string()));
                return ExitCode::from(1);
            }
        };
        if status_on {
            errp!("\r\x1b[2K");
        }
        code = print_report(&report);
        let Some(next) = restart else { break };
        if current.stopping.load(Ordering::SeqCst) {
            break;
        }
        built = match next.clone().build(&dir) {
            Ok(b) => b,
            Err(e) => {
                fail(&e);
                return ExitCode::from(1);
            }
        };
        config = next;
        built.metrics.reload(true);
        *current.metrics.write().unwrap_or_else(|p| p.into_inner()) = built.metrics.clone();
        *current.shutdown.lock().unwrap_or_else(|p| p.into_inner()) = built.shutdown.clone();
        if current.stopping.load(Ordering::SeqCst) {
            built.shutdown.trigger();
        }
        errln!("sluicebox: reload: started again from the new config");
    }
    code
}

/// The live status: events in and out (totals and per second since the last call), dead
/// letters and bytes in flight. Sums every component's counters: cheap at one call a second.
fn status_line(m: &Metrics, last: &mut Option<(u64, u64)>) -> String {
    let (mut inp, mut out, mut dead, mut flight) = (0u64, 0u64, 0u64, 0i64);
    for (_, kind, c) in m.components() {
        match kind.as_str() {
            "source" => {
                inp += c.received_events.get();
                flight += c.buffer_bytes.get();
            }
            "sink" => out += c.sent_events.get(),
            _ => {}
        }
        dead += c.dead_letters.get();
    }
    let (din, dout) = last.map_or((0, 0), |(i, o)| {
        (inp.saturating_sub(i), out.saturating_sub(o))
    });
    *last = Some((inp, out));
    format!(
        "sluicebox: in {inp} ({din}/s), out {out} ({dout}/s), dead-lettered {dead}, in flight {:.1} MB",
        flight.max(0) as f64 / 1e6
    )
}

/// What the control thread acts on across restarts.
struct Current {
    metrics: RwLock<Metrics>,
    shutdown: Mutex<Shutdown>,
    /// SIGTERM/SIGINT came: no restart after the drain.
    stopping: AtomicBool,
}

/// Handles reload triggers until the run ends. Returns the config to start again from when a
/// reload needs a restart (it has then triggered the drain).
fn reload_loop(
    mut reloader: Reloader,
    rx: crossbeam_channel::Receiver<()>,
    done: &AtomicBool,
    swapper: &sluicebox::runtime::Swapper,
    metrics: &Metrics,
    shutdown: &Shutdown,
) -> Option<Config> {
    while !done.load(Ordering::SeqCst) {
        match rx.recv_timeout(std::time::Duration::from_millis(100)) {
            Ok(()) => {}
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return None,
        }
        let path = reloader.path().display().to_string();
        match reloader.check() {
            Ok(Reload::Unchanged) => {}
            Ok(Reload::Transforms(filters)) => {
                let names: Vec<String> = filters.iter().map(|(n, _)| n.clone()).collect();
                match swapper.swap(filters) {
                    Ok(()) => {
                        reloader.accept();
                        metrics.reload(true);
                        errln!(
                            "sluicebox: reload: {path}: swapped {}",
                            sluicebox::printable(&names.join(", "))
                        );
                    }
                    Err(e) => {
                        metrics.reload(false);
                        errln!(
                            "sluicebox: reload failed, still running the previous config: {}",
                            sluicebox::printable(&e.to_string())
                        );
                    }
                }
            }
            Ok(Reload::Restart(config, why)) => {
                errln!(
                    "sluicebox: reload: {path}: {} changed: draining to start again",
                    sluicebox::printable(&why.join(", "))
                );
                shutdown.trigger();
                return Some(*config);
            }
            Err(e) => {
                metrics.reload(false);
                for line in e.message().lines() {
                    errln!(
                        "sluicebox: reload failed, still running the previous config: {}",
                        sluicebox::printable(line)
                    );
                }
            }
        }
    }
    None
}

/// Prints each component's counts and the run's errors; the exit code they call for.
fn print_report(report: &sluicebox::runtime::RunReport) -> ExitCode {
    for c in &report.components {
        errln!(
            "sluicebox: {:<9} {:<20} received={} sent={} discarded={} dead_lettered={}{}{}",
            c.kind,
            sluicebox::printable(&c.name),
            c.received,
            c.sent,
            c.discarded,
            c.dead_lettered,
            if c.failed > 0 {
                format!(" failed={}", c.failed)
            } else {
                String::new()
            },
            if c.created > 0 {
                format!(" created={}", c.created)
            } else {
                String::new()
            },
        );
    }
    errln!(
        "sluicebox: finished in {:.3}s",
        report.elapsed.as_secs_f64()
    );
    let mut code = ExitCode::SUCCESS;
    for (c, e) in &report.errors {
        errln!(
            "sluicebox: error: {}: {}",
            sluicebox::printable(c),
            sluicebox::printable(e)
        );
        code = ExitCode::from(1);
    }
    if report.timed_out {
        errln!(
            "sluicebox: the drain deadline passed: undelivered events stay unacknowledged and replay on restart"
        );
        code = ExitCode::from(1);
    }
    if !report.is_balanced() {
        errln!("sluicebox: error: a component's counts do not balance");
        code = ExitCode::from(1);
    }
    code
}

/// Serves `GET /metrics` and `GET /healthz` until the process ends.
async fn serve_api(listener: tokio::net::TcpListener, current: Arc<Current>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let current = current.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    // The metrics of the graph running now (a restart makes new ones).
                    let metrics = current
                        .metrics
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    async move {
                        let (status, ctype, body) = match (req.method().as_str(), req.uri().path())
                        {
                            ("GET", "/metrics") => (
                                200,
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                metrics.render(),
                            ),
                            ("GET", "/healthz") => {
                                let down: Vec<String> = metrics
                                    .components()
                                    .into_iter()
                                    .filter(|(_, kind, m)| kind == "sink" && m.up.get() == 0)
                                    .map(|(id, _, _)| id)
                                    .collect();
                                if down.is_empty() {
                                    (200, "application/json", "{\"status\":\"ok\"}".to_string())
                                } else {
                                    (
                                        503,
                                        "application/json",
                                        serde_json::json!({"status": "degraded", "stopped": down})
                                            .to_string(),
                                    )
                                }
                            }
                            _ => (404, "text/plain", "not found\n".to_string()),
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", ctype)
                            .body(Full::new(Bytes::from(body)))
                    }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await;
        });
    }
}
