//! slotpool-host: the `slotpool` host process — supervisor, engine, control
//! interface and CLI.

pub mod control;
