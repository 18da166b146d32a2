//! Keeping freed memory in the process, for the trainer's large per-step arrays.
//!
//! A training step allocates arrays of hundreds of MB (pre-activations, gradients)
//! and frees them at its end. glibc serves allocations above 32 MB with `mmap` and
//! returns them to the kernel on `free`, so every step pays page faults and page
//! zeroing for all of them again (a tenth of a TopK step at d_sae 24576). With
//! [`keep_freed_memory`] they come from the heap and freed memory stays for reuse.
//! The same arrays are live at the peak, so the peak should not change. Without
//! trimming, though, the heap keeps every hole that reading shards of different sizes
//! leaves, and peak RSS crept up with the number of shards read (59.9 / 69.3 / 76.9 MB
//! on 1 / 8 / 32 shards, together with a second cause since fixed: the feature
//! statistics read every row's token); [`release_freed_memory`] after each shard read
//! hands the free pages back, once per shard rather than once per step.
//! `circuitry-train-sae` calls [`keep_freed_memory`] unless
//! `--keep-freed-memory false`.

/// Make glibc's `malloc` serve large allocations from the heap and never trim it
/// (process-wide; a no-op on other C libraries). Call it at the start of `main`,
/// before threads start. Returns whether the C library accepted the settings.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before other
        // threads allocate, as its documentation asks.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Return the heap's free pages to the system (glibc `malloc_trim`; a no-op elsewhere).
/// Called after each shard read, so that with [`keep_freed_memory`] the resident
/// memory stays bounded by the live arrays, not by the number of shards read.
pub fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}
