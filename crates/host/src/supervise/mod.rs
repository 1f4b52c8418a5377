//! Supervision: the per-instance state machine ([`machine`]) and the driver around it
//! that spawns, signals and reaps real processes.

pub mod machine;
