//! Tidy checks of the workspace itself: the layering rules of `docs/architecture.md`, a README
//! per crate, and a `//!` line atop every Rust file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The internal crates a manifest names in one section (`[dependencies]`, `[dev-dependencies]`).
fn internal_deps(manifest: &str, section: &str) -> BTreeSet<String> {
    let mut in_section = false;
    let mut deps = BTreeSet::new();
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == format!("[{section}]");
            continue;
        }
        if in_section && line.starts_with("taskctx") {
            let name: String = line
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            deps.insert(name);
        }
    }
    deps
}

fn crates() -> Vec<(String, String)> {
    let mut crates: Vec<(String, String)> = fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let manifest = fs::read_to_string(path.join("Cargo.toml")).unwrap();
            (name, manifest)
        })
        .collect();
    crates.sort();
    crates
}

/// What each crate may depend on (normal dependencies), per DESIGN.md.
fn allowed(name: &str) -> Option<&'static [&'static str]> {
    const DOMAIN_AND_STORE: &[&str] = &["taskctx-domain", "taskctx-store"];
    match name {
        "taskctx-domain" => Some(&[]),
        "taskctx-store" => Some(&["taskctx-domain"]),
        "taskctx-testkit" | "taskctx-app" | "taskctx-layers" => Some(DOMAIN_AND_STORE),
        n if n.starts_with("taskctx-store-") => Some(DOMAIN_AND_STORE),
        "taskctx-cli" => Some(&["taskctx"]),
        // The facade sees every layer but never the CLI or the testkit.
        "taskctx" => None,
        _ => Some(&[]),
    }
}

#[test]
fn dependencies_only_point_down_the_layers() {
    let mut violations = Vec::new();
    for (name, manifest) in crates() {
        let deps = internal_deps(&manifest, "dependencies");
        match allowed(&name) {
            Some(allowed) => {
                for dep in &deps {
                    if !allowed.contains(&dep.as_str()) {
                        violations.push(format!("{name} depends on {dep}"));
                    }
                }
            }
            None => {
                for forbidden in ["taskctx-cli", "taskctx-testkit"] {
                    if deps.contains(forbidden) {
                        violations.push(format!("{name} depends on {forbidden}"));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations: {violations:#?}"
    );
}

#[test]
fn the_testkit_is_only_ever_a_dev_dependency() {
    for (name, manifest) in crates() {
        assert!(
            !internal_deps(&manifest, "dependencies").contains("taskctx-testkit"),
            "{name} has taskctx-testkit as a normal dependency"
        );
    }
}

#[test]
fn every_crate_has_a_readme_that_is_its_crate_doc() {
    for (name, _) in crates() {
        let dir = root().join("crates").join(&name);
        let readme = fs::read_to_string(dir.join("README.md"))
            .unwrap_or_else(|_| panic!("{name} has no README.md"));
        assert!(readme.lines().count() > 3, "{name}'s README is a stub");
        let lib = dir.join("src/lib.rs");
        if lib.exists() {
            let text = fs::read_to_string(lib).unwrap();
            assert!(
                text.starts_with("#![doc = include_str!(\"../README.md\")]"),
                "{name}/src/lib.rs does not use its README as crate docs"
            );
        }
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "snapshots" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_by_saying_what_it_owns() {
    let mut files = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root().join(dir), &mut files);
    }
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = fs::read_to_string(path).unwrap();
            let first = text.lines().next().unwrap_or("");
            !(first.starts_with("//!") || first.starts_with("#![doc = include_str!"))
        })
        .map(|p| p.strip_prefix(root()).unwrap().display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "files without a leading //! line: {missing:#?}"
    );
}
