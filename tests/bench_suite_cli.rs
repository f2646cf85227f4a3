//! `type1 bench`, the performance suite, is built only with the `bench-baselines` feature (its
//! same-run vm-memory baselines and the counting global allocator stay out of the product):
//! with the feature it prints every figure beside its baselines; without it, it refuses and
//! says how to build it. One of the two tests below runs in every build.

use std::process::{Command, Output};

fn suite(json: bool) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_type1"));
    c.args(["bench", "--budget-ms", "20"]);
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

#[cfg(not(feature = "bench-baselines"))]
#[test]
fn the_product_refuses_the_suite_and_names_the_feature() {
    let out = suite(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the suite ran: {stderr}");
    assert!(out.stdout.is_empty());
    assert!(
        stderr.contains("--features bench-baselines -- bench"),
        "{stderr}"
    );
}

#[cfg(feature = "bench-baselines")]
#[test]
fn the_suite_prints_its_same_run_baselines_and_heap_figures() {
    let out = suite(true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let named = |f: &serde_json::Value, key: &str, text: &str| {
        f[key].as_str().is_some_and(|n| n.contains(text))
            || f[key][0].as_str().is_some_and(|n| n.contains(text))
    };
    // vm-memory's Iotlb, measured in this run beside the IOTLB hit.
    let hit = figures
        .iter()
        .find(|f| named(f, "name", "translate, IOTLB hit"))
        .expect("IOTLB hit figure");
    assert!(named(hit, "baseline", "vm-memory Iotlb::lookup"), "{hit}");
    assert!(
        hit["baseline"][1].as_f64().is_some_and(|v| v > 0.0),
        "{hit}"
    );
    // vm-memory's AtomicBitmap.
    assert!(figures
        .iter()
        .any(|f| named(f, "name", "vm-memory AtomicBitmap")
            && f["value"].as_f64().is_some_and(|v| v > 0.0)));
    // The counting allocator: live heap per mapping is measured, not zero.
    let heap = figures
        .iter()
        .find(|f| named(f, "name", "heap per 4K mapping"))
        .expect("heap figure");
    assert!(heap["value"].as_f64().is_some_and(|v| v > 0.0), "{heap}");
}
