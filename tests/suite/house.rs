//! The crate's layout: no import cycle between the files of `src/` (outside test modules).
//!
//! A file depends on another when it names a path into it (`crate::a::b::Item`,
//! `super::Item`, or a `use crate::a::{b, c::D}` group), resolved to the longest module
//! prefix that is a file. A module's own declarations and re-exports of its children
//! (`mod x; pub use x::Y;`) are not dependencies, and paths through the crate root's
//! re-exports (`crate::Error`) are not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` and `src/a/b/mod.rs` -> `a::b`; `src/lib.rs` -> ``.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without its comments and its `#[cfg(test)]` modules (which come
/// last in every file of the crate).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path that starts at `crate::` or `super::` in `code`, as module segments from the
/// crate root (`super` resolved against `module`), including each member of a
/// `use ...::{...}` group.
fn paths(code: &str, module: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = {
        let mut v: Vec<String> = module.split("::").map(String::from).collect();
        v.retain(|s| !s.is_empty());
        v.pop();
        v
    };
    let mut out = Vec::new();
    for head in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(at) = code[from..].find(head) {
            let start = from + at;
            from = start + head.len();
            if start > 0 && code[..start].ends_with(|c: char| ident(c) || c == ':') {
                continue;
            }
            let base: Vec<String> = match head {
                "crate::" => Vec::new(),
                _ => parent.clone(),
            };
            let rest = &code[from..];
            let end = rest
                .find(|c: char| !(ident(c) || c == ':'))
                .unwrap_or(rest.len());
            let prefix: Vec<String> = rest[..end]
                .split("::")
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut full = base.clone();
            full.extend(prefix.clone());
            out.push(full.clone());
            // A group: `crate::a::{b, c::D}`.
            if rest[end..].starts_with('{') {
                let group_end = rest[end..].find('}').map_or(rest.len(), |i| end + i);
                for item in rest[end + 1..group_end].split(',') {
                    let mut p = full.clone();
                    p.extend(
                        item.trim()
                            .split("::")
                            .map(|s| s.trim_matches(|c: char| !ident(c)).to_string())
                            .filter(|s| !s.is_empty()),
                    );
                    out.push(p);
                }
            }
        }
    }
    out
}

#[test]
fn no_import_cycle_in_src() {
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeMap<String, PathBuf> = files
        .iter()
        .map(|f| (module_of(&src, f), f.clone()))
        .collect();
    let mut deps: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (m, f) in &modules {
        let text = std::fs::read_to_string(f).unwrap();
        let set = deps.entry(m.as_str()).or_default();
        for p in paths(&code(&text), m) {
            let target = (1..=p.len())
                .rev()
                .map(|k| p[..k].join("::"))
                .find(|t| modules.contains_key(t));
            if let Some(t) = target {
                let t = modules.get_key_value(&t).unwrap().0.as_str();
                if t != m {
                    set.insert(t);
                }
            }
        }
    }
    assert!(
        deps.get("train::run")
            .is_some_and(|d| d.contains("checkpoint")),
        "the scan sees run.rs's use of the checkpoint module: {:?}",
        deps.get("train::run")
    );
    // A cycle: a path back to a module from one of its dependencies.
    let mut cycles = Vec::new();
    for (&m, ds) in &deps {
        for &d in ds {
            let mut seen = BTreeSet::new();
            let mut stack = vec![(d, vec![m, d])];
            while let Some((at, path)) = stack.pop() {
                if at == m {
                    cycles.push(path.join(" -> "));
                    break;
                }
                if !seen.insert(at) {
                    continue;
                }
                for &n in deps.get(at).into_iter().flatten() {
                    let mut p = path.clone();
                    p.push(n);
                    stack.push((n, p));
                }
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "import cycles in src/:\n{}",
        cycles.join("\n")
    );
}
