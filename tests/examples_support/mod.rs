//! The example binaries, for tests that run them as separate OS processes.
//!
//! `cargo test` builds the examples with the test's own profile and features, so building
//! them again here is a no-op after it; a test run alone builds them once. The features must be
//! exactly the test binary's: another set would rebuild the library and overwrite the example
//! binaries with differently featured ones. `FEATURES` therefore names every feature of the
//! crate, and [`check_feature_list`] (called from a test) fails when Cargo.toml grows one.

#![allow(dead_code)] // each test binary uses a part of it

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Every feature of the crate, and whether this test binary was built with it.
pub const FEATURES: &[(&str, bool)] = &[
    ("redis", cfg!(feature = "redis")),
    ("test-kit", cfg!(feature = "test-kit")),
    ("axum", cfg!(feature = "axum")),
    ("tonic", cfg!(feature = "tonic")),
    ("postgres", cfg!(feature = "postgres")),
    ("sqlite", cfg!(feature = "sqlite")),
    ("jwt", cfg!(feature = "jwt")),
    ("dpop", cfg!(feature = "dpop")),
    ("metrics", cfg!(feature = "metrics")),
    ("ring", cfg!(feature = "ring")),
];

/// The path of example `name`, built (once per test binary) with this binary's profile and
/// features.
pub fn example_binary(name: &str) -> PathBuf {
    examples_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn examples_dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        // This binary is <target>/<profile>/deps/<name>; examples go to <target>/<profile>/examples.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target/<profile>/deps");
        let target_dir = profile_dir.parent().expect("target dir");
        let profile = profile_dir
            .file_name()
            .and_then(|n| n.to_str())
            .expect("profile");
        let features: Vec<&str> = FEATURES
            .iter()
            .filter(|(_, on)| *on)
            .map(|(f, _)| *f)
            .collect();
        let mut cmd = Command::new(env!("CARGO"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--quiet", "--examples", "--no-default-features"])
            .args(["--features", &features.join(",")])
            .arg("--target-dir")
            .arg(target_dir);
        match profile {
            "debug" => {}
            "release" => {
                cmd.arg("--release");
            }
            other => {
                cmd.args(["--profile", other]);
            }
        }
        let out = cmd.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("examples")
    })
}

/// Fails when Cargo.toml declares a feature `FEATURES` does not name.
pub fn check_feature_list() {
    let manifest =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .expect("read Cargo.toml");
    let section = manifest
        .split("\n[features]\n")
        .nth(1)
        .and_then(|s| s.split("\n[").next())
        .expect("a [features] section");
    let declared: Vec<&str> = section
        .lines()
        .filter_map(|l| l.split_once('=').map(|(name, _)| name.trim()))
        .filter(|name| !name.is_empty() && !name.starts_with('#') && *name != "default")
        .collect();
    assert!(declared.len() >= 3, "read the features: {declared:?}");
    for name in declared {
        assert!(
            FEATURES.iter().any(|(f, _)| *f == name),
            "feature `{name}` is missing from FEATURES in tests/examples_support/mod.rs"
        );
    }
}
