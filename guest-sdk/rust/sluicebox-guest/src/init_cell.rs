//! [`InitCell`]: configuration that `#[init]` computes once and the filter reads.

use core::cell::UnsafeCell;
use core::fmt;
use core::mem::MaybeUninit;
use core::sync::atomic::{AtomicU8, Ordering};

const EMPTY: u8 = 0;
const WRITING: u8 = 1;
const READY: u8 = 2;

/// A value set once, by `#[init]`, and read by the filter: a `static` for configuration.
///
/// Thread-safe (native tests run in parallel), and a few bytes of code on wasm32.
///
/// # Examples
///
/// ```
/// use sluicebox_guest::InitCell;
///
/// static N: InitCell<u32> = InitCell::new();
///
/// assert_eq!(N.get(), None);
/// N.set(10).unwrap();
/// assert_eq!(N.set(11), Err(11));
/// assert_eq!(N.get_or(&1), &10);
/// ```
pub struct InitCell<T> {
    state: AtomicU8,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: the value is written once, by the thread that moved `state` from EMPTY to WRITING,
// and published with a release store of READY; readers only touch it after an acquire load of
// READY, and only through `&T`. So sharing the cell shares `&T` (needs `T: Sync`) and may move
// a `T` in from another thread (needs `T: Send`).
unsafe impl<T: Send + Sync> Sync for InitCell<T> {}

impl<T> InitCell<T> {
    /// An empty cell.
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(EMPTY),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// Stores `value`, unless a value was stored already.
    ///
    /// # Errors
    ///
    /// Gives `value` back when the cell was set already (or is being set).
    pub fn set(&self, value: T) -> Result<(), T> {
        if self
            .state
            .compare_exchange(EMPTY, WRITING, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Err(value);
        }
        // SAFETY: winning the EMPTY -> WRITING exchange makes this the only writer, and no
        // reader looks at the value before READY is stored below.
        unsafe { (*self.value.get()).write(value) };
        self.state.store(READY, Ordering::Release);
        Ok(())
    }

    /// The stored value, if any.
    pub fn get(&self) -> Option<&T> {
        if self.state.load(Ordering::Acquire) != READY {
            return None;
        }
        // SAFETY: READY is stored (with release ordering, matched by the acquire load above)
        // only after the value was initialised, and it is never written again.
        Some(unsafe { (*self.value.get()).assume_init_ref() })
    }

    /// The stored value, or `default` when there is none.
    pub fn get_or<'a>(&'a self, default: &'a T) -> &'a T {
        self.get().unwrap_or(default)
    }
}

impl<T> Default for InitCell<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for InitCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("InitCell").field(&self.get()).finish()
    }
}

impl<T> Drop for InitCell<T> {
    fn drop(&mut self) {
        if *self.state.get_mut() == READY {
            // SAFETY: READY means the value was initialised, and `&mut self` means no one else
            // can see it any more.
            unsafe { self.value.get_mut().assume_init_drop() };
        }
    }
}
