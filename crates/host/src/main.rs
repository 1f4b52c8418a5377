//! The `slotpool` binary: see [`slotpool_host::cli`].

fn main() -> std::process::ExitCode {
    slotpool_host::cli::main()
}

// engine: debug builds abort on any allocation inside `assert_no_alloc` (the engine's
// cycle on the audio thread); elsewhere the allocator behaves as usual.
#[cfg(debug_assertions)]
#[global_allocator]
static ALLOC: assert_no_alloc::AllocDisabler = assert_no_alloc::AllocDisabler;
