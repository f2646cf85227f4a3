//! `type1`: the Linux VFIO type1 IOMMU in userspace.
//!
//! With no subcommand it runs `type1 migrate` on its built-in default.

// A binary crate: `pub` marks what modules share, nothing is exported.
#![allow(unreachable_pub)]

#[cfg(feature = "bench-baselines")]
mod alloc_count;
#[cfg(feature = "bench-baselines")]
mod bench;
mod bench_device;
mod bench_map;
mod fd_cost;
#[cfg(feature = "bench-baselines")]
mod figure;

/// Live heap bytes for the suite's memory figures; only in builds with the suite.
#[cfg(feature = "bench-baselines")]
#[global_allocator]
static ALLOC: alloc_count::Counting = alloc_count::Counting;
mod migrate;
mod preload_lib;
mod run;

use std::io::IsTerminal;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use type1::DirtyMode;

use migrate::devices::{DeviceConfig, Pattern};
use migrate::report::{self, RunReport};
use migrate::{Invalidation, MigrateConfig, Modes};

/// The Linux VFIO type1 IOMMU, in userspace.
#[derive(Debug, Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    migrate: MigrateArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Live-migrate guest memory while devices DMA into it, and verify it byte for byte
    /// (the default).
    Migrate(MigrateArgs),
    /// Run an unmodified program whose /dev/vfio/* calls type1 serves (LD_PRELOAD); its exit
    /// status passes through.
    Run(Box<run::RunArgs>),
    /// Run the performance suite: every figure beside its baseline, measured in this run.
    Bench(BenchArgs),
}

#[derive(Debug, Clone, Args)]
struct BenchArgs {
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Time budget per measured loop, in milliseconds.
    #[arg(long, default_value_t = 400)]
    budget_ms: u64,
    /// Internal: be the child that loops one libc call and prints ns per call.
    #[arg(long, hide = true, value_name = "KIND", value_enum)]
    fd_call_cost: Option<fd_cost::FdCall>,
    /// Internal: be the child that loops a device-fd (or memfd) call and prints ns per call.
    #[arg(long, hide = true, value_name = "KIND", value_enum)]
    device_call_cost: Option<bench_device::DeviceCall>,
    /// Internal: be the child that makes this many memory areas and loops a 4K MAP_DMA and
    /// UNMAP_DMA through the drop-in, printing ns per call of each.
    #[arg(long, hide = true, value_name = "AREAS")]
    map_cost: Option<u64>,
}

#[derive(Debug, Clone, Args)]
struct MigrateArgs {
    /// Guest memory size (K, M, G, T suffixes; a multiple of 2M).
    #[arg(long, default_value = "2G", value_parser = type1_preload_config::parse_size)]
    guest_size: u64,
    /// Dirty reporting mode(s) to run.
    #[arg(long, value_enum, default_value = "both")]
    dirty_mode: Modes,
    /// IOTLB invalidation policy of the IOMMU domain.
    #[arg(long, value_enum, default_value = "strict")]
    invalidation: Invalidation,
    /// IOMMU-backed device DMA writes per second.
    #[arg(long, default_value_t = 20_000)]
    iommu_write_rate: u64,
    /// Emulated device writes per second (pinned pages, dma_rw, vIOMMU mappings).
    #[arg(long, default_value_t = 3_000)]
    emulated_write_rate: u64,
    /// Where device writes land.
    #[arg(long, value_enum, default_value = "hot")]
    pattern: Pattern,
    /// Size of the hot set at the start of guest memory.
    #[arg(long, default_value = "64M", value_parser = type1_preload_config::parse_size)]
    hot_set: u64,
    /// Skip the vIOMMU phase (4K maps, 2M unmap with dirty bitmap).
    #[arg(long)]
    no_viommu: bool,
    /// Seed of the memory pattern and the device writes.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Most pre-copy rounds after the first full copy.
    #[arg(long, default_value_t = 8)]
    rounds: u32,
    /// Stop pre-copy when a round copies at most this many pages.
    #[arg(long, default_value_t = 2048)]
    threshold: u64,
    /// Print one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Write an SVG chart of dirty pages and copy volume per round.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Test-only fault: drop one dirty bit in the final round (verification must fail).
    #[arg(long, hide = true)]
    drop_dirty_bit: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Migrate(a)) => run_migrate(&a),
        Some(Command::Run(a)) => run::run(&a),
        Some(Command::Bench(a)) => run_bench(&a),
        None => run_migrate(&cli.migrate),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("type1: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_bench(a: &BenchArgs) -> Result<()> {
    if let Some(kind) = a.fd_call_cost {
        let ns = fd_cost::child(kind, std::time::Duration::from_millis(a.budget_ms))?;
        println!("{ns}");
        return Ok(());
    }
    if let Some(kind) = a.device_call_cost {
        let ns = bench_device::child(kind, std::time::Duration::from_millis(a.budget_ms))?;
        let words: Vec<String> = ns.iter().map(f64::to_string).collect();
        println!("{}", words.join(" "));
        return Ok(());
    }
    if let Some(areas) = a.map_cost {
        let (map, unmap) = bench_map::child(areas, std::time::Duration::from_millis(a.budget_ms))?;
        println!("{map} {unmap}");
        return Ok(());
    }
    suite(a)
}

/// Without the feature: the suite's baselines are not in this build.
#[cfg(not(feature = "bench-baselines"))]
fn suite(_: &BenchArgs) -> Result<()> {
    bail!(
        "this type1 is built without the performance suite (feature bench-baselines: its \
         same-run baselines and counting allocator stay out of the product); run it with \
         `cargo run --release --features bench-baselines -- bench`"
    )
}

/// The performance suite, every figure beside its same-run baseline.
#[cfg(feature = "bench-baselines")]
fn suite(a: &BenchArgs) -> Result<()> {
    let json = a.json;
    let t = std::time::Instant::now();
    let figures = bench::run(std::time::Duration::from_millis(a.budget_ms), &mut |f| {
        if !json {
            println!("{}", bench::line(f));
        }
    })?;
    if json {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        let met = figures
            .iter()
            .filter_map(|f| f.target.as_ref())
            .filter(|t| t.1)
            .count();
        let all = figures.iter().filter(|f| f.target.is_some()).count();
        println!(
            "\n{met} of {all} targets met; {:.1} s",
            t.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn run_migrate(a: &MigrateArgs) -> Result<()> {
    let cfg = MigrateConfig {
        guest_size: a.guest_size,
        devices: DeviceConfig {
            iommu_rate: a.iommu_write_rate,
            emulated_rate: a.emulated_write_rate,
            hot_set: a.hot_set,
            pattern: a.pattern,
            viommu: !a.no_viommu,
            seed: a.seed,
        },
        invalidation: a.invalidation,
        max_rounds: a.rounds,
        threshold_pages: a.threshold,
        drop_dirty_bit: a.drop_dirty_bit,
    };
    let modes: &[DirtyMode] = match a.dirty_mode {
        Modes::KernelExact => &[DirtyMode::KernelExact],
        Modes::Precise => &[DirtyMode::Precise],
        Modes::Both => &[DirtyMode::KernelExact, DirtyMode::Precise],
    };
    let tty = std::io::stdout().is_terminal() && !a.json;
    if !a.json {
        println!(
            "type1 migrate: {} guest, IOMMU device {} writes/s, emulated device {} writes/s ({:?}, hot set {}), vIOMMU {}, {:?} invalidation, seed {}",
            report::bytes(cfg.guest_size),
            a.iommu_write_rate,
            a.emulated_write_rate,
            a.pattern,
            report::bytes(a.hot_set),
            if a.no_viommu { "off" } else { "on" },
            a.invalidation,
            a.seed
        );
    }
    let mut reports: Vec<RunReport> = Vec::new();
    let mut mem = migrate::Memory::new(&cfg)?;
    for &mode in modes {
        if !a.json {
            println!("\nmode {}:", report::mode_name(mode));
            println!("{}", report::round_header());
        }
        let bar = if tty {
            let b = ProgressBar::new(u64::from(a.rounds) + 2);
            b.set_style(
                ProgressStyle::with_template("  {spinner} round {pos}/{len} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            Some(b)
        } else {
            None
        };
        let json = a.json;
        let mut on_round = |r: &report::Round| {
            if json {
                return;
            }
            match &bar {
                Some(b) => {
                    b.println(report::round_line(r));
                    b.inc(1);
                    b.set_message(format!("{} copied", report::bytes(r.copied_pages * 4096)));
                }
                None => println!("{}", report::round_line(r)),
            }
        };
        let rep = migrate::run(&cfg, mode, &mut mem, &mut on_round)
            .with_context(|| format!("migration in {} mode", report::mode_name(mode)))?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if !a.json {
            print!("{}", report::summary(&rep));
        }
        reports.push(rep);
    }
    if !a.json && reports.len() == 2 {
        let (k, p) = (&reports[0], &reports[1]);
        println!(
            "\nkernel-exact reported {} dirty pages after the full copy and copied {}; precise reported {} and copied {} ({:.1}x less copied).",
            k.reported_pages(),
            report::bytes(k.copied_bytes()),
            p.reported_pages(),
            report::bytes(p.copied_bytes()),
            k.copied_bytes() as f64 / p.copied_bytes().max(1) as f64
        );
    }
    if a.json {
        let doc = serde_json::json!({ "config": cfg, "runs": reports });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    if let Some(path) = &a.plot {
        std::fs::write(path, report::svg(&reports))
            .with_context(|| format!("writing {}", path.display()))?;
        if !a.json {
            println!("chart written to {}", path.display());
        }
    }
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| !r.mismatches.is_empty())
        .map(|r| {
            let first = r.mismatches[0];
            format!(
                "{} mode: {} pages differ (first: page {} at gpa {:#x}, last copied in round {})",
                r.mode,
                r.mismatches.len(),
                first.page,
                first.gpa,
                first.last_copied_round
            )
        })
        .collect();
    if !bad.is_empty() {
        bail!("verification failed: {}", bad.join("; "));
    }
    Ok(())
}
