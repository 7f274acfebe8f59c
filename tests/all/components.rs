//! WIT components (docs/abi.md part II) are isolated like core modules: a component that
//! loops, fails its call, exhausts its memory or answers out of range loses only the event
//! that causes it. Uses `target/guests/js/hostile.wasm` from `scripts/build-guests.sh js`.

use std::path::PathBuf;
use std::time::Duration;

use sluicebox::wasm::{LoadOptions, WasmModule};
use sluicebox::{PipelineConfig, WasmConfig};

use crate::common::*;

fn hostile() -> std::sync::Arc<WasmModule> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("guests/js/hostile.wasm");
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/build-guests.sh js` first",
        path.display()
    );
    WasmModule::load(&path, &LoadOptions::default()).unwrap()
}

#[test]
fn hostile_component_loses_only_the_poison_events() {
    let module = hostile();
    let input = b"{\"level\":\"A\"}\n{\"level\":\"LOOP\"}\n{\"level\":\"B\"}\n{\"level\":\"THROW\"}\n{\"level\":\"OOM\"}\n{\"level\":\"BAD\"}\n{\"level\":\"C\"}\n";
    let config = WasmConfig {
        deadline: Duration::from_millis(200),
        memory_limit: 32 << 20,
        ..Default::default()
    };
    let f = config.build(&module).unwrap();
    let (_r, out, dead) = run_with(PipelineConfig::default(), vec![Box::new(f)], input);
    assert_eq!(
        out,
        b"{\"level\":\"A\"}\n{\"level\":\"B\"}\n{\"level\":\"C\"}\n".to_vec()
    );
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:?}");
    assert!(reasons[0].contains("deadline exceeded"), "{reasons:?}");
    assert!(
        reasons[1].contains("component returned an error: boom"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("memory limit exceeded") || reasons[2].contains("deadline exceeded"),
        "{reasons:?}"
    );
    assert!(reasons[3].contains("unknown verdict 9"), "{reasons:?}");
}

#[test]
fn a_component_of_another_world_is_refused_naming_the_expected_one() {
    let wat = r#"(component
      (core module $m (func (export "f")))
      (core instance $i (instantiate $m))
      (func $f (canon lift (core func $i "f")))
      (instance $g (export "f" (func $f)))
      (export "sluicebox:filter/guest@2.0.0" (instance $g)))"#;
    let err = WasmModule::from_bytes("v2", wat.as_bytes(), None)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(
        msg.contains("expected an export `sluicebox:filter/guest@1.0.0`")
            && msg.contains("`sluicebox:filter/guest@2.0.0`, a version this host does not speak"),
        "{msg}"
    );
}
