//! Fault injection: ways for a worker to misbehave on purpose, so that the host's
//! supervision (crash restart, hang detection, late fallback, quarantine, stop escalation,
//! readiness timeouts, process-group cleanup) can be tested and demonstrated with real
//! processes. Used by the `slotpool-worker` binary (`--fault KIND`, see [`FAULT_HELP`]).

use std::time::Duration;

/// What `--help` says about faults; the flag syntax lives here, next to the parser.
pub const FAULT_HELP: &str = "\
FAULT INJECTION (for tests and demos; --fault may be repeated):
  Fired at the trigger (one of these at most):
    segv             die by SIGSEGV
    abort            die by SIGABRT
    exit:N           exit with status N (0..=255)
    hang             busy-loop forever: heartbeat stops, SIGTERM is not answered
    stop             SIGSTOP itself: frozen until SIGCONT/SIGKILL
    scribble         write garbage over its region's header words and ring counters,
                     then keep running
    scribble-stop    the same, then SIGSTOP itself: it cannot trip over its own
                     garbage and exit, so only the host's quarantine kill ends it
  Active from the trigger on:
    slow:US          sleep US microseconds in every block (the block comes back late)
    leak-fds         open one more fd (/dev/null) in every block, never closed
  Active from start-up:
    ignore-sigterm   SIGTERM does nothing (only SIGKILL stops it)
    fork-child       start a grandchild that outlives the worker (in its process group);
                     prints `grandchild pid N` on stderr
    slow-start:MS    sleep MS milliseconds before reporting ready
    never-ready      never set RUNNING nor write the ready byte (keeps its heartbeat)
  Trigger:
    --fault-after N        after N blocks have been processed (default 0: at the first block)
    --fault-on-ping TOKEN  when a Ping command carries TOKEN (instead of counting blocks)";

/// One `--fault` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Die by SIGSEGV.
    Segv,
    /// Die by SIGABRT.
    Abort,
    /// Exit with this status.
    Exit(u8),
    /// Busy-loop forever.
    Hang,
    /// SIGSTOP itself.
    Stop,
    /// Write garbage over the region's header and ring counters.
    Scribble,
    /// Scribble, then SIGSTOP itself.
    ScribbleStop,
    /// Sleep this many microseconds per block.
    Slow(u32),
    /// Leak one fd per block.
    LeakFds,
    /// Ignore SIGTERM.
    IgnoreSigterm,
    /// Leave a grandchild running.
    ForkChild,
    /// Sleep this long before reporting ready.
    SlowStart(Duration),
    /// Never report ready.
    NeverReady,
}

impl FaultKind {
    /// Parses the `--fault` syntax of [`FAULT_HELP`].
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, arg) = match text.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (text, None),
        };
        let number = |what: &str| -> Result<u64, String> {
            let a =
                arg.ok_or_else(|| format!("`--fault {name}` needs a value: `{name}:{what}`"))?;
            a.parse::<u64>()
                .map_err(|_| format!("`{a}` in `--fault {text}` is not a whole number ({what})"))
        };
        let no_arg = |kind: FaultKind| match arg {
            None => Ok(kind),
            Some(_) => Err(format!("`--fault {name}` takes no value")),
        };
        match name {
            "segv" => no_arg(Self::Segv),
            "abort" => no_arg(Self::Abort),
            "exit" => {
                let n = number("exit status")?;
                u8::try_from(n)
                    .map(Self::Exit)
                    .map_err(|_| format!("exit status {n} is not in 0..=255"))
            }
            "hang" => no_arg(Self::Hang),
            "stop" => no_arg(Self::Stop),
            "scribble" => no_arg(Self::Scribble),
            "scribble-stop" => no_arg(Self::ScribbleStop),
            "slow" => {
                let us = number("microseconds per block")?;
                u32::try_from(us)
                    .map(Self::Slow)
                    .map_err(|_| format!("`slow:{us}` is more than an hour per block"))
            }
            "leak-fds" => no_arg(Self::LeakFds),
            "ignore-sigterm" => no_arg(Self::IgnoreSigterm),
            "fork-child" => no_arg(Self::ForkChild),
            "slow-start" => Ok(Self::SlowStart(Duration::from_millis(number(
                "milliseconds",
            )?))),
            "never-ready" => no_arg(Self::NeverReady),
            _ => Err(format!(
                "unknown fault `{text}`; one of: segv, abort, exit:N, hang, stop, scribble, \
                 scribble-stop, slow:US, leak-fds, ignore-sigterm, fork-child, slow-start:MS, never-ready"
            )),
        }
    }

    fn is_triggered(self) -> bool {
        matches!(
            self,
            Self::Segv
                | Self::Abort
                | Self::Exit(_)
                | Self::Hang
                | Self::Stop
                | Self::Scribble
                | Self::ScribbleStop
        )
    }
}

/// When the triggered faults fire and the per-block ones start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Once this many blocks have been processed.
    AfterBlocks(u64),
    /// When a `Ping` command carries this token.
    OnPing(u64),
}

/// A fault that fires once at the trigger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sudden {
    /// Die by SIGSEGV.
    Segv,
    /// Die by SIGABRT.
    Abort,
    /// Exit with this status.
    Exit(u8),
    /// Busy-loop forever.
    Hang,
    /// SIGSTOP itself.
    Stop,
    /// Write garbage over the region's header words and ring counters, keep running.
    Scribble,
    /// The same, then SIGSTOP itself.
    ScribbleStop,
}

/// Every fault a worker was asked to commit. The default commits none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// The fault fired at the trigger.
    pub sudden: Option<Sudden>,
    /// When `sudden` fires and `slow`/`leak_fds` start.
    pub trigger: Option<Trigger>,
    /// Microseconds slept per block.
    pub slow_us: Option<u32>,
    /// Leak one fd per block.
    pub leak_fds: bool,
    /// SIGTERM does nothing.
    pub ignore_sigterm: bool,
    /// Start a grandchild (`<this executable> --fault-grandchild`) that outlives the worker.
    pub fork_child: bool,
    /// Sleep before reporting ready.
    pub slow_start: Option<Duration>,
    /// Never report ready.
    pub never_ready: bool,
}

impl FaultPlan {
    /// Builds a plan from `--fault` values and the trigger flags; refuses contradictions.
    pub fn new(
        kinds: &[FaultKind],
        fault_after: Option<u64>,
        fault_on_ping: Option<u64>,
    ) -> Result<Self, String> {
        let mut plan = Self::default();
        for &k in kinds {
            if let (true, Some(first)) = (k.is_triggered(), plan.sudden) {
                return Err(format!(
                    "only one of segv, abort, exit:N, hang, stop, scribble(-stop) may be given \
                     (got {first:?} and {k:?})"
                ));
            }
            match k {
                FaultKind::Segv => plan.sudden = Some(Sudden::Segv),
                FaultKind::Abort => plan.sudden = Some(Sudden::Abort),
                FaultKind::Exit(n) => plan.sudden = Some(Sudden::Exit(n)),
                FaultKind::Hang => plan.sudden = Some(Sudden::Hang),
                FaultKind::Stop => plan.sudden = Some(Sudden::Stop),
                FaultKind::Scribble => plan.sudden = Some(Sudden::Scribble),
                FaultKind::ScribbleStop => plan.sudden = Some(Sudden::ScribbleStop),
                FaultKind::Slow(us) => plan.slow_us = Some(us),
                FaultKind::LeakFds => plan.leak_fds = true,
                FaultKind::IgnoreSigterm => plan.ignore_sigterm = true,
                FaultKind::ForkChild => plan.fork_child = true,
                FaultKind::SlowStart(d) => plan.slow_start = Some(d),
                FaultKind::NeverReady => plan.never_ready = true,
            }
        }
        let per_block = plan.sudden.is_some() || plan.slow_us.is_some() || plan.leak_fds;
        plan.trigger = match (fault_after, fault_on_ping) {
            (Some(_), Some(_)) => {
                return Err("give --fault-after or --fault-on-ping, not both".to_string());
            }
            (Some(_), None) | (None, Some(_)) if !per_block => {
                return Err(
                    "--fault-after/--fault-on-ping need a fault that fires at a trigger \
                            (segv, abort, exit:N, hang, stop, scribble, slow:US, leak-fds)"
                        .to_string(),
                );
            }
            (_, Some(token)) => Some(Trigger::OnPing(token)),
            (n, None) if per_block => Some(Trigger::AfterBlocks(n.unwrap_or(0))),
            (_, None) => None,
        };
        Ok(plan)
    }

    /// Whether the plan commits no fault at all.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_documented_kind() {
        let cases = [
            ("segv", FaultKind::Segv),
            ("abort", FaultKind::Abort),
            ("exit:7", FaultKind::Exit(7)),
            ("hang", FaultKind::Hang),
            ("stop", FaultKind::Stop),
            ("scribble", FaultKind::Scribble),
            ("scribble-stop", FaultKind::ScribbleStop),
            ("slow:2500", FaultKind::Slow(2500)),
            ("leak-fds", FaultKind::LeakFds),
            ("ignore-sigterm", FaultKind::IgnoreSigterm),
            ("fork-child", FaultKind::ForkChild),
            (
                "slow-start:300",
                FaultKind::SlowStart(Duration::from_millis(300)),
            ),
            ("never-ready", FaultKind::NeverReady),
        ];
        for (text, kind) in cases {
            assert_eq!(FaultKind::parse(text), Ok(kind), "{text}");
            let name = text.split(':').next().unwrap();
            assert!(FAULT_HELP.contains(name), "{name} documented in --help");
        }
    }

    #[test]
    fn refuses_malformed_faults_with_a_reason() {
        assert!(
            FaultKind::parse("exit")
                .unwrap_err()
                .contains("exit:exit status")
        );
        assert!(
            FaultKind::parse("exit:300")
                .unwrap_err()
                .contains("0..=255")
        );
        assert!(
            FaultKind::parse("segv:1")
                .unwrap_err()
                .contains("takes no value")
        );
        assert!(
            FaultKind::parse("slow:fast")
                .unwrap_err()
                .contains("not a whole number")
        );
        assert!(
            FaultKind::parse("explode")
                .unwrap_err()
                .contains("unknown fault")
        );
    }

    #[test]
    fn plan_combines_kinds_and_trigger() {
        let plan = FaultPlan::new(
            &[
                FaultKind::Exit(4),
                FaultKind::Slow(10),
                FaultKind::IgnoreSigterm,
            ],
            Some(12),
            None,
        )
        .unwrap();
        assert_eq!(plan.sudden, Some(Sudden::Exit(4)));
        assert_eq!(plan.trigger, Some(Trigger::AfterBlocks(12)));
        assert_eq!(plan.slow_us, Some(10));
        assert!(plan.ignore_sigterm && !plan.never_ready);

        let plan = FaultPlan::new(&[FaultKind::Segv], None, Some(99)).unwrap();
        assert_eq!(plan.trigger, Some(Trigger::OnPing(99)));
        let plan = FaultPlan::new(&[FaultKind::Hang], None, None).unwrap();
        assert_eq!(plan.trigger, Some(Trigger::AfterBlocks(0)));
        let plan = FaultPlan::new(&[FaultKind::NeverReady], None, None).unwrap();
        assert_eq!(plan.trigger, None);
        assert!(FaultPlan::new(&[], None, None).unwrap().is_empty());
    }

    #[test]
    fn plan_refuses_contradictions() {
        let e = FaultPlan::new(&[FaultKind::Segv, FaultKind::Hang], None, None).unwrap_err();
        assert!(e.contains("only one of"), "{e}");
        let e = FaultPlan::new(&[FaultKind::Segv], Some(1), Some(2)).unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = FaultPlan::new(&[FaultKind::NeverReady], Some(1), None).unwrap_err();
        assert!(e.contains("need a fault"), "{e}");
    }
}
