//! `slotpool-report --bench DIR --chaos DIR --out docs/img`: reads the raw sample files,
//! prints their percentiles and writes the SVG plots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use slotpool_report::data::{self, CycleRun, Shape, quantile};
use slotpool_report::plot;

/// Draws the report plots (SVG) from raw bench and chaos-test samples.
#[derive(Parser, Debug)]
#[command(name = "slotpool-report")]
struct Args {
    /// Directory with the cycle bench's `cycle_*.txt` files (`SLOTPOOL_BENCH_OUT`).
    #[arg(long)]
    bench: Option<PathBuf>,
    /// Directory with the chaos tests' `kill_storm.txt` and `leak_run.txt`
    /// (`SLOTPOOL_CHAOS_OUT`).
    #[arg(long)]
    chaos: Option<PathBuf>,
    /// Where the SVGs go.
    #[arg(long, default_value = "docs/img")]
    out: PathBuf,
    /// Appended to every plot's caption line (e.g. "; 2 cores shared with builds").
    #[arg(long, default_value = "")]
    note: String,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("slotpool-report: {e:#}");
        std::process::exit(1);
    }
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))
}

fn draw(r: plot::DrawResult<impl Sized>, path: &Path) -> Result<()> {
    r.map_err(|e| anyhow!("draw {}: {e}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

fn run(a: Args) -> Result<()> {
    if a.bench.is_none() && a.chaos.is_none() {
        return Err(anyhow!(
            "nothing to draw: give --bench DIR and/or --chaos DIR"
        ));
    }
    std::fs::create_dir_all(&a.out).with_context(|| format!("create {}", a.out.display()))?;
    if let Some(dir) = &a.bench {
        let runs = cycle_runs(dir)?;
        summary(&runs);
        for frames in [64, 256] {
            for shape in [Shape::FanOut, Shape::Chain] {
                let p = a
                    .out
                    .join(format!("cycle-ecdf-{frames}f-{}.svg", shape.word()));
                let drawn = plot::cycle_ecdf(&p, &runs, frames, shape, &a.note)
                    .map_err(|e| anyhow!("draw {}: {e}", p.display()))?;
                if drawn {
                    println!("wrote {}", p.display());
                }
            }
        }
        let p = a.out.join("cycle-percentiles.svg");
        draw(plot::cycle_percentiles(&p, &runs, &a.note), &p)?;
    }
    if let Some(dir) = &a.chaos {
        let f = dir.join("kill_storm.txt");
        let k = data::parse_kill_storm(&read(&f)?).with_context(|| f.display().to_string())?;
        let mut s = k.periods.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "kill storm ({} build): {} restarts, periods p50 {} p99 {} max {} (× {:.3} ms)",
            k.build(),
            s.len(),
            quantile(&s, 0.5),
            quantile(&s, 0.99),
            quantile(&s, 1.0),
            k.period_ms
        );
        let p = a.out.join("restart-kill-storm.svg");
        draw(plot::kill_storm(&p, &k, &a.note), &p)?;

        let f = dir.join("leak_run.txt");
        let l = data::parse_leak_run(&read(&f)?).with_context(|| f.display().to_string())?;
        let mut s = l.lat_ms.clone();
        s.sort_by(f64::total_cmp);
        println!(
            "supervisor restart latency: {} samples, p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            s.len(),
            quantile(&s, 0.5),
            quantile(&s, 0.99),
            quantile(&s, 1.0)
        );
        let p = a.out.join("restart-supervisor.svg");
        draw(plot::supervisor_restart(&p, &l, &a.note), &p)?;
    }
    Ok(())
}

/// Every `cycle_*.txt` in `dir`, parsed.
fn cycle_runs(dir: &Path) -> Result<Vec<CycleRun>> {
    let mut runs = Vec::new();
    for e in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let path = e?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("cycle_") && name.ends_with(".txt") {
            runs.push(
                data::parse_cycle(&read(&path)?).with_context(|| path.display().to_string())?,
            );
        }
    }
    if runs.is_empty() {
        return Err(anyhow!("no cycle_*.txt in {}", dir.display()));
    }
    runs.sort_by_key(|r| (r.frames, r.shape, r.workers));
    Ok(runs)
}

/// The percentiles the plots show, as a table (for the docs and a quick look).
fn summary(runs: &[CycleRun]) {
    println!(
        "frames shape   workers  cycles   p50 %   p99 %  p99.9 %    max %  engine histogram p50 % / p99 %"
    );
    for r in runs {
        let s = r.shares_sorted();
        let share = |ns: u64| ns as f64 / r.period_ns as f64 * 100.0;
        let engine = r.engine_p50_p99_ns.map_or("-".into(), |(a, b)| {
            format!("{:.2} / {:.2}", share(a), share(b))
        });
        println!(
            "{:>6} {:<7} {:>7} {:>7} {:>7.2} {:>7.2} {:>8.2} {:>8.2}  {engine}",
            r.frames,
            r.shape.word(),
            r.workers,
            s.len(),
            quantile(&s, 0.5),
            quantile(&s, 0.99),
            quantile(&s, 0.999),
            quantile(&s, 1.0)
        );
    }
}
