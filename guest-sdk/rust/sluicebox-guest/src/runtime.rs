//! The wasm32 runtime a `no_std` guest needs: a global allocator and a panic handler (feature
//! `runtime`, on by default).
//!
//! The allocator keeps one free list per power-of-two size class, from 8 bytes up. A block of
//! class `2^c` starts at a multiple of `min(2^c, 64 KiB)`, so it satisfies any alignment up to
//! its size; larger alignments are refused. Fresh blocks come from the end of the memory
//! (`memory.grow`); the space skipped to align one is cut into smaller free blocks rather than
//! lost. Freed blocks go back to their list and are reused by the next request of that class,
//! which is what a filter's reused buffers need. The memory below the module's initial size
//! (stack and statics) is never handed out.

#[cfg(target_arch = "wasm32")]
use core::alloc::{GlobalAlloc, Layout};
#[cfg(target_arch = "wasm32")]
use core::cell::UnsafeCell;
use core::ptr;

const PAGE: usize = 65536;
/// The smallest class, 8 bytes: room for the free-list link, and 8-byte alignment for free.
const MIN_CLASS: u32 = 3;
/// Classes up to 2^31 bytes.
const CLASSES: usize = 32;

/// The class of a request: the log2 of its rounded-up size, or `None` when it cannot be served.
fn class_of(size: usize, align: usize) -> Option<u32> {
    if align > PAGE {
        return None;
    }
    let n = size.max(align).max(1 << MIN_CLASS);
    if n > 1 << (CLASSES - 1) {
        return None;
    }
    Some(n.next_power_of_two().trailing_zeros())
}

struct Heap {
    /// Head of each class's free list (an address, 0 for empty); each free block stores the
    /// next one's address in its first 4 bytes.
    free: [usize; CLASSES],
    /// The unused tail of memory that this heap owns: `next..end`.
    next: usize,
    end: usize,
}

impl Heap {
    /// Pushes the free block at `addr` of class `class`.
    ///
    /// # Safety
    ///
    /// `addr` must be a block of `2^class` bytes owned by the heap and used by nobody, aligned
    /// to `min(2^class, PAGE)`.
    unsafe fn push(&mut self, addr: usize, class: u32) {
        let head = &mut self.free[class as usize];
        // SAFETY: the block is at least 8 bytes, aligned to 8 and unused (caller's promise).
        unsafe { ptr::write(addr as *mut usize, *head) };
        *head = addr;
    }

    /// Pops a free block of class `class`, or returns 0.
    fn pop(&mut self, class: u32) -> usize {
        let head = self.free[class as usize];
        if head != 0 {
            // SAFETY: `head` was pushed by `push`, which wrote the next link at its start; the
            // block has been unused since.
            self.free[class as usize] = unsafe { ptr::read(head as *const usize) };
        }
        head
    }

    /// Cuts the unused range `lo..hi` into naturally aligned power-of-two blocks and frees them.
    ///
    /// # Safety
    ///
    /// `lo..hi` must be owned by the heap and unused, with `lo` a multiple of 8.
    unsafe fn donate(&mut self, mut lo: usize, hi: usize) {
        while hi - lo >= 1 << MIN_CLASS {
            let by_alignment = lo.trailing_zeros();
            let by_size = usize::BITS - 1 - (hi - lo).leading_zeros();
            let class = by_alignment.min(by_size).min(CLASSES as u32 - 1);
            // SAFETY: `lo..lo + 2^class` is inside `lo..hi` (by `by_size`) and `lo` is a
            // multiple of `2^class` (by `by_alignment`).
            unsafe { self.push(lo, class) };
            lo += 1 << class;
        }
    }

    /// A block of class `class`: reused, or cut from the end of memory, grown as needed by
    /// `grow` (`memory.grow`: takes pages, returns the previous size in pages or `usize::MAX`).
    fn alloc(&mut self, class: u32, mut grow: impl FnMut(usize) -> usize) -> *mut u8 {
        let block = self.pop(class);
        if block != 0 {
            return block as *mut u8;
        }
        let size = 1usize << class;
        let align = size.min(PAGE);
        loop {
            let Some(start) = self.next.checked_next_multiple_of(align) else {
                return ptr::null_mut();
            };
            let Some(stop) = start.checked_add(size) else {
                return ptr::null_mut();
            };
            if stop <= self.end {
                // SAFETY: `next..start` is the unused head of the heap's tail, and `next` is a
                // multiple of 8 (every block size and alignment is).
                unsafe { self.donate(self.next, start) };
                self.next = stop;
                return start as *mut u8;
            }
            let pages = (stop - self.end).div_ceil(PAGE);
            let old = grow(pages);
            if old == usize::MAX {
                return ptr::null_mut();
            }
            let (Some(base), Some(grown)) = (old.checked_mul(PAGE), pages.checked_mul(PAGE)) else {
                return ptr::null_mut();
            };
            let Some(new_end) = base.checked_add(grown) else {
                return ptr::null_mut();
            };
            if base != self.end {
                // Not contiguous with our tail (the first growth, or the host grew the memory
                // too): keep the old tail as free blocks and continue from the new pages.
                // SAFETY: `next..end` is the heap's unused tail.
                unsafe { self.donate(self.next, self.end) };
                self.next = base;
            }
            self.end = new_end;
        }
    }
}

#[cfg(target_arch = "wasm32")]
struct Allocator(UnsafeCell<Heap>);

// SAFETY: wasm32 without the `atomics` feature (refused in `rt`) runs one thread, so the heap is
// never touched from two threads.
#[cfg(target_arch = "wasm32")]
unsafe impl Sync for Allocator {}

#[cfg(target_arch = "wasm32")]
impl Allocator {
    /// # Safety
    ///
    /// No other reference to the heap may be alive: true as the allocator does not re-enter
    /// itself and the module has one thread.
    #[expect(clippy::mut_from_ref, reason = "a single-threaded global allocator")]
    unsafe fn heap(&self) -> &mut Heap {
        // SAFETY: see the function's contract.
        unsafe { &mut *self.0.get() }
    }
}

#[cfg(target_arch = "wasm32")]
// SAFETY: blocks are aligned to `min(size class, PAGE)` and alignments above PAGE are refused,
// so every block satisfies its layout; a block is handed out at most once until it is freed;
// `dealloc` gets the same layout as `alloc`, hence the same class.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(layout.size(), layout.align()) else {
            return ptr::null_mut();
        };
        // SAFETY: no other heap reference is alive (single thread, no re-entry).
        unsafe { self.heap() }.alloc(class, core::arch::wasm32::memory_grow::<0>)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(class) = class_of(layout.size(), layout.align()) {
            // SAFETY: `ptr` came from `alloc` with this layout, so it is a block of `class`,
            // suitably aligned, and the caller no longer uses it.
            unsafe { self.heap().push(ptr as usize, class) };
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = class_of(layout.size(), layout.align());
        if old.is_some() && old == class_of(new_size, layout.align()) {
            return ptr;
        }
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: the new layout has a non-zero size (the caller's contract).
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller size and distinct (`ptr` is still
            // allocated); `ptr` is freed with the layout it was allocated with.
            unsafe {
                ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: Allocator = Allocator(UnsafeCell::new(Heap {
    free: [0; CLASSES],
    next: 0,
    end: 0,
}));

#[cfg(target_arch = "wasm32")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::{Layout, alloc, dealloc};
    use std::vec::Vec;

    /// A fake linear memory: `cap` pages at a page-aligned native address, of which `used` are
    /// "grown"; `gap` pages are skipped at the next growth, as if the host had grown them.
    struct Fake {
        base: *mut u8,
        cap: usize,
        used: usize,
        gap: usize,
    }

    impl Fake {
        fn new(cap: usize) -> Self {
            // SAFETY: non-zero size, valid alignment.
            let base = unsafe { alloc(Layout::from_size_align(cap * PAGE, PAGE).unwrap()) };
            assert!(!base.is_null());
            Self {
                base,
                cap,
                used: 1,
                gap: 0,
            }
        }

        fn grow(&mut self, pages: usize) -> usize {
            self.used += std::mem::take(&mut self.gap);
            if self.used + pages > self.cap {
                return usize::MAX;
            }
            let old = self.base as usize / PAGE + self.used;
            self.used += pages;
            old
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout.
            unsafe {
                dealloc(
                    self.base,
                    Layout::from_size_align(self.cap * PAGE, PAGE).unwrap(),
                )
            };
        }
    }

    fn heap() -> Heap {
        Heap {
            free: [0; CLASSES],
            next: 0,
            end: 0,
        }
    }

    #[test]
    fn classes_round_up_and_refuse_huge_alignments() {
        assert_eq!(class_of(1, 1), Some(3));
        assert_eq!(class_of(8, 8), Some(3));
        assert_eq!(class_of(9, 4), Some(4));
        assert_eq!(class_of(3, 64), Some(6));
        assert_eq!(class_of(PAGE + 1, 8), Some(17));
        assert_eq!(class_of(8, PAGE * 2), None);
        assert_eq!(class_of(usize::MAX / 2, 8), None);
    }

    #[test]
    fn blocks_are_aligned_disjoint_and_reused() {
        let mut mem = Fake::new(64);
        let mut heap = heap();
        let mut live: Vec<(usize, usize)> = Vec::new();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for round in 0..4000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if live.len() > 40 || (round % 3 == 0 && !live.is_empty()) {
                let (addr, class) = live.swap_remove(seed as usize % live.len());
                // SAFETY: a live block of this class, no longer used.
                unsafe { heap.push(addr, class as u32) };
                continue;
            }
            let size = 1 + (seed >> 20) as usize % 5000;
            let align = 1 << ((seed >> 40) % 8);
            let class = class_of(size, align).unwrap();
            let p = heap.alloc(class, |n| mem.grow(n)) as usize;
            assert_ne!(p, 0);
            assert_eq!(p % align, 0);
            assert_eq!(p % (1usize << class).min(PAGE), 0);
            let base = mem.base as usize;
            assert!(p >= base + PAGE && p + (1 << class) <= base + mem.used * PAGE);
            for &(q, c) in &live {
                assert!(p + (1 << class) <= q || q + (1 << c) <= p, "blocks overlap");
            }
            live.push((p, class as usize));
        }
        // Far less than 4000 fresh blocks: freed blocks were reused.
        assert!(mem.used < 16, "{} pages", mem.used);
    }

    #[test]
    fn alignment_padding_is_not_lost() {
        let mut mem = Fake::new(8);
        let mut heap = heap();
        let small = heap.alloc(3, |n| mem.grow(n)) as usize;
        let big = heap.alloc(15, |n| mem.grow(n)) as usize;
        assert_eq!(big % (1 << 15), 0);
        assert!(big > small);
        // The space skipped to align `big` now serves small blocks.
        let again = heap.alloc(3, |n| mem.grow(n)) as usize;
        assert!(again > small && again < big);
    }

    #[test]
    fn survives_foreign_growth_and_running_out() {
        let mut mem = Fake::new(6);
        let mut heap = heap();
        let a = heap.alloc(10, |n| mem.grow(n)) as usize;
        mem.gap = 1;
        let b = heap.alloc(16, |n| mem.grow(n)) as usize;
        assert_eq!(b % PAGE, 0);
        assert!(b >= a + 2 * PAGE, "the foreign page is skipped");
        assert!(
            heap.alloc(18, |n| mem.grow(n)).is_null(),
            "out of memory is null"
        );
        // The tail before the foreign page was kept as free blocks.
        let c = heap.alloc(10, |n| mem.grow(n)) as usize;
        assert!(c > a && c < b);
    }
}
