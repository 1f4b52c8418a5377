//! `slotpool-worker`: runs one built-in module as a slotpool worker process. Thin: the
//! flags are parsed and validated by `slotpool_worker::cli`, the worker is
//! `slotpool_worker::run_with`. Exit statuses are decided there (see the crate docs).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use slotpool_worker::cli::{Args, Settings, list_modules};
use slotpool_worker::exit_status;

// Debug builds: any allocation inside a process() call aborts.
#[global_allocator]
static ALLOC: slotpool_worker::GuardAllocator = slotpool_worker::GuardAllocator;

fn main() -> ExitCode {
    let settings = match Args::parse().into_settings() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("slotpool-worker: {e}");
            return ExitCode::from(exit_status::USAGE);
        }
    };
    match settings {
        Settings::ListModules => {
            print!("{}", list_modules());
            ExitCode::SUCCESS
        }
        Settings::Grandchild => slotpool_worker::grandchild_main(),
        Settings::Run { spec, options } => match spec.build() {
            Ok(processor) => slotpool_worker::run_with(processor, options),
            Err(e) => {
                eprintln!("slotpool-worker: {e}");
                ExitCode::from(exit_status::USAGE)
            }
        },
    }
}
