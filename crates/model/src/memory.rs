//! Process memory settings for training on CPU.

/// Fixes glibc's mmap threshold at 64 KiB, so that activation buffers freed during
/// a step go back to the OS instead of fragmenting the heap. glibc's default,
/// dynamic threshold keeps them, which hides most of what gradient checkpointing
/// saves (see docs/BENCHMARKS.md). Call once at start-up; returns whether glibc
/// accepted the setting (always `false` off glibc).
pub fn release_freed_activations() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator tuning parameters.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
