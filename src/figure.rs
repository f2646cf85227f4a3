//! One line of `type1 bench`'s report, shared by the suite (`bench`) and the measurements it
//! runs in child processes (`bench_device`, `bench_map`, `fd_cost`), which sit below it.

use serde::Serialize;

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What was measured.
    pub name: String,
    /// The measurement.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
    /// The baseline, if any.
    pub baseline: Option<(String, f64)>,
    /// The target as text, and whether it holds.
    pub target: Option<(String, bool)>,
}
