//! Keeps one event in `n` (parameter `n`, default 10), counting per instance. Reads no field.
#![no_std]

use core::sync::atomic::{AtomicU32, Ordering};

use sluicebox_guest::prelude::*;

static N: InitCell<u32> = InitCell::new();
static SEEN: AtomicU32 = AtomicU32::new(0);

/// Reads `n`, which must be a positive integer.
#[init]
fn init(params: &Params) -> Result<(), String> {
    let n = params.get_parsed::<u32>("n")?.unwrap_or(10);
    if n == 0 {
        return Err("parameter `n` must be at least 1".into());
    }
    N.set(n).ok();
    Ok(())
}

/// Keeps the first event of every `n`.
#[filter(fields = [])]
fn sample(_event: &Event) -> bool {
    keep_one_in(&SEEN, *N.get_or(&10))
}

/// Counts an event in `seen`; true for the first of every `n`.
fn keep_one_in(seen: &AtomicU32, n: u32) -> bool {
    seen.fetch_add(1, Ordering::Relaxed).is_multiple_of(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluicebox_guest::testing::run_init;

    #[test]
    fn keeps_one_in_n() {
        let seen = AtomicU32::new(0);
        let kept = (0..30).filter(|_| keep_one_in(&seen, 3)).count();
        assert_eq!(kept, 10);
    }

    #[test]
    fn rejects_bad_n() {
        assert_eq!(
            run_init(init, r#"{"n":"0"}"#).unwrap_err(),
            "parameter `n` must be at least 1"
        );
        assert_eq!(
            run_init(init, r#"{"n":"x"}"#).unwrap_err(),
            "parameter `n`: cannot parse `x`"
        );
    }
}
