//! The `slotpool-worker` command line, in two layers: raw flags ([`Args`], clap) and the
//! validated [`Settings`] the binary runs with.

use std::time::Duration;

use clap::Parser;

use crate::fault::{FAULT_HELP, FaultKind, FaultPlan};
use crate::modules::{self, ModuleSpec};
use crate::run::RunOptions;

/// Raw flags of `slotpool-worker`.
#[derive(Debug, Parser)]
#[command(
    name = "slotpool-worker",
    version,
    about = "Runs one built-in slotpool DSP module as a worker process of the slotpool host.",
    long_about = "Runs one built-in slotpool DSP module as a worker process of the slotpool host.\n\n\
        The host starts it with SLOTPOOL_REGION_FD, SLOTPOOL_SLOT and optionally \
        SLOTPOOL_READY_FD, SLOTPOOL_PARENT_PID and SLOTPOOL_SAMPLE_RATE in its environment \
        (see the slotpool-worker crate docs); started by hand it exits with status 2.\n\n\
        Exit status: 0 stopped on request (SIGTERM/SIGINT/Shutdown), 1 region or protocol \
        error, 2 started wrongly, 3 host gone.",
    after_long_help = FAULT_HELP,
    after_help = "Faults for tests and demos: see --help."
)]
pub struct Args {
    /// Built-in module to run (see --list-modules).
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list_modules", "fault_grandchild"])]
    pub module: Option<String>,

    /// Set a parameter or setting of the module, e.g. `--param freq=440` (repeatable).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    pub params: Vec<String>,

    /// Exit with status 3 when the host's heartbeat has not advanced for this long
    /// (e.g. `2s`, `500ms`, `1.5`).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub host_timeout: Duration,

    /// Misbehave on purpose (repeatable); the kinds are listed under --help.
    #[arg(long = "fault", value_name = "KIND", value_parser = FaultKind::parse)]
    pub faults: Vec<FaultKind>,

    /// Fire the fault after N processed blocks (default 0).
    #[arg(long, value_name = "N", conflicts_with = "fault_on_ping")]
    pub fault_after: Option<u64>,

    /// Fire the fault when a Ping command carries TOKEN.
    #[arg(long, value_name = "TOKEN")]
    pub fault_on_ping: Option<u64>,

    /// Print the built-in modules with their parameters, ids and ranges, then exit.
    #[arg(long)]
    pub list_modules: bool,

    /// Internal: the grandchild left behind by `--fault fork-child`.
    #[arg(long, hide = true)]
    pub fault_grandchild: bool,
}

/// What the binary does, once the flags are validated.
#[derive(Debug)]
pub enum Settings {
    /// Run a module as a worker.
    Run {
        /// The module and its initial parameters.
        spec: ModuleSpec,
        /// Loop options, faults included.
        options: RunOptions,
    },
    /// Print the registry.
    ListModules,
    /// Be the grandchild of `--fault fork-child`: sleep until killed.
    Grandchild,
}

impl Args {
    /// Validates the flags. Errors are one user-facing sentence.
    pub fn into_settings(self) -> Result<Settings, String> {
        if self.fault_grandchild {
            return Ok(Settings::Grandchild);
        }
        if self.list_modules {
            return Ok(Settings::ListModules);
        }
        let name = self.module.as_deref().unwrap_or_default();
        let spec = ModuleSpec::parse_assignments(name, &self.params).map_err(|e| e.to_string())?;
        let faults = FaultPlan::new(&self.faults, self.fault_after, self.fault_on_ping)?;
        if self.host_timeout.is_zero() {
            return Err("--host-timeout must be more than 0".to_string());
        }
        Ok(Settings::Run {
            spec,
            options: RunOptions {
                host_timeout: self.host_timeout,
                faults,
            },
        })
    }
}

/// Parses `2s`, `500ms`, `250us` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    number
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .and_then(|v| Duration::try_from_secs_f64(v * scale).ok())
        .ok_or_else(|| format!("`{text}` is not a duration (e.g. 2s, 500ms, 1.5)"))
}

/// The `--list-modules` text: every module, its settings and its parameters with ids,
/// ranges and defaults.
pub fn list_modules() -> String {
    let mut out = String::new();
    for m in modules::modules() {
        out.push_str(&format!("{}: {}\n", m.name, m.summary));
        for s in m.settings {
            let req = if s.required { "required" } else { "optional" };
            out.push_str(&format!("    {}=...  ({req} setting) {}\n", s.name, s.help));
        }
        for p in m.params {
            out.push_str(&format!(
                "    [{}] {}  {} (default {})\n",
                p.id,
                p.name,
                p.describe_range(),
                p.default
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Sudden, Trigger};
    use crate::run::DEFAULT_HOST_TIMEOUT;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let args =
            Args::try_parse_from(std::iter::once("slotpool-worker").chain(args.iter().copied()))
                .map_err(|e| e.to_string())?;
        args.into_settings()
    }

    #[test]
    fn module_params_and_faults_become_settings() {
        let s = parse(&[
            "--module",
            "sine",
            "--param",
            "freq=220",
            "--param",
            "amp=0.1",
            "--host-timeout",
            "750ms",
            "--fault",
            "exit:9",
            "--fault-after",
            "3",
        ])
        .unwrap();
        let Settings::Run { spec, options } = s else {
            panic!("expected Run, got {s:?}")
        };
        assert_eq!(spec.name(), "sine");
        assert_eq!(spec.values(), [220.0, 0.1]);
        assert_eq!(options.host_timeout, Duration::from_millis(750));
        assert_eq!(options.faults.sudden, Some(Sudden::Exit(9)));
        assert_eq!(options.faults.trigger, Some(Trigger::AfterBlocks(3)));
    }

    #[test]
    fn defaults_and_other_modes() {
        let Settings::Run { options, .. } = parse(&["--module", "gain"]).unwrap() else {
            panic!()
        };
        assert_eq!(options.host_timeout, DEFAULT_HOST_TIMEOUT);
        assert!(options.faults.is_empty());
        assert!(matches!(
            parse(&["--list-modules"]),
            Ok(Settings::ListModules)
        ));
        assert!(matches!(
            parse(&["--fault-grandchild"]),
            Ok(Settings::Grandchild)
        ));
    }

    #[test]
    fn bad_flags_explain_themselves() {
        assert!(parse(&[]).unwrap_err().contains("--module"));
        let e = parse(&["--module", "sine", "--param", "freq=-1"]).unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse(&["--module", "sine", "--fault", "boom"]).unwrap_err();
        assert!(e.contains("unknown fault"), "{e}");
        let e = parse(&["--module", "sine", "--host-timeout", "soon"]).unwrap_err();
        assert!(e.contains("not a duration"), "{e}");
        let e = parse(&["--module", "sine", "--host-timeout", "0"]).unwrap_err();
        assert!(e.contains("more than 0"), "{e}");
    }

    #[test]
    fn durations_parse_in_every_unit() {
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("20ms"), Ok(Duration::from_millis(20)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn list_shows_ids_ranges_and_settings() {
        let text = list_modules();
        assert!(
            text.contains("[0] freq  a number in 0..=24000 Hz (default 440)"),
            "{text}"
        );
        assert!(
            text.contains("[0] mode  one of lowpass|highpass|bandpass|peak"),
            "{text}"
        );
        assert!(text.contains("file=...  (required setting)"), "{text}");
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Args::command().debug_assert();
    }
}
