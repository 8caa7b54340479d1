//! The README's table of flags and environment variables against the code, both ways:
//!
//! - every long flag an example's `--help` prints is in the table for that example, and
//!   every flag the table gives an example is in its `--help`;
//! - every `FINEGRAIN_*` variable named in `src/`, `examples/`, `tests/`, `scripts/` or
//!   `.ci/` is in the table, and every one in the table is named there.
//!
//! The example binaries are the ones `cargo test` builds into `target/<profile>/examples/`;
//! the test runs them with `--help` only, so it needs no GPU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The heading of the README section that holds the table.
const SECTION: &str = "## Flags and environment variables";
/// clap's own flags, left out of the table.
const BUILT_IN: [&str; 2] = ["help", "version"];
/// The prefix of the crate's environment variables.
const PREFIX: &str = "FINEGRAIN_";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The examples, by name: `examples/NAME.rs` and `examples/NAME/main.rs`.
fn examples() -> BTreeSet<String> {
    let dir = root().join("examples");
    let mut names = BTreeSet::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "rs") {
            names.insert(p.file_stem().unwrap().to_string_lossy().into_owned());
        } else if p.join("main.rs").is_file() {
            names.insert(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(!names.is_empty(), "no examples in {}", dir.display());
    names
}

/// The README's table: flags by example, and variable names.
struct Table {
    flags: BTreeMap<String, BTreeSet<String>>,
    vars: BTreeSet<String>,
}

/// The text inside each pair of backticks in `cell`.
fn code_spans(cell: &str) -> Vec<&str> {
    cell.split('`').skip(1).step_by(2).collect()
}

fn is_var_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase())
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

fn readme_table(examples: &BTreeSet<String>) -> Table {
    let path = root().join("README.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text
        .find(SECTION)
        .unwrap_or_else(|| panic!("README.md has no section `{SECTION}`"));
    let rows: Vec<(usize, &str)> = text[start..]
        .lines()
        .enumerate()
        .skip_while(|(_, l)| !l.starts_with('|'))
        .take_while(|(_, l)| l.starts_with('|'))
        .collect();
    assert!(
        rows.len() > 2,
        "README.md: no table under `{SECTION}` (a header, a separator and rows)"
    );
    let line0 = text[..start].lines().count() + 1;
    let mut table = Table {
        flags: BTreeMap::new(),
        vars: BTreeSet::new(),
    };
    // Skip the header and the separator.
    for &(i, row) in &rows[2..] {
        let at = format!("README.md line {}", line0 + i);
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        assert_eq!(
            cells.len(),
            4,
            "{at}: expected 4 cells (flag or variable, examples, what it does, default): {row}"
        );
        let name = code_spans(cells[0])
            .first()
            .and_then(|s| s.split_whitespace().next())
            .unwrap_or_else(|| panic!("{at}: the first cell holds no `--flag` or `VARIABLE`"));
        if let Some(flag) = name.strip_prefix("--") {
            for ex in cells[1].split(',').map(str::trim) {
                assert!(
                    examples.contains(ex),
                    "{at}: `{ex}` is not an example (examples: {examples:?})"
                );
                let new = table
                    .flags
                    .entry(ex.to_string())
                    .or_default()
                    .insert(flag.to_string());
                assert!(new, "{at}: `--{flag}` of `{ex}` is already in the table");
            }
        } else if is_var_name(name) {
            assert!(
                table.vars.insert(name.to_string()),
                "{at}: `{name}` is already in the table"
            );
        } else {
            panic!("{at}: `{name}` is neither a `--flag` nor a `VARIABLE`");
        }
    }
    table
}

/// `target/<profile>/examples/NAME`, next to this test's `target/<profile>/deps/`.
fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary lies in target/<profile>/deps/");
    let bin = profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo test` (it builds the examples), or `cargo build --examples`",
        bin.display()
    );
    // An example edited since its binary was built would be checked by its old --help.
    let src = [
        root().join("examples").join(format!("{name}.rs")),
        root().join("examples").join(name).join("main.rs"),
    ];
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if let (Some(built), Some(edited)) = (
        modified(&bin),
        src.iter().find_map(|p| modified(p.as_path())),
    ) {
        assert!(
            built >= edited,
            "{} is older than its source: run `cargo test` (it builds the examples), or \
             `cargo build --examples`",
            bin.display()
        );
    }
    bin
}

/// The long flags an example's `--help` lists (clap's `--help` and `--version` left out).
fn help_flags(name: &str) -> BTreeSet<String> {
    let bin = example_binary(name);
    let out = Command::new(&bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`{} --help` failed ({}):\n{text}{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let mut flags = BTreeSet::new();
    for line in text.lines() {
        // An option's own line: `  -s, --long <V>` or `      --long <V>`. Descriptions on
        // lines of their own are indented further, and may mention other flags.
        let body = line.trim_start();
        let indent = line.len() - body.len();
        if indent == 0 || indent > 6 || !body.starts_with('-') {
            continue;
        }
        let Some(at) = body.find("--") else { continue };
        let flag: String = body[at + 2..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        if !flag.is_empty() && !BUILT_IN.contains(&flag.as_str()) {
            flags.insert(flag);
        }
    }
    flags
}

#[test]
fn readme_flag_table_matches_every_examples_help() {
    let examples = examples();
    let table = readme_table(&examples);
    let mut problems = Vec::new();
    for ex in &examples {
        let help = help_flags(ex);
        let empty = BTreeSet::new();
        let listed = table.flags.get(ex).unwrap_or(&empty);
        for f in help.difference(listed) {
            problems.push(format!(
                "`--{f}` of `{ex}` (in its --help) is missing from the README's table"
            ));
        }
        for f in listed.difference(&help) {
            problems.push(format!(
                "`--{f}` is in the README's table for `{ex}`, but `{ex} --help` has no such flag"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md `{SECTION}` disagrees with the examples:\n{}",
        problems.join("\n")
    );
}

/// Every file under `dir`, recursively.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The crate's variable names (`FINEGRAIN_` and more) in `text`.
fn var_names(text: &str, found: &mut BTreeSet<String>) {
    for (at, _) in text.match_indices(PREFIX) {
        let rest = &text[at + PREFIX.len()..];
        let tail: String = rest
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        if !tail.is_empty() && !tail.ends_with('_') {
            found.insert(format!("{PREFIX}{tail}"));
        }
    }
}

#[test]
fn readme_table_lists_every_finegrain_variable() {
    let table = readme_table(&examples());
    let this = root().join(file!());
    let mut sources = Vec::new();
    for dir in ["src", "examples", "tests", "scripts", ".ci"] {
        files(&root().join(dir), &mut sources);
    }
    let mut found = BTreeSet::new();
    for f in sources.iter().filter(|f| **f != this) {
        if let Ok(text) = std::fs::read(f) {
            var_names(&String::from_utf8_lossy(&text), &mut found);
        }
    }
    assert!(
        found.len() > 3,
        "found only {found:?} in the sources: is the scan looking in the right place?"
    );
    let listed: BTreeSet<String> = table
        .vars
        .iter()
        .filter(|v| v.starts_with(PREFIX))
        .cloned()
        .collect();
    let missing: Vec<_> = found.difference(&listed).collect();
    let stale: Vec<_> = listed.difference(&found).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README.md `{SECTION}`: variables the code reads but the table lacks: {missing:?}; \
         variables in the table that no source names: {stale:?}"
    );
}

/// The library's error says what is missing; the examples add the command that fixes it
/// (`examples/common`), here for an adapter that is not there.
#[test]
fn examples_add_the_install_command_to_a_missing_adapter() {
    let bin = example_binary("infer");
    let out = Command::new(&bin)
        .arg(root().join("data/fashion-mnist-samples"))
        .env("FINEGRAIN_ADAPTER", "no-such-adapter-anywhere")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for want in [
        "error: no GPU adapter found",
        "no-such-adapter-anywhere",
        "apt-get install mesa-vulkan-drivers",
        ".ci/install-lavapipe.sh",
    ] {
        assert!(err.contains(want), "`{want}` missing from:\n{err}");
    }
}
