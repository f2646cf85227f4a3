//! Build script of the `type1` binary: in release builds it builds the drop-in
//! (`libtype1_preload.so`) and hands it to `src/preload_lib.rs`, which embeds it, so an installed
//! `type1` (`cargo install --path .`, which installs binaries only) can still `type1 run`.
//!
//! The drop-in is built by a nested `cargo build --release -p type1-preload --lib` with a target
//! directory of its own (under the release directory, shared by the `release` and `bench`
//! profiles), without debug information (it would triple the size of the `type1` binary). Debug
//! builds, `cargo check` and `cargo clippy` skip it: they find the drop-in cargo builds beside the
//! binary. `TYPE1_EMBED_PRELOAD=0` skips it in release builds too (then `type1 run` needs the
//! library beside the binary or `TYPE1_PRELOAD_LIB`); `TYPE1_EMBED_PRELOAD=1` forces it in debug
//! builds.
//!
//! The nested build uses the workspace's `Cargo.lock` and the crates the outer build has already
//! downloaded, so it works offline whenever the outer build does; it joins the outer build's
//! jobserver (`CARGO_MAKEFLAGS`), so it never runs more jobs than `-j` allows.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// FNV-1a, 64 bits: names the cache file the drop-in is written to at run time, so two `type1`
/// builds never share one (a collision only costs a rewrite: the file is compared before use).
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(type1_embedded_preload)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TYPE1_EMBED_PRELOAD");
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let embed = match env::var("TYPE1_EMBED_PRELOAD").as_deref() {
        Ok("0") => false,
        Ok("1") => true,
        _ => release,
    };
    if !embed {
        return;
    }
    let root = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    // Every path dependency of the drop-in lives under crates/; crates.io ones change only with
    // Cargo.lock. A change under crates/ that does not touch the drop-in costs a no-op nested
    // build (well under a second) and no relink: the copy below keeps its timestamp.
    for p in ["crates", "Cargo.toml", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={p}");
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR is <target-dir>[/<triple>]/<profile-dir>/build/<pkg>-<hash>/out; the nested
    // target directory sits in <profile-dir>, so `release` and `bench` (one profile directory,
    // two OUT_DIRs) share it. Fall back to OUT_DIR if the layout ever differs.
    let nested = out
        .ancestors()
        .nth(3)
        .filter(|d| out.strip_prefix(d).is_ok_and(|r| r.starts_with("build")))
        .map_or_else(|| out.join("preload-target"), |d| d.join("type1-preload"));
    let target = env::var("TARGET").expect("TARGET");
    let host = env::var("HOST").expect("HOST");
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["-p", "type1-preload", "--lib"])
        .arg("--target-dir")
        .arg(&nested)
        .args(["--config", "profile.release.debug=false"]);
    if target != host {
        cmd.args(["--target", &target]);
    }
    // Not a clippy or other wrapper run of the drop-in: a plain build.
    cmd.env_remove("RUSTC_WORKSPACE_WRAPPER");
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("type1 build script: cannot run cargo to build the drop-in: {e}")
    });
    assert!(
        status.success(),
        "type1 build script: building the drop-in (libtype1_preload.so) to embed it failed; \
         TYPE1_EMBED_PRELOAD=0 builds type1 without it (type1 run then needs the library beside \
         the binary or TYPE1_PRELOAD_LIB)"
    );
    let mut built = nested;
    if target != host {
        built.push(&target);
    }
    built.push("release/libtype1_preload.so");
    let bytes = std::fs::read(&built)
        .unwrap_or_else(|e| panic!("type1 build script: reading {}: {e}", built.display()));
    let copy = out.join("libtype1_preload.so");
    // Rewrite only on change: include_bytes! makes the copy's timestamp a dependency of the
    // binary, so an unchanged drop-in relinks nothing.
    if std::fs::read(&copy).ok().as_deref() != Some(&bytes[..]) {
        write(&copy, &bytes);
    }
    println!("cargo::rustc-cfg=type1_embedded_preload");
    println!(
        "cargo::rustc-env=TYPE1_PRELOAD_HASH={:016x}",
        fnv1a64(&bytes)
    );
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes)
        .unwrap_or_else(|e| panic!("type1 build script: writing {}: {e}", path.display()));
}
