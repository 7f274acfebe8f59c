//! The in-flight byte budget of one source: bytes of batches sent and not yet completed
//! (delivered, dead-lettered or failed everywhere they went).

use std::sync::{Condvar, Mutex};

use super::Shutdown;

/// What a source does when its in-flight budget is used up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OverflowPolicy {
    /// Wait until delivered batches free room (default): nothing is lost, the source is
    /// held back.
    #[default]
    Block,
    /// Drop the new batch, count it, and acknowledge its positions (opt-in).
    DropNewest,
}

/// Caps the bytes a source has in flight. One batch is always admitted when nothing is in
/// flight, so a batch larger than the cap still moves.
///
/// Cost: a mutex section per batch sent and per batch completed.
#[derive(Debug)]
pub struct Budget {
    cap: u64,
    policy: OverflowPolicy,
    used: Mutex<u64>,
    freed: Condvar,
    notify: tokio::sync::Notify,
}

impl Budget {
    /// A budget of `cap` bytes.
    pub fn new(cap: u64, policy: OverflowPolicy) -> Self {
        Self {
            cap,
            policy,
            used: Mutex::new(0),
            freed: Condvar::new(),
            notify: tokio::sync::Notify::new(),
        }
    }

    /// The cap in bytes.
    pub fn cap(&self) -> u64 {
        self.cap
    }

    /// Bytes in flight now.
    pub fn used(&self) -> u64 {
        *self.lock()
    }

    /// The overflow policy.
    pub fn policy(&self) -> OverflowPolicy {
        self.policy
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, u64> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fits(&self, used: u64, n: u64) -> bool {
        used == 0 || used + n <= self.cap
    }

    /// Takes `n` bytes if they fit now.
    pub fn try_take(&self, n: u64) -> bool {
        let mut u = self.lock();
        if self.fits(*u, n) {
            *u += n;
            true
        } else {
            false
        }
    }

    /// Waits until `n` bytes fit, then takes them. False if `shutdown` fired first.
    pub async fn take(&self, n: u64, shutdown: &Shutdown) -> bool {
        loop {
            let freed = self.notify.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.try_take(n) {
                return true;
            }
            if shutdown.is_triggered() {
                return false;
            }
            tokio::select! {
                _ = &mut freed => {}
                _ = shutdown.wait() => {}
            }
        }
    }

    /// [`Budget::take`] on a blocking thread (checks shutdown every 50 ms).
    pub fn take_blocking(&self, n: u64, shutdown: &Shutdown) -> bool {
        match self.wait_fit(n, shutdown) {
            Some(mut u) => {
                *u += n;
                true
            }
            None => false,
        }
    }

    /// Whether `n` bytes would fit now (nothing is taken).
    pub(crate) fn has_room(&self, n: u64) -> bool {
        self.fits(*self.lock(), n)
    }

    /// Waits until `n` bytes would fit (without taking anything). False if `shutdown` fired
    /// first.
    pub(crate) fn wait_for_room(&self, n: u64, shutdown: &Shutdown) -> bool {
        self.wait_fit(n, shutdown).is_some()
    }

    /// Waits until `n` bytes fit, checking `shutdown` every 50 ms; the lock, held, or `None`
    /// if `shutdown` fired first.
    fn wait_fit(&self, n: u64, shutdown: &Shutdown) -> Option<std::sync::MutexGuard<'_, u64>> {
        let mut u = self.lock();
        while !self.fits(*u, n) {
            if shutdown.is_triggered() {
                return None;
            }
            u = self
                .freed
                .wait_timeout(u, std::time::Duration::from_millis(50))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Some(u)
    }

    /// Takes `n` whether they fit or not (given back by [`Budget::release`] like any other).
    pub(crate) fn take_anyway(&self, n: u64) {
        *self.lock() += n;
    }

    /// Gives `n` bytes back.
    pub fn release(&self, n: u64) {
        let mut u = self.lock();
        *u = u.saturating_sub(n);
        drop(u);
        self.freed.notify_all();
        self.notify.notify_waiters();
    }
}
