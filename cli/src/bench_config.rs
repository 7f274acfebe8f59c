//! `sluicebox bench --config pipeline.toml`: the user's own graph, with its real filters and
//! routes, measured next to the baselines on the same corpus. Every source is replaced by
//! the corpus (a `file` source read once, keeping the source's `codec`); `elasticsearch` and
//! `http` sinks keep their settings but send to a local server that answers success at once
//! (so their batching, encoding and reply parsing are measured, not a real server); every
//! other sink and the dead letter become a `blackhole`. The `[api]` endpoint is off and the
//! state goes to a temporary directory that is emptied before each round. Before anything is
//! replaced, the file is built once as `sluicebox validate` builds it (see [`check`]), so a
//! file `run` refuses is refused here, with every problem.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sluicebox::config::Config;
use sluicebox::runtime::RunReport;

use crate::Fail;

/// One graph under measurement. Costs one build (modules come from the compiled-module
/// cache after the first) and one run over the corpus per round.
pub(crate) struct ConfigBench {
    config: Config,
    config_dir: PathBuf,
    state: PathBuf,
    /// The last round's report, filter seconds per transform, and wall time.
    last: Option<Round>,
    /// Per round: seconds the sinks spent building requests and reading replies
    /// (`sink_encode_seconds_total`).
    pub(crate) encode_secs: Vec<f64>,
}

/// One round: the report, seconds per component of each kind's own work (transforms: the
/// filter calls; sources: the parse stage on the workers; sinks: building requests and
/// reading replies), and seconds from start to drained.
type Round = (RunReport, Vec<(String, f64)>, f64);

impl ConfigBench {
    /// Loads `path` (a file the bench wrote) and rewrites its sources to read `corpus` (a
    /// file), its network sinks to send to `instant` (see [`crate::bench_server`]) and its
    /// other sinks to discard.
    pub(crate) fn new(
        path: &Path,
        corpus: &Path,
        scratch: &Path,
        instant: &str,
    ) -> Result<Self, Fail> {
        Self::with_config(load(path)?, path, corpus, scratch, instant)
    }

    /// [`ConfigBench::new`] for the user's file, `config` as [`load`] read it from `path`:
    /// first checked as `sluicebox validate` checks it (see [`check`]).
    pub(crate) fn checked(
        config: Config,
        path: &Path,
        corpus: &Path,
        scratch: &Path,
        instant: &str,
    ) -> Result<Self, Fail> {
        check(&config, &config_dir(path), &scratch.join("check"))?;
        Self::with_config(config, path, corpus, scratch, instant)
    }

    fn with_config(
        mut config: Config,
        path: &Path,
        corpus: &Path,
        scratch: &Path,
        instant: &str,
    ) -> Result<Self, Fail> {
        let config_dir = config_dir(path);
        let state = scratch.join("state");
        config.data_dir = state.clone();
        config.api.enabled = false;
        for table in config.sources.values_mut() {
            let codec = table.remove("codec");
            table.clear();
            table.insert("type".into(), "file".into());
            table.insert(
                "include".into(),
                toml::Value::Array(vec![corpus.display().to_string().into()]),
            );
            table.insert("follow".into(), false.into());
            table.insert("exclude".into(), toml::Value::Array(Vec::new()));
            if let Some(c) = codec {
                table.insert("codec".into(), c);
            }
        }
        for table in config.sinks.values_mut() {
            let kind = table.get("type").and_then(|t| t.as_str()).unwrap_or("");
            match kind {
                "elasticsearch" => {
                    table.insert("endpoints".into(), toml::Value::Array(vec![instant.into()]));
                    for k in ["tls", "auth", "dead_letter_path"] {
                        table.remove(k);
                    }
                }
                "http" => {
                    table.insert("uri".into(), format!("{instant}/").into());
                    for k in ["tls", "auth", "headers"] {
                        table.remove(k);
                    }
                }
                _ => blackhole(table),
            }
        }
        let mut dead = toml::Table::new();
        dead.insert("type".into(), "blackhole".into());
        config.dead_letter = Some(dead);
        Ok(Self {
            config,
            config_dir,
            state,
            last: None,
            encode_secs: Vec::new(),
        })
    }

    /// Runs the graph once over the corpus; returns the seconds from start to the end of
    /// the drain (the build, which loads the modules, is not counted).
    pub(crate) fn run_once(&mut self) -> Result<f64, Fail> {
        let _ = std::fs::remove_dir_all(&self.state);
        let built = self
            .config
            .clone()
            .build(&self.config_dir)
            .map_err(|e| Fail::usage(e.message().to_string()))?;
        let metrics = built.metrics.clone();
        let t0 = Instant::now();
        let report = built
            .topology
            .start()
            .and_then(|r| r.wait())
            .map_err(|e| Fail::usage(e.to_string()))?;
        let secs = t0.elapsed().as_secs_f64();
        if let Some((c, e)) = report.errors.first() {
            return Err(Fail::usage(format!("{c}: {e}")));
        }
        let text = metrics.render();
        let mut own_secs: Vec<(String, f64)> = Vec::new();
        for (prefix, kind) in [
            ("wasm_filter_call_seconds_sum{", "transform"),
            ("source_parse_seconds_total{", "source"),
            ("sink_encode_seconds_total{", "sink"),
        ] {
            own_secs.extend(
                seconds_per_component(&text, prefix)
                    .into_iter()
                    // Every component has each family's series; zero means none of that work.
                    .filter(|(_, s)| *s > 0.0)
                    .map(|(n, s)| (format!("{kind}/{n}"), s)),
            );
        }
        let filter_secs = own_secs;
        self.encode_secs.push(
            text.lines()
                .filter(|l| l.starts_with("sink_encode_seconds_total{"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        );
        self.last = Some((report, filter_secs, secs));
        Ok(secs)
    }

    /// The last round per component, as table lines or JSON.
    pub(crate) fn breakdown(&self, events: u64) -> (Vec<String>, serde_json::Value) {
        let Some((report, filter_secs, secs)) = &self.last else {
            return (Vec::new(), serde_json::Value::Null);
        };
        let mut lines = vec![format!(
            "{:<10} {:<20} {:>10} {:>9} {:>10} {:>10} {:>9} {:>10} {:>12}",
            "kind",
            "component",
            "received",
            "created",
            "sent",
            "discarded",
            "failed",
            "dead",
            "ns/event"
        )];
        let mut json = Vec::new();
        let (mut in_filters, mut in_parse) = (0.0, 0.0);
        for c in &report.components {
            let key = format!("{}/{}", c.kind, c.name);
            let fsecs = filter_secs.iter().find(|(n, _)| *n == key).map(|(_, s)| *s);
            match c.kind.as_str() {
                "transform" => in_filters += fsecs.unwrap_or(0.0),
                "source" => in_parse += fsecs.unwrap_or(0.0),
                _ => {}
            }
            let ns = fsecs.map(|s| s * 1e9 / c.received.max(1) as f64);
            lines.push(format!(
                "{:<10} {:<20} {:>10} {:>9} {:>10} {:>10} {:>9} {:>10} {:>12}",
                c.kind,
                sluicebox::printable(&c.name),
                c.received,
                c.created,
                c.sent,
                c.discarded,
                c.failed,
                c.dead_lettered,
                ns.map(|n| format!("{n:.1}")).unwrap_or_else(|| "-".into())
            ));
            json.push(serde_json::json!({
                "kind": c.kind, "component": c.name, "received": c.received,
                "created": c.created, "sent": c.sent, "discarded": c.discarded,
                "failed": c.failed, "dead_lettered": c.dead_lettered,
                "own_ns_per_event": ns,
            }));
        }
        lines.push(
            "sources and sinks were replaced (sources read the corpus, sinks discard or answer \
             at once) after the file was checked as `sluicebox validate` checks it, Kafka \
             components excepted (building a Kafka client connects to its brokers)"
                .to_string(),
        );
        lines.push(
            "each row: received + created = sent + discarded + failed + dead. ns/event: a \
             transform's filter calls, a source's parse stage (on the workers), a sink's \
             building of requests and reading of replies (elasticsearch); per event it received"
                .to_string(),
        );
        let per = |x: f64| x * 1e9 / events.max(1) as f64;
        let rest = (secs - in_filters - in_parse).max(0.0);
        lines.push(format!(
            "whole graph: {:.1} ns/event over {events} events; parse {:.1}, filters {:.1}, the \
             rest (read, frame, route, sinks, waiting) {:.1}",
            per(*secs),
            per(in_parse),
            per(in_filters),
            per(rest),
        ));
        (
            lines,
            serde_json::json!({"components": json, "seconds": secs, "filter_seconds": in_filters, "parse_seconds": in_parse}),
        )
    }
}

/// Reads the pipeline file `path`.
pub(crate) fn load(path: &Path) -> Result<Config, Fail> {
    Config::load(path).map_err(|e| Fail::usage(e.message().to_string()))
}

/// The directory the file `path`'s relative paths resolve against.
fn config_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Turns the sink `table` into a blackhole with the same inputs.
fn blackhole(table: &mut toml::Table) {
    let inputs = table.remove("inputs");
    table.clear();
    table.insert("type".into(), "blackhole".into());
    if let Some(i) = inputs {
        table.insert("inputs".into(), i);
    }
}

/// Checks `config` as `sluicebox validate` does (every component built, every problem
/// reported) before its sources and sinks are replaced, so that a file `run` would refuse
/// is refused here too (Kafka components excepted: building one connects). Nothing it
/// builds touches the user's files, ports or servers: the state and every `path` go under
/// `scratch`, listening sources listen on port 0 of their host, and the API is off.
/// Nothing is run.
fn check(config: &Config, config_dir: &Path, scratch: &Path) -> Result<(), Fail> {
    let mut check = config.clone();
    check.data_dir = scratch.join("state");
    check.api.enabled = false;
    // A Kafka client connects to its brokers when it is built: the bench contacts no
    // server, so Kafka components are checked by `sluicebox validate` only.
    let kafka = |t: &toml::Table| t.get("type").and_then(|v| v.as_str()) == Some("kafka");
    for table in check.sources.values_mut().filter(|t| kafka(t)) {
        table.clear();
        table.insert("type".into(), "stdin".into());
    }
    for table in check.sinks.values_mut().filter(|t| kafka(t)) {
        blackhole(table);
    }
    for table in check.sources.values_mut() {
        if let Some(toml::Value::String(address)) = table.get_mut("address") {
            // `host:port` with a valid port: the same host, any free port. Anything else
            // is left for the source to refuse.
            if let Some((host, port)) = address.rsplit_once(':')
                && port.parse::<u16>().is_ok()
            {
                *address = format!("{host}:0");
            }
        }
    }
    let mut n = 0;
    let tables = check.sinks.values_mut().chain(check.dead_letter.as_mut());
    for table in tables {
        for key in ["path", "dead_letter_path"] {
            if let Some(toml::Value::String(path)) = table.get_mut(key) {
                n += 1;
                *path = scratch.join(format!("{key}-{n}")).display().to_string();
            }
        }
    }
    check.build(config_dir).map(drop).map_err(|e| {
        Fail::usage(format!(
            "the pipeline file does not build:\n{}",
            e.message()
        ))
    })
}

/// Sums the samples whose line starts with `prefix` (a metric name and `{`) per
/// `component_id`, from the OpenMetrics text.
fn seconds_per_component(text: &str, prefix: &str) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        let Some(id) = rest
            .split("component_id=\"")
            .nth(1)
            .and_then(|s| s.split('"').next())
        else {
            continue;
        };
        let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        match out.iter_mut().find(|(n, _)| n == id) {
            Some(e) => e.1 += v,
            None => out.push((id.to_string(), v)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_seconds_are_read_per_component() {
        let text = "# TYPE wasm_filter_call_seconds histogram\n\
            wasm_filter_call_seconds_sum{component_id=\"drop\",component_kind=\"transform\",component_type=\"wasm\"} 0.5\n\
            wasm_filter_call_seconds_count{component_id=\"drop\",component_kind=\"transform\",component_type=\"wasm\"} 3\n\
            wasm_filter_call_seconds_sum{component_id=\"tag\",component_kind=\"transform\",component_type=\"wasm\"} 0.25\n";
        assert_eq!(
            seconds_per_component(text, "wasm_filter_call_seconds_sum{"),
            vec![("drop".to_string(), 0.5), ("tag".to_string(), 0.25)]
        );
    }
}
