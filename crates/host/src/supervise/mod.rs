//! Supervision: the per-instance state machine ([`machine`]) and the driver around it
//! that spawns, signals and reaps real processes.

pub mod engine_link;
pub mod limits;
pub mod logs;
pub mod machine;
pub mod sched;
pub mod spawn;
pub mod supervisor;
pub mod sys;
