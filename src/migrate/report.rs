//! What a migration reports: per-round figures, totals, mismatches; as text, JSON or an SVG
//! chart.

use std::fmt::Write as _;

use serde::Serialize;
use type1::DirtyMode;

use super::devices::DeviceStats;
use super::guest::PAGE;

/// One round of pre-copy (round 0 is the full copy; the final round runs with devices stopped).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    /// Round number.
    pub round: u32,
    /// Pages type1's GET_BITMAP reported dirty.
    pub reported_pages: u64,
    /// Extra pages only the vIOMMU's unmap bitmaps reported.
    pub viommu_pages: u64,
    /// Pages copied.
    pub copied_pages: u64,
    /// Time to read the bitmap, µs.
    pub bitmap_read_us: u64,
    /// Time to copy, µs.
    pub copy_us: u64,
    /// Device writes so far.
    pub device_writes: u64,
    /// The stop-and-copy round.
    pub final_round: bool,
}

/// A page that differs after migration.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Mismatch {
    /// Guest page number.
    pub page: u64,
    /// Guest physical address.
    pub gpa: u64,
    /// Round in which it was last copied.
    pub last_copied_round: u8,
}

/// One migration.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Dirty mode.
    pub mode: &'static str,
    /// Guest size.
    pub guest_bytes: u64,
    /// Rounds, the final one last.
    pub rounds: Vec<Round>,
    /// What the devices did.
    pub devices: DeviceStats,
    /// Pages that differ (empty when verified).
    pub mismatches: Vec<Mismatch>,
    /// Verification time, µs.
    pub verify_us: u64,
    /// Total time, ms.
    pub total_ms: u64,
}

impl RunReport {
    /// Bytes copied over all rounds.
    pub fn copied_bytes(&self) -> u64 {
        self.rounds.iter().map(|r| r.copied_pages).sum::<u64>() * PAGE
    }

    /// Pages reported dirty over the pre-copy rounds after round 0 and the final round.
    pub fn reported_pages(&self) -> u64 {
        self.rounds.iter().skip(1).map(|r| r.reported_pages).sum()
    }
}

/// The name of a dirty mode in reports.
pub fn mode_name(m: DirtyMode) -> &'static str {
    match m {
        DirtyMode::KernelExact => "kernel-exact",
        DirtyMode::Precise => "precise",
    }
}

/// Human-readable size.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// One line per round.
pub fn round_line(r: &Round) -> String {
    let name = if r.final_round {
        "final".to_string()
    } else {
        r.round.to_string()
    };
    let reported = if r.round == 0 {
        "(full copy)".to_string()
    } else {
        r.reported_pages.to_string()
    };
    format!(
        "  {name:>5}  {reported:>12}  {:>8}  {:>12}  {:>10}  {:>10}  {:>12}",
        r.viommu_pages,
        bytes(r.copied_pages * PAGE),
        format!("{:.2} ms", r.bitmap_read_us as f64 / 1000.0),
        format!("{:.1} ms", r.copy_us as f64 / 1000.0),
        r.device_writes
    )
}

/// Header of the round table.
pub fn round_header() -> String {
    format!(
        "  {:>5}  {:>12}  {:>8}  {:>12}  {:>10}  {:>10}  {:>12}",
        "round", "dirty pages", "+vIOMMU", "copied", "bitmap", "copy", "dev writes"
    )
}

/// The closing lines of a run.
pub fn summary(r: &RunReport) -> String {
    let mut s = String::new();
    let pre = r.rounds.iter().filter(|x| !x.final_round).count() - 1;
    let _ = writeln!(
        s,
        "  {} pre-copy rounds after the full copy, {} copied in all, {} ms",
        pre,
        bytes(r.copied_bytes()),
        r.total_ms
    );
    let d = r.devices;
    let _ = writeln!(
        s,
        "  devices: {} IOMMU DMA writes, {} pinned-page writes, {} dma_rw writes, {} vIOMMU 2M invalidations",
        d.iommu_writes, d.pinned_writes, d.rw_writes, d.viommu_cycles
    );
    if r.mismatches.is_empty() {
        let _ = writeln!(
            s,
            "  verified: destination == source, {} pages ({}) identical ({:.1} ms)",
            r.guest_bytes / PAGE,
            bytes(r.guest_bytes),
            r.verify_us as f64 / 1000.0
        );
    } else {
        let _ = writeln!(
            s,
            "  VERIFICATION FAILED: {} pages differ",
            r.mismatches.len()
        );
        for m in r.mismatches.iter().take(20) {
            let _ = writeln!(
                s,
                "    page {} (gpa {:#x}) differs; last copied in round {}",
                m.page, m.gpa, m.last_copied_round
            );
        }
    }
    s
}

/// An SVG chart: dirty pages (bars) and copied bytes (line) per round, one panel per mode.
pub fn svg(reports: &[RunReport]) -> String {
    let (w, ph, pad) = (720.0, 260.0, 50.0);
    let h = ph * reports.len() as f64 + 20.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (k, r) in reports.iter().enumerate() {
        let top = k as f64 * ph + 20.0;
        let n = r.rounds.len().max(1) as f64;
        let max_pages = r
            .rounds
            .iter()
            .map(|x| x.copied_pages.max(x.reported_pages))
            .max()
            .unwrap_or(1)
            .max(1);
        let max = max_pages as f64;
        let (x0, y0, cw, chh) = (pad, top + ph - pad, w - 2.0 * pad, ph - 2.0 * pad);
        let _ = writeln!(
            s,
            "<text x=\"{pad}\" y=\"{}\" font-size=\"13\">{} mode: pages reported dirty (bars) and pages copied (line) per round</text>",
            top + 12.0,
            r.mode
        );
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{}\" y2=\"{y0}\" stroke=\"black\"/>",
            x0 + cw
        );
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{}\" stroke=\"black\"/>",
            y0 - chh
        );
        let _ = writeln!(
            s,
            "<text x=\"4\" y=\"{}\">{}</text>",
            y0 - chh + 4.0,
            max_pages
        );
        let bw = cw / n;
        let mut line = String::new();
        for (i, rd) in r.rounds.iter().enumerate() {
            let x = x0 + i as f64 * bw;
            let bh = rd.reported_pages as f64 / max * chh;
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#7aa6d6\"/>",
                x + bw * 0.15,
                y0 - bh,
                bw * 0.7,
                bh
            );
            let label = if rd.final_round {
                "final".to_string()
            } else {
                rd.round.to_string()
            };
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
                x + bw / 2.0,
                y0 + 14.0
            );
            let cy = y0 - rd.copied_pages as f64 / max * chh;
            let _ = write!(line, "{:.1},{:.1} ", x + bw / 2.0, cy);
        }
        let _ = writeln!(
            s,
            "<polyline points=\"{line}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\"/>"
        );
    }
    s.push_str("</svg>\n");
    s
}
