//! `VFIO_DEVICE_SET_IRQS` decoding: `vfio_set_irqs_validate_and_prepare` (v6.18,
//! `drivers/vfio/vfio_main.c`) and the data that follows the header.
//!
//! Checks, in the kernel's order: `argsz` below `offsetofend(count)`; `index` at or past the
//! number of indexes, `count >= U32_MAX - start`, flag bits outside the data and action masks;
//! `start` or `start + count` past the index's vectors (so every call on an index of count 0
//! fails, a disable included); the data type not exactly one of NONE, BOOL, EVENTFD; data shorter
//! than `count` elements. All `EINVAL`.

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_TYPE_MASK,
    VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD,
    VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK, VFIO_PCI_NUM_IRQS,
};

use crate::error::{Error, Result};

/// `offsetofend(struct vfio_irq_set, count)`.
pub const SET_IRQS_MINSZ: u32 = 20;

/// The fixed part of a `struct vfio_irq_set`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetIrqsHeader {
    /// `argsz`.
    pub argsz: u32,
    /// `flags`.
    pub flags: u32,
    /// `index`.
    pub index: u32,
    /// `start`.
    pub start: u32,
    /// `count`.
    pub count: u32,
}

/// The data type of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `DATA_NONE`: no data.
    None,
    /// `DATA_BOOL`: one byte per vector.
    Bool,
    /// `DATA_EVENTFD`: one `s32` per vector.
    Eventfd,
}

impl DataType {
    /// Bytes per element.
    #[must_use]
    pub fn elem_size(self) -> u32 {
        match self {
            DataType::None => 0,
            DataType::Bool => 1,
            DataType::Eventfd => 4,
        }
    }
}

/// The action of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `ACTION_MASK`.
    Mask,
    /// `ACTION_UNMASK`.
    Unmask,
    /// `ACTION_TRIGGER`.
    Trigger,
}

impl Action {
    /// Exactly one action bit, else `None` (the dispatcher then finds no handler: `ENOTTY`).
    #[must_use]
    pub fn from_flags(flags: u32) -> Option<Action> {
        match flags & VFIO_IRQ_SET_ACTION_TYPE_MASK {
            VFIO_IRQ_SET_ACTION_MASK => Some(Action::Mask),
            VFIO_IRQ_SET_ACTION_UNMASK => Some(Action::Unmask),
            VFIO_IRQ_SET_ACTION_TRIGGER => Some(Action::Trigger),
            _ => None,
        }
    }
}

/// The data of a request, copied from user memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqData {
    /// No data.
    None,
    /// One byte per vector.
    Bool(Vec<u8>),
    /// One fd per vector (-1: unbind).
    Eventfd(Vec<i32>),
}

impl IrqData {
    /// Decodes `bytes` (exactly `count` elements) as `ty`.
    #[must_use]
    pub fn decode(ty: DataType, bytes: &[u8]) -> IrqData {
        match ty {
            DataType::None => IrqData::None,
            DataType::Bool => IrqData::Bool(bytes.to_vec()),
            DataType::Eventfd => IrqData::Eventfd(
                bytes
                    .chunks_exact(std::mem::size_of::<i32>())
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            ),
        }
    }
}

/// `vfio_set_irqs_validate_and_prepare`: returns the data type and the data size in bytes.
/// `max` is the index's vector count (0 for indexes the device lacks).
///
/// # Errors
/// [`Error::ArgszTooSmall`], [`Error::NoIrqIndex`], [`Error::UnknownFlags`],
/// [`Error::IrqRange`], [`Error::IrqDataType`], [`Error::IrqDataShort`] (all `EINVAL`).
pub fn validate(hdr: &SetIrqsHeader, max: u32) -> Result<(DataType, u64)> {
    if hdr.argsz < SET_IRQS_MINSZ {
        return Err(Error::ArgszTooSmall {
            argsz: hdr.argsz,
            minsz: SET_IRQS_MINSZ,
        });
    }
    if hdr.index >= VFIO_PCI_NUM_IRQS {
        return Err(Error::NoIrqIndex { index: hdr.index });
    }
    if hdr.count >= u32::MAX - hdr.start {
        return Err(Error::IrqRange {
            start: hdr.start,
            count: hdr.count,
            max,
        });
    }
    if hdr.flags & !(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) != 0 {
        return Err(Error::UnknownFlags { flags: hdr.flags });
    }
    // `start + count` cannot wrap: `count < U32_MAX - start` was checked above.
    if hdr.start >= max || hdr.start + hdr.count > max {
        return Err(Error::IrqRange {
            start: hdr.start,
            count: hdr.count,
            max,
        });
    }
    let ty = match hdr.flags & VFIO_IRQ_SET_DATA_TYPE_MASK {
        VFIO_IRQ_SET_DATA_NONE => DataType::None,
        VFIO_IRQ_SET_DATA_BOOL => DataType::Bool,
        VFIO_IRQ_SET_DATA_EVENTFD => DataType::Eventfd,
        _ => return Err(Error::IrqDataType { flags: hdr.flags }),
    };
    let size = u64::from(hdr.count) * u64::from(ty.elem_size());
    if size > 0 && u64::from(hdr.argsz - SET_IRQS_MINSZ) < size {
        return Err(Error::IrqDataShort {
            argsz: hdr.argsz,
            count: hdr.count,
        });
    }
    Ok((ty, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(argsz: u32, flags: u32, index: u32, start: u32, count: u32) -> SetIrqsHeader {
        SetIrqsHeader {
            argsz,
            flags,
            index,
            start,
            count,
        }
    }
    const EFD_TRIG: u32 = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER;

    #[test]
    fn argsz_19_is_einval() {
        let e = validate(&hdr(19, EFD_TRIG, 2, 0, 1), 8).unwrap_err();
        assert!(matches!(e, Error::ArgszTooSmall { .. }));
    }

    #[test]
    fn flag_bit_6_is_einval() {
        let e = validate(&hdr(24, EFD_TRIG | 1 << 6, 2, 0, 1), 8).unwrap_err();
        assert!(matches!(e, Error::UnknownFlags { .. }));
    }

    #[test]
    fn two_data_types_are_einval() {
        let f = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_DATA_BOOL | VFIO_IRQ_SET_ACTION_TRIGGER;
        let e = validate(&hdr(24, f, 2, 0, 1), 8).unwrap_err();
        assert!(matches!(e, Error::IrqDataType { .. }));
    }

    /// Spec checklist: MSI-X count 9, start 8, and count 2 with argsz 24 are all EINVAL.
    #[test]
    fn vectors_past_the_index_or_data_short_are_einval() {
        assert!(matches!(
            validate(&hdr(56, EFD_TRIG, 2, 0, 9), 8),
            Err(Error::IrqRange { .. })
        ));
        assert!(matches!(
            validate(&hdr(24, EFD_TRIG, 2, 8, 1), 8),
            Err(Error::IrqRange { .. })
        ));
        assert!(matches!(
            validate(&hdr(24, EFD_TRIG, 2, 0, 2), 8),
            Err(Error::IrqDataShort { .. })
        ));
    }

    #[test]
    fn count_wrapping_u32_is_einval_before_the_flags() {
        let e = validate(&hdr(24, 1 << 7, 2, 1, u32::MAX - 1), 8).unwrap_err();
        assert!(matches!(e, Error::IrqRange { .. }));
    }

    #[test]
    fn a_zero_count_index_refuses_even_a_disable() {
        let f = VFIO_IRQ_SET_DATA_NONE | VFIO_IRQ_SET_ACTION_TRIGGER;
        assert!(matches!(
            validate(&hdr(20, f, 3, 0, 0), 0),
            Err(Error::IrqRange { .. })
        ));
    }

    #[test]
    fn eventfd_data_size_is_four_per_vector() {
        assert_eq!(
            validate(&hdr(28, EFD_TRIG, 2, 1, 2), 8),
            Ok((DataType::Eventfd, 8))
        );
    }
}
