//! The crate's layering, checked from its sources: which module may use
//! which.
//!
//! Run it with `cargo test -p shared --test layering`.
//!
//! Every module of `shared/src` belongs to one layer (see [`LAYERS`] and the
//! crate documentation, which lists the modules in the same order). A module
//! may name modules of its own layer or of the layers below it, never those
//! above; the components and the foundation never mention `lambda_http`; and
//! no two modules use each other, directly or through others. "Uses" means
//! any `crate::<module>` path in the module's code (its `use` declarations
//! and inline paths), comments and `#[cfg(test)]` modules left out. A
//! submodule (`store/buckets.rs`, `openapi/ui.rs`) counts as its parent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, top first, and their modules.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "edge",
        &[
            "handlers",
            "openapi",
            "runtime",
            "http",
            "responses",
            "telemetry",
        ],
    ),
    ("composition", &["state", "config"]),
    (
        "components",
        &[
            "cache",
            "breaker",
            "external",
            "rate_limit",
            "identity",
            "store",
            "window",
            "metric",
            "tags",
        ],
    ),
    (
        "foundation",
        &[
            "observability",
            "keys",
            "redis_server",
            "connection",
            "iam_auth",
            "settings",
        ],
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(name) => Some(name.to_string()),
        None => Some(first.to_string()),
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments and without its test modules (by
/// convention at the end, after `#[cfg(test)]`).
fn code(text: &str) -> String {
    let mut kept = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]")
            && lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("mod "))
        {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let without_comment = match line.find("//") {
            // Not inside a string: good enough for this crate's code, where
            // `//` in a string only appears in URLs ("redis://").
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        kept.push_str(without_comment);
        kept.push('\n');
    }
    kept
}

/// Every `crate::<name>` in `code`, and the names in `use crate::{a, b::c}`.
fn used_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    used.insert(name);
                }
            }
        } else {
            let name = ident(after);
            if !name.is_empty() {
                used.insert(name);
            }
        }
        rest = after;
    }
    used
}

struct Crate {
    /// Module → the modules it uses.
    uses: BTreeMap<String, BTreeSet<String>>,
    /// Modules whose code names `lambda_http`.
    lambda_http: BTreeSet<String>,
    /// The text of `lib.rs`.
    lib: String,
}

fn read_crate() -> Crate {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut uses: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lambda_http = BTreeSet::new();
    let mut lib = String::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable source file");
        let Some(module) = module_of(&file) else {
            lib = text;
            continue;
        };
        let code = code(&text);
        if code.contains("lambda_http") {
            lambda_http.insert(module.clone());
        }
        let entry = uses.entry(module.clone()).or_default();
        entry.extend(used_modules(&code).into_iter().filter(|m| *m != module));
    }
    Crate {
        uses,
        lambda_http,
        lib,
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

#[test]
fn every_module_has_a_layer_and_the_crate_docs_list_them_in_order() {
    let krate = read_crate();
    let declared: BTreeSet<String> = krate
        .lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    let layered: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|(_, modules)| modules.iter().map(|m| m.to_string()))
        .collect();
    assert_eq!(
        declared, layered,
        "lib.rs declares exactly the modules of LAYERS"
    );
    let docs: String = krate
        .lib
        .lines()
        .filter(|l| l.starts_with("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut last = 0;
    for (_, modules) in LAYERS {
        for module in *modules {
            let link = format!("[`{module}`]");
            let at = docs
                .find(&link)
                .unwrap_or_else(|| panic!("lib.rs's documentation lists {link}"));
            assert!(at >= last, "lib.rs lists {link} in layer order (top first)");
            last = at;
        }
    }
}

#[test]
fn modules_use_only_their_own_layer_and_the_layers_below() {
    let krate = read_crate();
    let mut violations = Vec::new();
    for (module, used) in &krate.uses {
        let Some(own) = layer_of(module) else {
            continue; // reported by the test above
        };
        for other in used {
            match layer_of(other) {
                Some(layer) if layer < own => violations.push(format!(
                    "{module} ({}) uses {other} ({})",
                    LAYERS[own].0, LAYERS[layer].0
                )),
                Some(_) => {}
                None => violations.push(format!("{module} uses an unknown module {other}")),
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn components_and_foundation_know_nothing_of_lambda_http() {
    let krate = read_crate();
    let below_the_edge: Vec<&String> = krate
        .lambda_http
        .iter()
        .filter(|m| layer_of(m).is_some_and(|layer| layer >= 2))
        .collect();
    assert!(
        below_the_edge.is_empty(),
        "{below_the_edge:?} use lambda_http"
    );
}

#[test]
fn no_module_uses_itself_through_others() {
    let krate = read_crate();
    // Depth-first search for a path from each module back to itself.
    for start in krate.uses.keys() {
        let mut stack: Vec<Vec<&String>> = vec![vec![start]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = *path.last().expect("paths are never empty");
            for next in krate.uses.get(last).into_iter().flatten() {
                if next == start {
                    let cycle: Vec<&str> = path.iter().map(|m| m.as_str()).collect();
                    panic!("import cycle: {} -> {start}", cycle.join(" -> "));
                }
                if seen.insert(next) {
                    let mut longer = path.clone();
                    longer.push(next);
                    stack.push(longer);
                }
            }
        }
    }
}

#[test]
fn the_reader_sees_imports() {
    let uses = used_modules(
        "use crate::http::{a, b};\nuse crate::{keys::Keys, window::Window};\nlet x = crate::observability::hit();",
    );
    let expected: BTreeSet<String> = ["http", "keys", "window", "observability"]
        .map(String::from)
        .into();
    assert_eq!(uses, expected);
    let stripped =
        code("use crate::a;\n// crate::b\n#[cfg(test)]\nmod tests {\n use crate::c;\n}\n");
    assert_eq!(used_modules(&stripped), ["a".to_string()].into());
}
