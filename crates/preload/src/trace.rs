//! Decoding of intercepted VFIO ioctls for the trace: the inputs as the caller passed them and
//! the outputs the call wrote back. Field offsets come from `vfio-bindings` (`type1::uapi::off`).
//!
//! One line per ioctl: `{"fd", "request", "request_nr", "args", "out", "result", "errno",
//! "duration_ns", "t_us", "pid"}`; `out` is present on success for requests that write back.

use std::mem::{offset_of, size_of};

use serde_json::{json, Value};
use type1::uapi::{self, get_u32, get_u64, off, raw};
use type1::usercopy::copy_from_process;

/// `struct vfio_group_status` (argsz, flags).
type GroupStatus = raw::vfio_group_status;
/// `struct vfio_iommu_type1_info`.
type Info = raw::vfio_iommu_type1_info;
/// `offsetofend(struct vfio_iommu_type1_info, flags)`: what GET_INFO's caller fills in.
const INFO_HEAD: usize = offset_of!(Info, flags) + size_of::<u32>();

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

/// Reads a native-endian `u16` at `at` (`type1::uapi` has the `u32` and `u64` readers).
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
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
        // argsz and flags only (what the caller passes in).
        uapi::VFIO_IOMMU_GET_INFO => r(INFO_HEAD).map_or(Value::Null, |b| {
            json!({ "argsz": get_u32(&b, offset_of!(Info, argsz)),
                    "flags": get_u32(&b, offset_of!(Info, flags)) })
        }),
        uapi::VFIO_GROUP_GET_STATUS => r(size_of::<GroupStatus>()).map_or(Value::Null, |b| {
            json!({ "argsz": get_u32(&b, offset_of!(GroupStatus, argsz)),
                    "flags": get_u32(&b, offset_of!(GroupStatus, flags)) })
        }),
        // The argument is a pointer to the container fd, a C `int`.
        uapi::VFIO_GROUP_SET_CONTAINER => r(size_of::<libc::c_int>()).map_or(Value::Null, |b| {
            json!({ "container_fd": i32::from_ne_bytes(b.try_into().unwrap_or_default()) })
        }),
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
        let id = get_u16(&h, off::CAP_ID);
        let version = get_u16(&h, off::CAP_VERSION);
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
            let argsz = get_u32(&b, offset_of!(Info, argsz));
            let flags = get_u32(&b, offset_of!(Info, flags));
            let mut v = json!({ "argsz": argsz, "flags": flags,
                                "iova_pgsizes": hex(get_u64(&b, off::INFO_PGSIZES)) });
            if flags & raw::VFIO_IOMMU_INFO_CAPS != 0 && argsz >= uapi::INFO_SIZE {
                let whole = read(arg, uapi::INFO_SIZE as usize)?;
                v["caps"] = caps(arg, argsz, get_u32(&whole, off::INFO_CAP_OFFSET));
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
            let b = read(arg, size_of::<GroupStatus>())?;
            Some(json!({ "flags": get_u32(&b, offset_of!(GroupStatus, flags)) }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr_of<T>(v: &T) -> u64 {
        std::ptr::from_ref(v) as u64
    }

    #[test]
    fn group_status_is_decoded_from_vfio_group_status_before_and_after_the_call() {
        let s = raw::vfio_group_status {
            argsz: 8,
            flags: raw::VFIO_GROUP_FLAGS_VIABLE,
        };
        let before = decode(uapi::VFIO_GROUP_GET_STATUS, addr_of(&s));
        let after = decode_out(uapi::VFIO_GROUP_GET_STATUS, addr_of(&s));
        assert_eq!(before, json!({ "argsz": 8, "flags": 1 }));
        assert_eq!(after, Some(json!({ "flags": 1 })));
    }

    #[test]
    fn set_container_shows_the_int_the_argument_points_to() {
        let fd: libc::c_int = -7;
        let v = decode(uapi::VFIO_GROUP_SET_CONTAINER, addr_of(&fd));
        assert_eq!(v, json!({ "container_fd": -7 }));
    }

    #[test]
    fn get_info_output_follows_the_capability_chain_from_cap_offset() {
        // A vfio_iommu_type1_info followed by one DMA_AVAIL capability (id 3, version 1).
        #[repr(C)]
        struct InfoWithCap {
            info: raw::vfio_iommu_type1_info,
            cap: raw::vfio_iommu_type1_info_dma_avail,
        }
        let mut v = InfoWithCap {
            info: raw::vfio_iommu_type1_info::default(),
            cap: raw::vfio_iommu_type1_info_dma_avail::default(),
        };
        v.info.argsz = u32::try_from(size_of::<InfoWithCap>()).unwrap();
        v.info.flags = raw::VFIO_IOMMU_INFO_PGSIZES | raw::VFIO_IOMMU_INFO_CAPS;
        v.info.iova_pgsizes = 4096;
        v.info.cap_offset = uapi::INFO_SIZE;
        v.cap.header.id = 3;
        v.cap.header.version = 1;
        let out = decode_out(uapi::VFIO_IOMMU_GET_INFO, addr_of(&v)).unwrap();
        assert_eq!(out["caps"], json!([{ "id": 3, "version": 1 }]));
        assert_eq!(out["iova_pgsizes"], json!("0x1000"));
    }
}
