//! No import cycles between modules (STYLE.md): in the domain, adapters and
//! API crates, no module uses, by a `crate::`, `super::` or child path, a
//! module that uses it, directly or through others. A module is a file
//! (`mod.rs` stands for its folder); test modules at a file's end, and doc
//! comments, do not count.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::peers::workspace;

type Module = Vec<String>;

#[test]
fn no_module_of_the_domain_adapters_or_api_uses_one_that_uses_it() {
    for krate in ["crates/domain", "crates/adapters", "crates/api"] {
        let graph = graph(&workspace().join(krate).join("src"));
        assert!(graph.len() > 5, "{krate}: too few modules found: {graph:?}");
        if std::env::var_os("MODULE_GRAPH").is_some() {
            for (module, uses) in &graph {
                let uses: Vec<String> = uses.iter().map(|used| used.join("::")).collect();
                eprintln!("{krate} {} -> {}", module.join("::"), uses.join(", "));
            }
        }
        if let Some(cycle) = cycle(&graph) {
            panic!("{krate}: import cycle {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_graph_sees_a_cycle_through_a_parent_and_its_child() {
    let graph = BTreeMap::from([
        (module("a"), BTreeSet::from([module("a::b")])),
        (module("a::b"), BTreeSet::from([module("c")])),
        (module("c"), BTreeSet::from([module("a")])),
    ]);
    assert_eq!(cycle(&graph).map(|cycle| cycle.len()), Some(4));
    let files = [
        ("a/mod.rs", "mod b;\nuse b::X;\n"),
        ("a/b.rs", "use crate::c::{Y, Z};\n"),
        (
            "c.rs",
            "// crate::a is only a comment\nfn f() { super::a::f() }\n",
        ),
    ];
    let graph = edges(files.map(|(file, text)| (module_of(Path::new(file)), text.to_owned())));
    assert_eq!(cycle(&graph).map(|cycle| cycle.len()), Some(4), "{graph:?}");
}

fn module(path: &str) -> Module {
    path.split("::").map(str::to_owned).collect()
}

/// `a/b.rs` is `a::b`, `a/mod.rs` is `a`, `lib.rs` and `main.rs` the root.
fn module_of(relative: &Path) -> Module {
    let mut parts: Module = relative
        .with_extension("")
        .iter()
        .map(|part| part.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|last| ["mod", "lib", "main"].contains(&last.as_str()))
    {
        parts.pop();
    }
    parts
}

fn graph(src: &Path) -> BTreeMap<Module, BTreeSet<Module>> {
    let mut files = Vec::new();
    let mut folders = vec![src.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((module_of(path.strip_prefix(src).unwrap()), text));
            }
        }
    }
    edges(files)
}

fn edges(files: impl IntoIterator<Item = (Module, String)>) -> BTreeMap<Module, BTreeSet<Module>> {
    let files: Vec<(Module, String)> = files.into_iter().collect();
    let modules: BTreeSet<Module> = files.iter().map(|(module, _)| module.clone()).collect();
    let mut graph = BTreeMap::new();
    for (module, text) in &files {
        let mut uses = BTreeSet::new();
        for path in paths(module, &tokens(without_tests(text))) {
            // The longest prefix that is a module; the root re-exports all.
            let used = (1..=path.len())
                .rev()
                .map(|length| path[..length].to_vec())
                .find(|prefix| modules.contains(prefix));
            if let Some(used) = used.filter(|used| used != module) {
                uses.insert(used);
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// The text before a file's test module.
fn without_tests(text: &str) -> &str {
    let mut at = 0;
    while let Some(found) = text[at..].find("#[cfg(test)]") {
        let start = at + found;
        let rest = text[start + "#[cfg(test)]".len()..].trim_start();
        if rest.starts_with("mod ") {
            return &text[..start];
        }
        at = start + 1;
    }
    text
}

/// Identifiers, `::` and single punctuation, without comments, strings and
/// characters.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '"' || (c == 'r' && matches!(next, Some('"' | '#'))) {
            i = past_string(&chars, i);
        } else if c == '\'' {
            // A character ('x', '\n') or a lifetime ('a).
            if next == Some('\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && next == Some(':') {
            tokens.push("::".to_owned());
            i += 2;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// Where the string starting at `start` (`"..."`, `r"..."`, `r#"..."#`) ends.
fn past_string(chars: &[char], start: usize) -> usize {
    let mut i = start;
    if chars[i] == 'r' {
        i += 1;
        let hashes = chars[i..].iter().take_while(|c| **c == '#').count();
        i += hashes + 1;
        while i < chars.len() {
            if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes
            {
                return i + 1 + hashes;
            }
            i += 1;
        }
        return i;
    }
    i += 1;
    while i < chars.len() && chars[i] != '"' {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// Every module path `module` names: `crate::a::b`, `super::a`, `self::a`,
/// each item of `crate::{a::X, b}`, and a child's name (`child::f`).
fn paths(module: &Module, tokens: &[String]) -> Vec<Module> {
    let is = |i: usize, text: &str| tokens.get(i).is_some_and(|token| token == text);
    let ident = |i: usize| {
        tokens
            .get(i)
            .filter(|token| token.starts_with(|c: char| c.is_alphabetic() || c == '_'))
    };
    // The identifiers of `a::b::c` from `i`, and where they end.
    let chain = |mut i: usize| {
        let mut names = Vec::new();
        while let Some(name) = ident(i) {
            names.push(name.clone());
            if !is(i + 1, "::") {
                return (names, i + 1);
            }
            i += 2;
        }
        (names, i)
    };
    let mut found = Vec::new();
    for i in 0..tokens.len() {
        if is(i.wrapping_sub(1), "::") || !is(i + 1, "::") {
            continue;
        }
        let (base, mut rest) = match tokens[i].as_str() {
            "crate" => (Vec::new(), i + 2),
            "self" => (module.clone(), i + 2),
            "super" => {
                let mut ups = 1;
                let mut j = i + 2;
                while is(j, "super") && is(j + 1, "::") {
                    ups += 1;
                    j += 2;
                }
                (module[..module.len().saturating_sub(ups)].to_vec(), j)
            }
            name => {
                let mut child = module.clone();
                child.push(name.to_owned());
                found.push(child);
                continue;
            }
        };
        let (names, end) = chain(rest);
        let mut base = base;
        base.extend(names);
        if is(end, "{") {
            // A group: each top-level item's leading path.
            rest = end + 1;
            let mut depth = 1;
            let mut item_start = true;
            while depth > 0 && rest < tokens.len() {
                match tokens[rest].as_str() {
                    "{" => depth += 1,
                    "}" => depth -= 1,
                    "," if depth == 1 => item_start = true,
                    _ if item_start && depth == 1 => {
                        let (names, _) = chain(rest);
                        let mut item = base.clone();
                        item.extend(names);
                        found.push(item);
                        item_start = false;
                    }
                    _ => {}
                }
                rest += 1;
            }
        } else {
            found.push(base);
        }
    }
    found
}

/// A cycle of the graph, first module repeated last, if it has one.
fn cycle(graph: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<String>> {
    fn visit(
        module: &Module,
        graph: &BTreeMap<Module, BTreeSet<Module>>,
        done: &mut BTreeSet<Module>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|on| on == module) {
            let mut cycle: Vec<String> = path[at..].iter().map(|module| module.join("::")).collect();
            cycle.push(module.join("::"));
            return Some(cycle);
        }
        if !done.insert(module.clone()) {
            return None;
        }
        path.push(module.clone());
        for used in graph.get(module).into_iter().flatten() {
            if let Some(cycle) = visit(used, graph, done, path) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|module| visit(module, graph, &mut done, &mut Vec::new()))
}
