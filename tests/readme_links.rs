//! Every link in the README works from the published crate: relative links and images point at
//! files that exist inside the package (this test also runs from `cargo package`'s output in
//! CI, where excluded files are missing), nothing points outside the repository, and every
//! in-page anchor names a heading.

use std::collections::HashSet;
use std::path::Path;

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md is packaged")
}

/// Link targets: `](target)` of Markdown links and images, and `src="target"` of HTML images.
fn targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(after[..end].trim().to_string());
            rest = &after[end..];
        }
        let mut rest = line;
        while let Some(i) = rest.find("src=\"") {
            let after = &rest[i + 5..];
            let end = after.find('"').unwrap_or(after.len());
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// GitHub's (and crates.io's) anchor for a heading.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn headings(text: &str) -> HashSet<String> {
    let mut in_code = false;
    let mut out = HashSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

#[test]
fn relative_links_point_at_packaged_files() {
    let text = readme();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let links = targets(&text);
    let relative: Vec<_> = links
        .iter()
        .filter(|t| !t.starts_with("http://") && !t.starts_with("https://") && !t.starts_with('#'))
        .collect();
    assert!(
        relative.len() >= 10,
        "the README links its examples, sources and screenshots: {relative:?}"
    );
    for target in relative {
        assert!(
            !target.starts_with("../") && !target.starts_with('/') && !target.contains("/../"),
            "{target} points outside the crate"
        );
        let path = target.split('#').next().unwrap_or(target);
        assert!(
            root.join(path).exists(),
            "README links {target}, which is not in the package"
        );
    }
}

#[test]
fn anchors_name_headings() {
    let text = readme();
    let headings = headings(&text);
    for target in targets(&text) {
        if let Some(anchor) = target.strip_prefix('#') {
            assert!(
                headings.contains(anchor),
                "README links #{anchor}, but no heading has that anchor"
            );
        }
    }
}

#[test]
fn the_demo_contract_is_documented_inside_the_repository() {
    let contract = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/DEMO_CONTRACT.md");
    let text = std::fs::read_to_string(contract).expect("docs/DEMO_CONTRACT.md is packaged");
    for route in [
        "/device_authorization",
        "/token",
        "/device",
        "/metrics",
        "/account/devices",
    ] {
        assert!(text.contains(route), "the contract documents {route}");
    }
    assert!(readme().contains("](docs/DEMO_CONTRACT.md)"));
}
