//! Helpers shared by the integration tests.

use sluicebox::{
    CollectSink, Filter, Pipeline, PipelineConfig, Report, WasmConfig, WasmFilter, wasm::WasmModule,
};

/// Runs `input` through `filters` and returns (report, output NDJSON, dead letters as JSON values).
pub fn run_with(
    config: PipelineConfig,
    filters: Vec<Box<dyn Filter>>,
    input: &[u8],
) -> (Report, Vec<u8>, Vec<serde_json::Value>) {
    let mut p = Pipeline::new(config).unwrap();
    for f in filters {
        p.push_filter(f);
    }
    let mut out = CollectSink::new();
    let mut dead = CollectSink::new();
    let report = p.run_with_dead_letter(input, &mut out, &mut dead).unwrap();
    assert!(
        report.stats.is_balanced(),
        "conservation law violated: {:?}",
        report.stats
    );
    assert!(out.finished && dead.finished);
    let dead: Vec<serde_json::Value> = dead
        .events
        .iter()
        .map(|(b, _, _)| serde_json::from_slice(b).expect("dead letter is JSON"))
        .collect();
    (report, out.ndjson(), dead)
}

/// Runs `input` with no filter.
pub fn run(input: &[u8]) -> (Report, Vec<u8>, Vec<serde_json::Value>) {
    run_with(PipelineConfig::default(), vec![], input)
}

/// Builds a wasm filter from WAT text.
pub fn wasm(name: &str, wat: &str, config: &WasmConfig) -> Result<WasmFilter, sluicebox::Error> {
    let m = WasmModule::from_bytes(name, wat.as_bytes(), None)?;
    config.build(&m)
}

/// The hand-written drop_debug example.
pub const DROP_DEBUG_WAT: &str = include_str!("../../examples/wat/drop_debug.wat");
/// The noop filter in hand-written WAT: reads nothing, keeps every event.
pub const NOOP_WAT: &str = include_str!("../../examples/wat/noop.wat");

/// Checks the process is still healthy: a normal wasm run works.
pub fn healthy() {
    let f = wasm("drop_debug", DROP_DEBUG_WAT, &WasmConfig::default()).unwrap();
    let (r, out, _) = run_with(
        PipelineConfig::default(),
        vec![Box::new(f)],
        b"{\"level\":\"DEBUG\"}\n{\"level\":\"INFO\"}\n",
    );
    assert_eq!(out, b"{\"level\":\"INFO\"}\n");
    assert_eq!(r.stats.filtered, 1);
}

/// A bump allocator for WAT test guests: `sluicebox_alloc` (also `$alloc`) over the global
/// `$heap`, growing memory as needed, 0 when it cannot.
pub const ALLOC_WAT: &str = r#"(func $alloc (export "sluicebox_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32) (local $end i32) (local $pages i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (local.set $pages (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16)))
    (if (i32.gt_u (local.get $pages) (memory.size))
      (then (if (i32.eq (memory.grow (i32.sub (local.get $pages) (memory.size))) (i32.const -1))
        (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))"#;

/// A test guest in WAT: `fields` is the `\n`-separated projection (escaped for WAT), and
/// `per_event` runs for event `$i` with `$h` the header and `$v` the verdict to set.
/// `$field` (h, i, f) returns the kind of field `f` of event `i`. `after` runs after the
/// loop, before the return (it may overwrite the header's output fields).
pub fn guest(fields: &str, per_event: &str, extra: &str, after: &str, version: u32) -> String {
    let len = fields.replace("\\0a", "\n").len();
    format!(
        r#"(module
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 8192))
  (global $vbuf (mut i32) (i32.const 0))
  (global $vcap (mut i32) (i32.const 0))
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 16) "{fields}")
  (data (i32.const 1024) "\10\00\00\00{len_le}\00\00\00\00")
  (func (export "sluicebox_abi_version") (result i32) (i32.const {version}))
  (func (export "sluicebox_fields") (result i32) (i32.const 1024))
  {ALLOC_WAT}
  (func $field (param $h i32) (param $i i32) (param $f i32) (result i32)
    (i32.load8_u offset=16
      (i32.add (i32.load offset=12 (local.get $h))
        (i32.mul (i32.add (i32.mul (local.get $i) (i32.load offset=32 (local.get $h))) (local.get $f)) (i32.const 24)))))
  {extra}
  (func (export "sluicebox_filter") (param $h i32) (result i32)
    (local $n i32) (local $i i32) (local $v i32)
    (local.set $n (i32.load offset=4 (local.get $h)))
    (if (i32.gt_u (local.get $n) (global.get $vcap))
      (then (global.set $vbuf (call $alloc (local.get $n) (i32.const 1))) (global.set $vcap (local.get $n))))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $v (i32.const 0))
      {per_event}
      (i32.store8 (i32.add (global.get $vbuf) (local.get $i)) (local.get $v))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.store offset=36 (local.get $h) (global.get $vbuf))
    (i32.store offset=40 (local.get $h) (i32.const 0))
    (i32.store offset=44 (local.get $h) (i32.const 0))
    {after}
    (i32.const 0))
)"#,
        len_le = (len as u32)
            .to_le_bytes()
            .iter()
            .map(|b| format!("\\{b:02x}"))
            .collect::<String>(),
    )
}

/// `n` events `{"i":K,"poison":BOOL}` where `poison` is true for the indexes in `bad`.
pub fn numbered(n: usize, bad: &[usize]) -> Vec<u8> {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!("{{\"i\":{i},\"poison\":{}}}\n", bad.contains(&i)));
    }
    s.into_bytes()
}

/// A native filter that answers every event with the decisions `f(input line, index, d)`
/// writes (the index is within the call, which may cover part of the batch).
pub struct Answer<F>(pub &'static str, pub F);

impl<F: Fn(u64, usize, &mut sluicebox::Decisions) + Clone + Send + 'static> sluicebox::Filter
    for Answer<F>
{
    fn name(&self) -> &str {
        self.0
    }
    fn process(
        &mut self,
        events: &sluicebox::Events<'_>,
        d: &mut sluicebox::Decisions,
    ) -> sluicebox::Result<()> {
        for i in 0..events.len() {
            (self.1)(events.get(i).line(), i, d);
        }
        Ok(())
    }
    fn fork(&self) -> sluicebox::Result<Box<dyn sluicebox::Filter>> {
        Ok(Box::new(Answer(self.0, self.1.clone())))
    }
}

/// The `sluicebox` command built next to this test binary (`target/<profile>/sluicebox`; the
/// `sluicebox-cli` package builds it, and `cargo test --workspace` builds it before any test
/// runs).
pub fn sluicebox_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/<profile>/deps/all-HASH -> target/<profile>/sluicebox
    let bin = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>")
        .join("sluicebox");
    assert!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --release --workspace` (or build it with `cargo build --release -p sluicebox-cli`)",
        bin.display()
    );
    bin
}

/// A test PKI in `dir`: ca.pem, server.pem/server.key (localhost, 127.0.0.1),
/// client.pem/client.key, and other-ca.pem (a CA that signed nothing here).
#[cfg(feature = "tls")]
pub fn pki(dir: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair,
    };
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let root = ca("sluicebox test CA");
    std::fs::write(dir.join("ca.pem"), root.pem()).unwrap();
    std::fs::write(dir.join("other-ca.pem"), ca("another CA").pem()).unwrap();
    for (name, sans, eku) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        ("client", vec![], ExtendedKeyUsagePurpose::ClientAuth),
    ] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &root).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}
