//! The PCI function model: the type-0 header, capabilities, and vfio-pci's config-space
//! virtualisation.

pub mod caps;
pub mod config;
pub mod header;
pub mod regs;

pub use caps::{
    BarOffset, CapLayout, Capability, CapabilityList, ExtCap, Flr, MsiAddress, MsiCap, MsixCap,
    PcieCap, PerVectorMask,
};
pub use config::{ConfigSpace, IrqView, WriteEffects};
pub use header::{
    BarBacking, BarKind, BarSpec, FunctionSpec, Identity, InterruptPin, Prefetch, RomSpec, NUM_BARS,
};
