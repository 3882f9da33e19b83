//! The workspace's layout rules, checked on its sources: every module says its job in a
//! `//!` line; this crate's modules, and the evaluator's top-level modules, depend on
//! each other one way only; gRPC statuses are made in one place and errors put on one
//! line by one function; ARCHITECTURE.md's code map names every top-level module and
//! nothing that is not in the tree.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`crate::cli::serve`) → its file, for every file under this crate's `src/`.
fn modules() -> BTreeMap<String, PathBuf> {
    modules_of("runtime-service")
}

/// The workspace's root directory.
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Module path → file, for every file under `src/` of the workspace crate `name`.
fn modules_of(name: &str) -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    let src = workspace().join(name).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|file| {
            let rel = file.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            if parts
                .last()
                .is_some_and(|p| p == "mod" || p == "main" || p == "lib")
            {
                parts.pop();
            }
            let name = std::iter::once("crate".to_string())
                .chain(parts)
                .collect::<Vec<_>>()
                .join("::");
            (name, file)
        })
        .collect()
}

/// The code of a file before its first `#[cfg(test)]` (tests sit at the end and use
/// their parent), without comments, string and character literals.
fn code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let text = &text[..text.find("#[cfg(test)]").unwrap_or(text.len())];
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !out.ends_with(|p: char| p.is_alphanumeric() || p == '_')
        {
            // A raw string: r"…" or r#"…"#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let close: Vec<char> = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            j += 1;
            while j < chars.len() && !chars[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), else a lifetime.
            let end = if next == Some('\\') {
                chars[i + 2..]
                    .iter()
                    .position(|&c| c == '\'')
                    .map(|p| i + 2 + p)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match end {
                Some(end) => i = end + 1,
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Every `a::b::c` path in `code`, as its segments.
fn paths(code: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !is_ident(bytes[i]) || (i > 0 && (is_ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let mut segments = Vec::new();
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && is_ident(bytes[j]) {
                j += 1;
            }
            segments.push(code[start..j].to_string());
            if code[j..].starts_with("::") && bytes.get(j + 2).is_some_and(|&b| is_ident(b)) {
                j += 2;
            } else {
                break;
            }
        }
        if segments.len() > 1 {
            found.push(segments);
        }
        i = j.max(i + 1);
    }
    found
}

/// Module → the modules it names: its children (`mod x;`) and whatever its `crate::`,
/// `super::`, `self::` and child-module paths lead to, in declarations and bodies.
fn dependencies(modules: &BTreeMap<String, PathBuf>) -> BTreeMap<String, BTreeSet<String>> {
    let module_of = |path: &[String]| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|p| modules.contains_key(p))
    };
    let mut graph = BTreeMap::new();
    for (module, file) in modules {
        let code = code(file);
        let children: BTreeSet<String> = code
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let l = l.strip_prefix("pub ").unwrap_or(l);
                l.strip_prefix("mod ")?
                    .strip_suffix(';')
                    .map(str::to_string)
            })
            .collect();
        let here: Vec<String> = module.split("::").map(str::to_string).collect();
        let mut uses = BTreeSet::new();
        for child in &children {
            uses.insert(format!("{module}::{child}"));
        }
        for path in paths(&code) {
            let full: Vec<String> = match path[0].as_str() {
                "crate" => path.clone(),
                "self" | "super" => {
                    let mut base = here.clone();
                    let mut rest = path.as_slice();
                    while let Some(first) = rest.first() {
                        match first.as_str() {
                            "super" => {
                                base.pop();
                            }
                            "self" => {}
                            _ => break,
                        }
                        rest = &rest[1..];
                    }
                    base.into_iter().chain(rest.iter().cloned()).collect()
                }
                head if children.contains(head) => {
                    here.iter().cloned().chain(path.iter().cloned()).collect()
                }
                _ => continue,
            };
            if let Some(target) = module_of(&full).filter(|t| t != module) {
                uses.insert(target);
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The modules on a cycle of `graph`, if any.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            return Some(path[at..].to_vec());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

/// The workspace's crates (directory = crate).
const CRATES: [&str; 4] = ["proto", "evaluator", "client", "runtime-service"];

#[test]
fn every_module_says_its_job() {
    for (module, file) in CRATES.iter().flat_map(|c| modules_of(c)) {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            text.trim_start().starts_with("//!"),
            "{module} ({}) does not begin with a `//!` line saying its job",
            file.display()
        );
    }
}

#[test]
fn modules_depend_one_way() {
    let modules = modules();
    let graph = dependencies(&modules);
    assert!(
        graph["crate::cli"].contains("crate::cli::serve")
            && graph["crate::cli::serve"].contains("crate::report"),
        "the scan misses dependencies: {graph:#?}"
    );
    if let Some(cycle) = cycle(&graph) {
        panic!(
            "modules depend on each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
    for leaf in ["crate::report", "crate::sandboxes"] {
        assert!(graph[leaf].is_empty(), "{leaf} uses {:?}", graph[leaf]);
    }
}

#[test]
fn a_cycle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> =
        [("a", &["b"][..]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]
            .into_iter()
            .map(|(m, to)| (m.to_string(), to.iter().map(|t| t.to_string()).collect()))
            .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c"]);
    let code = code(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tidy.rs"));
    assert!(paths(&code).contains(&vec!["std".to_string(), "fs".into(), "read_dir".into()]));
}

#[test]
fn statuses_are_made_in_one_place_and_errors_chained_by_one_function() {
    let constructors = [
        "new",
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
        "with_details",
        "from_error",
    ];
    let mut chains = Vec::new();
    for c in CRATES.iter().filter(|c| **c != "runtime-service") {
        for (module, file) in modules_of(c) {
            if code(&file).contains("fn error_chain(") {
                chains.push(format!("{c}: {module}"));
            }
        }
    }
    for (module, file) in modules() {
        let code = code(&file);
        for path in paths(&code) {
            let made = path.len() >= 2
                && path[path.len() - 2] == "Status"
                && constructors.contains(&path[path.len() - 1].as_str());
            assert!(
                !made || module == "crate::service::error",
                "{module} makes a gRPC status ({}): return a ServiceError instead",
                path.join("::")
            );
        }
        if code.contains("fn error_chain(") {
            chains.push(format!("runtime-service: {module}"));
        }
    }
    assert_eq!(chains, ["evaluator: crate::error"]);
}

#[test]
fn the_evaluators_modules_depend_one_way() {
    // A module and its own submodules share one job; between the crate's top-level
    // modules (sandbox, events, lang, runtime, install, ...) dependencies go one way.
    let modules = modules_of("evaluator");
    let mut top: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let head = |m: &str| m.split("::").take(2).collect::<Vec<_>>().join("::");
    for (from, to) in dependencies(&modules) {
        let entry = top.entry(head(&from)).or_default();
        entry.extend(to.iter().map(|t| head(t)).filter(|t| *t != head(&from)));
    }
    // The crate root names every module; it is no module's dependency's dependency.
    top.remove("crate");
    for uses in top.values_mut() {
        uses.remove("crate");
    }
    assert!(
        top["crate::evaluate"].contains("crate::sandbox"),
        "the scan misses dependencies: {top:#?}"
    );
    if let Some(cycle) = cycle(&top) {
        panic!(
            "the evaluator's modules depend on each other in a cycle: {}",
            cycle.join(" -> ")
        );
    }
}

/// The text of ARCHITECTURE.md's code-map section for `krate` (`### `krate/``).
fn code_map_section(architecture: &str, krate: &str) -> String {
    let heading = format!("### `{krate}/`");
    let start = architecture
        .find(&heading)
        .unwrap_or_else(|| panic!("ARCHITECTURE.md has no code-map section {heading}"));
    let body = &architecture[start + heading.len()..];
    let end = body
        .find("\n## ")
        .into_iter()
        .chain(body.find("\n### "))
        .min();
    body[..end.unwrap_or(body.len())].to_string()
}

/// What a section names in backticks that looks like a source file or directory:
/// `x.rs`, `x/`, `x/y.rs`.
fn named_files(section: &str) -> BTreeSet<String> {
    section
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| !t.contains(' ') && (t.ends_with(".rs") || t.ends_with('/')))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_code_map_matches_the_tree() {
    let architecture = std::fs::read_to_string(workspace().join("ARCHITECTURE.md")).unwrap();
    for krate in ["evaluator", "runtime-service", "client"] {
        let section = code_map_section(&architecture, krate);
        let named = named_files(&section);
        let src = workspace().join(krate).join("src");
        // Every top-level module is in the map.
        for entry in std::fs::read_dir(&src).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            let shown = if entry.path().is_dir() {
                format!("{name}/")
            } else if name.ends_with(".rs")
                && !["lib.rs", "main.rs", "tests.rs"].contains(&name.as_str())
            {
                name
            } else {
                continue;
            };
            // A directory beside its module file (`events.rs` + `events/`) is that module.
            let module_file = format!("{}.rs", shown.trim_end_matches('/'));
            assert!(
                named
                    .iter()
                    .any(|n| n == &shown || n.starts_with(&shown) || *n == module_file),
                "ARCHITECTURE.md's code map of {krate}/ does not name `{shown}`"
            );
        }
        // Everything the map names exists (a bare file name anywhere under src/).
        let mut files = BTreeSet::new();
        for module in modules_of(krate).values() {
            let rel = module.strip_prefix(&src).unwrap();
            for n in 0..rel.components().count() {
                let tail: PathBuf = rel.components().skip(n).collect();
                files.insert(tail.to_string_lossy().into_owned());
                if let Some(dir) = tail.parent().filter(|d| !d.as_os_str().is_empty()) {
                    files.insert(format!("{}/", dir.to_string_lossy()));
                }
            }
        }
        for name in &named {
            let stripped = name.strip_prefix(&format!("{krate}/src/")).unwrap_or(name);
            assert!(
                files.contains(stripped)
                    || src.join(stripped).exists()
                    || workspace().join(krate).join(stripped).exists()
                    || workspace().join(name).exists(),
                "ARCHITECTURE.md's code map of {krate}/ names `{name}`, which is not in the tree"
            );
        }
    }
}
