//! Supervision: the per-instance state machine ([`machine`]) and the driver around it
//! that spawns, signals and reaps real processes.

pub mod machine;
pub mod logs;
pub mod sys;
pub mod limits;
