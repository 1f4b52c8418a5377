use std::path::Path;
use std::time::Duration;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigErrors> {
    Config::parse(text, Path::new("/etc/slotpool/test.toml"))
}

fn err(text: &str) -> ConfigError {
    match parse(text) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e.0.into_iter().next().expect("at least one error"),
    }
}

#[test]
fn defaults_follow_supervisord() {
    let c = parse("[program.a]\ncommand = \"/bin/true\"\n").unwrap();
    let p = &c.programs[0];
    assert_eq!(p.numprocs, 1);
    assert!(p.autostart);
    assert_eq!(p.autorestart, AutoRestart::Unexpected);
    assert_eq!(p.exitcodes, vec![0]);
    assert_eq!(p.startsecs, Duration::from_secs(1));
    assert_eq!(p.startretries, 3);
    assert_eq!(p.stopsignal, libc::SIGTERM);
    assert_eq!(p.stopwaitsecs, Duration::from_secs(10));
    assert_eq!(
        p.stdout,
        LogConfig {
            target: LogTarget::Auto,
            maxbytes: 50 << 20,
            backups: 10
        }
    );
    assert_eq!(p.stderr.target, LogTarget::Auto);
    assert_eq!(p.crashloop_exits, 10);
    assert_eq!(p.crashloop_window, Duration::from_secs(60));
    assert!(p.slot.is_none());
    assert_eq!(c.name, "test");
}

#[test]
fn programs_keep_file_order_and_commands_split_like_a_shell() {
    let c = parse(
        "[program.zeta]\ncommand = \"/bin/echo 'a b' c\\\\ d\"\n[program.alpha]\ncommand = \"sleep\"\nargs = [\"1\"]\n",
    )
    .unwrap();
    assert_eq!(c.programs[0].name, "zeta");
    assert_eq!(
        c.programs[0].launch,
        Launch::Command {
            program: "/bin/echo".into(),
            args: vec!["a b".into(), "c d".into()]
        }
    );
    assert_eq!(
        c.programs[1].launch,
        Launch::Command {
            program: "sleep".into(),
            args: vec!["1".into()]
        }
    );
}

#[test]
fn module_and_routed_command_programs_are_slots() {
    let c = parse(
        "[program.osc]\nmodule = \"sine\"\nparams = { freq = 440, on = true }\n\
         [program.fx]\ncommand = \"/opt/fx\"\nfallback = \"bypass\"\nhang_timeout = \"2s\"\n\
         [program.plain]\ncommand = \"/bin/sleep 9\"\n\
         [[route]]\nfrom = \"osc\"\nto = \"fx:0\"\ngain = 0.5\n\
         [[route]]\nfrom = \"fx\"\nto = \"output\"\nchannels = [[0, 1], [1, 0]]\n",
    )
    .unwrap();
    let osc = c.program("osc").unwrap().slot.as_ref().unwrap();
    assert_eq!(osc.module.as_deref(), Some("sine"));
    assert_eq!(osc.params.get("freq"), Some(&440.0));
    assert_eq!(osc.params.get("on"), Some(&1.0));
    assert_eq!(osc.hang_timeout, DEFAULT_HANG_TIMEOUT);
    let fx = c.program("fx").unwrap().slot.as_ref().unwrap();
    assert_eq!(fx.fallback, Fallback::Bypass);
    assert_eq!(fx.hang_timeout, Duration::from_secs(2));
    assert!(c.program("plain").unwrap().slot.is_none());
    assert_eq!(c.routes.len(), 2);
    assert_eq!(c.routes[1].channels, vec![(0, 1), (1, 0)]);
    assert_eq!(
        c.routes[0].to,
        Endpoint::Slot {
            program: "fx".into(),
            index: 0
        }
    );
}

#[test]
fn errors_name_line_and_key() {
    let e = err("[program.a]\ncommand = \"x\"\nstartsecs = -1\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.a.startsecs"));
    let e = err("[program.a]\ncommand = \"x\"\nstartsec = 1\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.a.startsec"));
    assert!(e.message.contains("did you mean `startsecs`"), "{e}");
    let e = err("[program.a]\ncommand = \"x\"\ndirectory = \"/\"\n");
    assert!(e.message.contains("`workingdir`"), "{e}");
    let e = err("[program.a]\ncommand = \"x\"\nstopsignal = \"FOO\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.a.stopsignal"));
    let e = err("[engine]\nchannels = 0\n");
    assert_eq!((e.line, e.key.as_str()), (2, "engine.channels"));
    let e = err("[[route]]\nfrom = \"input\"\nto = \"nope\"\n");
    assert_eq!((e.line, e.key.as_str()), (3, "route[0].to"));
    assert!(
        e.to_string()
            .starts_with("/etc/slotpool/test.toml:3: route[0].to: no program called `nope`"),
        "{e}"
    );
}

#[test]
fn route_cycles_are_refused_with_the_cycle_named() {
    let e = err(
        "[program.a]\nmodule = \"gain\"\n[program.b]\nmodule = \"gain\"\n\
                 [[route]]\nfrom = \"a\"\nto = \"b\"\n[[route]]\nfrom = \"b\"\nto = \"a\"\n",
    );
    assert!(e.message.contains("cycle: a:0 -> b:0 -> a:0"), "{e}");
}

#[test]
fn log_paths_expand_process_num() {
    let c = parse("[program.a]\ncommand = \"x\"\nnumprocs = 2\nstdout = \"/tmp/a-%(process_num)d.log\"\nstderr = \"/dev/null\"\n")
        .unwrap();
    let p = &c.programs[0];
    assert_eq!(
        p.log_path(Stream::Stdout, 1, Path::new("/l")),
        Some("/tmp/a-1.log".into())
    );
    assert_eq!(p.log_path(Stream::Stderr, 1, Path::new("/l")), None);
    let c = parse("[program.a]\ncommand = \"x\"\n").unwrap();
    assert_eq!(
        c.programs[0].log_path(Stream::Stderr, 0, Path::new("/l")),
        Some("/l/a_0.stderr.log".into())
    );
}

#[test]
fn split_command_refuses_open_quotes() {
    assert!(split_command("a 'b").is_err());
    assert!(split_command("a \"b").is_err());
    assert_eq!(split_command("  ").unwrap(), Vec::<String>::new());
    assert_eq!(
        split_command("a \"x\\\"y\" ''").unwrap(),
        vec!["a", "x\"y", ""]
    );
}

#[test]
fn worker_realtime_defaults_to_one_below_the_audio_thread_and_takes_false_or_a_priority() {
    let engine = |body: &str| parse(&format!("[engine]\n{body}")).map(|c| c.engine.worker_realtime);
    assert_eq!(engine(""), Ok(WorkerRealtime::BelowAudio));
    assert_eq!(
        engine("worker_realtime = true\n"),
        Ok(WorkerRealtime::BelowAudio)
    );
    assert_eq!(engine("worker_realtime = false\n"), Ok(WorkerRealtime::Off));
    assert_eq!(
        engine("realtime = 80\nworker_realtime = 60\n"),
        Ok(WorkerRealtime::Priority(60))
    );
    // Without `realtime` there is nothing to stay below: any priority is the user's call.
    assert_eq!(
        engine("worker_realtime = 90\n"),
        Ok(WorkerRealtime::Priority(90))
    );
    let e = err("[engine]\nworker_realtime = 0\n");
    assert_eq!((e.line, e.key.as_str()), (2, "engine.worker_realtime"));
    assert!(e.message.contains("0 is out of range"), "{e}");
    let e = err("[engine]\nworker_realtime = \"high\"\n");
    assert_eq!(e.key, "engine.worker_realtime");
    let e = err("[engine]\nrealtime = 70\nworker_realtime = 70\n");
    assert_eq!((e.line, e.key.as_str()), (3, "engine.worker_realtime"));
    assert!(
        e.message
            .contains("not below the audio thread's realtime = 70"),
        "{e}"
    );
    assert!(e.message.contains("use 1 to 69"), "{e}");
    let e = err("[engine]\nworkers_realtime = true\n");
    assert!(e.message.contains("did you mean `worker_realtime`"), "{e}");
}

#[test]
fn a_slot_may_set_its_own_realtime_over_the_engines_worker_realtime() {
    let slot = |engine: &str, program: &str| {
        parse(&format!(
            "[engine]\n{engine}[program.fx]\nmodule = \"gain\"\n{program}"
        ))
        .map(|c| c.programs[0].slot.as_ref().unwrap().realtime)
    };
    assert_eq!(slot("", ""), Ok(None), "left out: the engine's setting");
    assert_eq!(
        slot("", "realtime = false\n"),
        Ok(Some(WorkerRealtime::Off))
    );
    assert_eq!(
        slot("worker_realtime = false\n", "realtime = true\n"),
        Ok(Some(WorkerRealtime::BelowAudio))
    );
    assert_eq!(
        slot("realtime = 70\n", "realtime = 50\n"),
        Ok(Some(WorkerRealtime::Priority(50)))
    );
    // The same bound as the engine's key, named at the slot's key.
    let e = err("[engine]\nrealtime = 70\n[program.fx]\nmodule = \"gain\"\nrealtime = 70\n");
    assert_eq!((e.line, e.key.as_str()), (5, "program.fx.realtime"));
    assert!(e.message.contains("use 1 to 69"), "{e}");
    // Only slots have workers to schedule.
    let e = err("[program.plain]\ncommand = \"sleep 9\"\nrealtime = false\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.plain.realtime"));
    assert!(e.message.contains("only applies to slots"), "{e}");
    let e = err("[program.fx]\nmodule = \"gain\"\nreal_time = false\n");
    assert!(e.message.contains("did you mean `realtime`"), "{e}");
}

#[test]
fn prewake_is_off_by_default_and_a_slot_may_set_its_own() {
    let c =
        parse("[program.fx]\nmodule = \"gain\"\n[program.plain]\ncommand = \"sleep 9\"\n").unwrap();
    assert_eq!(c.engine.worker_prewake_us, 0);
    assert_eq!(c.prewake_us(&c.programs[0]), 0, "off unless asked for");
    let c = parse(
        "[engine]\nworker_prewake_us = 150\n\
         [program.a]\nmodule = \"gain\"\n\
         [program.b]\nmodule = \"gain\"\nprewake_us = 0\n\
         [program.c]\nmodule = \"gain\"\nprewake_us = 300\n\
         [program.plain]\ncommand = \"sleep 9\"\n",
    )
    .unwrap();
    let us: Vec<u32> = c.programs.iter().map(|p| c.prewake_us(p)).collect();
    assert_eq!(
        us,
        [150, 0, 300, 0],
        "engine default, slot off, slot's own, plain"
    );
    let e = err("[engine]\nworker_prewake_us = 10001\n");
    assert_eq!((e.line, e.key.as_str()), (2, "engine.worker_prewake_us"));
    assert!(
        e.message.contains("expected 0 (off) to 10000 microseconds"),
        "{e}"
    );
    let e = err("[program.fx]\nmodule = \"gain\"\nprewake_us = 99999\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.fx.prewake_us"));
    let e = err("[program.plain]\ncommand = \"sleep 9\"\nprewake_us = 100\n");
    assert_eq!((e.line, e.key.as_str()), (3, "program.plain.prewake_us"));
    assert!(e.message.contains("only applies to slots"), "{e}");
    let e = err("[engine]\nworker_prewake = 100\n");
    assert!(
        e.message.contains("did you mean `worker_prewake_us`"),
        "{e}"
    );
}

#[test]
fn wait_spin_us_is_bounded_and_reaches_the_engine_settings() {
    let spin = |body: &str| parse(&format!("[engine]\n{body}")).map(|c| c.engine.wait_spin_us);
    assert_eq!(spin(""), Ok(EngineConfig::default().wait_spin_us));
    assert_eq!(spin("wait_spin_us = 0\n"), Ok(0));
    assert_eq!(spin("wait_spin_us = 1000\n"), Ok(1000));
    let c = parse("[engine]\nwait_spin_us = 40\n").unwrap();
    let s = crate::engine::EngineSettings::from_config(&c.engine, crate::engine::Pacing::RealTime);
    assert_eq!(s.wait_spin, std::time::Duration::from_micros(40));
    let e = err("[engine]\nblock_frames = 64\nwait_spin_us = 1001\n");
    assert_eq!((e.line, e.key.as_str()), (3, "engine.wait_spin_us"));
    assert!(e.message.contains("expected 0 to 1000 microseconds"), "{e}");
    let e = err("[engine]\nwait_spin_us = -5\n");
    assert_eq!(e.key, "engine.wait_spin_us");
}
