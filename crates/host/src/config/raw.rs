//! The file as written: serde structs with `deny_unknown_fields` and spans for every value
//! that a later check may need to point at. `validate` turns this into [`super::Config`].

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::values::{
    AutoRestart, ByteSize, CpuPercent, FatalRetry, Millis, Realtime, SignalName, Umask,
    WorkerRealtime,
};

type S<T> = Option<Spanned<T>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub engine: S<RawEngine>,
    pub control: S<RawControl>,
    pub supervisor: S<RawSupervisor>,
    #[serde(default)]
    pub program: BTreeMap<String, Spanned<RawProgram>>,
    #[serde(default)]
    pub route: Vec<Spanned<RawRoute>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEngine {
    pub sample_rate: S<u32>,
    pub block_frames: S<u32>,
    pub channels: S<u32>,
    pub backend: S<String>,
    pub device: S<String>,
    pub deadline: S<f64>,
    pub realtime: S<Realtime>,
    pub worker_realtime: S<WorkerRealtime>,
    pub wait_spin_us: S<u32>,
    pub worker_prewake_us: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub socket: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSupervisor {
    pub spawn_rate: S<u32>,
    pub spawn_burst: S<u32>,
    pub log_dir: S<String>,
    pub fd_warn: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProgram {
    pub command: S<String>,
    pub args: S<Vec<String>>,
    pub module: S<String>,
    pub numprocs: S<u32>,
    pub priority: S<i32>,
    pub autostart: S<bool>,
    pub autorestart: S<AutoRestart>,
    pub exitcodes: S<Vec<i64>>,
    pub startsecs: S<u64>,
    pub startretries: S<u32>,
    pub stopsignal: S<SignalName>,
    pub stopwaitsecs: S<u64>,
    pub env: S<BTreeMap<String, String>>,
    pub workingdir: S<String>,
    pub umask: S<Umask>,
    pub stdout: S<String>,
    pub stdout_maxbytes: S<ByteSize>,
    pub stdout_backups: S<u32>,
    pub stderr: S<String>,
    pub stderr_maxbytes: S<ByteSize>,
    pub stderr_backups: S<u32>,
    pub memory_max: S<ByteSize>,
    pub cpu_max: S<CpuPercent>,
    pub crashloop_exits: S<u32>,
    pub crashloop_window: S<u64>,
    pub fatal_retry: S<FatalRetry>,
    pub params: S<BTreeMap<String, Spanned<toml::Value>>>,
    pub mode: S<String>,
    pub fallback: S<String>,
    pub hang_timeout: S<Millis>,
    pub standby: S<bool>,
    pub realtime: S<WorkerRealtime>,
    pub prewake_us: S<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub from: S<String>,
    pub to: S<String>,
    pub gain: S<f64>,
    pub channels: S<Vec<Spanned<Vec<i64>>>>,
}
