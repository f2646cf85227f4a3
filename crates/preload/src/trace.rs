//! Decoding of intercepted VFIO ioctls for the trace: the inputs as the caller passed them and
//! the outputs the call wrote back. Field offsets come from `vfio-bindings` (`type1::uapi::off`).
//!
//! One line per ioctl: `{"fd", "request", "request_nr", "args", "out", "result", "errno",
//! "duration_ns", "t_us", "pid"}`; `out` is present on success for requests that write back.

use serde_json::{json, Value};
use type1::uapi::{self, get_u32, get_u64, off, raw};
use type1::usercopy::copy_from_process;

/// The name of a VFIO request on a device fd (numbers 12 and 13 name other requests on a
/// container fd).
pub(crate) fn device_request_name(request: u64) -> &'static str {
    use vfio_device::ioctl as d;
    match request {
        d::VFIO_DEVICE_GET_INFO => "VFIO_DEVICE_GET_INFO",
        d::VFIO_DEVICE_GET_REGION_INFO => "VFIO_DEVICE_GET_REGION_INFO",
        d::VFIO_DEVICE_GET_IRQ_INFO => "VFIO_DEVICE_GET_IRQ_INFO",
        d::VFIO_DEVICE_SET_IRQS => "VFIO_DEVICE_SET_IRQS",
        d::VFIO_DEVICE_RESET => "VFIO_DEVICE_RESET",
        d::VFIO_DEVICE_GET_PCI_HOT_RESET_INFO => "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO",
        d::VFIO_DEVICE_PCI_HOT_RESET => "VFIO_DEVICE_PCI_HOT_RESET",
        d::VFIO_DEVICE_IOEVENTFD => "VFIO_DEVICE_IOEVENTFD",
        d::VFIO_DEVICE_FEATURE => "VFIO_DEVICE_FEATURE",
        _ => "unknown",
    }
}

/// The name of a VFIO request on a container or group fd.
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

fn read(arg: u64, len: usize) -> Option<Vec<u8>> {
    let mut b = vec![0u8; len];
    copy_from_process(arg, &mut b).ok()?;
    Some(b)
}

fn hex(v: u64) -> String {
    format!("{v:#x}")
}

/// The device name string GET_DEVICE_FD was given (at most 64 bytes shown).
fn name_at(arg: u64) -> Value {
    let mut out = Vec::new();
    for i in 0..64u64 {
        let mut b = [0u8; 1];
        if copy_from_process(arg + i, &mut b).is_err() || b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    json!(String::from_utf8_lossy(&out))
}

/// The arguments of a request as the caller passed them (before the call).
pub(crate) fn decode(request: u64, arg: u64) -> Value {
    let r = |len: usize| read(arg, len);
    match request {
        uapi::VFIO_CHECK_EXTENSION | uapi::VFIO_SET_IOMMU => json!({ "value": arg }),
        uapi::VFIO_IOMMU_MAP_DMA => r(uapi::MAP_MINSZ as usize).map_or(Value::Null, |b| {
            json!({ "argsz": get_u32(&b, off::ARGSZ), "flags": get_u32(&b, off::FLAGS),
                    "vaddr": hex(get_u64(&b, off::MAP_VADDR)),
                    "iova": hex(get_u64(&b, off::MAP_IOVA)), "size": hex(get_u64(&b, off::MAP_SIZE)) })
        }),
        uapi::VFIO_IOMMU_UNMAP_DMA => r(uapi::UNMAP_MINSZ as usize).map_or(Value::Null, |b| {
            json!({ "argsz": get_u32(&b, off::ARGSZ), "flags": get_u32(&b, off::FLAGS),
                    "iova": hex(get_u64(&b, off::UNMAP_IOVA)), "size": hex(get_u64(&b, off::UNMAP_SIZE)) })
        }),
        uapi::VFIO_IOMMU_DIRTY_PAGES => r(uapi::DIRTY_MINSZ as usize).map_or(Value::Null, |b| {
            let flags = get_u32(&b, off::FLAGS);
            let mut v = json!({ "argsz": get_u32(&b, off::ARGSZ), "flags": flags });
            if flags & raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP != 0 {
                let at = arg + off::DIRTY_DATA as u64;
                if let Some(g) = read(at, uapi::DIRTY_GET_SIZE as usize) {
                    v["iova"] = json!(hex(get_u64(&g, off::GET_IOVA)));
                    v["size"] = json!(hex(get_u64(&g, off::GET_SIZE)));
                    v["pgsize"] = json!(get_u64(&g, off::GET_BITMAP + off::BITMAP_PGSIZE));
                }
            }
            v
        }),
        uapi::VFIO_IOMMU_GET_INFO | uapi::VFIO_GROUP_GET_STATUS => {
            r(8).map_or(Value::Null, |b| {
                json!({ "argsz": get_u32(&b, off::ARGSZ), "flags": get_u32(&b, off::FLAGS) })
            })
        }
        uapi::VFIO_GROUP_SET_CONTAINER => r(4)
            .map_or(Value::Null, |b| json!({ "container_fd": i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) })),
        uapi::VFIO_GROUP_GET_DEVICE_FD => json!({ "name": name_at(arg) }),
        _ => json!({ "arg": hex(arg) }),
    }
}

/// Population count of the user bitmap of `bytes` bytes at `addr`.
fn popcount(addr: u64, bytes: u64) -> Option<u64> {
    let mut total = 0u64;
    let mut at = 0u64;
    while at < bytes {
        let n = (bytes - at).min(1 << 16);
        let b = read(addr + at, usize::try_from(n).ok()?)?;
        total += b.iter().map(|x| u64::from(x.count_ones())).sum::<u64>();
        at += n;
    }
    Some(total)
}

/// The GET_INFO capability chain as `[{id, version}]`, following `next` offsets (bounded).
fn caps(arg: u64, argsz: u32, cap_offset: u32) -> Value {
    let mut out = Vec::new();
    let mut at = cap_offset;
    for _ in 0..16 {
        if at == 0 || at.saturating_add(uapi::CAP_HEADER_SIZE) > argsz {
            break;
        }
        let Some(h) = read(arg + u64::from(at), uapi::CAP_HEADER_SIZE as usize) else {
            break;
        };
        let id = u16::from_ne_bytes([h[off::CAP_ID], h[off::CAP_ID + 1]]);
        let version = u16::from_ne_bytes([h[off::CAP_VERSION], h[off::CAP_VERSION + 1]]);
        out.push(json!({ "id": id, "version": version }));
        at = get_u32(&h, off::CAP_NEXT);
    }
    json!(out)
}

/// What a successful request wrote back, read after the call.
pub(crate) fn decode_out(request: u64, arg: u64) -> Option<Value> {
    match request {
        uapi::VFIO_IOMMU_UNMAP_DMA => {
            let b = read(arg, uapi::UNMAP_MINSZ as usize)?;
            let flags = get_u32(&b, off::FLAGS);
            let mut v = json!({ "size": hex(get_u64(&b, off::UNMAP_SIZE)) });
            if flags & raw::VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP != 0 {
                let bm = read(arg + off::UNMAP_DATA as u64, uapi::BITMAP_SIZE as usize)?;
                let size = get_u64(&bm, off::BITMAP_SIZE);
                let data = get_u64(&bm, off::BITMAP_DATA);
                v["bitmap_popcount"] = json!(popcount(data, size));
            }
            Some(v)
        }
        uapi::VFIO_IOMMU_GET_INFO => {
            let b = read(arg, uapi::INFO_MINSZ as usize)?;
            let argsz = get_u32(&b, off::ARGSZ);
            let flags = get_u32(&b, off::FLAGS);
            let mut v = json!({ "argsz": argsz, "flags": flags,
                                "iova_pgsizes": hex(get_u64(&b, off::INFO_PGSIZES)) });
            if flags & raw::VFIO_IOMMU_INFO_CAPS != 0 && argsz >= uapi::INFO_SIZE {
                let c = read(arg + off::INFO_CAP_OFFSET as u64, 4)?;
                v["caps"] = caps(arg, argsz, get_u32(&c, 0));
            }
            Some(v)
        }
        uapi::VFIO_IOMMU_DIRTY_PAGES => {
            let b = read(arg, uapi::DIRTY_MINSZ as usize)?;
            if get_u32(&b, off::FLAGS) & raw::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP == 0 {
                return None;
            }
            let g = read(arg + off::DIRTY_DATA as u64, uapi::DIRTY_GET_SIZE as usize)?;
            let size = get_u64(&g, off::GET_BITMAP + off::BITMAP_SIZE);
            let data = get_u64(&g, off::GET_BITMAP + off::BITMAP_DATA);
            Some(json!({ "bitmap_popcount": popcount(data, size) }))
        }
        uapi::VFIO_GROUP_GET_STATUS => {
            let b = read(arg, 8)?;
            Some(json!({ "flags": get_u32(&b, off::FLAGS) }))
        }
        _ => None,
    }
}
