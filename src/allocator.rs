//! The heap allocator of the static musl image (`scripts/image`), which is what Dapr's Helm chart
//! runs. musl's own malloc serialises the runtime's threads on its locks and keeps no per-thread
//! caches: the same build cost 14-41 % more CPU per certificate on musl than on glibc. mimalloc
//! takes its place there, and is told to hand freed pages back to the kernel at once, so that the
//! memory a burst of 1,000 connections held is returned when it closes, as glibc's build does
//! after [`sentry_runtime::server::heap_trim`] (docs/PERFORMANCE.md, *The image's allocator*).
//! Owns only the allocator and its options; glibc builds keep the C library's malloc.

// Two options that libmimalloc-sys (pinned in Cargo.lock) builds but does not name: their places
// in `mi_option_e` of the mimalloc v3 `mimalloc.h` it compiles.
/// `mi_option_arena_eager_commit`.
const ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay`.
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Freed pages go back to the kernel as soon as they are free (no delay) and arenas commit
/// memory as it is used rather than all at once. Called first thing in `main`.
pub(crate) fn configure() {
    // SAFETY: mi_option_set takes two integers and may be called from any thread at any time;
    // both options are read when mimalloc next reserves or purges memory.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
    }
}
