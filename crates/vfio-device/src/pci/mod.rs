//! The PCI function model: the type-0 header, capabilities, and vfio-pci's config-space
//! virtualisation.
//!
//! One way, bottom up: [`regs`] (register offsets and bits), `image` (config bytes with their
//! write masks), [`caps`] (the capability chain, written into an image), [`header`] (the
//! function: BARs, ROM and its capability list, validated together), [`config`] (the
//! virtualised config space built from a function).

pub mod caps;
pub mod config;
pub mod header;
mod image;
pub mod regs;

pub use caps::{
    BarOffset, CapLayout, Capability, CapabilityList, ExtCap, Flr, MsiAddress, MsiCap, MsixCap,
    PcieCap, PerVectorMask,
};
pub use config::{ConfigSpace, IrqView, WriteEffects};
pub use header::{
    BarBacking, BarKind, BarSpec, FunctionSpec, Identity, InterruptPin, Prefetch, RomSpec, NUM_BARS,
};
