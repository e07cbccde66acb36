//! The allocator of every program that links the agent.
//!
//! A forward pass allocates a fresh output for nearly every operation, many
//! of them megabytes large. glibc's malloc hands such blocks back to the
//! kernel when they are freed (mmap/munmap above its threshold), so the next
//! operation page-faults its output in again: 22% of the CPU time was in the
//! kernel at 2 threads (bench/RESULTS.md, "CPU: where the time goes").
//! mimalloc keeps freed memory for reuse (1.16-1.22x on the forward,
//! measured against PyTorch in the same run, bench/RESULTS.md).
//!
//! Kept memory would also stay resident between points and inflate the next
//! point's peak RSS, so [`release_free_memory`] returns it to the kernel
//! before each point's peak is reset: the timed window still reuses its own
//! buffers, and each point's peak is its own.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Returns the memory mimalloc keeps for reuse to the kernel, now.
pub fn release_free_memory() {
    // SAFETY: `mi_collect` takes no pointer and touches only mimalloc's own
    // heaps and arenas; with `force` it frees empty pages and purges unused
    // memory. It is safe to call at any time from any thread.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
}
