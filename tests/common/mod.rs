//! What the CLI's test harnesses share.

#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;

/// `libtype1_preload.so` of this build: beside the `type1` binary, or in `deps/` when the
/// drop-in was built only as a dependency (as `type1 run` looks for it).
pub(crate) fn preload_lib() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_type1"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cands = [
        dir.join("libtype1_preload.so"),
        dir.join("deps/libtype1_preload.so"),
    ];
    cands
        .iter()
        .find(|c| c.is_file())
        .unwrap_or_else(|| panic!("libtype1_preload.so missing from {}", dir.display()))
        .clone()
}
