//! `type1`: the Linux VFIO type1 IOMMU in userspace.

use clap::Parser;

/// The Linux VFIO type1 IOMMU, in userspace.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _cli = Cli::parse();
    println!(
        "type1 {}: the migrate, run and bench commands are not built yet; see README.md",
        env!("CARGO_PKG_VERSION")
    );
    Ok(())
}
