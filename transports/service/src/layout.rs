//! The crate's layout, checked: reads this crate's own `src/` tree, builds
//! the import graph from `crate::…` references (outside `#[cfg(test)]`
//! modules and comments) and fails when
//!
//! - the folder-level graph (top-level modules: `settings`, `wiring`, `http`,
//!   …) has a circle,
//! - the module-level graph (one node per source file) has a circle, or
//! - `settings` imports anything from the crate (it is the leaf).
//!
//! The checker itself is tested on small synthetic graphs so that it is
//! known to fail on a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A directed graph: node → the nodes it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Modules that exist only under `#[cfg(test)]` (fixtures and cross-cutting
/// tests may import anything).
const TEST_ONLY: &[&str] = &["layout", "operator_tests", "testutil"];

/// The top-level module that must import nothing from the crate.
const LEAF: &str = "settings";

/// One source file: its module path (`wiring::profile`) and its text.
struct Source {
    module: Vec<String>,
    text: String,
}

/// Every `.rs` file under `dir`, with its module path relative to `src/`.
fn sources(src: &Path) -> Vec<Source> {
    let mut out = Vec::new();
    let mut pending: Vec<PathBuf> = vec![src.to_path_buf()];
    // Bounded: the crate has a few dozen files in a few folders.
    let mut visited = 0;
    while let Some(dir) = pending.pop() {
        visited += 1;
        assert!(visited < 1000, "runaway directory walk under {}", src.display());
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some("rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let mut module: Vec<String> =
                relative.iter().map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string()).collect();
            if module.last().is_some_and(|m| m == "mod" || m == "lib") {
                module.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
            out.push(Source { module, text });
        }
    }
    out
}

/// The text without `#[cfg(test)]` items and without `//` comments.
fn production_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]" {
            // Skip the attributed item: a one-line item, or a block up to its
            // closing brace at the same indentation.
            let Some(item) = lines.next() else { break };
            if item.trim_end().ends_with('{') {
                let indent = item.len() - item.trim_start().len();
                let close = format!("{}}}", " ".repeat(indent));
                for l in lines.by_ref() {
                    if l.trim_end() == close {
                        break;
                    }
                }
            }
            continue;
        }
        let code = line.find("//").map_or(line, |i| &line[..i]);
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Every module path named after `crate::` in `code`: `crate::a::b::Item`
/// gives `["a", "b", "Item"]`; `crate::{a, b::c}` gives `["a"]`, `["b", "c"]`.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        // `scep_engine::crate::` cannot occur; a preceding identifier
        // character means a longer word (`my_crate::`), which is not ours.
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let path = path_segments(part.trim());
                if !path.is_empty() {
                    out.push(path);
                }
            }
        } else {
            let path = path_segments(rest);
            if !path.is_empty() {
                out.push(path);
            }
        }
    }
    out
}

/// The `a::b::c` path at the start of `text`.
fn path_segments(text: &str) -> Vec<String> {
    let mut segments = Vec::new();
    let mut rest = text;
    loop {
        let len = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        if len == 0 {
            break;
        }
        segments.push(rest[..len].to_string());
        match rest[len..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    segments
}

/// The import graphs of the sources: (folder level, module level).
fn graphs(sources: &[Source]) -> (Graph, Graph) {
    let modules: BTreeSet<Vec<String>> = sources.iter().map(|s| s.module.clone()).collect();
    let mut folders = Graph::new();
    let mut files = Graph::new();
    for source in sources {
        let Some(top) = source.module.first() else { continue };
        if TEST_ONLY.contains(&top.as_str()) {
            continue;
        }
        let from = source.module.join("::");
        folders.entry(top.clone()).or_default();
        files.entry(from.clone()).or_default();
        for path in crate_paths(&production_code(&source.text)) {
            // The longest prefix that is a source file is the module imported.
            let Some(target) = (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|p| modules.contains(p)) else {
                continue;
            };
            if target[0] != *top {
                folders.entry(top.clone()).or_default().insert(target[0].clone());
            }
            let to = target.join("::");
            if to != from {
                files.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    (folders, files)
}

/// A circle in `graph`, as the nodes along it (first node repeated at the
/// end), or `None` when the graph is acyclic.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    let mut marks: BTreeMap<&str, Mark> = BTreeMap::new();
    for start in graph.keys() {
        if marks.contains_key(start.as_str()) {
            continue;
        }
        // Iterative depth-first search; `stack` holds the current path.
        let mut stack: Vec<(&str, Vec<&str>)> = vec![(start, next_of(graph, start))];
        marks.insert(start, Mark::Open);
        while let Some((node, children)) = stack.last_mut() {
            let node: &str = node;
            match children.pop() {
                Some(child) => match marks.get(child) {
                    Some(Mark::Open) => {
                        let from = stack.iter().position(|(n, _)| *n == child).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[from..].iter().map(|(n, _)| n.to_string()).collect();
                        cycle.push(child.to_string());
                        return Some(cycle);
                    }
                    Some(Mark::Done) => {}
                    None => {
                        marks.insert(child, Mark::Open);
                        stack.push((child, next_of(graph, child)));
                    }
                },
                None => {
                    marks.insert(node, Mark::Done);
                    stack.pop();
                }
            }
        }
    }
    None
}

fn next_of<'g>(graph: &'g Graph, node: &str) -> Vec<&'g str> {
    graph.get(node).map(|s| s.iter().map(String::as_str).collect()).unwrap_or_default()
}

fn crate_graphs() -> (Graph, Graph) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let sources = sources(&src);
    assert!(sources.len() > 20, "expected the crate's sources under {}, found {}", src.display(), sources.len());
    graphs(&sources)
}

#[test]
fn folders_import_each_other_one_way_only() {
    let (folders, _) = crate_graphs();
    for expected in ["settings", "wiring", "http", "operator", "state", "store", "intune", "tls"] {
        assert!(folders.contains_key(expected), "no top-level module {expected}: {folders:?}");
    }
    if let Some(cycle) = find_cycle(&folders) {
        panic!("folder-level import circle: {}\ngraph: {folders:#?}", cycle.join(" -> "));
    }
}

#[test]
fn modules_import_each_other_one_way_only() {
    let (_, files) = crate_graphs();
    assert!(files.contains_key("wiring::profile"), "{files:?}");
    if let Some(cycle) = find_cycle(&files) {
        panic!("module-level import circle: {}\ngraph: {files:#?}", cycle.join(" -> "));
    }
}

#[test]
fn settings_is_a_leaf() {
    let (folders, files) = crate_graphs();
    let imports = &folders[LEAF];
    assert!(imports.is_empty(), "{LEAF} must import nothing from the crate, imports {imports:?}");
    // Inside the folder it may use its own modules only.
    for (module, targets) in files.iter().filter(|(m, _)| m.split("::").next() == Some(LEAF)) {
        for t in targets {
            assert_eq!(t.split("::").next(), Some(LEAF), "{module} imports {t}");
        }
    }
}

/// The checker finds circles (of two, of three, a self-loop) and passes DAGs.
#[test]
fn the_cycle_checker_fails_on_a_circle() {
    let graph = |edges: &[(&str, &str)]| -> Graph {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry((*a).to_string()).or_default().insert((*b).to_string());
            g.entry((*b).to_string()).or_default();
        }
        g
    };
    let dag = graph(&[("http", "state"), ("state", "settings"), ("http", "settings"), ("wiring", "state")]);
    assert_eq!(find_cycle(&dag), None);
    let two = graph(&[("state", "operator"), ("operator", "state"), ("http", "state")]);
    let c = find_cycle(&two).expect("a circle of two");
    assert_eq!(c.first(), c.last());
    assert!(c.contains(&"state".to_string()) && c.contains(&"operator".to_string()), "{c:?}");
    let three = graph(&[("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]);
    assert_eq!(find_cycle(&three).map(|c| c.len()), Some(4));
    let own = graph(&[("x", "x")]);
    assert_eq!(find_cycle(&own), Some(vec!["x".to_string(), "x".to_string()]));
}

/// References are read from `use` lines, paths in code and `crate::{…}`
/// groups; comments and `#[cfg(test)]` modules do not count.
#[test]
fn references_are_read_from_code_only() {
    let text = "//! See [`crate::http`].\n\
                use crate::state::ServiceState;\n\
                use crate::{store::audit::AuditLog, tls};\n\
                fn f() { crate::intune::build(); } // crate::operator\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::wiring::profile::BuildContext;\n}\n\
                fn g() { my_crate::x(); }\n";
    let paths = crate_paths(&production_code(text));
    let firsts: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(firsts, vec!["state", "store", "tls", "intune"]);
    assert_eq!(paths[1], vec!["store", "audit", "AuditLog"]);

    // A synthetic tree with a circle between folders is caught end to end.
    let source = |module: &str, text: &str| Source {
        module: module.split("::").map(str::to_string).collect(),
        text: text.to_string(),
    };
    let tree = vec![
        source("settings", "pub struct S;"),
        source("state", "use crate::settings::S;\nuse crate::operator::admin::Keys;"),
        source("operator::admin", "use crate::state::State;"),
    ];
    let (folders, files) = graphs(&tree);
    assert!(find_cycle(&folders).is_some(), "{folders:?}");
    assert!(find_cycle(&files).is_some(), "{files:?}");
    let leaf_broken = graphs(&[source("settings", "use crate::state::X;"), source("state", "")]).0;
    assert!(!leaf_broken["settings"].is_empty());
}
