//! The layout rules of this crate, checked on its sources: every module says its job in
//! a `//!` line, modules depend on each other one way only, gRPC statuses are made in
//! one place and errors are put on one line by one function.

#![allow(clippy::unwrap_used, reason = "tests")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`crate::cli::serve`) → its file, for every file under `src/`.
fn modules() -> BTreeMap<String, PathBuf> {
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
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
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
            if parts.last().is_some_and(|p| p == "mod" || p == "main") {
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

#[test]
fn every_module_says_its_job() {
    for (module, file) in modules() {
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
            chains.push(module);
        }
    }
    assert_eq!(chains, ["crate::report"]);
}
