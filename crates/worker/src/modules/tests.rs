//! Behaviour of each built-in module as a library object, driven through [`Instance`] (so
//! the allocation guard of the test build checks every process call).

use super::*;
use crate::Instance;
use crate::processor::{ParamKind, ProcessConfig};

const SR: f32 = 48_000.0;

fn config(channels_in: usize, channels_out: usize, block_frames: usize) -> ProcessConfig {
    ProcessConfig {
        sample_rate: SR,
        block_frames,
        channels_in,
        channels_out,
    }
}

fn instance(spec: &ModuleSpec, cfg: ProcessConfig) -> Instance<Box<dyn Processor>> {
    Instance::new(spec.build().expect("module builds"), cfg)
}

/// Runs `blocks` blocks; `input(frame_index, channel)` gives the input; returns every
/// output block concatenated (planar per block).
fn render(
    inst: &mut Instance<Box<dyn Processor>>,
    blocks: usize,
    input: impl Fn(usize, usize) -> f32,
) -> Vec<f32> {
    let cfg = *inst.config();
    let mut out = Vec::new();
    let mut inbuf = vec![0.0; cfg.input_samples()];
    let mut outbuf = vec![0.0; cfg.output_samples()];
    for b in 0..blocks {
        for c in 0..cfg.channels_in {
            for i in 0..cfg.block_frames {
                inbuf[c * cfg.block_frames + i] = input(b * cfg.block_frames + i, c);
            }
        }
        inst.process(b as u64, &inbuf, &mut outbuf);
        out.extend_from_slice(&outbuf);
    }
    out
}

/// Channel `c` of a render of mono-or-more blocks, as one continuous signal.
fn channel(rendered: &[f32], cfg: &ProcessConfig, c: usize) -> Vec<f32> {
    rendered
        .chunks_exact(cfg.output_samples())
        .flat_map(|b| b[c * cfg.block_frames..(c + 1) * cfg.block_frames].to_vec())
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn peak(v: &[f32]) -> f32 {
    v.iter().fold(0.0_f32, |m, x| m.max(x.abs()))
}

fn sine_input(freq: f32) -> impl Fn(usize, usize) -> f32 {
    move |n, _| (std::f32::consts::TAU * freq * n as f32 / SR).sin()
}

#[test]
fn registry_ids_are_table_indices_and_names_fit_the_wire() {
    for m in modules() {
        for (i, p) in m.params.iter().enumerate() {
            assert_eq!(p.id as usize, i, "{}.{}", m.name, p.name);
            assert!(
                p.name.len() <= 32,
                "{}.{} longer than Event::Param's name",
                m.name,
                p.name
            );
            assert!(
                p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}.{}",
                m.name,
                p.name
            );
            assert!(
                p.min <= p.default && p.default <= p.max,
                "{}.{}",
                m.name,
                p.name
            );
            if let ParamKind::Enum(labels) = p.kind {
                assert_eq!(labels.len() as f32, p.max - p.min + 1.0);
            }
        }
        if m.settings.iter().all(|s| !s.required) {
            let spec = ModuleSpec::new(m.name).unwrap();
            let p = spec.build().unwrap();
            assert_eq!(p.params(), m.params);
        }
    }
    let names: Vec<_> = modules().iter().map(|m| m.name).collect();
    for want in [
        "sine",
        "noise",
        "gain",
        "biquad",
        "delay",
        "passthrough",
        "wavplay",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

#[test]
fn spec_errors_say_what_is_accepted() {
    let e = ModuleSpec::new("sinus").unwrap_err().to_string();
    assert!(
        e.contains("unknown module `sinus`") && e.contains("sine"),
        "{e}"
    );
    let e = ModuleSpec::parse("sine", [("frq", "1")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("no parameter `frq`") && e.contains("freq, amp"),
        "{e}"
    );
    let e = ModuleSpec::parse("sine", [("amp", "2")])
        .unwrap_err()
        .to_string();
    assert!(e.contains("out of range") && e.contains("0..=1"), "{e}");
    let e = ModuleSpec::parse_assignments("sine", ["amp"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("not KEY=VALUE"), "{e}");
    let e = ModuleSpec::new("wavplay")
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("--param file="), "{e}");
    let e = ModuleSpec::parse("wavplay", [("file", "/nonexistent/x.wav")])
        .unwrap()
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.wav"), "{e}");
}

#[test]
fn cli_args_round_trip_exactly() {
    let spec = ModuleSpec::parse(
        "biquad",
        [
            ("mode", "peak"),
            ("q", "0.333333"),
            ("gain_db", "-3.1"),
            ("freq", "1234.5"),
        ],
    )
    .unwrap();
    let args = spec.to_cli_args();
    assert_eq!(&args[..2], ["--module", "biquad"]);
    let assignments: Vec<&String> = args[2..].iter().skip(1).step_by(2).collect();
    let back = ModuleSpec::parse_assignments("biquad", assignments).unwrap();
    assert_eq!(bits(back.values()), bits(spec.values()));
    assert_eq!(back.values()[0], 3.0);
}

#[test]
fn sine_has_its_frequency_and_amplitude() {
    let spec = ModuleSpec::parse("sine", [("freq", "1000"), ("amp", "0.5")]).unwrap();
    let cfg = config(1, 2, 128);
    let mut inst = instance(&spec, cfg);
    let out = render(&mut inst, 375, |_, _| 0.0); // 1 s
    let left = channel(&out, &cfg, 0);
    let right = channel(&out, &cfg, 1);
    assert_eq!(
        bits(&left),
        bits(&right),
        "every channel carries the same wave"
    );
    let rising = left
        .windows(2)
        .filter(|w| w[0] < 0.0 && w[1] >= 0.0)
        .count();
    assert!(
        (999..=1001).contains(&rising),
        "{rising} cycles in one second"
    );
    let p = peak(&left);
    assert!((0.499..=0.5).contains(&p), "peak {p}");
    assert_eq!(left[0], 0.0, "starts at phase 0");
}

#[test]
fn sine_frequency_change_glides_without_a_jump() {
    let spec = ModuleSpec::parse("sine", [("freq", "100"), ("amp", "1")]).unwrap();
    let cfg = config(1, 1, 64);
    let mut inst = instance(&spec, cfg);
    let mut out = render(&mut inst, 10, |_, _| 0.0);
    inst.set_param(sine::param::AMP, 0.0).unwrap();
    out.extend(render(&mut inst, 30, |_, _| 0.0));
    // amplitude ramps to zero over 20 ms = 960 samples: the envelope never steps
    let tail = &out[640..];
    let max_step = tail
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max);
    // 100 Hz at amplitude 1 moves at most 2π·100/48000 ≈ 0.013 per sample
    assert!(max_step < 0.014, "step {max_step}");
    assert!(
        peak(&out[640 + 960..]) == 0.0,
        "silent once the ramp is over"
    );
    assert!(peak(&out[640..640 + 480]) > 0.1, "still sounding mid-ramp");
}

#[test]
fn sine_state_round_trips() {
    let spec = ModuleSpec::parse("sine", [("freq", "333")]).unwrap();
    let cfg = config(1, 1, 100);
    let mut a = instance(&spec, cfg);
    render(&mut a, 7, |_, _| 0.0);
    let state = a.processor().save_state().unwrap();
    let mut b = instance(&spec, cfg);
    b.processor_mut().load_state(&state).unwrap();
    assert_eq!(
        bits(&render(&mut a, 3, |_, _| 0.0)),
        bits(&render(&mut b, 3, |_, _| 0.0))
    );
    assert!(b.processor_mut().load_state(&[1, 2, 3]).is_err());
}

#[test]
fn noise_is_deterministic_per_seed_and_bounded() {
    let cfg = config(1, 2, 256);
    let render_seed = |seed: &str| {
        let spec = ModuleSpec::parse("noise", [("seed", seed), ("amp", "0.5")]).unwrap();
        render(&mut instance(&spec, cfg), 40, |_, _| 0.0)
    };
    let a = render_seed("7");
    assert_eq!(bits(&a), bits(&render_seed("7")));
    assert_ne!(bits(&a), bits(&render_seed("8")));
    let left = channel(&a, &cfg, 0);
    let right = channel(&a, &cfg, 1);
    assert_ne!(
        bits(&left),
        bits(&right),
        "channels are independent streams"
    );
    assert!(left.iter().all(|x| (-0.5..0.5).contains(x)));
    let mean = left.iter().map(|&x| f64::from(x)).sum::<f64>() / left.len() as f64;
    assert!(mean.abs() < 0.01, "mean {mean}");
    assert!(peak(&left) > 0.49);
}

#[test]
fn noise_reset_and_seed_change_restart_the_sequence() {
    let spec = ModuleSpec::parse("noise", [("seed", "42")]).unwrap();
    let cfg = config(1, 1, 64);
    let mut inst = instance(&spec, cfg);
    let first = render(&mut inst, 2, |_, _| 0.0);
    inst.reset();
    assert_eq!(bits(&first), bits(&render(&mut inst, 2, |_, _| 0.0)));
    inst.set_param(noise::param::SEED, 5.0).unwrap();
    inst.set_param(noise::param::SEED, 42.0).unwrap();
    assert_eq!(bits(&first), bits(&render(&mut inst, 2, |_, _| 0.0)));
}

#[test]
fn gain_scales_by_decibels_and_fades_linearly() {
    let spec = ModuleSpec::parse("gain", [("gain_db", "-6")]).unwrap();
    let cfg = config(2, 2, 32);
    let mut inst = instance(&spec, cfg);
    let out = render(&mut inst, 1, |_, c| if c == 0 { 1.0 } else { -0.5 });
    let g = 10f32.powf(-6.0 / 20.0);
    assert_eq!(out[0], g);
    assert_eq!(out[32], -0.5 * g);

    inst.set_param(gain::param::GAIN_DB, -96.0).unwrap();
    let fade = channel(&render(&mut inst, 40, |_, _| 1.0), &cfg, 0);
    let steps: Vec<f32> = fade.windows(2).map(|w| w[0] - w[1]).collect();
    assert!(
        steps[..958].iter().all(|&s| s > 0.0 && s < 2.0 * g / 960.0),
        "linear ramp"
    );
    assert!(fade[959..].iter().all(|&x| x == 0.0), "-96 dB is silence");
}

fn steady_gain(mode: &str, freq_hz: f32, probe_hz: f32, gain_db: &str) -> f32 {
    let f = freq_hz.to_string();
    let spec = ModuleSpec::parse(
        "biquad",
        [("mode", mode), ("freq", f.as_str()), ("gain_db", gain_db)],
    )
    .unwrap();
    let cfg = config(1, 1, 480);
    let out = render(&mut instance(&spec, cfg), 100, sine_input(probe_hz));
    peak(&out[24_000..]) // after 0.5 s of settling
}

#[test]
fn biquad_types_pass_and_stop_where_the_cookbook_says() {
    let lp_pass = steady_gain("lowpass", 1000.0, 100.0, "0");
    let lp_stop = steady_gain("lowpass", 1000.0, 10_000.0, "0");
    assert!(
        (0.98..1.02).contains(&lp_pass) && lp_stop < 0.02,
        "{lp_pass} {lp_stop}"
    );
    let hp_pass = steady_gain("highpass", 1000.0, 10_000.0, "0");
    let hp_stop = steady_gain("highpass", 1000.0, 100.0, "0");
    assert!(
        (0.98..1.02).contains(&hp_pass) && hp_stop < 0.02,
        "{hp_pass} {hp_stop}"
    );
    let bp_centre = steady_gain("bandpass", 1000.0, 1000.0, "0");
    let bp_off = steady_gain("bandpass", 1000.0, 50.0, "0");
    assert!(
        (0.98..1.02).contains(&bp_centre) && bp_off < 0.1,
        "{bp_centre} {bp_off}"
    );
    let peak_centre = steady_gain("peak", 1000.0, 1000.0, "12");
    let peak_off = steady_gain("peak", 1000.0, 20.0, "12");
    let want = 10f32.powf(12.0 / 20.0);
    assert!(
        (peak_centre / want - 1.0).abs() < 0.02,
        "{peak_centre} vs {want}"
    );
    assert!((peak_off - 1.0).abs() < 0.02, "{peak_off}");
}

#[test]
fn biquad_lowpass_is_3db_down_at_cutoff_with_butterworth_q() {
    let k = biquad::Coefficients::rbj(biquad::Mode::Lowpass, 48_000.0, 1000.0, 0.5_f64.sqrt(), 0.0);
    let m = k.magnitude_at(48_000.0, 1000.0);
    assert!((m - 0.5_f64.sqrt()).abs() < 1e-9, "{m}");
    assert!((k.magnitude_at(48_000.0, 1.0) - 1.0).abs() < 1e-6);
}

#[test]
fn biquad_cutoff_sweep_glides() {
    let spec = ModuleSpec::parse("biquad", [("mode", "lowpass"), ("freq", "200")]).unwrap();
    let cfg = config(1, 1, 256);
    let mut inst = instance(&spec, cfg);
    render(&mut inst, 4, sine_input(440.0));
    let before = inst.processor().params()[1].default; // the table is shared
    assert_eq!(before, 1000.0);
    inst.set_param(biquad::param::FREQ, 5000.0).unwrap();
    let out = render(&mut inst, 20, sine_input(440.0));
    let max_step = out
        .windows(2)
        .map(|w| (w[1] - w[0]).abs())
        .fold(0.0, f32::max);
    // a 440 Hz unit sine moves at most 0.058 per sample; a coefficient jump would spike
    assert!(max_step < 0.07, "step {max_step}");
}

#[test]
fn delay_echoes_with_feedback_and_mix() {
    let spec =
        // 2^-7 s is exact in f32: 375 samples at 48 kHz
        ModuleSpec::parse("delay", [("time", "0.0078125"), ("feedback", "0.5"), ("mix", "1")])
            .unwrap();
    let cfg = config(1, 1, 100);
    let out = render(&mut instance(&spec, cfg), 20, |n, _| {
        if n == 0 { 1.0 } else { 0.0 }
    });
    let nonzero: Vec<(usize, f32)> = out
        .iter()
        .copied()
        .enumerate()
        .filter(|&(_, x)| x != 0.0)
        .collect();
    assert_eq!(
        nonzero,
        vec![
            (375, 1.0),
            (750, 0.5),
            (1125, 0.25),
            (1500, 0.125),
            (1875, 0.0625)
        ]
    );

    let dry = ModuleSpec::parse("delay", [("mix", "0")]).unwrap();
    let out = render(&mut instance(&dry, cfg), 3, |n, _| n as f32);
    assert!(out.iter().enumerate().all(|(n, &x)| x == n as f32));
}

#[test]
fn delay_reset_clears_the_line() {
    let spec = ModuleSpec::parse("delay", [("time", "0.005"), ("mix", "1")]).unwrap();
    let cfg = config(1, 1, 100);
    let mut inst = instance(&spec, cfg);
    render(&mut inst, 1, |_, _| 1.0);
    inst.reset();
    assert_eq!(peak(&render(&mut inst, 10, |_, _| 0.0)), 0.0);
}

#[test]
fn passthrough_copies_under_the_channel_rule() {
    let spec = ModuleSpec::new("passthrough").unwrap();
    let cfg = config(2, 3, 16);
    let out = render(&mut instance(&spec, cfg), 2, |n, c| (n * 10 + c) as f32);
    for b in 0..2 {
        for c in 0..3 {
            for i in 0..16 {
                let n = b * 16 + i;
                assert_eq!(out[b * 48 + c * 16 + i], (n * 10 + c % 2) as f32);
            }
        }
    }
}

fn temp_wav(name: &str, channels: u16, frames: i16) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("slotpool-worker-{}-{name}.wav", std::process::id()));
    let spec = hound::WavSpec {
        channels,
        sample_rate: 48_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&path, spec).unwrap();
    for f in 0..frames {
        for c in 0..channels {
            w.write_sample(f * 100 + c as i16).unwrap();
        }
    }
    w.finalize().unwrap();
    path
}

#[test]
fn wavplay_loops_or_stops_at_the_end() {
    let path = temp_wav("loop", 2, 10);
    let file = path.to_str().unwrap();
    let cfg = config(1, 2, 8);
    let looped = ModuleSpec::parse("wavplay", [("file", file)]).unwrap();
    let out = render(&mut instance(&looped, cfg), 3, |_, _| 0.0);
    let left = channel(&out, &cfg, 0);
    let right = channel(&out, &cfg, 1);
    let expect = |f: usize, c: i32| ((f % 10) as i32 * 100 + c) as f32 / 32768.0;
    for f in 0..24 {
        assert_eq!(left[f], expect(f, 0), "frame {f}");
        assert_eq!(right[f], expect(f, 1), "frame {f}");
    }
    let once = ModuleSpec::parse("wavplay", [("file", file), ("loop", "off")]).unwrap();
    let out = channel(&render(&mut instance(&once, cfg), 3, |_, _| 0.0), &cfg, 0);
    assert_eq!(out[9], expect(9, 0));
    assert!(out[10..].iter().all(|&x| x == 0.0));
    std::fs::remove_file(path).ok();
}

#[test]
fn wavplay_mono_file_feeds_every_channel() {
    let path = temp_wav("mono", 1, 4);
    let spec = ModuleSpec::parse("wavplay", [("file", path.to_str().unwrap())]).unwrap();
    let cfg = config(1, 2, 4);
    let out = render(&mut instance(&spec, cfg), 1, |_, _| 0.0);
    assert_eq!(out[..4], out[4..]);
    assert_eq!(out[1], 100.0 / 32768.0);
    std::fs::remove_file(path).ok();
}

#[test]
fn every_module_is_bit_identical_across_instances() {
    let path = temp_wav("det", 2, 300);
    let file = path.to_str().unwrap().to_string();
    let cfg = config(2, 2, 64);
    for m in modules() {
        let mut spec = ModuleSpec::new(m.name).unwrap();
        if m.name == "wavplay" {
            spec.set("file", &file).unwrap();
        }
        let run = || {
            let mut inst = instance(&spec, cfg);
            let mut out = render(&mut inst, 5, |n, c| {
                ((n * 7 + c * 3) % 17) as f32 / 17.0 - 0.5
            });
            for (id, p) in m.params.iter().enumerate() {
                inst.set_param(id as u32, p.max).unwrap();
            }
            out.extend(render(&mut inst, 5, |n, _| (n as f32 * 0.01).sin()));
            out
        };
        assert_eq!(bits(&run()), bits(&run()), "{}", m.name);
    }
    std::fs::remove_file(path).ok();
}

#[test]
fn instance_refuses_unknown_ids_and_non_finite_values() {
    let mut inst = instance(&ModuleSpec::new("gain").unwrap(), config(1, 1, 8));
    assert_eq!(inst.set_param(9, 1.0), Err(crate::ParamError::UnknownId(9)));
    assert_eq!(
        inst.set_param(0, f32::NAN),
        Err(crate::ParamError::NotFinite)
    );
    assert_eq!(inst.set_param(0, 100.0), Ok(24.0));
}

#[test]
fn bypass_crossfades_over_one_block_then_passes_input() {
    let spec = ModuleSpec::parse("gain", [("gain_db", "-96")]).unwrap();
    let cfg = config(1, 1, 4);
    let mut inst = instance(&spec, cfg);
    assert_eq!(render(&mut inst, 1, |_, _| 1.0), [0.0; 4]);
    inst.set_bypass(true);
    assert_eq!(render(&mut inst, 1, |_, _| 1.0), [0.25, 0.5, 0.75, 1.0]);
    assert_eq!(render(&mut inst, 1, |_, _| 1.0), [1.0; 4]);
    inst.set_bypass(false);
    inst.set_bypass(true); // toggled back before any block: no fade
    assert_eq!(render(&mut inst, 1, |_, _| 1.0), [1.0; 4]);
    inst.set_bypass(false);
    assert_eq!(render(&mut inst, 1, |_, _| 1.0), [0.75, 0.5, 0.25, 0.0]);
    assert_eq!(inst.blocks_processed(), 5);
}
