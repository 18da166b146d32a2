//! Keeping freed memory in the process, for the trainer's large per-step arrays.
//!
//! A training step allocates arrays of hundreds of MB (pre-activations, gradients)
//! and frees them at its end. glibc serves allocations above 32 MB with `mmap` and
//! returns them to the kernel on `free`, so every step pays page faults and page
//! zeroing for all of them again (a tenth of a TopK step at d_sae 24576). With
//! [`keep_freed_memory`] they come from the heap and freed memory stays for reuse.
//! The same arrays are live at the peak, so the peak should not change, but memory
//! freed late in a run is returned to the system only at exit.

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
