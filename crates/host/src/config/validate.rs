//! From [`RawConfig`] to [`Config`]: every check that needs more than one value's type.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

// The bound of `prewake_us` is what the worker accepts in `SLOTPOOL_PREWAKE_US`.
use slotpool_worker::MAX_PREWAKE_US;
use toml::Spanned;

use super::error::{ConfigError, ConfigErrors, Reporter};
use super::raw::{RawConfig, RawProgram, RawRoute};
use super::values::SignalName;
use super::{
    AutoRestart, Backend, Config, ControlConfig, DEFAULT_HANG_TIMEOUT, Endpoint, EngineConfig,
    Fallback, Launch, LogConfig, LogTarget, ProgramConfig, RouteConfig, SlotConfig, SlotMode,
    SupervisorConfig, WorkerRealtime, split_command,
};

/// Every key `[program.NAME]` accepts, for "did you mean" hints.
const PROGRAM_KEYS: &[&str] = &[
    "command",
    "args",
    "module",
    "numprocs",
    "priority",
    "autostart",
    "autorestart",
    "exitcodes",
    "startsecs",
    "startretries",
    "stopsignal",
    "stopwaitsecs",
    "env",
    "workingdir",
    "umask",
    "stdout",
    "stdout_maxbytes",
    "stdout_backups",
    "stderr",
    "stderr_maxbytes",
    "stderr_backups",
    "memory_max",
    "cpu_max",
    "crashloop_exits",
    "crashloop_window",
    "fatal_retry",
    "params",
    "mode",
    "fallback",
    "hang_timeout",
    "standby",
    "realtime",
    "prewake_us",
];

/// supervisord spellings users bring along, and what slotpool calls them.
const SUPERVISORD_NAMES: &[(&str, &str)] = &[
    ("directory", "workingdir"),
    ("environment", "env"),
    ("stdout_logfile", "stdout"),
    ("stderr_logfile", "stderr"),
    ("stdout_logfile_maxbytes", "stdout_maxbytes"),
    ("stderr_logfile_maxbytes", "stderr_maxbytes"),
    ("stdout_logfile_backups", "stdout_backups"),
    ("stderr_logfile_backups", "stderr_backups"),
];

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut rep = Reporter::new(&path, text);
    let raw: RawConfig = match serde_path_to_error::deserialize(toml::Deserializer::new(text)) {
        Ok(raw) => raw,
        Err(e) => return Err(ConfigErrors(vec![serde_error(&rep, &e)])),
    };
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "slotpool".into());

    let engine = engine(&mut rep, &raw);
    let control = control(&mut rep, &raw, &base);
    let supervisor = supervisor(&mut rep, &raw, &base);

    // Programs in file order (the map is sorted by name; the spans give the order).
    let mut raw_programs: Vec<(&String, &Spanned<RawProgram>)> = raw.program.iter().collect();
    raw_programs.sort_by_key(|(_, p)| p.span().start);

    // Which programs a route names: those are slots even with a custom `command`.
    let routed: BTreeSet<&str> = raw
        .route
        .iter()
        .flat_map(|r| [r.get_ref().from.as_ref(), r.get_ref().to.as_ref()])
        .flatten()
        .map(|e| e.get_ref().split(':').next().unwrap_or(""))
        .collect();

    let programs: Vec<ProgramConfig> = raw_programs
        .iter()
        .filter_map(|(name, p)| {
            program(
                &mut rep,
                name,
                p,
                routed.contains(name.as_str()),
                &base,
                &engine,
            )
        })
        .collect();
    let routes = routes(&mut rep, &raw.route, &raw, &engine);

    rep.finish(Config {
        path: path.clone(),
        name,
        engine,
        control,
        supervisor,
        programs,
        routes,
    })
}

/// Turns a deserialization error into a `ConfigError` naming the key.
fn serde_error(rep: &Reporter<'_>, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    let inner = e.inner();
    let line = inner.span().map(|s| rep.line_of(s.start)).unwrap_or(0);
    // The path runs through toml::Spanned's private wrapper fields; leave those out.
    let mut segments: Vec<String> = e
        .path()
        .iter()
        .map(|s| s.to_string())
        .filter(|s| !s.starts_with("$__") && s != "?" && !s.is_empty() && s != ".")
        .collect();
    let msg = inner.message().replace('\n', "; ");
    let message = if let Some(rest) = msg.strip_prefix("unknown field `") {
        // The path already ends in the unknown key; say what to use instead.
        let unknown = rest.split('`').next().unwrap_or("");
        if segments.last().map(String::as_str) != Some(unknown) {
            segments.push(unknown.to_string());
        }
        unknown_key_message(&segments, unknown, &msg)
    } else if segments.is_empty() {
        format!("TOML syntax error: {msg}")
    } else {
        msg
    };
    let mut key = String::new();
    for seg in &segments {
        if !key.is_empty() && !seg.starts_with('[') {
            key.push('.');
        }
        key.push_str(seg);
    }
    ConfigError {
        file: rep.file().to_path_buf(),
        line,
        key,
        message,
    }
}

fn unknown_key_message(segments: &[String], unknown: &str, original: &str) -> String {
    let table = segments.first().map(String::as_str).unwrap_or("");
    if let Some((_, ours)) = SUPERVISORD_NAMES
        .iter()
        .find(|(theirs, _)| *theirs == unknown)
    {
        return format!("unknown key (supervisord's `{unknown}` is called `{ours}` here)");
    }
    let expected: Vec<&str> = if table == "program" && segments.len() > 2 {
        PROGRAM_KEYS.to_vec()
    } else {
        // serde lists what it expected: "expected one of `a`, `b`" or "expected `a` or `b`".
        original
            .split("expected")
            .nth(1)
            .unwrap_or("")
            .split('`')
            .skip(1)
            .step_by(2)
            .collect()
    };
    match expected.iter().min_by_key(|k| edit_distance(k, unknown)) {
        Some(best) if edit_distance(best, unknown) <= 3 => {
            let what = if segments.len() <= 1 { "section" } else { "key" };
            format!("unknown {what}; did you mean `{best}`?")
        }
        _ if segments.len() <= 1 => {
            "unknown section; expected one of [engine], [control], [supervisor], [program.NAME], [[route]]"
                .to_string()
        }
        _ => format!("unknown key; expected one of {}", expected.join(", ")),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn engine(rep: &mut Reporter<'_>, raw: &RawConfig) -> EngineConfig {
    let mut e = EngineConfig::default();
    let Some(r) = raw.engine.as_ref().map(Spanned::get_ref) else {
        return e;
    };
    if let Some(v) = &r.sample_rate {
        if (8_000..=384_000).contains(v.get_ref()) {
            e.sample_rate = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "engine.sample_rate",
                format!(
                    "{} Hz is out of range; expected 8000 to 384000",
                    v.get_ref()
                ),
            );
        }
    }
    if let Some(v) = &r.block_frames {
        if (1..=8192).contains(v.get_ref()) {
            e.block_frames = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "engine.block_frames",
                format!("{} is out of range; expected 1 to 8192 frames", v.get_ref()),
            );
        }
    }
    if let Some(v) = &r.channels {
        if (1..=64).contains(v.get_ref()) {
            e.channels = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "engine.channels",
                format!("{} is out of range; expected 1 to 64", v.get_ref()),
            );
        }
    }
    if let Some(v) = &r.backend {
        e.backend = match v.get_ref().as_str() {
            "auto" => Backend::Auto,
            "cpal" => Backend::Cpal,
            "null" => Backend::Null,
            "offline" => Backend::Offline,
            other => {
                rep.error(
                    v.span(),
                    "engine.backend",
                    format!("unknown backend `{other}`; expected \"auto\", \"cpal\", \"null\" or \"offline\""),
                );
                Backend::Auto
            }
        };
    }
    if let Some(v) = &r.device {
        if v.get_ref().trim().is_empty() {
            rep.error(
                v.span(),
                "engine.device",
                "empty device name; leave the key out for the default device",
            );
        } else {
            e.device = Some(v.get_ref().clone());
        }
    }
    if let Some(v) = &r.deadline {
        let d = *v.get_ref();
        if d.is_finite() && d > 0.0 && d <= 1.0 {
            e.deadline = d;
        } else {
            rep.error(v.span(), "engine.deadline", format!("{d} is out of range; expected a share of the block period above 0 and at most 1.0"));
        }
    }
    if let Some(v) = &r.realtime {
        e.realtime = v.get_ref().0;
    }
    if let Some(v) = &r.worker_realtime
        && let Some(w) = worker_realtime(rep, v, e.realtime, "engine.worker_realtime")
    {
        e.worker_realtime = w;
    }
    if let Some(v) = &r.wait_spin_us {
        if *v.get_ref() <= MAX_WAIT_SPIN_US {
            e.wait_spin_us = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "engine.wait_spin_us",
                format!(
                    "{} is out of range; expected 0 to {MAX_WAIT_SPIN_US} microseconds \
                     (the spin only saves the wake-up of a worker that answers within it; \
                     0 sleeps at once)",
                    v.get_ref()
                ),
            );
        }
    }
    if let Some(v) = &r.worker_prewake_us
        && let Some(us) = prewake_us(rep, v, "engine.worker_prewake_us")
    {
        e.worker_prewake_us = us;
    }
    e
}

/// A pre-wake window (`[engine] worker_prewake_us`, a slot's `prewake_us`).
fn prewake_us(rep: &mut Reporter<'_>, v: &Spanned<u32>, key: &str) -> Option<u32> {
    let us = *v.get_ref();
    if us <= MAX_PREWAKE_US {
        return Some(us);
    }
    rep.error(
        v.span(),
        key,
        format!(
            "{us} is out of range; expected 0 (off) to {MAX_PREWAKE_US} microseconds; the \
             worker polls for up to twice this long per period, so a few hundred is plenty \
             (about twice the machine's timer wake-up latency)"
        ),
    );
    None
}

/// Upper bound of `[engine] wait_spin_us`: a spin longer than a millisecond burns a
/// core for a worker that is not answering soon anyway.
const MAX_WAIT_SPIN_US: u32 = 1000;

/// A worker scheduling setting (`[engine] worker_realtime`, a slot's `realtime`),
/// refused when it asks for a priority at or above the audio thread's `realtime`.
fn worker_realtime(
    rep: &mut Reporter<'_>,
    v: &Spanned<WorkerRealtime>,
    audio: Option<u8>,
    key: &str,
) -> Option<WorkerRealtime> {
    match (*v.get_ref(), audio) {
        (WorkerRealtime::Priority(w), Some(audio)) if w >= audio => {
            rep.error(
                v.span(),
                key,
                format!(
                    "{w} is not below the audio thread's realtime = {audio}: a worker at or above \
                     the audio thread can hold up the cycle that waits for it; {}",
                    if audio > 1 {
                        format!(
                            "use 1 to {}, or true for one below the audio thread",
                            audio - 1
                        )
                    } else {
                        "raise realtime, or use true (workers then share priority 1)".to_string()
                    }
                ),
            );
            None
        }
        (w, _) => Some(w),
    }
}

fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn control(rep: &mut Reporter<'_>, raw: &RawConfig, base: &Path) -> ControlConfig {
    let mut c = ControlConfig::default();
    let Some(r) = raw.control.as_ref().map(Spanned::get_ref) else {
        return c;
    };
    if let Some(v) = &r.socket {
        let p = resolve(base, v.get_ref());
        // sun_path holds 108 bytes including the terminating NUL.
        if v.get_ref().trim().is_empty() {
            rep.error(
                v.span(),
                "control.socket",
                "empty path; leave the key out for the default socket",
            );
        } else if p.as_os_str().len() > 107 {
            rep.error(
                v.span(),
                "control.socket",
                format!(
                    "the path is {} bytes long; a Unix socket path may have at most 107",
                    p.as_os_str().len()
                ),
            );
        } else {
            c.socket = Some(p);
        }
    }
    c
}

fn supervisor(rep: &mut Reporter<'_>, raw: &RawConfig, base: &Path) -> SupervisorConfig {
    let mut s = SupervisorConfig::default();
    let Some(r) = raw.supervisor.as_ref().map(Spanned::get_ref) else {
        return s;
    };
    if let Some(v) = &r.spawn_rate {
        if *v.get_ref() >= 1 {
            s.spawn_rate = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "supervisor.spawn_rate",
                "0 would never spawn anything; expected at least 1 spawn per second",
            );
        }
    }
    if let Some(v) = &r.spawn_burst {
        if *v.get_ref() >= 1 {
            s.spawn_burst = *v.get_ref();
        } else {
            rep.error(v.span(), "supervisor.spawn_burst", "expected at least 1");
        }
    }
    if let Some(v) = &r.log_dir {
        if v.get_ref().trim().is_empty() {
            rep.error(
                v.span(),
                "supervisor.log_dir",
                "empty path; leave the key out for the default log directory",
            );
        } else {
            s.log_dir = Some(resolve(base, v.get_ref()));
        }
    }
    if let Some(v) = &r.fd_warn {
        if *v.get_ref() >= 8 {
            s.fd_warn = *v.get_ref();
        } else {
            rep.error(
                v.span(),
                "supervisor.fd_warn",
                format!("{} is too low; expected at least 8 open fds", v.get_ref()),
            );
        }
    }
    s
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with(['.', '-'])
}

fn program(
    rep: &mut Reporter<'_>,
    name: &str,
    sp: &Spanned<RawProgram>,
    routed: bool,
    base: &Path,
    engine: &EngineConfig,
) -> Option<ProgramConfig> {
    let r = sp.get_ref();
    let key = |k: &str| format!("program.{name}.{k}");
    let errors_before = rep.errors.len();
    if !valid_name(name) {
        rep.error(
            sp.span(),
            format!("program.{name}"),
            "invalid program name; use letters, digits, '_', '-' and '.' (at most 48, not starting with '.' or '-')",
        );
    } else if matches!(name, "input" | "output" | "all" | "host") {
        rep.error(sp.span(), format!("program.{name}"), format!("`{name}` is a reserved name (it means something else in routes and ctl); pick another"));
    }

    // What to launch.
    let launch = match (&r.command, &r.module) {
        (Some(c), Some(m)) => {
            rep.error(
                m.span(),
                key("module"),
                format!("a program has either `module` (built-in worker) or `command` (its own binary), not both; `command` is {:?}", c.get_ref()),
            );
            None
        }
        (None, None) => {
            rep.error(sp.span(), format!("program.{name}"), "missing key: `command` (a program to run) or `module` (a built-in DSP module) is required");
            None
        }
        (None, Some(m)) => {
            let module = m.get_ref();
            if module.is_empty()
                || !module
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                rep.error(
                    m.span(),
                    key("module"),
                    format!(
                        "`{module}` is not a module name; expected letters, digits, '_' or '-'"
                    ),
                );
            }
            if let Some(a) = &r.args {
                rep.error(
                    a.span(),
                    key("args"),
                    "`args` belongs to `command`; a module takes `params` instead",
                );
            }
            Some(Launch::Module(module.clone()))
        }
        (Some(c), None) => {
            let words = match split_command(c.get_ref()) {
                Ok(w) => w,
                Err(e) => {
                    rep.error(
                        c.span(),
                        key("command"),
                        format!("{e}; quote words as in a shell"),
                    );
                    Vec::new()
                }
            };
            if words.is_empty() {
                if split_command(c.get_ref()).is_ok() {
                    rep.error(
                        c.span(),
                        key("command"),
                        "empty command; expected the program to run, e.g. \"/usr/bin/sleep 60\"",
                    );
                }
                None
            } else {
                let mut words = words.into_iter();
                let program = words.next().unwrap_or_default();
                let mut args: Vec<String> = words.collect();
                if let Some(a) = &r.args {
                    if a.get_ref().iter().any(|s| s.contains('\0')) {
                        rep.error(a.span(), key("args"), "an argument contains a NUL byte");
                    }
                    args.extend(a.get_ref().iter().cloned());
                }
                Some(Launch::Command { program, args })
            }
        }
    };

    let numprocs = match &r.numprocs {
        Some(v) if !(1..=1024).contains(v.get_ref()) => {
            rep.error(
                v.span(),
                key("numprocs"),
                format!(
                    "{} is out of range; expected 1 to 1024 instances",
                    v.get_ref()
                ),
            );
            1
        }
        Some(v) => *v.get_ref(),
        None => 1,
    };

    let mut exitcodes = vec![0];
    if let Some(v) = &r.exitcodes {
        exitcodes.clear();
        if v.get_ref().is_empty() {
            rep.error(
                v.span(),
                key("exitcodes"),
                "empty list; expected the exit codes that count as expected, e.g. [0, 2]",
            );
        }
        for c in v.get_ref() {
            match u8::try_from(*c) {
                Ok(c) => exitcodes.push(i32::from(c)),
                Err(_) => rep.error(
                    v.span(),
                    key("exitcodes"),
                    format!("{c} is not an exit code; expected numbers from 0 to 255"),
                ),
            }
        }
    }

    let startsecs = secs(rep, &r.startsecs, &key("startsecs"), 1, 3600);
    let stopwaitsecs = secs(rep, &r.stopwaitsecs, &key("stopwaitsecs"), 10, 3600);
    let crashloop_window = secs(
        rep,
        &r.crashloop_window,
        &key("crashloop_window"),
        60,
        86_400,
    );
    if let Some(v) = &r.crashloop_window
        && *v.get_ref() == 0
    {
        rep.error(
            v.span(),
            key("crashloop_window"),
            "0 s would never count anything; expected at least 1 second",
        );
    }
    let startretries = match &r.startretries {
        Some(v) if *v.get_ref() > 1000 => {
            rep.error(
                v.span(),
                key("startretries"),
                format!("{} is out of range; expected 0 to 1000", v.get_ref()),
            );
            3
        }
        Some(v) => *v.get_ref(),
        None => 3,
    };
    let crashloop_exits = match &r.crashloop_exits {
        Some(v) if *v.get_ref() == 0 => {
            rep.error(
                v.span(),
                key("crashloop_exits"),
                "0 would make every program FATAL at once; expected at least 1 exit",
            );
            10
        }
        Some(v) => *v.get_ref(),
        None => 10,
    };

    let mut env = BTreeMap::new();
    if let Some(v) = &r.env {
        for (k, val) in v.get_ref() {
            if k.is_empty() || k.contains(['=', '\0']) {
                rep.error(
                    v.span(),
                    format!("{}.{k}", key("env")),
                    "invalid variable name; it may not be empty or contain '=' or NUL",
                );
            } else if val.contains('\0') {
                rep.error(
                    v.span(),
                    format!("{}.{k}", key("env")),
                    "the value contains a NUL byte",
                );
            } else if k.starts_with("SLOTPOOL_") {
                rep.error(
                    v.span(),
                    format!("{}.{k}", key("env")),
                    "SLOTPOOL_* variables are set by the host for slot workers; use another name",
                );
            } else {
                env.insert(k.clone(), val.clone());
            }
        }
    }

    let workingdir = r.workingdir.as_ref().and_then(|v| {
        let p = resolve(base, v.get_ref());
        if v.get_ref().is_empty() {
            rep.error(
                v.span(),
                key("workingdir"),
                "empty path; leave the key out to use the host's directory",
            );
            None
        } else if !p.is_dir() {
            rep.error(
                v.span(),
                key("workingdir"),
                format!("{} is not an existing directory", p.display()),
            );
            None
        } else {
            Some(p)
        }
    });

    let stdout = log_config(
        rep,
        name,
        numprocs,
        base,
        "stdout",
        &r.stdout,
        &r.stdout_maxbytes,
        &r.stdout_backups,
    );
    let stderr = log_config(
        rep,
        name,
        numprocs,
        base,
        "stderr",
        &r.stderr,
        &r.stderr_maxbytes,
        &r.stderr_backups,
    );
    if let (LogTarget::File(a), LogTarget::File(b), Some(s)) =
        (&stdout.target, &stderr.target, &r.stderr)
        && a == b
    {
        rep.error(s.span(), key("stderr"), format!("stdout and stderr both name {}; two writers would rotate one file — give each its own file", a.display()));
    }

    if let Some(v) = &r.memory_max
        && v.get_ref().0 < (1 << 20)
    {
        rep.error(
            v.span(),
            key("memory_max"),
            format!(
                "{} is too small to run a program; expected at least 1MB",
                v.get_ref()
            ),
        );
    }

    // Slot keys.
    let is_slot = r.module.is_some() || routed;
    let slot_only: [(&str, Option<std::ops::Range<usize>>); 7] = [
        ("params", r.params.as_ref().map(Spanned::span)),
        ("mode", r.mode.as_ref().map(Spanned::span)),
        ("fallback", r.fallback.as_ref().map(Spanned::span)),
        ("hang_timeout", r.hang_timeout.as_ref().map(Spanned::span)),
        ("standby", r.standby.as_ref().map(Spanned::span)),
        ("realtime", r.realtime.as_ref().map(Spanned::span)),
        ("prewake_us", r.prewake_us.as_ref().map(Spanned::span)),
    ];
    let slot = if is_slot {
        let mode = match r.mode.as_ref().map(|m| (m.get_ref().as_str(), m.span())) {
            None | Some(("sync", _)) => SlotMode::Sync,
            Some(("async", _)) => SlotMode::Async,
            Some((other, span)) => {
                rep.error(
                    span,
                    key("mode"),
                    format!("unknown mode `{other}`; expected \"sync\" or \"async\""),
                );
                SlotMode::Sync
            }
        };
        let fallback = match r
            .fallback
            .as_ref()
            .map(|m| (m.get_ref().as_str(), m.span()))
        {
            None | Some(("silence", _)) => Fallback::Silence,
            Some(("bypass", _)) => Fallback::Bypass,
            Some(("hold", _)) => Fallback::Hold,
            Some((other, span)) => {
                rep.error(
                    span,
                    key("fallback"),
                    format!(
                        "unknown fallback `{other}`; expected \"silence\", \"bypass\" or \"hold\""
                    ),
                );
                Fallback::Silence
            }
        };
        let hang_timeout = match &r.hang_timeout {
            Some(v)
                if v.get_ref().0 < Duration::from_millis(10)
                    || v.get_ref().0 > Duration::from_secs(3600) =>
            {
                rep.error(
                    v.span(),
                    key("hang_timeout"),
                    format!(
                        "{:?} is out of range; expected 10ms to 3600s",
                        v.get_ref().0
                    ),
                );
                DEFAULT_HANG_TIMEOUT
            }
            Some(v) => v.get_ref().0,
            None => DEFAULT_HANG_TIMEOUT,
        };
        let mut params = BTreeMap::new();
        if let Some(p) = &r.params {
            for (k, v) in p.get_ref() {
                let n = match v.get_ref() {
                    toml::Value::Float(f) if f.is_finite() => Some(*f),
                    toml::Value::Integer(i) => Some(*i as f64),
                    toml::Value::Boolean(b) => Some(if *b { 1.0 } else { 0.0 }),
                    _ => None,
                };
                if k.is_empty()
                    || k.len() > 32
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    rep.error(
                        v.span(),
                        format!("{}.{k}", key("params")),
                        "invalid parameter name; expected at most 32 letters, digits, '_' or '-'",
                    );
                }
                match n {
                    Some(n) => {
                        params.insert(k.clone(), n);
                    }
                    None => rep.error(
                        v.span(),
                        format!("{}.{k}", key("params")),
                        format!(
                            "expected a finite number (or true/false), found {}",
                            v.get_ref().type_str()
                        ),
                    ),
                }
            }
        }
        // This slot's worker scheduling, over `[engine] worker_realtime`.
        let realtime = r
            .realtime
            .as_ref()
            .and_then(|v| worker_realtime(rep, v, engine.realtime, &key("realtime")));
        let prewake = r
            .prewake_us
            .as_ref()
            .and_then(|v| prewake_us(rep, v, &key("prewake_us")));
        Some(SlotConfig {
            module: r.module.as_ref().map(|m| m.get_ref().clone()),
            params,
            mode,
            fallback,
            hang_timeout,
            standby: r.standby.as_ref().is_some_and(|v| *v.get_ref()),
            realtime,
            prewake_us: prewake,
        })
    } else {
        for (k, span) in slot_only {
            if let Some(span) = span {
                rep.error(
                    span,
                    key(k),
                    format!("`{k}` only applies to slots; give the program a `module` or route it, or remove `{k}`"),
                );
            }
        }
        None
    };

    if rep.errors.len() > errors_before {
        return None;
    }
    Some(ProgramConfig {
        name: name.to_string(),
        launch: launch?,
        slot,
        numprocs,
        priority: r.priority.as_ref().map(|v| *v.get_ref()).unwrap_or(999),
        autostart: r.autostart.as_ref().map(|v| *v.get_ref()).unwrap_or(true),
        autorestart: r
            .autorestart
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(AutoRestart::Unexpected),
        exitcodes,
        startsecs,
        startretries,
        stopsignal: r
            .stopsignal
            .as_ref()
            .map(|v| *v.get_ref())
            .unwrap_or(SignalName(libc::SIGTERM))
            .0,
        stopwaitsecs,
        env,
        workingdir,
        umask: r.umask.as_ref().map(|v| v.get_ref().0),
        stdout,
        stderr,
        memory_max: r.memory_max.as_ref().map(|v| v.get_ref().0),
        cpu_max: r.cpu_max.as_ref().map(|v| v.get_ref().0),
        crashloop_exits,
        crashloop_window,
        fatal_retry: r.fatal_retry.as_ref().and_then(|v| v.get_ref().0),
    })
}

fn secs(
    rep: &mut Reporter<'_>,
    v: &Option<Spanned<u64>>,
    key: &str,
    default: u64,
    max: u64,
) -> Duration {
    match v {
        Some(v) if *v.get_ref() > max => {
            rep.error(
                v.span(),
                key,
                format!(
                    "{} s is out of range; expected 0 to {max} seconds",
                    v.get_ref()
                ),
            );
            Duration::from_secs(default)
        }
        Some(v) => Duration::from_secs(*v.get_ref()),
        None => Duration::from_secs(default),
    }
}

#[allow(clippy::too_many_arguments)]
fn log_config(
    rep: &mut Reporter<'_>,
    name: &str,
    numprocs: u32,
    base: &Path,
    stream: &str,
    target: &Option<Spanned<String>>,
    maxbytes: &Option<Spanned<super::ByteSize>>,
    backups: &Option<Spanned<u32>>,
) -> LogConfig {
    let key = |k: &str| format!("program.{name}.{k}");
    let target = match target {
        None => LogTarget::Auto,
        Some(v) => match v.get_ref().as_str() {
            "AUTO" => LogTarget::Auto,
            "/dev/null" | "NONE" => LogTarget::Null,
            "" => {
                rep.error(
                    v.span(),
                    key(stream),
                    "empty path; expected \"AUTO\", \"/dev/null\" or a file path",
                );
                LogTarget::Auto
            }
            "auto" => {
                rep.error(v.span(), key(stream), "\"auto\" would be a file called auto; write \"AUTO\" for a file in the log directory");
                LogTarget::Auto
            }
            p => {
                let path = resolve(base, p);
                let template = path.to_string_lossy();
                if numprocs > 1
                    && !template.contains("%(process_num)d")
                    && !template.contains("%(process_name)s")
                {
                    rep.error(
                        v.span(),
                        key(stream),
                        format!("{numprocs} instances would write to one file; put %(process_num)d in the path, or use \"AUTO\""),
                    );
                }
                let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
                if !template.contains("%(") && !dir.is_dir() {
                    rep.error(
                        v.span(),
                        key(stream),
                        format!(
                            "the directory {} does not exist; create it or use \"AUTO\"",
                            dir.display()
                        ),
                    );
                }
                LogTarget::File(path)
            }
        },
    };
    let maxbytes_v = maxbytes.as_ref().map(|v| v.get_ref().0).unwrap_or(50 << 20);
    if let Some(v) = maxbytes
        && v.get_ref().0 != 0
        && v.get_ref().0 < 1024
    {
        rep.error(
            v.span(),
            key(&format!("{stream}_maxbytes")),
            format!(
                "{} is too small to hold a log; expected 0 (never rotate) or at least 1KB",
                v.get_ref()
            ),
        );
    }
    let backups_v = match backups {
        Some(v) if *v.get_ref() > 1000 => {
            rep.error(
                v.span(),
                key(&format!("{stream}_backups")),
                format!(
                    "{} is out of range; expected 0 to 1000 rotated files",
                    v.get_ref()
                ),
            );
            10
        }
        Some(v) => *v.get_ref(),
        None => 10,
    };
    LogConfig {
        target,
        maxbytes: maxbytes_v,
        backups: backups_v,
    }
}

fn routes(
    rep: &mut Reporter<'_>,
    raw: &[Spanned<RawRoute>],
    cfg: &RawConfig,
    engine: &EngineConfig,
) -> Vec<RouteConfig> {
    let mut out = Vec::new();
    let mut seen: BTreeMap<(Endpoint, Endpoint), usize> = BTreeMap::new();
    for (i, sr) in raw.iter().enumerate() {
        let r = sr.get_ref();
        let key = |k: &str| format!("route[{i}].{k}");
        let before = rep.errors.len();
        let from = endpoint(rep, &r.from, sr.span(), &key("from"), cfg, true);
        let to = endpoint(rep, &r.to, sr.span(), &key("to"), cfg, false);
        let gain = match &r.gain {
            Some(g) if !g.get_ref().is_finite() || g.get_ref().abs() > 100.0 => {
                rep.error(
                    g.span(),
                    key("gain"),
                    format!(
                        "{} is out of range; expected a linear gain from -100 to 100",
                        g.get_ref()
                    ),
                );
                1.0
            }
            Some(g) => *g.get_ref(),
            None => 1.0,
        };
        let mut channels = Vec::new();
        if let Some(list) = &r.channels {
            for pair in list.get_ref() {
                match pair.get_ref().as_slice() {
                    [a, b] if (0..i64::from(engine.channels)).contains(a) && (0..i64::from(engine.channels)).contains(b) => {
                        channels.push((*a as u32, *b as u32));
                    }
                    [a, b] => rep.error(
                        pair.span(),
                        key("channels"),
                        format!("[{a}, {b}] names a channel that does not exist; the engine has channels 0 to {}", engine.channels - 1),
                    ),
                    _ => rep.error(pair.span(), key("channels"), "expected [from_channel, to_channel] pairs, e.g. [[0, 0], [1, 1]]"),
                }
            }
        }
        if let (Some(f), Some(t)) = (&from, &to) {
            if f == t {
                rep.error(
                    sr.span(),
                    key("to"),
                    format!("a route from {f} to itself would be a cycle"),
                );
            } else if let Some(prev) = seen.insert((f.clone(), t.clone()), i) {
                rep.error(
                    sr.span(),
                    format!("route[{i}]"),
                    format!("route[{prev}] already connects {f} to {t}; merge them"),
                );
            }
        }
        if rep.errors.len() == before
            && let (Some(from), Some(to)) = (from, to)
        {
            out.push(RouteConfig {
                from,
                to,
                gain,
                channels,
            });
        }
    }
    if let Some(cycle) = find_cycle(&out) {
        let names: Vec<String> = cycle.iter().map(ToString::to_string).collect();
        rep.error(
            raw.first().map(Spanned::span).unwrap_or(0..0),
            "route",
            format!("the routes form a cycle: {}", names.join(" -> ")),
        );
    }
    out
}

fn endpoint(
    rep: &mut Reporter<'_>,
    v: &Option<Spanned<String>>,
    route_span: std::ops::Range<usize>,
    key: &str,
    cfg: &RawConfig,
    is_from: bool,
) -> Option<Endpoint> {
    let Some(v) = v else {
        rep.error(
            route_span,
            key,
            "missing key; a route needs `from` and `to`",
        );
        return None;
    };
    let s = v.get_ref().as_str();
    match s {
        "input" if is_from => return Some(Endpoint::Input),
        "output" if !is_from => return Some(Endpoint::Output),
        "input" => {
            rep.error(
                v.span(),
                key,
                "\"input\" is the device input; it can only be a route's `from`",
            );
            return None;
        }
        "output" => {
            rep.error(
                v.span(),
                key,
                "\"output\" is the device output; it can only be a route's `to`",
            );
            return None;
        }
        _ => {}
    }
    let (name, index) = match s.split_once(':') {
        Some((n, i)) => match i.parse::<u32>() {
            Ok(i) => (n, Some(i)),
            Err(_) => {
                rep.error(
                    v.span(),
                    key,
                    format!("`{s}`: the instance index after ':' must be a number"),
                );
                return None;
            }
        },
        None => (s, None),
    };
    let Some(p) = cfg.program.get(name) else {
        let known: Vec<&str> = cfg.program.keys().map(String::as_str).collect();
        rep.error(
            v.span(),
            key,
            format!(
                "no program called `{name}`; expected \"input\", \"output\" or one of the programs ({})",
                if known.is_empty() { "none defined".to_string() } else { known.join(", ") }
            ),
        );
        return None;
    };
    let numprocs = p
        .get_ref()
        .numprocs
        .as_ref()
        .map(|n| *n.get_ref())
        .unwrap_or(1);
    match index {
        Some(i) if i >= numprocs => {
            rep.error(
                v.span(),
                key,
                format!(
                    "`{s}`: {name} has {numprocs} instance(s), 0 to {}",
                    numprocs.saturating_sub(1)
                ),
            );
            None
        }
        Some(i) => Some(Endpoint::Slot {
            program: name.to_string(),
            index: i,
        }),
        None if numprocs > 1 => {
            rep.error(
                v.span(),
                key,
                format!("{name} has {numprocs} instances; name one, e.g. \"{name}:0\""),
            );
            None
        }
        None => Some(Endpoint::Slot {
            program: name.to_string(),
            index: 0,
        }),
    }
}

/// A cycle among the routes, as the list of nodes along it (first node repeated at the end).
fn find_cycle(routes: &[RouteConfig]) -> Option<Vec<Endpoint>> {
    let mut adj: BTreeMap<&Endpoint, Vec<&Endpoint>> = BTreeMap::new();
    for r in routes {
        adj.entry(&r.from).or_default().push(&r.to);
    }
    // Iterative DFS with colours: 0 unseen, 1 on the stack, 2 done.
    let mut colour: BTreeMap<&Endpoint, u8> = BTreeMap::new();
    for &start in adj.keys() {
        if colour.get(start).copied().unwrap_or(0) != 0 {
            continue;
        }
        let mut stack: Vec<(&Endpoint, usize)> = vec![(start, 0)];
        colour.insert(start, 1);
        while let Some((node, next)) = stack.last_mut() {
            let succ = adj.get(*node).map(Vec::as_slice).unwrap_or(&[]);
            if *next < succ.len() {
                let s = succ[*next];
                *next += 1;
                match colour.get(s).copied().unwrap_or(0) {
                    0 => {
                        colour.insert(s, 1);
                        stack.push((s, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|(n, _)| *n == s).unwrap_or(0);
                        let mut cycle: Vec<Endpoint> =
                            stack[pos..].iter().map(|(n, _)| (*n).clone()).collect();
                        cycle.push(s.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            } else {
                colour.insert(node, 2);
                stack.pop();
            }
        }
    }
    None
}
