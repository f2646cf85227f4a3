//! Which drop-in `type1 run` preloads: a release build carries its own (`build.rs`) and writes
//! it to a private per-user cache file, so an installed `type1` needs nothing beside it; a debug
//! build takes the one cargo built beside it. The library's path stays valid in grandchildren.

use std::path::{Path, PathBuf};
use std::process::Command;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("type1-preload-lib-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `type1 run -- sh -c SCRIPT` with `XDG_CACHE_HOME=cache` and no `TYPE1_PRELOAD_LIB`.
fn run_sh(cache: &Path, script: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["run", "--group", "7:iommu", "--", "sh", "-c", script])
        .env_remove("TYPE1_PRELOAD_LIB")
        .env_remove("LD_PRELOAD")
        .env("XDG_CACHE_HOME", cache)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[cfg(type1_embedded_preload)]
#[test]
fn a_release_build_preloads_its_carried_copy_from_a_private_cache() {
    use std::os::unix::fs::PermissionsExt;
    let cache = scratch("release");
    let lib = PathBuf::from(run_sh(&cache, "echo $LD_PRELOAD").trim());
    let dir = cache.join("type1");
    assert_eq!(lib.parent(), Some(dir.as_path()), "{}", lib.display());
    let name = lib.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("libtype1_preload-") && name.ends_with(".so"),
        "{name}"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&lib), 0o755);
    // A second run reuses the file; a corrupted one is replaced before it is preloaded.
    let before = std::fs::read(&lib).unwrap();
    std::fs::write(&lib, b"not an ELF file").unwrap();
    assert_eq!(
        run_sh(&cache, "echo $LD_PRELOAD").trim(),
        lib.to_str().unwrap()
    );
    assert_eq!(std::fs::read(&lib).unwrap(), before);
    let _ = std::fs::remove_dir_all(cache);
}

#[cfg(not(type1_embedded_preload))]
#[test]
fn a_debug_build_preloads_the_library_cargo_built_beside_it() {
    let cache = scratch("debug");
    let lib = PathBuf::from(run_sh(&cache, "echo $LD_PRELOAD").trim());
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_type1")).parent().unwrap();
    assert!(lib.starts_with(bin_dir), "{}", lib.display());
    assert!(lib.ends_with("libtype1_preload.so"), "{}", lib.display());
    assert!(
        !cache.join("type1").exists(),
        "a debug build wrote a cache file"
    );
    let _ = std::fs::remove_dir_all(cache);
}

#[test]
fn the_library_stays_loaded_in_grandchildren() {
    let cache = scratch("grandchild");
    // sh (the program) starts sh, which starts cat: cat is the program's grandchild.
    let out = run_sh(
        &cache,
        r#"echo "$LD_PRELOAD"; sh -c 'cat /proc/self/maps; true'; true"#,
    );
    let (lib, maps) = out.split_once('\n').unwrap();
    assert!(!lib.is_empty());
    assert!(
        maps.lines().any(|l| l.ends_with(lib)),
        "{lib} not mapped in the grandchild:\n{maps}"
    );
    let _ = std::fs::remove_dir_all(cache);
}
