//! The global allocator of the `replication-vw` binary and of the load harness: [`Allocator`]
//! hands ordinary allocations to mimalloc and allocations of [`DIRECT_BYTES`] or more straight to
//! the operating system (an anonymous mapping each, unmapped when freed, moved with `mremap`
//! when it grows), on Linux.
//!
//! Why: mimalloc keeps freed memory for reuse and gives it back only after a delay, on a later
//! allocation; a buffer of a few MiB freed by a request therefore stays resident while the
//! process idles, and a later, smaller value placed in it keeps all of it resident. The
//! large-objects scenario of the load harness (issue 17) measured 50 MiB of such memory for
//! 29 MiB of stored objects. Allocations this large are rare (large objects, request bodies, big
//! lists and tables), so a system call and fresh pages for each cost little next to filling
//! them, and a growing one is moved by the kernel instead of copied. glibc's malloc does the same
//! above its mmap threshold, but raises that threshold whenever such a block is freed. Each
//! mapping is at least 1 MiB, so the kernel's limit on a process's mappings (`vm.max_map_count`,
//! 65,530 by default) is out of reach below 64 GiB of them; a refused mapping is an allocation
//! failure like any other.
//!
//! [`ExactBuf`] holds long-lived values at their exact size (see there).
//!
//! The one module of this workspace with `unsafe` code: implementing [`GlobalAlloc`] is unsafe
//! by definition, and the mappings are made through `libc`.

#![deny(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;

/// Allocations of this many bytes or more get their own mapping (on Linux).
pub const DIRECT_BYTES: usize = 1 << 20;

/// The alignment every mapping has at least (the smallest page size of the targets we build).
const MAP_ALIGN: usize = 4096;

/// mimalloc below [`DIRECT_BYTES`], the operating system's pages from there on.
pub struct Allocator;

/// Whether `layout` is served by a mapping of its own.
#[inline]
fn direct(size: usize, align: usize) -> bool {
    cfg!(target_os = "linux") && size >= DIRECT_BYTES && align <= MAP_ALIGN
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod os {
    use std::ptr;

    /// A fresh private anonymous mapping of `size` bytes (zeroed by the kernel), or null.
    pub(super) fn map(size: usize) -> *mut u8 {
        // SAFETY: a new anonymous mapping at an address the kernel chooses touches no existing
        // memory; the result is checked for MAP_FAILED.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            p.cast()
        }
    }

    /// Give back the mapping of `size` bytes at `p` that [`map`] or [`remap`] returned.
    ///
    /// # Safety
    /// `p` and `size` are those of a live mapping made here, and nothing uses it afterwards.
    pub(super) unsafe fn unmap(p: *mut u8, size: usize) {
        // SAFETY: the caller's contract; failure (which would need an invalid range) leaves the
        // mapping in place, a leak rather than unsoundness.
        unsafe { libc::munmap(p.cast(), size) };
    }

    /// Resize the mapping of `old` bytes at `p` to `new` bytes, moving it if needed; null if the
    /// kernel refuses (the old mapping is then untouched).
    ///
    /// # Safety
    /// As for [`unmap`]; on success the old address is no longer valid.
    pub(super) unsafe fn remap(p: *mut u8, old: usize, new: usize) -> *mut u8 {
        // SAFETY: the caller's contract; MREMAP_MAYMOVE lets the kernel pick a new address and
        // carry the contents over.
        let q = unsafe { libc::mremap(p.cast(), old, new, libc::MREMAP_MAYMOVE) };
        if q == libc::MAP_FAILED {
            ptr::null_mut()
        } else {
            q.cast()
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub(super) fn map(_size: usize) -> *mut u8 {
        unreachable!("invariant: `direct` is false off Linux")
    }
    pub(super) unsafe fn unmap(_p: *mut u8, _size: usize) {
        unreachable!("invariant: `direct` is false off Linux")
    }
    pub(super) unsafe fn remap(_p: *mut u8, _old: usize, _new: usize) -> *mut u8 {
        unreachable!("invariant: `direct` is false off Linux")
    }
}

// SAFETY: every block is either mimalloc's (the layout is not `direct`) or a mapping of its own
// (it is); the same layout decides at allocation, reallocation and release, so each block goes
// back where it came from. Mappings are page-aligned, which covers every `direct` alignment,
// and the kernel zeroes them, which `alloc_zeroed` needs.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if direct(layout.size(), layout.align()) {
            os::map(layout.size())
        } else {
            // SAFETY: the caller's contract (a non-zero size) passes through.
            unsafe { MiMalloc.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if direct(layout.size(), layout.align()) {
            os::map(layout.size())
        } else {
            // SAFETY: as in `alloc`.
            unsafe { MiMalloc.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if direct(layout.size(), layout.align()) {
            // SAFETY: a `direct` layout was allocated by `os::map` or `os::remap` with this size.
            unsafe { os::unmap(ptr, layout.size()) }
        } else {
            // SAFETY: mimalloc allocated it with this layout.
            unsafe { MiMalloc.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let align = layout.align();
        match (direct(layout.size(), align), direct(new_size, align)) {
            // SAFETY: mimalloc's block, mimalloc's reallocation.
            (false, false) => unsafe { MiMalloc.realloc(ptr, layout, new_size) },
            // SAFETY: our mapping of `layout.size()` bytes.
            (true, true) => unsafe { os::remap(ptr, layout.size(), new_size) },
            _ => {
                // Across the threshold: a new block of the other kind, then copy and free.
                // SAFETY: the caller guarantees `new_size` with `align` is a valid layout.
                let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, align) };
                // SAFETY: `new_size` is non-zero (the caller's contract).
                let new = unsafe { self.alloc(new_layout) };
                if !new.is_null() {
                    // SAFETY: both blocks are live and distinct, each at least this long.
                    unsafe {
                        std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                new
            }
        }
    }
}

/// A byte buffer of exactly its length for a value kept for long (a stored object), from the C
/// library's `malloc` rather than the global allocator.
///
/// mimalloc serves each size from a size class, four per doubling: a 2.7 KB object sits in a
/// 3 KiB block, 14% more than its bytes (about 380 B per object of the load harness's ingest).
/// glibc's `malloc` rounds a block up to 16 bytes and adds an 8-byte header. Values are written
/// once and only read after, so the allocator's speed matters little here; its rounding is paid
/// for as long as the value lives. Wrapped in `bytes::Bytes` with `Bytes::from_owner`.
pub struct ExactBuf {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the buffer is owned (never aliased mutably) and `free` may run on any thread.
#[allow(unsafe_code)]
unsafe impl Send for ExactBuf {}
// SAFETY: only shared reads after construction.
#[allow(unsafe_code)]
unsafe impl Sync for ExactBuf {}

impl ExactBuf {
    /// A copy of `bytes`; `None` when it is empty or `malloc` fails.
    #[allow(unsafe_code)]
    pub fn copy_of(bytes: &[u8]) -> Option<ExactBuf> {
        if bytes.is_empty() {
            return None;
        }
        // SAFETY: `malloc` of a non-zero size returns null or a block of that size.
        let ptr = std::ptr::NonNull::new(unsafe { libc::malloc(bytes.len()) }.cast::<u8>())?;
        // SAFETY: the new block has `bytes.len()` writable bytes and cannot overlap `bytes`.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr.as_ptr(), bytes.len()) };
        Some(ExactBuf {
            ptr,
            len: bytes.len(),
        })
    }
}

impl AsRef<[u8]> for ExactBuf {
    #[allow(unsafe_code)]
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `ptr` holds `len` initialized bytes (copied in `copy_of`) until dropped.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ExactBuf {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `malloc` and is freed once, here.
        unsafe { libc::free(self.ptr.as_ptr().cast()) };
    }
}

#[cfg(test)]
#[allow(unsafe_code)]
mod tests {
    use super::*;

    /// The tests' own collections and threads run on it too.
    #[global_allocator]
    static GLOBAL: Allocator = Allocator;

    /// This process's resident set in bytes (`/proc/self/statm`, second field, in pages).
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("invariant: Linux /proc");
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("invariant: statm has a resident field");
        pages * 4096
    }

    fn fill(p: *mut u8, len: usize, seed: u8) {
        for i in 0..len {
            // SAFETY: `p` has `len` writable bytes.
            unsafe { p.add(i).write(seed.wrapping_add(i as u8)) };
        }
    }

    fn holds(p: *const u8, len: usize, seed: u8) -> bool {
        // SAFETY: `p` has `len` readable bytes.
        (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8))
    }

    #[test]
    fn a_freed_large_buffer_is_given_back_to_the_system_at_once() {
        let size = 64 << 20;
        let layout = Layout::from_size_align(size, 8).expect("invariant: valid layout");
        let before = resident();
        // SAFETY: non-zero layout; the block is freed with the same layout.
        let p = unsafe { Allocator.alloc(layout) };
        assert!(!p.is_null());
        fill(p, size, 1);
        let held = resident();
        // SAFETY: allocated above with `layout`.
        unsafe { Allocator.dealloc(p, layout) };
        let after = resident();
        assert!(
            held >= before + size / 2,
            "the buffer was resident while held"
        );
        assert!(
            after + size / 2 <= held,
            "freeing the buffer gave its pages back: {before} → {held} → {after}"
        );
    }

    #[test]
    fn a_buffer_keeps_its_contents_while_it_grows_and_shrinks_across_the_threshold() {
        let mut layout = Layout::from_size_align(1000, 8).expect("invariant: valid layout");
        // SAFETY: non-zero layout.
        let mut p = unsafe { Allocator.alloc(layout) };
        fill(p, 1000, 7);
        for new_size in [
            DIRECT_BYTES - 1,
            DIRECT_BYTES,
            5 * DIRECT_BYTES,
            3 * DIRECT_BYTES,
            100,
        ] {
            let kept = layout.size().min(new_size);
            // SAFETY: `p` was allocated with `layout`; `new_size` is non-zero.
            p = unsafe { Allocator.realloc(p, layout, new_size) };
            assert!(!p.is_null());
            assert!(
                holds(p, kept.min(1000), 7),
                "contents kept at {new_size} bytes"
            );
            layout = Layout::from_size_align(new_size, 8).expect("invariant: valid layout");
        }
        // SAFETY: allocated with `layout`.
        unsafe { Allocator.dealloc(p, layout) };
    }

    #[test]
    fn a_zeroed_large_allocation_reads_as_zeros() {
        let layout = Layout::from_size_align(2 * DIRECT_BYTES + 3, 64).expect("invariant");
        // SAFETY: non-zero layout.
        let p = unsafe { Allocator.alloc_zeroed(layout) };
        assert!(!p.is_null());
        assert_eq!(p as usize % 64, 0, "the alignment asked for");
        // SAFETY: `p` has `layout.size()` readable bytes.
        assert!((0..layout.size()).all(|i| unsafe { p.add(i).read() } == 0));
        // SAFETY: allocated with `layout`.
        unsafe { Allocator.dealloc(p, layout) };
    }

    #[test]
    fn ordinary_collections_work_on_top_of_it() {
        // Vec's own growth path goes through `realloc` across the threshold.
        let mut v: Vec<u64> = Vec::new();
        for i in 0..(DIRECT_BYTES / 2) as u64 {
            v.push(i);
        }
        assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64));
        v.truncate(10);
        v.shrink_to_fit();
        assert_eq!(v, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn an_exact_buffer_holds_a_copy_of_its_bytes_and_nothing_when_empty() {
        let text: Vec<u8> = (0..2690u32).map(|i| (i % 251) as u8).collect();
        let buf = ExactBuf::copy_of(&text).expect("malloc succeeds");
        assert_eq!(buf.as_ref(), &text[..]);
        let moved = std::thread::spawn(move || buf.as_ref().to_vec())
            .join()
            .expect("the thread runs");
        assert_eq!(moved, text);
        assert!(ExactBuf::copy_of(b"").is_none());
    }
}
