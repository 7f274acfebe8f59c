//! `sluicebox run CONFIG` and `sluicebox validate CONFIG`: a pipeline from a TOML file, with
//! the `[api]` endpoint (`/metrics`, `/healthz`), and a drain on SIGTERM or SIGINT.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use sluicebox::config::Config;
use sluicebox::metrics::Metrics;

#[derive(Args)]
pub(crate) struct RunArgs {
    /// The pipeline's TOML file.
    config: PathBuf,
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
            eprintln!("sluicebox: {}: ok", a.config.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in e.message().lines() {
                eprintln!("sluicebox: error: {}", sluicebox::printable(line));
            }
            ExitCode::from(2)
        }
    }
}

/// Runs the pipeline until every source is done or a signal asks it to stop.
pub(crate) fn run(a: RunArgs) -> ExitCode {
    let built = match Config::load(&a.config).and_then(|c| c.build(&config_dir(&a.config))) {
        Ok(b) => b,
        Err(e) => {
            for line in e.message().lines() {
                eprintln!("sluicebox: error: {}", sluicebox::printable(line));
            }
            return ExitCode::from(2);
        }
    };
    let api = built.api.clone();
    let metrics = built.metrics.clone();
    let shutdown = built.shutdown.clone();
    // Bind the API first, so a port in use is a configuration error before anything runs.
    let listener = if api.enabled {
        match std::net::TcpListener::bind(&api.address) {
            Ok(l) => {
                let _ = l.set_nonblocking(true);
                Some(l)
            }
            Err(e) => {
                eprintln!(
                    "sluicebox: error: api: key `address`: cannot listen on {}: {e}",
                    api.address
                );
                return ExitCode::from(2);
            }
        }
    } else {
        None
    };
    let running = match built.topology.start() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluicebox: error: {}", sluicebox::printable(&e.to_string()));
            return ExitCode::from(2);
        }
    };
    let handle = running.handle();
    if let Some(l) = listener {
        let metrics = metrics.clone();
        handle.spawn(async move {
            if let Ok(l) = tokio::net::TcpListener::from_std(l) {
                serve_api(l, metrics).await;
            }
        });
    }
    let sd = shutdown.clone();
    handle.spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = sd.wait() => return,
        }
        eprintln!("sluicebox: stopping: draining in-flight events");
        sd.trigger();
    });
    eprintln!(
        "sluicebox: running {}{}",
        a.config.display(),
        if api.enabled {
            format!(" (metrics on http://{}/metrics)", api.address)
        } else {
            String::new()
        }
    );
    let report = match running.wait() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluicebox: error: {}", sluicebox::printable(&e.to_string()));
            return ExitCode::from(1);
        }
    };
    for c in &report.components {
        eprintln!(
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
    eprintln!(
        "sluicebox: finished in {:.3}s",
        report.elapsed.as_secs_f64()
    );
    let mut code = ExitCode::SUCCESS;
    for (c, e) in &report.errors {
        eprintln!(
            "sluicebox: error: {}: {}",
            sluicebox::printable(c),
            sluicebox::printable(e)
        );
        code = ExitCode::from(1);
    }
    if report.timed_out {
        eprintln!(
            "sluicebox: the drain deadline passed: undelivered events stay unacknowledged and replay on restart"
        );
        code = ExitCode::from(1);
    }
    if !report.is_balanced() {
        eprintln!("sluicebox: error: a component's counts do not balance");
        code = ExitCode::from(1);
    }
    code
}

/// Serves `GET /metrics` and `GET /healthz` until the process ends.
async fn serve_api(listener: tokio::net::TcpListener, metrics: Metrics) {
    let metrics = Arc::new(metrics);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let metrics = metrics.clone();
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
