//! Value types of the configuration that accept more than one TOML spelling
//! (`"50MB"` or `52428800`, `"TERM"` or `"SIGTERM"`, `true` or `"always"` …).
//! Each rejects a bad value with a message saying what was expected.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A byte count: an integer, or a string with a unit (`"50MB"`, `"512KiB"`, `"1GB"`).
/// Units follow supervisord: KB, MB and GB are powers of 1024 (KiB, MiB, GiB are accepted too).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ByteSize(pub u64);

const BYTES_EXPECTED: &str =
    "a byte count: a whole number, or a string like \"50MB\", \"512KB\", \"1GB\"";

impl ByteSize {
    /// Parses `"50MB"`-style strings.
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(format!("`{s}` is not {BYTES_EXPECTED}"));
        }
        let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
        let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
            "" | "B" => 1,
            "K" | "KB" | "KIB" => 1 << 10,
            "M" | "MB" | "MIB" => 1 << 20,
            "G" | "GB" | "GIB" => 1 << 30,
            "T" | "TB" | "TIB" => 1 << 40,
            _ => {
                return Err(format!(
                    "`{s}` has an unknown unit; expected {BYTES_EXPECTED}"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("`{s}` is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GB", 1u64 << 30), ("MB", 1 << 20), ("KB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(BYTES_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{v} is negative; expected {BYTES_EXPECTED}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A signal given by name (`"TERM"`, `"SIGTERM"`, case-insensitive), as supervisord takes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalName(pub i32);

const SIGNALS: &[(&str, i32)] = &[
    ("TERM", libc::SIGTERM),
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("USR2", libc::SIGUSR2),
    ("ABRT", libc::SIGABRT),
    ("ALRM", libc::SIGALRM),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("PIPE", libc::SIGPIPE),
    ("WINCH", libc::SIGWINCH),
    ("SEGV", libc::SIGSEGV),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("SYS", libc::SIGSYS),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
];

/// The short name of a signal number (`15` → `"TERM"`), or its number as text.
pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|(_, n)| *n == sig)
        .map(|(name, _)| (*name).to_string())
        .unwrap_or_else(|| sig.to_string())
}

impl SignalName {
    /// Parses `"TERM"` / `"SIGTERM"` / `"term"`.
    pub fn parse(s: &str) -> Result<SignalName, String> {
        let up = s.trim().to_ascii_uppercase();
        let bare = up.strip_prefix("SIG").unwrap_or(&up);
        SIGNALS.iter().find(|(name, _)| *name == bare).map(|(_, n)| SignalName(*n)).ok_or_else(|| {
            format!(
                "unknown signal `{s}`; expected one of TERM, HUP, INT, QUIT, KILL, USR1, USR2 (with or without SIG)"
            )
        })
    }
}

impl fmt::Display for SignalName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", signal_name(self.0))
    }
}

impl<'de> Deserialize<'de> for SignalName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SignalName;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name such as \"TERM\" or \"SIGINT\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<SignalName, E> {
                SignalName::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// When an exited program is started again (supervisord's `autorestart`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoRestart {
    /// Restart only when the exit was unexpected (code not in `exitcodes`, a signal, a hang).
    Unexpected,
    /// Restart after every exit.
    Always,
    /// Never restart by itself.
    Never,
}

impl<'de> Deserialize<'de> for AutoRestart {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = AutoRestart;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"unexpected\", \"always\" or \"never\" (or true = always, false = never)",
                )
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<AutoRestart, E> {
                Ok(if v {
                    AutoRestart::Always
                } else {
                    AutoRestart::Never
                })
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<AutoRestart, E> {
                match v.to_ascii_lowercase().as_str() {
                    "unexpected" => Ok(AutoRestart::Unexpected),
                    "always" | "true" => Ok(AutoRestart::Always),
                    "never" | "false" => Ok(AutoRestart::Never),
                    _ => Err(E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration in milliseconds: an integer (ms) or a string with a unit (`"500ms"`, `"2s"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Millis(pub Duration);

const MILLIS_EXPECTED: &str =
    "a duration: milliseconds as a whole number, or a string like \"500ms\" or \"2s\"";

impl Millis {
    /// Parses `"500ms"`, `"2s"`, `"1.5s"`, `"250"` (ms).
    pub fn parse(s: &str) -> Result<Millis, String> {
        let t = s.trim();
        let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = t.strip_suffix('s') {
            (n, 1.0)
        } else {
            (t, 1e-3)
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("`{s}` is not {MILLIS_EXPECTED}"))?;
        if !v.is_finite() || v < 0.0 || v * scale > 1e9 {
            return Err(format!("`{s}` is out of range; expected {MILLIS_EXPECTED}"));
        }
        Ok(Millis(Duration::from_secs_f64(v * scale)))
    }
}

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Millis;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(MILLIS_EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Millis, E> {
                u64::try_from(v)
                    .map(|ms| Millis(Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("{v} is negative; expected {MILLIS_EXPECTED}")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Millis, E> {
                Millis::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A file mode mask: an integer (`0o022` in TOML) or an octal string (`"022"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Umask(pub u32);

impl<'de> Deserialize<'de> for Umask {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "an octal mask from 0 to 777: a string like \"022\" or a TOML integer like 0o022";
        impl Visitor<'_> for V {
            type Value = Umask;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Umask, E> {
                match u32::try_from(v) {
                    Ok(m) if m <= 0o777 => Ok(Umask(m)),
                    _ => Err(E::custom(format!(
                        "{v:#o} is out of range; expected {EXPECTED}"
                    ))),
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Umask, E> {
                let digits = v.trim().trim_start_matches("0o");
                match u32::from_str_radix(digits, 8) {
                    Ok(m) if m <= 0o777 && !digits.is_empty() => Ok(Umask(m)),
                    _ => Err(E::custom(format!("`{v}` is not {EXPECTED}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// A CPU share in percent of one CPU (`"50%"`, `"200%"` for two CPUs, or an integer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CpuPercent(pub u32);

impl<'de> Deserialize<'de> for CpuPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "a share of one CPU in percent, from 1 to 100000: \"50%\", \"200%\" or an integer";
        fn check<E: de::Error>(v: i64) -> Result<CpuPercent, E> {
            match u32::try_from(v) {
                Ok(p) if (1..=100_000).contains(&p) => Ok(CpuPercent(p)),
                _ => Err(E::custom(format!(
                    "{v}% is out of range; expected {EXPECTED}"
                ))),
            }
        }
        impl Visitor<'_> for V {
            type Value = CpuPercent;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<CpuPercent, E> {
                check(v)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CpuPercent, E> {
                let t = v.trim();
                let num = t.strip_suffix('%').unwrap_or(t).trim();
                match num.parse::<i64>() {
                    Ok(n) => check(n),
                    Err(_) => Err(E::custom(format!("`{v}` is not {EXPECTED}"))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `realtime = false | true | <priority 1..=99>` (true means priority 70).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Realtime(pub Option<u8>);

/// The SCHED_FIFO priority `realtime = true` stands for.
pub const DEFAULT_RT_PRIORITY: u8 = 70;

impl<'de> Deserialize<'de> for Realtime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str = "true, false or a SCHED_FIFO priority from 1 to 99";
        impl Visitor<'_> for V {
            type Value = Realtime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Realtime, E> {
                Ok(Realtime(v.then_some(DEFAULT_RT_PRIORITY)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Realtime, E> {
                match u8::try_from(v) {
                    Ok(p) if (1..=99).contains(&p) => Ok(Realtime(Some(p))),
                    _ => Err(E::custom(format!(
                        "{v} is out of range; expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `[engine] worker_realtime = true | false | <priority 1..=99>`: how slot workers are
/// scheduled. Left out, it is `true`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WorkerRealtime {
    /// `true` (the default): SCHED_FIFO one below the audio thread's real-time priority
    /// (the one it actually got: `realtime`, or what JACK gave its process thread), so
    /// the audio thread always preempts its workers; normal scheduling when the audio
    /// thread has no real-time priority.
    #[default]
    BelowAudio,
    /// `false`: normal scheduling.
    Off,
    /// SCHED_FIFO at this priority, whatever the audio thread runs at.
    Priority(u8),
}

impl<'de> Deserialize<'de> for WorkerRealtime {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "true (one below the audio thread), false, or a SCHED_FIFO priority from 1 to 99";
        impl Visitor<'_> for V {
            type Value = WorkerRealtime;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<WorkerRealtime, E> {
                Ok(if v {
                    WorkerRealtime::BelowAudio
                } else {
                    WorkerRealtime::Off
                })
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerRealtime, E> {
                match u8::try_from(v) {
                    Ok(p) if (1..=99).contains(&p) => Ok(WorkerRealtime::Priority(p)),
                    _ => Err(E::custom(format!(
                        "{v} is out of range; expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `fatal_retry = false | true | <initial seconds>`: re-probe a FATAL program on a slow
/// exponential timer (the interval doubles after each failed probe, up to one hour).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FatalRetry(pub Option<Duration>);

/// The first re-probe interval `fatal_retry = true` stands for.
pub const DEFAULT_FATAL_RETRY: Duration = Duration::from_secs(60);

impl<'de> Deserialize<'de> for FatalRetry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        const EXPECTED: &str =
            "true, false, or the first re-probe interval in seconds (1 to 86400)";
        impl Visitor<'_> for V {
            type Value = FatalRetry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<FatalRetry, E> {
                Ok(FatalRetry(v.then_some(DEFAULT_FATAL_RETRY)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FatalRetry, E> {
                match u64::try_from(v) {
                    Ok(s) if (1..=86_400).contains(&s) => {
                        Ok(FatalRetry(Some(Duration::from_secs(s))))
                    }
                    _ => Err(E::custom(format!(
                        "{v} is out of range; expected {EXPECTED}"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_accept_supervisord_units() {
        assert_eq!(ByteSize::parse("50MB"), Ok(ByteSize(50 << 20)));
        assert_eq!(ByteSize::parse("512kb"), Ok(ByteSize(512 << 10)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("0"), Ok(ByteSize(0)));
        assert!(ByteSize::parse("MB").is_err());
        assert!(ByteSize::parse("5 parsecs").is_err());
        assert!(ByteSize::parse("99999999999999999999").is_err());
        assert!(ByteSize::parse("99999999999TB").is_err());
        assert_eq!(ByteSize(50 << 20).to_string(), "50MB");
    }

    #[test]
    fn signals_accept_with_and_without_sig_prefix() {
        assert_eq!(SignalName::parse("TERM"), Ok(SignalName(libc::SIGTERM)));
        assert_eq!(SignalName::parse("sigint"), Ok(SignalName(libc::SIGINT)));
        assert!(SignalName::parse("SIGFOO").is_err());
        assert_eq!(signal_name(libc::SIGKILL), "KILL");
    }

    #[test]
    fn millis_accept_units() {
        assert_eq!(
            Millis::parse("500ms"),
            Ok(Millis(Duration::from_millis(500)))
        );
        assert_eq!(
            Millis::parse("1.5s"),
            Ok(Millis(Duration::from_millis(1500)))
        );
        assert_eq!(Millis::parse("20"), Ok(Millis(Duration::from_millis(20))));
        assert!(Millis::parse("-1s").is_err());
        assert!(Millis::parse("soon").is_err());
    }
}
