//! The raw sample files and the statistics drawn from them (pure: no I/O here).
//!
//! Formats (written by crates/host/benches/cycle.rs and crates/host/tests/chaos_*.rs):
//! - cycle bench, `cycle_<frames>f_<shape>_<workers>w.txt`: `# key value…` header lines,
//!   then one cycle time in ns per line.
//! - chaos tests, `kill_storm.txt` and `leak_run.txt`: `name value…` lines; lines whose
//!   first word is not a known name (the summary line) are skipped. Both end with
//!   `unix_time SECS` and `loadavg L1 L5 L15`.

use std::fmt;

/// A raw file that cannot be read as what it claims to be.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    /// A required `key` is absent.
    #[error("no `{0}` line")]
    Missing(&'static str),
    /// A value that does not parse (1-based line number, the line).
    #[error("line {line}: cannot read `{text}`")]
    Bad {
        /// 1-based line number.
        line: usize,
        /// The offending line.
        text: String,
    },
    /// The file holds no samples.
    #[error("no samples")]
    Empty,
}

/// When and under what load a file's data was taken.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Meta {
    /// Seconds since the Unix epoch when the file was written.
    pub unix_time: Option<u64>,
    /// /proc/loadavg's 1, 5 and 15 minute load averages then.
    pub loadavg: Option<[f64; 3]>,
}

impl Meta {
    /// Reads a `unix_time` or `loadavg` line's values into `self`; false if `key` is
    /// neither.
    fn take(
        &mut self,
        key: &str,
        rest: &[&str],
        line: usize,
        text: &str,
    ) -> Result<bool, ParseError> {
        let bad = || ParseError::Bad {
            line,
            text: text.to_string(),
        };
        match key {
            "unix_time" => {
                self.unix_time = Some(rest.first().and_then(|v| v.parse().ok()).ok_or_else(bad)?);
                Ok(true)
            }
            "loadavg" => {
                let v: Vec<f64> = rest.iter().filter_map(|v| v.parse().ok()).collect();
                // "?" when /proc/loadavg was unreadable: no load known, not an error.
                if rest.first() != Some(&"?") {
                    self.loadavg = Some(v.try_into().map_err(|_| bad())?);
                }
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

/// Block-graph shape of a cycle-bench configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Shape {
    /// input → each worker → output.
    FanOut,
    /// input → worker 1 → worker 2 → … → output.
    Chain,
}

impl Shape {
    fn parse(s: &str) -> Option<Shape> {
        match s {
            "fanout" => Some(Shape::FanOut),
            "chain" => Some(Shape::Chain),
            _ => None,
        }
    }

    /// The file-name word (`fanout`, `chain`).
    pub fn word(self) -> &'static str {
        match self {
            Shape::FanOut => "fanout",
            Shape::Chain => "chain",
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::FanOut => "fan-out",
            Shape::Chain => "chain",
        })
    }
}

/// One cycle-bench configuration's raw cycle times.
#[derive(Clone, Debug, PartialEq)]
pub struct CycleRun {
    /// Block size in frames.
    pub frames: u32,
    /// Graph shape.
    pub shape: Shape,
    /// Worker count.
    pub workers: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// The block period in ns.
    pub period_ns: u64,
    /// When and under what load.
    pub meta: Meta,
    /// The engine's own histogram's p50 and p99 (ns, bucket upper bounds) over the
    /// same cycles, if the file has them: a cross-check of the per-call timing.
    pub engine_p50_p99_ns: Option<(u64, u64)>,
    /// Cycle times in ns, in the order they were measured.
    pub ns: Vec<u64>,
}

impl CycleRun {
    /// The cycle times as percent of the block period, sorted ascending.
    pub fn shares_sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .ns
            .iter()
            .map(|&n| n as f64 / self.period_ns as f64 * 100.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The block period in ms.
    pub fn period_ms(&self) -> f64 {
        self.period_ns as f64 / 1e6
    }
}

/// Parses a cycle-bench raw file.
pub fn parse_cycle(text: &str) -> Result<CycleRun, ParseError> {
    let (mut frames, mut shape, mut workers, mut rate, mut period) = (None, None, None, None, None);
    let mut meta = Meta::default();
    let mut engine = None;
    let mut ns = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let bad = || ParseError::Bad {
            line: i + 1,
            text: raw.to_string(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(h) = line.strip_prefix('#') {
            let words: Vec<&str> = h.split_whitespace().collect();
            let Some((&key, rest)) = words.split_first() else {
                continue;
            };
            let first = rest.first().copied().unwrap_or("");
            match key {
                "frames" => frames = Some(first.parse().map_err(|_| bad())?),
                "shape" => shape = Some(Shape::parse(first).ok_or_else(bad)?),
                "workers" => workers = Some(first.parse().map_err(|_| bad())?),
                "sample_rate" => rate = Some(first.parse().map_err(|_| bad())?),
                "period_ns" => period = Some(first.parse::<u64>().map_err(|_| bad())?),
                // `engine_histogram_p50_ns P50 p99_ns P99`
                "engine_histogram_p50_ns" => {
                    let p99 = rest.get(2).and_then(|v| v.parse().ok()).ok_or_else(bad)?;
                    engine = Some((first.parse().map_err(|_| bad())?, p99));
                }
                _ => {
                    // unix_time, loadavg; anything else (comments, cross-checks) is
                    // information for a reader, not data.
                    meta.take(key, rest, i + 1, raw)?;
                }
            }
            continue;
        }
        ns.push(line.parse::<u64>().map_err(|_| bad())?);
    }
    if ns.is_empty() {
        return Err(ParseError::Empty);
    }
    let period_ns = period.ok_or(ParseError::Missing("period_ns"))?;
    if period_ns == 0 {
        return Err(ParseError::Missing("period_ns"));
    }
    Ok(CycleRun {
        frames: frames.ok_or(ParseError::Missing("frames"))?,
        shape: shape.ok_or(ParseError::Missing("shape"))?,
        workers: workers.ok_or(ParseError::Missing("workers"))?,
        sample_rate: rate.unwrap_or(48_000),
        period_ns,
        meta,
        engine_p50_p99_ns: engine,
        ns,
    })
}

/// The kill storm's restart times (chaos_engine).
#[derive(Clone, Debug, PartialEq)]
pub struct KillStorm {
    /// Block size in frames.
    pub frames: u32,
    /// Sample rate in Hz.
    pub sample_rate: u32,
    /// One period in ms.
    pub period_ms: f64,
    /// The `slotpool` binary the test ran (its path says debug or release).
    pub binaries: String,
    /// Per kill, in kill order: periods on the fallback until the new worker's blocks
    /// were in use.
    pub periods: Vec<f64>,
    /// When and under what load.
    pub meta: Meta,
}

impl KillStorm {
    /// `debug` or `release`, from the binary's path (`?` if neither).
    pub fn build(&self) -> &'static str {
        build_of(&self.binaries)
    }
}

fn build_of(path: &str) -> &'static str {
    if path.contains("/release/") {
        "release"
    } else if path.contains("/debug/") {
        "debug"
    } else {
        "?"
    }
}

/// Parses `kill_storm.txt`.
pub fn parse_kill_storm(text: &str) -> Result<KillStorm, ParseError> {
    let (mut frames, mut rate, mut period_ms, mut binaries) = (None, None, None, String::new());
    let mut meta = Meta::default();
    let mut periods = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let Some((&key, rest)) = words.split_first() else {
            continue;
        };
        let bad = || ParseError::Bad {
            line: i + 1,
            text: raw.to_string(),
        };
        let first = rest.first().copied().unwrap_or("");
        match key {
            "frames" => frames = Some(first.parse().map_err(|_| bad())?),
            "sample_rate" => rate = Some(first.parse().map_err(|_| bad())?),
            "period_ms" => period_ms = Some(first.parse::<f64>().map_err(|_| bad())?),
            "binaries" => binaries = rest.join(" "),
            "restart_periods" => periods.push(first.parse::<f64>().map_err(|_| bad())?),
            _ => {
                meta.take(key, rest, i + 1, raw)?;
            }
        }
    }
    if periods.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(KillStorm {
        frames: frames.ok_or(ParseError::Missing("frames"))?,
        sample_rate: rate.ok_or(ParseError::Missing("sample_rate"))?,
        period_ms: period_ms.ok_or(ParseError::Missing("period_ms"))?,
        binaries,
        periods,
        meta,
    })
}

/// The leak run's supervisor restart latencies (chaos_supervisor).
#[derive(Clone, Debug, PartialEq)]
pub struct LeakRun {
    /// Restarts the run made.
    pub restarts: u64,
    /// Per restart, ms from the host's "exited" log line to the next "spawned".
    pub lat_ms: Vec<f64>,
    /// When and under what load.
    pub meta: Meta,
}

/// Parses `leak_run.txt`.
pub fn parse_leak_run(text: &str) -> Result<LeakRun, ParseError> {
    let mut restarts = None;
    let mut meta = Meta::default();
    let mut lat_ms = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let words: Vec<&str> = raw.split_whitespace().collect();
        let Some((&key, rest)) = words.split_first() else {
            continue;
        };
        let bad = || ParseError::Bad {
            line: i + 1,
            text: raw.to_string(),
        };
        let first = rest.first().copied().unwrap_or("");
        match key {
            // The summary line starts `restarts N secs …`.
            "restarts" => restarts = Some(first.parse().map_err(|_| bad())?),
            "lat_ms" => lat_ms.push(first.parse::<f64>().map_err(|_| bad())?),
            _ => {
                meta.take(key, rest, i + 1, raw)?;
            }
        }
    }
    if lat_ms.is_empty() {
        return Err(ParseError::Empty);
    }
    Ok(LeakRun {
        restarts: restarts.ok_or(ParseError::Missing("restarts"))?,
        lat_ms,
        meta,
    })
}

/// The `q`-quantile (0..=1) of ascending `sorted`, nearest rank (as the chaos tests
/// compute theirs): the smallest value with at least `q` of the samples at or below it.
/// NaN when empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    debug_assert!(
        sorted.is_sorted_by(|a, b| a <= b),
        "quantile of unsorted data"
    );
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// The empirical CDF of ascending `sorted` as a step line: for each distinct value `x`,
/// the points `(x, F(x⁻))` and `(x, F(x))` where `F(x)` is the share of samples ≤ x.
/// When there are more than `max_points / 2` distinct values, the steps are thinned to
/// `max_points / 2` evenly spaced ranks, always keeping the first and the last (the
/// maximum) so the tail's end is drawn exactly.
pub fn ecdf(sorted: &[f64], max_points: usize) -> Vec<(f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return Vec::new();
    }
    debug_assert!(sorted.is_sorted_by(|a, b| a <= b), "ecdf of unsorted data");
    // (value, samples ≤ value) for each distinct value.
    let mut steps: Vec<(f64, usize)> = Vec::new();
    for (i, &x) in sorted.iter().enumerate() {
        match steps.last_mut() {
            Some(last) if last.0 == x => last.1 = i + 1,
            _ => steps.push((x, i + 1)),
        }
    }
    let keep = (max_points / 2).max(2);
    if steps.len() > keep {
        let last = steps.len() - 1;
        let mut thin: Vec<(f64, usize)> = (0..keep).map(|k| steps[k * last / (keep - 1)]).collect();
        thin.dedup_by(|a, b| a.0 == b.0);
        steps = thin;
    }
    let mut out = Vec::with_capacity(2 * steps.len());
    let mut below = 0usize;
    for (x, upto) in steps {
        out.push((x, below as f64 / n as f64));
        out.push((x, upto as f64 / n as f64));
        below = upto;
    }
    out
}

/// Counts of integer-valued samples: `(value, count)` for every integer from the
/// smallest to the largest sample (zeros included), values rounded to the nearest
/// integer.
pub fn integer_histogram(values: &[f64]) -> Vec<(i64, usize)> {
    let ints: Vec<i64> = values.iter().map(|v| v.round() as i64).collect();
    let (Some(&lo), Some(&hi)) = (ints.iter().min(), ints.iter().max()) else {
        return Vec::new();
    };
    let mut counts = vec![0usize; (hi - lo + 1) as usize];
    for v in ints {
        counts[(v - lo) as usize] += 1;
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(i, c)| (lo + i as i64, c))
        .collect()
}

/// `YYYY-MM-DD HH:MM UTC` of a Unix time (proleptic Gregorian calendar).
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// One line for a plot's caption: when the data of `metas` was written and the load
/// averages then, e.g. `data 2026-12-05 12:33–12:41 UTC; load average (1 min) 2.1–4.7`.
pub fn caption(metas: &[&Meta]) -> String {
    let times: Vec<u64> = metas.iter().filter_map(|m| m.unix_time).collect();
    let loads: Vec<f64> = metas
        .iter()
        .filter_map(|m| m.loadavg.map(|l| l[0]))
        .collect();
    let when = match (times.iter().min(), times.iter().max()) {
        (Some(&a), Some(&b)) if utc(a)[..10] == utc(b)[..10] && utc(a) != utc(b) => {
            format!("{}–{}", &utc(a)[..16], &utc(b)[11..])
        }
        (Some(&a), Some(&b)) if utc(a) != utc(b) => format!("{} – {}", utc(a), utc(b)),
        (Some(&a), _) => utc(a),
        _ => "date unknown".into(),
    };
    let load = match (
        loads.iter().copied().reduce(f64::min),
        loads.iter().copied().reduce(f64::max),
    ) {
        (Some(a), Some(b)) if (a - b).abs() < 0.005 => format!("load average (1 min) {a:.2}"),
        (Some(a), Some(b)) => format!("load average (1 min) {a:.2}–{b:.2}"),
        _ => "load unknown".into(),
    };
    format!("data {when}; {load}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CYCLE: &str = "# bench cycle\n# frames 64\n# shape chain\n# workers 16\n\
        # sample_rate 48000\n# period_ns 1333333\n# unix_time 1796474001\n\
        # loadavg 4.67 4.52 2.33\n# engine_histogram_p50_ns 122879 p99_ns 180223\n\
        106018\n120659\n\n163953\n";

    #[test]
    fn cycle_file_parses_header_and_samples_in_order() {
        let r = parse_cycle(CYCLE).unwrap();
        assert_eq!((r.frames, r.shape, r.workers), (64, Shape::Chain, 16));
        assert_eq!(r.sample_rate, 48_000);
        assert_eq!(r.period_ns, 1_333_333);
        assert_eq!(r.ns, vec![106_018, 120_659, 163_953]);
        assert_eq!(r.meta.unix_time, Some(1_796_474_001));
        assert_eq!(r.meta.loadavg, Some([4.67, 4.52, 2.33]));
        assert_eq!(r.engine_p50_p99_ns, Some((122_879, 180_223)));
        let s = r.shares_sorted();
        assert!((s[0] - 106_018.0 / 1_333_333.0 * 100.0).abs() < 1e-9);
        assert!((r.period_ms() - 1.333333).abs() < 1e-9);
    }

    #[test]
    fn cycle_file_without_period_or_samples_or_with_garbage_is_refused() {
        let no_period = CYCLE.replace("# period_ns 1333333\n", "");
        assert_eq!(
            parse_cycle(&no_period),
            Err(ParseError::Missing("period_ns"))
        );
        let header_only: String = CYCLE
            .lines()
            .filter(|l| l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(parse_cycle(&header_only), Err(ParseError::Empty));
        let garbage = format!("{CYCLE}12x\n");
        assert_eq!(
            parse_cycle(&garbage),
            Err(ParseError::Bad {
                line: 14,
                text: "12x".into()
            })
        );
        let bad_shape = CYCLE.replace("chain", "ring");
        assert!(matches!(
            parse_cycle(&bad_shape),
            Err(ParseError::Bad { line: 3, .. })
        ));
    }

    #[test]
    fn kill_storm_file_skips_the_summary_and_keeps_kill_order() {
        let text = "kill storm 10 s, 128 frames @ 48000 Hz (2.67 ms): 35 SIGKILLs [9, 8, 9, 9] …\n\
            frames 128\nsample_rate 48000\nperiod_ms 2.6666666666666665\n\
            binaries /work/target-plots/debug/slotpool\n\
            restart_periods 5\nrestart_periods 3\nrestart_periods 17\n\
            unix_time 1796474001\nloadavg 1.50 1.20 0.90\n";
        let k = parse_kill_storm(text).unwrap();
        assert_eq!(k.periods, vec![5.0, 3.0, 17.0]);
        assert_eq!((k.frames, k.sample_rate), (128, 48_000));
        assert!((k.period_ms - 8.0 / 3.0).abs() < 1e-12);
        assert_eq!(k.build(), "debug");
        assert_eq!(k.meta.loadavg, Some([1.5, 1.2, 0.9]));
        // A file from before the raw lines were written has no samples.
        assert_eq!(
            parse_kill_storm("kill storm 10 s, …\nunix_time 5\nloadavg 1 1 1\n"),
            Err(ParseError::Empty)
        );
    }

    #[test]
    fn leak_run_file_reads_latencies_and_ignores_rss_lines() {
        let text = "restarts 1000 secs 13.4 fd_base 10 fd_end 10 p50_ms 3.230\n\
            rss 0 13744\nrss 250 13900\nlat_ms 3.125\nlat_ms 19.940\n\
            unix_time 0\nloadavg ? \n";
        let l = parse_leak_run(text).unwrap();
        assert_eq!(l.restarts, 1000);
        assert_eq!(l.lat_ms, vec![3.125, 19.94]);
        assert_eq!(l.meta.unix_time, Some(0));
        assert_eq!(l.meta.loadavg, None);
        assert!(matches!(
            parse_leak_run("restarts 3\nlat_ms fast\n"),
            Err(ParseError::Bad { line: 2, .. })
        ));
        assert!(matches!(
            parse_leak_run("restarts 3\nlat_ms 1\nloadavg 1 2\n"),
            Err(ParseError::Bad { line: 3, .. })
        ));
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 0.999), 100.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[7.0], 0.5), 7.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0], 0.5), 2.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn ecdf_steps_at_each_distinct_value() {
        let p = ecdf(&[1.0, 2.0, 2.0, 4.0], 100);
        assert_eq!(
            p,
            vec![
                (1.0, 0.0),
                (1.0, 0.25),
                (2.0, 0.25),
                (2.0, 0.75),
                (4.0, 0.75),
                (4.0, 1.0)
            ]
        );
        assert!(ecdf(&[], 10).is_empty());
    }

    #[test]
    fn thinned_ecdf_stays_monotone_and_keeps_both_ends() {
        let v: Vec<f64> = (0..20_000).map(|i| f64::from(i) * 0.5).collect();
        let p = ecdf(&v, 400);
        assert!(p.len() <= 400, "{} points", p.len());
        assert_eq!(p.first().unwrap().0, 0.0);
        assert_eq!(*p.last().unwrap(), (9_999.5, 1.0));
        assert!(p.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        // Every kept point is on the true ECDF: F(x) = (x / 0.5 + 1) / n.
        for &(x, y) in p.iter().skip(1).step_by(2) {
            assert!((y - (x / 0.5 + 1.0) / 20_000.0).abs() < 1e-12, "({x}, {y})");
        }
    }

    #[test]
    fn integer_histogram_counts_every_bin_including_empty_ones() {
        assert_eq!(
            integer_histogram(&[3.0, 5.0, 3.0, 2.9]),
            vec![(3, 3), (4, 0), (5, 1)]
        );
        assert!(integer_histogram(&[]).is_empty());
    }

    #[test]
    fn utc_formats_known_instants() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_709_251_199), "2024-02-29 23:59 UTC");
        assert_eq!(utc(1_796_474_001), "2026-12-05 12:33 UTC");
    }

    #[test]
    fn caption_gives_time_span_and_load_range() {
        let a = Meta {
            unix_time: Some(1_796_474_001),
            loadavg: Some([2.1, 1.0, 1.0]),
        };
        let b = Meta {
            unix_time: Some(1_796_474_001 + 480),
            loadavg: Some([4.67, 1.0, 1.0]),
        };
        assert_eq!(
            caption(&[&a, &b]),
            "data 2026-12-05 12:33–12:41 UTC; load average (1 min) 2.10–4.67"
        );
        assert_eq!(
            caption(&[&a]),
            "data 2026-12-05 12:33 UTC; load average (1 min) 2.10"
        );
        assert_eq!(
            caption(&[&Meta::default()]),
            "data date unknown; load unknown"
        );
        // Within one minute: the minute once.
        let c = Meta {
            unix_time: Some(1_796_474_001 + 30),
            ..a.clone()
        };
        assert_eq!(
            caption(&[&a, &c]),
            "data 2026-12-05 12:33 UTC; load average (1 min) 2.10"
        );
        // Across midnight: both full dates.
        let d = Meta {
            unix_time: Some(1_796_474_001 + 86_400),
            ..a.clone()
        };
        assert!(
            caption(&[&a, &d]).starts_with("data 2026-12-05 12:33 UTC – 2026-12-06 12:33 UTC;")
        );
    }
}
