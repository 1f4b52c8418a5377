//! `slotpool render` through real worker processes equals `slotpool render
//! --in-process` bit for bit: for a fixed patch (two voices → filter → async delay,
//! a noise bed) and for random small patches of built-in modules (proptest).

mod live_host;

use std::process::Command;
use std::time::Duration;

use live_host::worker_bin;
use proptest::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_slotpool");

fn watchdog(limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("watchdog: test exceeded {limit:?}; aborting");
        std::process::abort();
    });
}

/// Renders `config` both ways in a fresh directory; returns (workers, reference) bytes.
fn render_both(config: &str, seconds: &str) -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), config).unwrap();
    let run = |out: &str, extra: &[&str]| {
        let o = Command::new(BIN)
            .args(["render", "p.toml", "-o", out, "--seconds", seconds, "-q"])
            .args(extra)
            .current_dir(dir.path())
            .env("SLOTPOOL_WORKER_BIN", worker_bin())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "render {extra:?} failed: {}\nconfig:\n{config}",
            String::from_utf8_lossy(&o.stderr)
        );
        std::fs::read(dir.path().join(out)).unwrap()
    };
    (run("w.wav", &[]), run("r.wav", &["--in-process"]))
}

fn samples(wav: &[u8]) -> Vec<f32> {
    hound::WavReader::new(wav)
        .unwrap()
        .into_samples::<f32>()
        .map(Result::unwrap)
        .collect()
}

const PROGRAM_TAIL: &str = "stdout = \"/dev/null\"\nstderr = \"/dev/null\"\n";

#[test]
fn render_through_workers_equals_the_in_process_reference() {
    watchdog(Duration::from_secs(120));
    let config = format!(
        "[engine]\nsample_rate = 44100\nblock_frames = 64\nchannels = 2\n\
         [program.voice]\nmodule = \"sine\"\nnumprocs = 2\nparams = {{ freq = 220, amp = 0.3 }}\n{PROGRAM_TAIL}\
         [program.lp]\nmodule = \"biquad\"\nparams = {{ mode = 0, freq = 900, q = 2 }}\n{PROGRAM_TAIL}\
         [program.echo]\nmodule = \"delay\"\nmode = \"async\"\nparams = {{ time = 0.125, feedback = 0.5, mix = 0.4 }}\n{PROGRAM_TAIL}\
         [program.bed]\nmodule = \"noise\"\nparams = {{ amp = 0.05 }}\n{PROGRAM_TAIL}\
         [[route]]\nfrom = \"voice:0\"\nto = \"lp:0\"\n\
         [[route]]\nfrom = \"voice:1\"\nto = \"lp:0\"\ngain = 0.5\n\
         [[route]]\nfrom = \"lp:0\"\nto = \"echo:0\"\n\
         [[route]]\nfrom = \"echo:0\"\nto = \"output\"\n\
         [[route]]\nfrom = \"bed:0\"\nto = \"output\"\ngain = 0.5\nchannels = [[0, 1], [1, 0]]\n"
    );
    let (workers, reference) = render_both(&config, "2");
    let s = samples(&reference);
    assert_eq!(s.len(), 2 * 88_200, "2 s of stereo at 44.1 kHz");
    assert!(
        s.iter().any(|&x| x.abs() > 0.05),
        "the reference is not silent"
    );
    assert!(
        workers == reference,
        "the render through workers differs from the reference"
    );
}

/// A random small patch: up to 4 slots of built-in modules, each fed by the device
/// input or an earlier slot, each routed to the output with a gain.
fn patch_config(slots: &[(usize, usize, bool, u8)], frames: u32) -> String {
    const MODULES: &[(&str, &str)] = &[
        ("sine", "{ freq = 330, amp = 0.25 }"),
        ("noise", "{ amp = 0.1 }"),
        ("gain", "{ gain_db = -6 }"),
        ("biquad", "{ mode = 1, freq = 500 }"),
        ("delay", "{ time = 0.01, feedback = 0.3, mix = 0.5 }"),
        ("passthrough", "{}"),
    ];
    let mut c = format!("[engine]\nsample_rate = 48000\nblock_frames = {frames}\nchannels = 2\n");
    for (i, &(module, _, is_async, _)) in slots.iter().enumerate() {
        let (name, params) = MODULES[module % MODULES.len()];
        let mode = if is_async { "async" } else { "sync" };
        c += &format!(
            "[program.s{i}]\nmodule = \"{name}\"\nmode = \"{mode}\"\nparams = {params}\n{PROGRAM_TAIL}"
        );
    }
    for (i, &(_, from, _, gain)) in slots.iter().enumerate() {
        // Sources: an earlier slot (so the patch stays acyclic) or the device input.
        if i > 0 && from % (i + 1) != i {
            c += &format!(
                "[[route]]\nfrom = \"s{}:0\"\nto = \"s{i}:0\"\n",
                from % (i + 1)
            );
        }
        c += &format!(
            "[[route]]\nfrom = \"s{i}:0\"\nto = \"output\"\ngain = {}\n",
            f64::from(gain) / 255.0
        );
    }
    c
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_patches_render_identically_through_workers(
        slots in prop::collection::vec((0usize..6, 0usize..4, any::<bool>(), any::<u8>()), 1..=4),
        frames in prop::sample::select(vec![32u32, 64, 128]),
    ) {
        watchdog(Duration::from_secs(300));
        let config = patch_config(&slots, frames);
        let (workers, reference) = render_both(&config, "0.25");
        prop_assert!(workers == reference, "renders differ for:\n{}", config);
    }
}
