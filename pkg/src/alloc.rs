//! The plugin processes' allocator: small allocations come from a bump arena that is never
//! given back.
//!
//! A plugin call lives a few milliseconds and allocates a few hundred KiB. musl's allocator
//! returns freed pages to the kernel at once, so one ADD made about 25 `mmap`/`munmap` pairs,
//! each a page fault on first touch and a TLB flush on unmap. The arena hands out memory from
//! one static region (zero pages the kernel fills on first touch) and frees nothing; an
//! allocation larger than [`LARGEST`], and every allocation once the arena is used up, goes to
//! the system allocator as before. For short-lived processes only (never twilld).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The arena's size: virtual memory only, pages cost when first touched.
pub const ARENA_BYTES: usize = 8 << 20;
/// Allocations above this size go to the system allocator (a 50 MB hostile config must not
/// eat the arena).
pub const LARGEST: usize = 256 << 10;

/// A bump allocator over a static region, falling back to [`System`]; see the module doc.
pub struct Arena {
    mem: UnsafeCell<[u8; ARENA_BYTES]>,
    /// Offset of the first free byte.
    next: AtomicUsize,
}

// SAFETY: the region is only handed out in disjoint pieces reserved with an atomic
// compare-and-swap on `next`; the arena never reads or writes the memory itself.
unsafe impl Sync for Arena {}

impl Default for Arena {
    fn default() -> Arena {
        Arena::new()
    }
}

impl Arena {
    /// An empty arena (for `#[global_allocator] static`).
    pub const fn new() -> Arena {
        Arena {
            mem: UnsafeCell::new([0; ARENA_BYTES]),
            next: AtomicUsize::new(0),
        }
    }

    fn base(&self) -> usize {
        self.mem.get() as usize
    }

    /// Whether `p` was handed out by the arena.
    fn owns(&self, p: *mut u8) -> bool {
        let a = p as usize;
        a >= self.base() && a < self.base() + ARENA_BYTES
    }

    /// Reserves `layout` in the arena; None when it does not fit any more.
    fn bump(&self, layout: Layout) -> Option<*mut u8> {
        let base = self.base();
        let mut cur = self.next.load(Ordering::Relaxed);
        loop {
            let start = (base + cur).checked_next_multiple_of(layout.align())? - base;
            let end = start.checked_add(layout.size())?;
            if end > ARENA_BYTES {
                return None;
            }
            match self
                .next
                .compare_exchange_weak(cur, end, Ordering::Relaxed, Ordering::Relaxed)
            {
                // SAFETY: start < ARENA_BYTES, so the pointer stays inside the region.
                Ok(_) => return Some(unsafe { self.mem.get().cast::<u8>().add(start) }),
                Err(now) => cur = now,
            }
        }
    }

    /// Grows the arena's last allocation `p` (of `old` bytes) to `new` bytes in place.
    fn grow_last(&self, p: *mut u8, old: usize, new: usize) -> bool {
        let start = p as usize - self.base();
        let (Some(old_end), Some(new_end)) = (start.checked_add(old), start.checked_add(new))
        else {
            return false;
        };
        new_end <= ARENA_BYTES
            && self
                .next
                .compare_exchange(old_end, new_end, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

// SAFETY: every pointer returned is either a fresh, disjoint, suitably aligned piece of the
// arena (never handed out twice, so never aliased) or comes from System; dealloc and realloc
// send System's pointers back to System and never free arena memory.
unsafe impl GlobalAlloc for Arena {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() <= LARGEST
            && let Some(p) = self.bump(layout)
        {
            return p;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // Arena memory was never handed out before: still the kernel's zero pages.
        if layout.size() <= LARGEST
            && let Some(p) = self.bump(layout)
        {
            return p;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        if !self.owns(p) {
            // SAFETY: not the arena's, so System's, with the layout it was allocated with.
            unsafe { System.dealloc(p, layout) }
        }
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !self.owns(p) {
            // SAFETY: System's pointer and layout, forwarded.
            return unsafe { System.realloc(p, layout, new_size) };
        }
        if new_size <= layout.size() || self.grow_last(p, layout.size(), new_size) {
            return p;
        }
        // SAFETY: the caller guarantees new_size with layout's alignment is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for alloc.
        let q = unsafe { self.alloc(new_layout) };
        if !q.is_null() {
            // SAFETY: both valid for layout.size() bytes (new_size is larger) and disjoint.
            unsafe { std::ptr::copy_nonoverlapping(p, q, layout.size()) };
        }
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_allocations_come_from_the_arena_large_ones_and_overflow_from_the_system() {
        static A: Arena = Arena::new();
        let a = &A;
        unsafe {
            let l = Layout::from_size_align(24, 8).unwrap();
            let p = a.alloc(l);
            let q = a.alloc(l);
            assert!(a.owns(p) && a.owns(q));
            assert_eq!(q as usize - p as usize, 24);
            let big = Layout::from_size_align(LARGEST + 1, 8).unwrap();
            let b = a.alloc(big);
            assert!(!b.is_null() && !a.owns(b));
            a.dealloc(b, big);
            // Aligned requests are aligned.
            let l64 = Layout::from_size_align(10, 64).unwrap();
            let r = a.alloc(l64);
            assert_eq!(r as usize % 64, 0);
            assert!(a.owns(r));
        }
    }

    #[test]
    fn the_last_allocation_grows_in_place_and_others_move_keeping_their_bytes() {
        static A: Arena = Arena::new();
        let a = &A;
        unsafe {
            let l = Layout::from_size_align(8, 8).unwrap();
            let p = a.alloc(l);
            p.write_bytes(7, 8);
            let p2 = a.realloc(p, l, 64);
            assert_eq!(p2, p, "the last allocation grows in place");
            let other = a.alloc(l);
            let p3 = a.realloc(p2, Layout::from_size_align(64, 8).unwrap(), 128);
            assert_ne!(p3, p2, "not the last any more: moved");
            assert!(a.owns(p3) && a.owns(other));
            assert_eq!(std::slice::from_raw_parts(p3, 8), &[7u8; 8]);
        }
    }

    #[test]
    fn a_full_arena_falls_back_to_the_system_allocator() {
        static A: Arena = Arena::new();
        let a = &A;
        unsafe {
            let chunk = Layout::from_size_align(LARGEST, 8).unwrap();
            for _ in 0..ARENA_BYTES / LARGEST {
                assert!(a.owns(a.alloc(chunk)));
            }
            let p = a.alloc(chunk);
            assert!(!p.is_null() && !a.owns(p));
            let z = a.alloc_zeroed(Layout::from_size_align(16, 8).unwrap());
            assert!(!a.owns(z));
            assert_eq!(std::slice::from_raw_parts(z, 16), &[0u8; 16]);
            a.dealloc(p, chunk);
            a.dealloc(z, Layout::from_size_align(16, 8).unwrap());
        }
    }
}
