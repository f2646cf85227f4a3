//! Decoding of intercepted ioctls for the trace.

use serde_json::{json, Value};
use type1::uapi;
use type1::{ProcessUserMemory, UserMemory};

/// The name of a VFIO request.
pub(crate) fn request_name(request: u64) -> &'static str {
    match request {
        uapi::VFIO_GET_API_VERSION => "VFIO_GET_API_VERSION",
        uapi::VFIO_CHECK_EXTENSION => "VFIO_CHECK_EXTENSION",
        uapi::VFIO_SET_IOMMU => "VFIO_SET_IOMMU",
        uapi::VFIO_GROUP_GET_STATUS => "VFIO_GROUP_GET_STATUS",
        uapi::VFIO_GROUP_SET_CONTAINER => "VFIO_GROUP_SET_CONTAINER",
        uapi::VFIO_GROUP_UNSET_CONTAINER => "VFIO_GROUP_UNSET_CONTAINER",
        uapi::VFIO_GROUP_GET_DEVICE_FD => "VFIO_GROUP_GET_DEVICE_FD",
        uapi::VFIO_IOMMU_GET_INFO => "VFIO_IOMMU_GET_INFO",
        uapi::VFIO_IOMMU_MAP_DMA => "VFIO_IOMMU_MAP_DMA",
        uapi::VFIO_IOMMU_UNMAP_DMA => "VFIO_IOMMU_UNMAP_DMA",
        uapi::VFIO_IOMMU_ENABLE => "VFIO_IOMMU_ENABLE",
        uapi::VFIO_IOMMU_DISABLE => "VFIO_IOMMU_DISABLE",
        uapi::VFIO_IOMMU_DIRTY_PAGES => "VFIO_IOMMU_DIRTY_PAGES",
        _ => "unknown",
    }
}

fn read_words(arg: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    ProcessUserMemory.read(arg, &mut b).ok()?;
    Some(b)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

/// The arguments of a request as the caller passed them (before the call).
pub(crate) fn decode(request: u64, arg: u64) -> Value {
    match request {
        uapi::VFIO_CHECK_EXTENSION | uapi::VFIO_SET_IOMMU => json!({ "value": arg }),
        uapi::VFIO_IOMMU_MAP_DMA => read_words(arg, 32).map_or(Value::Null, |b| {
            json!({ "argsz": u32_at(&b, 0), "flags": u32_at(&b, 4), "vaddr": format!("{:#x}", u64_at(&b, 8)),
                    "iova": format!("{:#x}", u64_at(&b, 16)), "size": format!("{:#x}", u64_at(&b, 24)) })
        }),
        uapi::VFIO_IOMMU_UNMAP_DMA => read_words(arg, 24).map_or(Value::Null, |b| {
            json!({ "argsz": u32_at(&b, 0), "flags": u32_at(&b, 4),
                    "iova": format!("{:#x}", u64_at(&b, 8)), "size": format!("{:#x}", u64_at(&b, 16)) })
        }),
        uapi::VFIO_IOMMU_GET_INFO | uapi::VFIO_IOMMU_DIRTY_PAGES | uapi::VFIO_GROUP_GET_STATUS => {
            read_words(arg, 8).map_or(Value::Null, |b| {
                json!({ "argsz": u32_at(&b, 0), "flags": u32_at(&b, 4) })
            })
        }
        uapi::VFIO_GROUP_SET_CONTAINER => read_words(arg, 4)
            .map_or(Value::Null, |b| json!({ "container_fd": i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) })),
        _ => json!({ "arg": format!("{arg:#x}") }),
    }
}
