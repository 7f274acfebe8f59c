//! The `sluicebox` command: `filter` (NDJSON in, NDJSON out), `demo` (the main job on
//! generated logs), `gen` (write a generated corpus), `bench` (measure scenarios) and `test`
//! (golden cases for filter modules).

/// Prints to standard output through [`out`]: a closed pipe ends the process quietly.
macro_rules! out {
    ($($t:tt)*) => { $crate::out(format_args!($($t)*)) };
}
/// [`out!`] with a newline.
macro_rules! outln {
    () => { $crate::out(format_args!("\n")) };
    ($($t:tt)*) => { $crate::out(format_args!("{}\n", format_args!($($t)*))) };
}

/// Prints to standard error through [`err`]: never panics, so that a closed or broken
/// stderr (a log collector gone, `2>&1 | head`) cannot kill the thread that logs, or stop
/// the signal handler before it starts the drain (`eprintln!` panics on a write error).
macro_rules! errp {
    ($($t:tt)*) => { $crate::err(format_args!($($t)*)) };
}
/// [`errp!`] with a newline.
macro_rules! errln {
    () => { $crate::err(format_args!("\n")) };
    ($($t:tt)*) => { $crate::err(format_args!("{}\n", format_args!($($t)*))) };
}

mod bench;
mod bench_config;
mod bench_server;
mod bench_tail;
mod run;
mod test_cmd;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, IsTerminal, Read, Seek, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use sluicebox::source::reader::ReadAt;
use sluicebox::wasm::{LoadOptions, WasmModule, default_cache_dir};
use sluicebox::{Kind, Pipeline, PipelineConfig, Report, WasmConfig, WriterSink};

pub use sluicebox::loggen::{DROP_DEBUG_WAT, NOOP_WAT};

/// Writes a report line to standard output. When the reader has gone (`sluicebox bench
/// --json | head -c 100`), the process ends quietly with 141, the status a shell gives a
/// program killed by SIGPIPE; any other write error is reported and ends it with 1. Costs one
/// lock and one flush per call (reports are a few lines).
/// Writes `args` to standard error; a write error is ignored (see [`errp!`]).
pub(crate) fn err(args: std::fmt::Arguments<'_>) {
    let mut e = io::stderr().lock();
    let _ = e.write_fmt(args).and_then(|()| e.flush());
}

pub(crate) fn out(args: std::fmt::Arguments<'_>) {
    let mut o = io::stdout().lock();
    if let Err(e) = o.write_fmt(args).and_then(|()| o.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        errln!("sluicebox: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(
    name = "sluicebox",
    version,
    about = "Stream NDJSON through sandboxed WebAssembly filters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read NDJSON, run it through the filter modules, write NDJSON.
    Filter(FilterArgs),
    /// The main job: generated logs through a real wasm filter, with a summary and speed.
    Demo(DemoArgs),
    /// Write generated log events as NDJSON.
    Gen(GenArgs),
    /// Measure baselines and pipelines side by side on the same bytes.
    Bench(bench::BenchArgs),
    /// Run a pipeline from a TOML file (see docs/config.md) until its sources are done or
    /// SIGTERM/SIGINT drains it.
    Run(run::RunArgs),
    /// Load and check a pipeline file (every module is loaded); exit 2 on any problem.
    Validate(run::ValidateArgs),
    /// Run golden test cases (TOML case files, see docs/testing.md) for filter modules.
    Test(test_cmd::TestArgs),
}

#[derive(Args, Clone)]
pub(crate) struct Tuning {
    /// Worker threads that parse and filter (output order is kept).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Most events per batch.
    #[arg(long, default_value_t = 1024)]
    batch_events: usize,
    /// Most bytes per batch.
    #[arg(long, default_value_t = 1 << 20)]
    batch_bytes: usize,
    /// Longest line accepted; longer lines are dead-lettered as oversized.
    #[arg(long, default_value_t = 1 << 20)]
    max_line_bytes: usize,
    /// Wall-clock deadline per batch call of each module, in milliseconds.
    #[arg(long, default_value_t = 100)]
    deadline_ms: u64,
    /// Memory cap of each module, in MiB.
    #[arg(long, default_value_t = 64)]
    memory_limit_mib: usize,
    /// Module parameters, KEY=VALUE, given to every module's init.
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Do not use the compiled-module cache.
    #[arg(long)]
    no_cache: bool,
    /// Give modules a minimal WASI preview 1 (no files, network or environment; stdout and
    /// stderr go to the log), for toolchains that need it (Go, C with libc).
    #[arg(long)]
    wasi: bool,
}

impl Tuning {
    pub(crate) fn pipeline_config(&self) -> PipelineConfig {
        PipelineConfig {
            workers: self.workers,
            max_batch_events: self.batch_events,
            max_batch_bytes: self.batch_bytes,
            max_line_bytes: self.max_line_bytes,
            ..PipelineConfig::default()
        }
    }

    pub(crate) fn wasm_config(&self) -> Result<WasmConfig, String> {
        let mut params = BTreeMap::new();
        for p in &self.params {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--param {p:?}: expected KEY=VALUE"))?;
            params.insert(k.to_string(), v.to_string());
        }
        Ok(WasmConfig {
            params,
            deadline: Duration::from_millis(self.deadline_ms),
            memory_limit: self.memory_limit_mib << 20,
            ..WasmConfig::default()
        })
    }

    pub(crate) fn cache_dir(&self) -> Option<PathBuf> {
        if self.no_cache {
            None
        } else {
            default_cache_dir()
        }
    }

    pub(crate) fn load_options(&self) -> LoadOptions {
        LoadOptions {
            cache_dir: self.cache_dir(),
            wasi: self.wasi,
        }
    }
}

#[derive(Args)]
struct FilterArgs {
    /// Input NDJSON file (default: stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Output NDJSON file (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Dead-letter NDJSON file: one object per rejected event with reason, line, offset, raw.
    #[arg(long)]
    dead_letter: Option<PathBuf>,
    /// Filter module (.wasm or .wat); repeat to chain modules in order.
    #[arg(long = "module")]
    modules: Vec<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args)]
struct DemoArgs {
    /// Number of generated events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Use this module instead of the embedded drop_debug filter.
    #[arg(long)]
    module: Option<PathBuf>,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args)]
struct GenArgs {
    /// Number of events.
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    /// Generate at least this many bytes instead of a number of events.
    #[arg(long, conflicts_with = "events")]
    bytes: Option<usize>,
    /// PRNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output file (default: stdout).
    #[arg(long)]
    output: Option<PathBuf>,
}

/// A failure of the command itself, with its exit code.
pub(crate) struct Fail {
    code: u8,
    message: String,
}

impl From<sluicebox::Error> for Fail {
    fn from(e: sluicebox::Error) -> Self {
        let code = match e.kind() {
            Kind::ModuleLoad | Kind::ModuleInit | Kind::Config => 2,
            _ => 1,
        };
        Fail {
            code,
            message: e.to_string(),
        }
    }
}

impl Fail {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Fail {
            code: 2,
            message: message.into(),
        }
    }
    fn io(what: &str, e: io::Error) -> Self {
        Fail {
            code: 1,
            message: format!("{what}: {e}"),
        }
    }
}

fn main() -> ExitCode {
    tracing_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(a) => return run::run(a),
        Command::Validate(a) => return run::validate(a),
        Command::Filter(a) => cmd_filter(a),
        Command::Demo(a) => cmd_demo(a),
        Command::Gen(a) => cmd_gen(a),
        Command::Bench(a) => bench::run(a),
        Command::Test(a) => test_cmd::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            errln!("sluicebox: error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Filter modules log through `tracing`; print their messages on stderr.
fn tracing_init() {
    struct Stderr;
    impl tracing::Subscriber for Stderr {
        fn enabled(&self, m: &tracing::Metadata<'_>) -> bool {
            *m.level() <= tracing::Level::INFO
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            struct V(String);
            impl tracing::field::Visit for V {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    if f.name() == "message" {
                        self.0.insert_str(0, &format!("{v:?} "));
                    } else {
                        self.0.push_str(&format!("{}={v:?} ", f.name()));
                    }
                }
            }
            let mut v = V(String::new());
            e.record(&mut v);
            errln!("sluicebox: {}: {}", e.metadata().level(), v.0.trim_end());
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    let _ = tracing::subscriber::set_global_default(Stderr);
}

pub(crate) fn load_modules(
    paths: &[PathBuf],
    tuning: &Tuning,
    pipeline: &mut Pipeline,
) -> Result<(), Fail> {
    let config = tuning.wasm_config().map_err(Fail::usage)?;
    let options = tuning.load_options();
    for p in paths {
        let module = WasmModule::load(p, &options)?;
        pipeline.push_filter(Box::new(config.build(&module)?));
    }
    Ok(())
}

/// Counts bytes read and moves a progress bar, per read call (never per event).
struct Progress<R> {
    inner: R,
    bar: Option<indicatif::ProgressBar>,
}

impl<R: Read> Read for Progress<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        }
        Ok(n)
    }
}

impl ReadAt for Progress<File> {
    fn size(&self) -> io::Result<u64> {
        self.inner.size()
    }

    /// Moves the bar to the furthest byte read: the workers read their ranges at once.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        if let Some(b) = &self.bar {
            let end = offset + n as u64;
            if end > b.position() {
                b.set_position(end);
            }
        }
        Ok(n)
    }
}

/// A standard stream as a file of its own. std's `Stdin` and `Stdout` treat `EBADF` (a
/// descriptor not open for that direction, such as a read-only stdout) as the end of the
/// input and as a write that succeeded, which would lose the output silently; a duplicate
/// of the descriptor reports the error instead.
fn std_stream(fd: std::os::fd::BorrowedFd<'_>, what: &str) -> Result<File, Fail> {
    fd.try_clone_to_owned()
        .map(File::from)
        .map_err(|e| Fail::io(&format!("cannot use {what}"), e))
}

/// Where `p` is: the file it names when it exists (its device and inode, so links and other
/// spellings agree), else its absolute path.
enum Place {
    File(u64, u64),
    Path(PathBuf),
    /// Not a regular file (a terminal, `/dev/null`, a pipe): sharing it is harmless.
    Other,
}

fn place(p: &std::path::Path) -> Place {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() => Place::File(m.dev(), m.ino()),
        Ok(_) => Place::Other,
        Err(_) => {
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty());
            let dir = parent.map_or_else(
                || std::path::Path::new(".").canonicalize(),
                |d| d.canonicalize(),
            );
            match (dir, p.file_name()) {
                (Ok(d), Some(name)) => Place::Path(d.join(name)),
                _ => Place::Path(p.to_path_buf()),
            }
        }
    }
}

/// Refuses to run when two of the input, output and dead-letter paths are the same file:
/// creating the output would empty the input, and two writers would interleave.
fn distinct_paths(a: &FilterArgs) -> Result<(), Fail> {
    let named = [
        ("--input", &a.input),
        ("--output", &a.output),
        ("--dead-letter", &a.dead_letter),
    ];
    let places: Vec<(&str, &PathBuf, Place)> = named
        .iter()
        .filter_map(|(flag, p)| p.as_ref().map(|p| (*flag, p, place(p))))
        .collect();
    for (i, (fa, pa, a)) in places.iter().enumerate() {
        for (fb, pb, b) in &places[i + 1..] {
            let same = match (a, b) {
                (Place::File(d1, i1), Place::File(d2, i2)) => (d1, i1) == (d2, i2),
                (Place::Path(x), Place::Path(y)) => x == y,
                _ => false,
            };
            if same {
                return Err(Fail::usage(format!(
                    "{fa} {} and {fb} {} are the same file",
                    pa.display(),
                    pb.display()
                )));
            }
        }
    }
    Ok(())
}

fn cmd_filter(a: FilterArgs) -> Result<(), Fail> {
    let input = match &a.input {
        Some(p) => {
            File::open(p).map_err(|e| Fail::io(&format!("cannot open input {}", p.display()), e))?
        }
        None => std_stream(io::stdin().as_fd(), "standard input")?,
    };
    let mut config = a.tuning.pipeline_config();
    // A regular file's reads never wait for more to come (a pipe's or a terminal's may).
    config.input_never_blocks = input.metadata().is_ok_and(|m| m.is_file());
    // A regular file read from its start is read by position: with several workers, each
    // reads and frames its own byte ranges.
    let positional = config.input_never_blocks && (&input).stream_position().is_ok_and(|p| p == 0);
    let mut pipeline = Pipeline::new(config)?;
    load_modules(&a.modules, &a.tuning, &mut pipeline)?;
    distinct_paths(&a)?;
    let bar = io::stderr().is_terminal().then(|| {
        let len = a
            .input
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| m.len());
        let bar = match len {
            Some(l) => indicatif::ProgressBar::new(l),
            None => indicatif::ProgressBar::no_length(),
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let mut input = Progress {
        inner: input,
        bar: bar.clone(),
    };
    let output: Box<dyn Write> = match &a.output {
        Some(p) => Box::new(
            File::create(p)
                .map_err(|e| Fail::io(&format!("cannot create output {}", p.display()), e))?,
        ),
        None => Box::new(std_stream(io::stdout().as_fd(), "standard output")?),
    };
    let sink = WriterSink::new(output);
    let report = match &a.dead_letter {
        Some(p) => {
            let f = File::create(p)
                .map_err(|e| Fail::io(&format!("cannot create dead letter {}", p.display()), e))?;
            let dead = WriterSink::new(f).described_as("writing dead letters");
            if positional {
                pipeline.run_at_with_dead_letter(&input, sink, dead)?
            } else {
                pipeline.run_with_dead_letter(&mut input, sink, dead)?
            }
        }
        None if positional => pipeline.run_at(&input, sink)?,
        None => pipeline.run(&mut input, sink)?,
    };
    if positional {
        // Read by position, the file's offset did not move: leave it at the end, where a
        // stream read leaves it, for whatever reads the same descriptor next.
        let _ = (&input.inner).seek(io::SeekFrom::End(0));
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    print_report(&report);
    Ok(())
}

pub(crate) fn print_report(report: &Report) {
    errln!("sluicebox: {}", report.stats.summary(report.elapsed));
    for d in &report.first_dead_letters {
        let raw = String::from_utf8_lossy(&d.raw[..d.raw.len().min(80)]).into_owned();
        // A reason may quote a filter module's own text: escaped like every such text.
        errln!(
            "sluicebox: dead letter: line {} (offset {}): {}: {raw:?}",
            d.line,
            d.offset,
            sluicebox::printable(&d.reason)
        );
    }
    if report.stats.dead_lettered > report.first_dead_letters.len() as u64
        && !report.first_dead_letters.is_empty()
    {
        errln!("sluicebox: (give --dead-letter PATH to keep every rejected event)");
    }
}

fn cmd_demo(a: DemoArgs) -> Result<(), Fail> {
    errln!(
        "sluicebox demo: generating {} realistic log events...",
        a.events
    );
    let corpus = sluicebox::loggen::corpus(a.events, 42);
    let (name, module) = match &a.module {
        Some(p) => (
            p.display().to_string(),
            WasmModule::from_file(p, a.tuning.cache_dir().as_deref())?,
        ),
        None => (
            "embedded drop_debug.wat".to_string(),
            WasmModule::from_bytes("drop_debug", DROP_DEBUG_WAT.as_bytes(), None)?,
        ),
    };
    let config = a.tuning.wasm_config().map_err(Fail::usage)?;
    let filter = config.build(&module)?;
    let fields = filter.declared_fields();
    let mut pipeline = Pipeline::new(a.tuning.pipeline_config())?.with_filter(filter);
    errln!(
        "sluicebox demo: {:.1} MB through wasm filter {name} (reads fields {:?}), {} worker(s), output discarded",
        corpus.len() as f64 / 1e6,
        fields.unwrap_or_default(),
        a.tuning.workers
    );
    let report = pipeline.run(&corpus[..], sluicebox::NullSink)?;
    print_report(&report);
    let s = &report.stats;
    let secs = report.elapsed.as_secs_f64();
    outln!(
        "demo: {} events in, {} out, {} dropped as DEBUG, {} dead-lettered; {:.0} ns/event, {:.0} MB/s; balanced: {}",
        s.received,
        s.emitted,
        s.filtered,
        s.dead_lettered,
        secs * 1e9 / s.received.max(1) as f64,
        corpus.len() as f64 / secs / 1e6,
        s.is_balanced()
    );
    Ok(())
}

fn cmd_gen(a: GenArgs) -> Result<(), Fail> {
    let data = match a.bytes {
        Some(b) => sluicebox::loggen::corpus_bytes(b, a.seed),
        None => sluicebox::loggen::corpus(a.events, a.seed),
    };
    match &a.output {
        Some(p) => std::fs::write(p, &data)
            .map_err(|e| Fail::io(&format!("cannot write {}", p.display()), e)),
        None => std_stream(io::stdout().as_fd(), "standard output")?
            .write_all(&data)
            .map_err(|e| Fail::io("writing stdout", e)),
    }
}
