//! The `slotpool` binary: see [`slotpool_host::cli`].

fn main() -> std::process::ExitCode {
    slotpool_host::cli::main()
}
