//! `type1 migrate` end to end (issue 5): small migrations in both dirty modes, JSON and SVG
//! output, and a test-only fault that drops one dirty bit, which verification must catch.

use std::process::Command;

fn type1() -> Command {
    Command::new(env!("CARGO_BIN_EXE_type1"))
}

fn small(mode: &str) -> Command {
    let mut c = type1();
    c.args([
        "migrate",
        "--guest-size",
        "16M",
        "--hot-set",
        "4M",
        "--rounds",
        "4",
        "--threshold",
        "16",
        "--iommu-write-rate",
        "20000",
        "--emulated-write-rate",
        "5000",
        "--dirty-mode",
        mode,
    ]);
    c
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON document")
}

#[test]
fn small_migrations_verify_in_both_modes() {
    let out = small("both").arg("--json").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc = json(&out);
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    for r in runs {
        assert!(r["mismatches"].as_array().unwrap().is_empty());
        let rounds = r["rounds"].as_array().unwrap();
        assert!(rounds.len() >= 2);
        assert!(rounds.last().unwrap()["final_round"].as_bool().unwrap());
        assert_eq!(rounds[0]["copied_pages"], 4096, "round 0 copies all 16 MiB");
    }
    // Kernel-exact reports every mapped page each round (an IOMMU group that never pins);
    // precise reports far fewer.
    let reported = |r: &serde_json::Value| -> Vec<u64> {
        r["rounds"].as_array().unwrap()[1..]
            .iter()
            .map(|x| x["reported_pages"].as_u64().unwrap())
            .collect()
    };
    assert!(
        reported(&runs[0]).iter().all(|&n| n == 4096),
        "{:?}",
        reported(&runs[0])
    );
    let p = reported(&runs[1]);
    assert!(p.iter().all(|&n| n < 4096), "{p:?}");
}

#[test]
fn text_report_and_plot() {
    let svg = std::env::temp_dir().join(format!("type1-migrate-{}.svg", std::process::id()));
    let out = small("precise").arg("--plot").arg(&svg).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mode precise"), "{text}");
    assert!(text.contains("verified: destination == source"), "{text}");
    assert!(text.contains("final"), "{text}");
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(chart.starts_with("<svg") && chart.contains("polyline"));
    let _ = std::fs::remove_file(svg);
}

#[test]
fn a_dropped_dirty_bit_fails_verification_and_names_the_page() {
    for mode in ["kernel-exact", "precise"] {
        let out = small(mode)
            .args(["--drop-dirty-bit", "--json"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{mode}: a lost dirty page must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("verification failed"), "{stderr}");
        let doc = json(&out);
        let mm = doc["runs"][0]["mismatches"].as_array().unwrap().clone();
        assert_eq!(mm.len(), 1, "{mode}: exactly the dropped page differs");
        assert!(
            stderr.contains(&format!("page {}", mm[0]["page"])),
            "{stderr}"
        );
        assert!(mm[0]["last_copied_round"].as_u64().is_some());
    }
}

#[test]
fn bad_arguments_are_clear_errors() {
    let out = type1()
        .args(["migrate", "--guest-size", "3M"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 2 MiB"));
    let out = type1()
        .args(["migrate", "--guest-size", "lots"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a size"));
}
