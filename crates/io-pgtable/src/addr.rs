//! Typed addresses.
//!
//! Two address spaces meet in a page table: the input side (`Iova`, what a device puts on the
//! bus) and the output side (`PhysAddr`, what the IOMMU forwards to memory). Keeping them apart
//! in the type system stops the classic `iova`/`paddr` argument swap at compile time.
//!
//! All ranges in this crate are written `(start, length)` with an exclusive end; an end that
//! would wrap past `u64::MAX` is an error, computed with [`Iova::checked_add`], never clamped.

/// Declares `$name`, a `u64` address newtype with this module's conventions: `raw`,
/// `checked_add` (wrapping is an error), `wrapping_add`, `is_aligned`, `align_down`, zero-padded
/// hex `Display`. Used here for [`Iova`] and [`PhysAddr`], and by the `type1` crate for its host
/// virtual address, so every address type of the project behaves alike.
#[macro_export]
macro_rules! address_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw value.
            #[inline]
            #[must_use]
            pub const fn raw(self) -> u64 {
                self.0
            }

            /// `self + len`, or `None` if that wraps past `u64::MAX`.
            #[inline]
            #[must_use]
            pub const fn checked_add(self, len: u64) -> Option<Self> {
                match self.0.checked_add(len) {
                    Some(v) => Some(Self(v)),
                    None => None,
                }
            }

            /// `self + len`, wrapping. Only for offsets already proven in range.
            #[inline]
            #[must_use]
            pub const fn wrapping_add(self, len: u64) -> Self {
                Self(self.0.wrapping_add(len))
            }

            /// True if `self` is a multiple of `align` (a power of two).
            #[inline]
            #[must_use]
            pub const fn is_aligned(self, align: u64) -> bool {
                self.0 & (align - 1) == 0
            }

            /// `self` rounded down to `align` (a power of two).
            #[inline]
            #[must_use]
            pub const fn align_down(self, align: u64) -> Self {
                Self(self.0 & !(align - 1))
            }
        }

        impl ::core::fmt::Display for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, "{:#018x}", self.0)
            }
        }

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

address_type!(
    /// An I/O virtual address: the input of the page table (an IPA for stage 2).
    Iova
);
address_type!(
    /// A physical (output) address: where a translated access lands.
    PhysAddr
);

/// The last byte of `(start, len)`, or `None` if `len == 0` or the range wraps.
#[inline]
#[must_use]
pub fn last_of(start: u64, len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    start.checked_add(len - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_zero_padded_hex() {
        assert_eq!(Iova(0x1000).to_string(), "0x0000000000001000");
        assert_eq!(format!("{:?}", PhysAddr(0x20)), "PhysAddr(0x20)");
    }

    #[test]
    fn checked_add_refuses_wrap() {
        assert_eq!(Iova(u64::MAX).checked_add(1), None);
        assert_eq!(Iova(1).checked_add(2), Some(Iova(3)));
    }

    #[test]
    fn last_of_rejects_empty_and_wrapping_ranges() {
        assert_eq!(last_of(0, 0), None);
        assert_eq!(last_of(u64::MAX, 1), Some(u64::MAX));
        assert_eq!(last_of(u64::MAX, 2), None);
        assert_eq!(last_of(0x1000, 0x1000), Some(0x1fff));
    }

    #[test]
    fn alignment_helpers() {
        assert!(Iova(0x20_0000).is_aligned(0x20_0000));
        assert!(!Iova(0x20_1000).is_aligned(0x20_0000));
        assert_eq!(Iova(0x20_1234).align_down(0x1000), Iova(0x20_1000));
    }
}
