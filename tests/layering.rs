//! No import cycle between the modules of any crate of the workspace (issue 14: "dependencies
//! run one way"). Each crate's `src/` is read as text: every `crate::`, `super::` and `self::`
//! path (in `use` trees and in expressions) is resolved to the module it names, names the crate
//! root re-exports are followed to the module that defines them, and comments and
//! `#[cfg(test)]` modules are left out (tests may look anywhere). The modules are compared at two
//! depths: top-level modules (`type1`, `dma`, ...) and their children (`type1::unmap`, ...).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`
    Path,
    Punct(char),
}

/// Tokens of Rust source without comments, string, char and lifetime tokens.
fn tokens(src: &str) -> Vec<Tok> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| b.get(i).copied().unwrap_or('\0');
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == 'r' && (at(i + 1) == '"' || (at(i + 1) == '#' && at(i + 2) != '[')) {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while at(j) == '#' {
                hashes += 1;
                j += 1;
            }
            if at(j) != '"' {
                out.push(Tok::Ident("r".into()));
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (1..=hashes).all(|k| at(j + k) == '#') {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            i = j;
        } else if c == '"' || (c == 'b' && at(i + 1) == '"') {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            while j < b.len() && b[j] != '"' {
                if b[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < b.len() && b[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
                while at(i).is_alphanumeric() || at(i) == '_' {
                    i += 1;
                }
            }
        } else if c.is_alphanumeric() || c == '_' || (c == '$' && at(i + 1).is_alphabetic()) {
            let s = i;
            i += 1;
            while at(i).is_alphanumeric() || at(i) == '_' {
                i += 1;
            }
            out.push(Tok::Ident(b[s..i].iter().collect()));
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Tok::Path);
            i += 2;
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    out
}

fn is(t: Option<&Tok>, s: &str) -> bool {
    matches!(t, Some(Tok::Ident(x)) if x == s)
}

fn punct(t: Option<&Tok>, c: char) -> bool {
    t == Some(&Tok::Punct(c))
}

/// Removes `#[cfg(test)] mod name { ... }` items; returns the names of `#[cfg(test)] mod name;`.
fn strip_test_modules(toks: &mut Vec<Tok>) -> Vec<String> {
    let mut files = Vec::new();
    let mut i = 0;
    while i + 7 < toks.len() {
        let attr = punct(toks.get(i), '#')
            && punct(toks.get(i + 1), '[')
            && is(toks.get(i + 2), "cfg")
            && punct(toks.get(i + 3), '(')
            && is(toks.get(i + 4), "test")
            && punct(toks.get(i + 5), ')')
            && punct(toks.get(i + 6), ']');
        if !attr {
            i += 1;
            continue;
        }
        let mut j = i + 7;
        if is(toks.get(j), "pub") {
            j += 1;
            if punct(toks.get(j), '(') {
                while j < toks.len() && !punct(toks.get(j), ')') {
                    j += 1;
                }
                j += 1;
            }
        }
        if !is(toks.get(j), "mod") {
            i += 1;
            continue;
        }
        let Some(Tok::Ident(name)) = toks.get(j + 1).cloned() else {
            i += 1;
            continue;
        };
        if punct(toks.get(j + 2), ';') {
            files.push(name);
            toks.drain(i..j + 3);
        } else if punct(toks.get(j + 2), '{') {
            let mut k = j + 3;
            let mut depth = 1;
            while k < toks.len() && depth > 0 {
                if punct(toks.get(k), '{') {
                    depth += 1;
                } else if punct(toks.get(k), '}') {
                    depth -= 1;
                }
                k += 1;
            }
            toks.drain(i..k);
        } else {
            i += 1;
        }
    }
    files
}

/// Expands the use tree starting at `toks[*i]` under `prefix` into full paths.
fn use_tree(toks: &[Tok], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*i) {
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    if punct(toks.get(*i), '}') {
                        *i += 1;
                        return;
                    }
                    if *i >= toks.len() {
                        return;
                    }
                    use_tree(toks, i, &path, out);
                    if punct(toks.get(*i), ',') {
                        *i += 1;
                    }
                }
            }
            Some(Tok::Ident(x)) => {
                if x == "self" && !path.is_empty() {
                    // `{self, ..}`: the prefix itself.
                } else {
                    path.push(x.clone());
                }
                *i += 1;
                if toks.get(*i) == Some(&Tok::Path) {
                    *i += 1;
                    continue;
                }
                if is(toks.get(*i), "as") {
                    *i += 2;
                }
                out.push(path);
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(path);
                return;
            }
            _ => return,
        }
    }
}

/// Every path starting with `crate`, `$crate`, `super` or `self` in the tokens.
fn paths(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        if is(toks.get(i), "use") {
            i += 1;
            if toks.get(i) == Some(&Tok::Path) {
                i += 1;
            }
            use_tree(toks, &mut i, &[], &mut out);
            continue;
        }
        let start = matches!(toks.get(i), Some(Tok::Ident(x))
            if matches!(x.as_str(), "crate" | "$crate" | "super" | "self"));
        let after_path = i > 0 && toks.get(i - 1) == Some(&Tok::Path);
        if start && !after_path && toks.get(i + 1) == Some(&Tok::Path) {
            let mut p = Vec::new();
            while let Some(Tok::Ident(x)) = toks.get(i) {
                p.push(x.clone());
                i += 1;
                if toks.get(i) == Some(&Tok::Path) {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(p);
            continue;
        }
        i += 1;
    }
    out
}

struct Crate {
    /// Module path (`[]` for the root) → tokens outside test modules.
    files: BTreeMap<Vec<String>, Vec<Tok>>,
    /// Names the crate root re-exports, → the top-level module defining them.
    reexports: BTreeMap<String, String>,
}

fn read_crate(src: &Path) -> Crate {
    let mut files = BTreeMap::new();
    let mut test_only = BTreeSet::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p.file_name().unwrap() != "bin" {
                    stack.push(p);
                }
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(src).unwrap().with_extension("");
            let mut m: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(m.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                m.pop();
            }
            let mut toks = tokens(&std::fs::read_to_string(&p).unwrap());
            for t in strip_test_modules(&mut toks) {
                let mut child = m.clone();
                child.push(t);
                test_only.insert(child);
            }
            files.insert(m, toks);
        }
    }
    files.retain(|m, _| !(1..=m.len()).any(|n| test_only.contains(&m[..n])));
    let tops: BTreeSet<String> = files.keys().filter_map(|m| m.first().cloned()).collect();
    let mut reexports = BTreeMap::new();
    if let Some(root) = files.get(&Vec::new()) {
        let mut i = 0;
        while i < root.len() {
            if is(root.get(i), "use") && i > 0 && is(root.get(i - 1), "pub") {
                i += 1;
                let mut out = Vec::new();
                use_tree(root, &mut i, &[], &mut out);
                for p in out {
                    let p: Vec<&str> = p
                        .iter()
                        .map(String::as_str)
                        .skip_while(|s| *s == "crate" || *s == "self")
                        .collect();
                    if let (Some(m), Some(name)) = (p.first(), p.last()) {
                        if tops.contains(*m) && p.len() > 1 {
                            reexports.insert((*name).to_string(), (*m).to_string());
                        }
                    }
                }
                continue;
            }
            i += 1;
        }
    }
    Crate { files, reexports }
}

/// Module-level edges at `depth` (1: top-level modules; 2: their children too).
fn edges(c: &Crate, depth: usize) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut g: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (m, toks) in &c.files {
        if m.is_empty() {
            continue;
        }
        let from: Vec<String> = m.iter().take(depth).cloned().collect();
        for p in paths(toks) {
            let mut abs: Vec<String> = match p.first().map(String::as_str) {
                Some("crate" | "$crate") => p[1..].to_vec(),
                _ => {
                    let mut base = m.clone();
                    let mut k = 0;
                    while k < p.len() && (p[k] == "super" || p[k] == "self") {
                        if p[k] == "super" {
                            base.pop();
                        }
                        k += 1;
                    }
                    base.extend_from_slice(&p[k..]);
                    base
                }
            };
            let Some(first) = abs.first().cloned() else {
                continue;
            };
            if !c.files.keys().any(|f| f.first() == Some(&first)) {
                match c.reexports.get(&first) {
                    Some(m) => abs[0] = m.clone(),
                    None => continue,
                }
            }
            let mut to: Vec<String> = abs.into_iter().take(depth).collect();
            while to.len() > 1 && !c.files.contains_key(&to) {
                to.pop();
            }
            // A module may use its ancestors (their items own it) and itself.
            if from.starts_with(&to) {
                continue;
            }
            g.entry(from.clone()).or_default().insert(to);
        }
    }
    g
}

/// Strongly connected components of more than one module (Tarjan).
fn cycles(g: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a [String], usize>,
        low: BTreeMap<&'a [String], usize>,
        stack: Vec<&'a [String]>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a [String]) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        let g = t.g;
        for w in g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w.as_slice()) {
                visit(t, w);
                let lw = t.low[w.as_slice()];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.stack.contains(&w.as_slice()) {
                let iw = t.index[w.as_slice()];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut scc = Vec::new();
            while let Some(w) = t.stack.pop() {
                scc.push(w.join("::"));
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                t.out.push(scc);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_slice()) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("src")];
    for e in std::fs::read_dir(root.join("crates")).unwrap() {
        let src = e.unwrap().path().join("src");
        if src.is_dir() {
            v.push(src);
        }
    }
    v.sort();
    v
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut found = Vec::new();
    for src in crates() {
        let c = read_crate(&src);
        assert!(!c.files.is_empty(), "{}: nothing read", src.display());
        for depth in [1, 2] {
            for scc in cycles(&edges(&c, depth)) {
                found.push(format!(
                    "{} (depth {depth}): {}",
                    src.display(),
                    scc.join(" <-> ")
                ));
            }
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_use_trees_super_paths_reexports_and_skips_tests_and_comments() {
    let dir = std::env::temp_dir().join(format!("type1-layering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("b")).unwrap();
    let w = |p: &str, s: &str| std::fs::write(dir.join(p), s).unwrap();
    w(
        "lib.rs",
        "mod a; mod b; mod c; mod d; pub use d::{Thing, Other};",
    );
    // a -> b through a use tree; b -> c through super:: in an expression inside b/mod.rs's
    // child; c -> a through a root re-export... of d (d -> a through a string only: no edge).
    w("a.rs", "use crate::{b::{self, X}, e as _};");
    w("b/mod.rs", "mod inner;");
    w("b/inner.rs", "fn f() { super::super::c::g(); }");
    w(
        "c.rs",
        "// crate::a in a comment\n/* crate::a */ fn g() { let _ = crate::Thing; }\n\
         #[cfg(test)] mod tests { use crate::a; }",
    );
    w(
        "d.rs",
        "pub struct Thing; pub struct Other; const S: &str = \"crate::a::x\";",
    );
    let c = read_crate(&dir);
    let g = edges(&c, 1);
    let e = |a: &str| -> Vec<String> {
        g.get(&vec![a.to_string()])
            .into_iter()
            .flatten()
            .map(|v| v.join("::"))
            .collect()
    };
    assert_eq!(e("a"), ["b"]);
    assert_eq!(e("b"), ["c"]);
    assert_eq!(e("c"), ["d"]);
    assert!(e("d").is_empty(), "{:?}", e("d"));
    assert!(cycles(&g).is_empty());
    // Closing the loop d -> a is found.
    w("d.rs", "pub struct Thing; pub struct Other; use crate::a;");
    let c = read_crate(&dir);
    assert_eq!(
        cycles(&edges(&c, 1)),
        [vec!["a".to_string(), "b".into(), "c".into(), "d".into()]]
    );
    let _ = std::fs::remove_dir_all(&dir);
}
