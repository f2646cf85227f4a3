//! What the CLI's test harnesses share.

#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;

pub(crate) mod qmp;

/// `libtype1_preload.so` of this build: beside the `type1` binary or in `deps/`, whichever is
/// newer (as `type1 run` looks for it).
pub(crate) fn preload_lib() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_BIN_EXE_type1"))
        .parent()
        .unwrap()
        .to_path_buf();
    let cands = [
        dir.join("libtype1_preload.so"),
        dir.join("deps/libtype1_preload.so"),
    ];
    // The newer of the two is this build's (as `type1 run` chooses).
    cands
        .into_iter()
        .filter_map(|c| Some((std::fs::metadata(&c).ok()?.modified().ok()?, c)))
        .max_by_key(|(t, _)| *t)
        .map(|(_, c)| c)
        .unwrap_or_else(|| panic!("libtype1_preload.so missing from {}", dir.display()))
}
