//! The crate's architecture, checked: modules import downwards only, and no two modules import
//! each other, directly or through others.
//!
//! Each file of `src/` is a module. A file imports another when it names a path into it
//! (`use crate::x::...`, `super::...`, a child module, or an inline `crate::x::...` path; a
//! re-export counts). Comments and `#[cfg(test)] mod tests` are left out. Every module sits on
//! a floor (below); an import may point at the same floor or lower, and the graph must have no
//! cycle. A new module must be given a floor here, which is the point: where it sits is a
//! decision, written down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The floors, bottom up. A module not listed inherits its parent's floor.
const FLOORS: &[(&str, &[&str])] = &[
    (
        "protocol rules",
        &[
            "clock", "codes", "ids", "scope", "error", "grant", "family", "dpop",
            // Metric names, audit event types and the emission helpers: ids and codes only.
            "observe",
        ],
    ),
    ("store", &["store"]),
    (
        "shared configuration and plumbing",
        &[
            "form",
            "client_addr",
            "cross_site",
            "browser",
            "limits",
            "client_auth",
            "end_user",
            "account_status",
            "page",
            "sign_in",
            "config",
            "response",
            "audience",
            "jwt",
            "replay",
            // The audit sink and the gauge's schedule, shared by the config and the limiter.
            "observer",
        ],
    ),
    (
        "endpoints and the bearer layer",
        &[
            "device_authorization",
            "token",
            "verification",
            "connected_devices",
            "bearer",
            "revocation",
            "introspection",
            "metadata",
            "axum",
            "jwks",
            "resource_server",
        ],
    ),
    (
        "the builder and the endpoints layer",
        &["endpoints", "flow"],
    ),
];

type Module = Vec<String>;

fn modules(src: &Path) -> BTreeMap<Module, String> {
    fn walk(dir: &Path, src: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, src, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src).unwrap().with_extension("");
                let mut m: Module = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if m.last().is_some_and(|l| l == "mod") || m == ["lib"] {
                    m.pop();
                }
                out.insert(m, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(src, src, &mut out);
    out
}

/// The code of a file without comments and without its unit tests: `mod tests` under a
/// `#[cfg(...)]` line that names `test` (`#[cfg(test)]`, `#[cfg(all(test, feature = "x"))]`).
fn code(text: &str) -> String {
    let tests = text.match_indices("\nmod tests").find_map(|(i, _)| {
        let attribute = text[..i].rsplit('\n').next().unwrap_or("");
        (attribute.starts_with("#[cfg(") && attribute.contains("test")).then(|| i - attribute.len())
    });
    let text = match tests {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        return vec![path.to_owned()];
    };
    let prefix = &tree[..open];
    // (A "use " inside a string literal may bring text with no closing brace after this.)
    let close = tree.rfind('}').filter(|&c| c > open).unwrap_or(tree.len());
    let inner = &tree[open + 1..close];
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in inner.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    parts.push(cur);
    parts
        .iter()
        .filter(|p| !p.trim().is_empty())
        .flat_map(|p| expand(p))
        .map(|p| {
            if p == "self" {
                prefix.trim_end_matches("::").to_owned()
            } else {
                format!("{prefix}{p}")
            }
        })
        .collect()
}

/// The module a path points into, seen from module `from`.
fn resolve(from: &Module, path: &str, modules: &BTreeMap<Module, String>) -> Option<Module> {
    let mut segs: Vec<&str> = path.split("::").map(str::trim).collect();
    let mut base: Module = match segs[0] {
        "crate" => {
            segs.remove(0);
            Vec::new()
        }
        "super" | "self" => {
            let mut base = from.clone();
            while let Some(&s) = segs.first() {
                match s {
                    "super" => {
                        base.pop();
                    }
                    "self" => {}
                    _ => break,
                }
                segs.remove(0);
            }
            base
        }
        child => {
            let mut m = from.clone();
            m.push(child.to_owned());
            if !modules.contains_key(&m) {
                return None; // an external crate or a local item
            }
            from.clone()
        }
    };
    let mut best = base.clone();
    for s in segs {
        base.push(s.to_owned());
        if modules.contains_key(&base) {
            best = base.clone();
        }
    }
    Some(best)
}

fn imports(modules: &BTreeMap<Module, String>) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut graph = BTreeMap::new();
    for (m, text) in modules {
        let code = code(text);
        let mut targets = BTreeSet::new();
        let mut rest = code.as_str();
        // `use` declarations (including `pub use` re-exports).
        while let Some(i) = rest.find("use ") {
            let before = rest[..i].chars().last();
            rest = &rest[i + 4..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let end = rest.find(';').unwrap_or(rest.len());
            for path in expand(&rest[..end]) {
                if let Some(t) = resolve(m, &path, modules) {
                    targets.insert(t);
                }
            }
            rest = &rest[end..];
        }
        // Inline paths such as `crate::config::Shared` in a macro body or an expression.
        for (i, _) in code.match_indices("crate::") {
            if code[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                continue;
            }
            let path: String = code[i..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            if let Some(t) = resolve(m, path.trim_end_matches(':'), modules) {
                targets.insert(t);
            }
        }
        targets.remove(m);
        graph.insert(m.clone(), targets);
    }
    graph
}

fn floor(m: &Module) -> Option<usize> {
    if m.is_empty() {
        return Some(FLOORS.len()); // lib.rs: the crate root, above everything
    }
    FLOORS
        .iter()
        .position(|(_, names)| names.contains(&m[0].as_str()))
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

fn graph() -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    imports(&modules(&src))
}

#[test]
fn every_module_has_a_floor() {
    let unplaced: Vec<_> = graph()
        .keys()
        .filter(|m| floor(m).is_none())
        .map(name)
        .collect();
    assert!(
        unplaced.is_empty(),
        "give these modules a floor in tests/layering.rs: {unplaced:?}"
    );
}

#[test]
fn imports_point_down_or_across_only() {
    let mut upward = Vec::new();
    for (m, targets) in graph() {
        for t in targets {
            if let (Some(from), Some(to)) = (floor(&m), floor(&t)) {
                if to > from {
                    upward.push(format!(
                        "{} ({}) imports {} ({})",
                        name(&m),
                        FLOORS.get(from).map_or("root", |f| f.0),
                        name(&t),
                        FLOORS.get(to).map_or("root", |f| f.0),
                    ));
                }
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
}

#[test]
fn no_module_imports_the_crate_root() {
    let offenders: Vec<_> = graph()
        .into_iter()
        .filter(|(m, targets)| !m.is_empty() && targets.contains(&Vec::new()))
        .map(|(m, _)| name(&m))
        .collect();
    assert!(
        offenders.is_empty(),
        "these modules use the crate root's re-exports (name the owning module instead): {offenders:?}"
    );
}

#[test]
fn no_import_cycles() {
    let graph = graph();
    // Depth-first search for a back edge; report the cycle it closes.
    fn visit(
        m: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        stack: &mut Vec<Module>,
        done: &mut BTreeSet<Module>,
        cycles: &mut Vec<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(pos) = stack.iter().position(|s| s == m) {
            let mut cycle: Vec<_> = stack[pos..].iter().map(name).collect();
            cycle.push(name(m));
            cycles.push(cycle.join(" -> "));
            return;
        }
        stack.push(m.clone());
        for t in graph.get(m).into_iter().flatten() {
            visit(t, graph, stack, done, cycles);
        }
        stack.pop();
        done.insert(m.clone());
    }
    let (mut done, mut cycles) = (BTreeSet::new(), Vec::new());
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    // The checker itself must find what it is looking for, or every test above passes vacuously.
    let graph = graph();
    let token = graph.get(&vec!["token".to_owned()]).expect("token module");
    assert!(token.contains(&vec!["config".to_owned()]));
    assert!(token.contains(&vec!["grant".to_owned()]));
    let root = graph.get(&Vec::new()).expect("crate root");
    assert!(root.contains(&vec!["flow".to_owned()]));
    let memory = graph
        .get(&vec!["store".to_owned(), "memory".to_owned()])
        .expect("memory store");
    assert!(memory.contains(&vec!["store".to_owned(), "traits".to_owned()]));
    assert_eq!(
        expand("crate::{a::B, c::{d, e::F as G}}"),
        ["crate::a::B", "crate::c::d", "crate::c::e::F"]
    );
}

#[test]
fn the_readme_map_names_every_module_on_its_floor() {
    // The README's "Project layout" is the newcomer's map: it must list every top-level module
    // on the floor it sits on here, and nothing that is not there.
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let start = readme
        .find("```text\nsrc/\n")
        .expect("the README's project layout block");
    let block = &readme[start..];
    let block = &block[..block[8..].find("```").expect("end of the block") + 8];
    let mut listed: Vec<BTreeSet<String>> = Vec::new();
    for line in block.lines() {
        let t = line.trim();
        if t.starts_with("# ")
            && t[2..]
                .split('.')
                .next()
                .is_some_and(|n| n.parse::<usize>().is_ok())
        {
            listed.push(BTreeSet::new());
        } else if let (Some(floor), Some(entry)) = (listed.last_mut(), t.split_whitespace().next())
        {
            if line.starts_with("  ") {
                let top = entry
                    .split('/')
                    .next()
                    .unwrap_or(entry)
                    .trim_end_matches(".rs");
                floor.insert(top.to_owned());
            }
        }
    }
    assert_eq!(
        listed.len(),
        FLOORS.len(),
        "one README floor per floor here"
    );
    for (i, (name, members)) in FLOORS.iter().enumerate() {
        let expected: BTreeSet<String> = members.iter().map(|m| m.to_string()).collect();
        assert_eq!(listed[i], expected, "README floor {} ({name})", i + 1);
    }
    // And every top-level module of src/ is on some floor (so in the map).
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for m in modules(&src).keys() {
        if let Some(top) = m.first() {
            assert!(
                listed.iter().any(|f| f.contains(top)),
                "src/{top} is missing from the README's project layout"
            );
        }
    }
}

#[test]
fn unit_test_modules_are_left_out_whatever_their_cfg() {
    let file =
        "use crate::a;\n#[cfg(all(test, feature = \"x\"))]\nmod tests {\n    use crate::b;\n}\n";
    assert_eq!(code(file), "use crate::a;");
    let file = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\n";
    assert_eq!(code(file), "use crate::a;");
    // A module merely named `tests` but not test-only is code.
    let file = "#[doc(hidden)]\nmod tests {\n    use crate::b;\n}\n";
    assert!(code(file).contains("crate::b"));
}
