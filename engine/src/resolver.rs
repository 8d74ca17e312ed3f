//! Resolving `import` in study scripts: the embedded stdlib, script-relative files, then
//! folders listed in `LLMEFF_PATH`.
//!
//! The stdlib is compiled into the binary so an installed `llmeff` has it without files.

use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, Module, Position, Scope, Shared};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The stdlib modules: name and Rhai source.
pub const STDLIB: &[(&str, &str)] = &[
    ("sweep", include_str!("../../stdlib/sweep.rhai")),
    ("scenarios", include_str!("../../stdlib/scenarios.rhai")),
    ("models", include_str!("../../stdlib/models.rhai")),
];

/// Folders listed in the `LLMEFF_PATH` environment variable.
pub fn search_path_from_env() -> Vec<PathBuf> {
    std::env::var_os("LLMEFF_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default()
}

/// `sweep::grid`: the cartesian product of a map of arrays, keys in sorted order, the last key
/// varying fastest.
pub fn sweep_grid(axes: Map) -> Result<Array, Box<EvalAltResult>> {
    let mut keys: Vec<_> = axes.keys().cloned().collect();
    keys.sort();
    let mut out: Vec<Map> = vec![Map::new()];
    for key in keys {
        let values = axes[&key].clone().into_array().map_err(|got| {
            Box::new(EvalAltResult::ErrorRuntime(
                format!("sweep::grid: axis `{key}` must be an array, got {got}").into(),
                Position::NONE,
            ))
        })?;
        // Checked before building: a product of a few modest axes can reach millions of
        // combinations, which would exhaust memory long before the run budget is checked.
        let size = out.len().saturating_mul(values.len());
        if size > crate::limits::MAX_ARRAY_SIZE {
            return Err(Box::new(EvalAltResult::ErrorRuntime(
                format!(
                    "sweep::grid: {size} or more combinations, over the limit of {} (the \
                     largest script array)",
                    crate::limits::MAX_ARRAY_SIZE
                )
                .into(),
                Position::NONE,
            )));
        }
        let mut next = Vec::with_capacity(size);
        for partial in &out {
            for v in &values {
                let mut c = partial.clone();
                c.insert(key.clone(), v.clone());
                next.push(c);
            }
        }
        out = next;
    }
    Ok(out.into_iter().map(Dynamic::from_map).collect())
}

/// Why an `import` found no module.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// A module file exists but could not be read.
    #[error("cannot read module {}: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What reading it said.
        source: std::io::Error,
    },
    /// No stdlib module or file has the name.
    #[error(
        "module `{module}` not found; stdlib modules: {}; searched: {}",
        stdlib.join(", "),
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NotFound {
        /// The name as imported.
        module: String,
        /// The stdlib modules' names.
        stdlib: Vec<&'static str>,
        /// The files looked for, in order.
        searched: Vec<PathBuf>,
    },
}

/// Resolves imports and detects import cycles.
pub struct ModuleResolver {
    base_dir: PathBuf,
    search_path: Vec<PathBuf>,
    /// Modules being evaluated right now (outermost first), to report cycles as a chain.
    stack: Mutex<Vec<String>>,
    cache: Mutex<HashMap<String, Shared<Module>>>,
}

impl ModuleResolver {
    /// A resolver for scripts in `base_dir`, falling back to `search_path`.
    pub fn new(base_dir: PathBuf, search_path: Vec<PathBuf>) -> Self {
        ModuleResolver {
            base_dir,
            search_path,
            stack: Mutex::new(Vec::new()),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The cache key (`stdlib:NAME` or the canonical file path) and source of module `path`.
    fn locate(&self, importer_dir: &Path, path: &str) -> Result<(String, String), ImportError> {
        let with_ext = if path.ends_with(".rhai") {
            path.to_string()
        } else {
            format!("{path}.rhai")
        };
        let relative = path.starts_with("./") || path.starts_with("../") || path.contains('/');
        if !relative && let Some((_, src)) = STDLIB.iter().find(|(name, _)| *name == path) {
            return Ok((format!("stdlib:{path}"), src.to_string()));
        }
        let mut tried = Vec::new();
        let mut candidates = vec![importer_dir.join(&with_ext)];
        candidates.extend(self.search_path.iter().map(|d| d.join(&with_ext)));
        for candidate in candidates {
            if candidate.is_file() {
                let text = std::fs::read_to_string(&candidate).map_err(|source| {
                    ImportError::Unreadable {
                        path: candidate.clone(),
                        source,
                    }
                })?;
                let key = candidate
                    .canonicalize()
                    .unwrap_or(candidate)
                    .display()
                    .to_string();
                return Ok((key, text));
            }
            tried.push(candidate);
        }
        Err(ImportError::NotFound {
            module: path.to_string(),
            stdlib: STDLIB.iter().map(|(n, _)| *n).collect(),
            searched: tried,
        })
    }
}

impl rhai::ModuleResolver for ModuleResolver {
    fn resolve(
        &self,
        engine: &Engine,
        source: Option<&str>,
        path: &str,
        pos: Position,
    ) -> Result<Shared<Module>, Box<EvalAltResult>> {
        let importer_dir = source
            .filter(|s| !s.starts_with("stdlib:") && *s != "<repl>")
            .and_then(|s| Path::new(s).parent().map(Path::to_path_buf))
            .filter(|p| !p.as_os_str().is_empty() || self.base_dir.as_os_str().is_empty())
            .unwrap_or_else(|| self.base_dir.clone());
        let (key, text) = self
            .locate(&importer_dir, path)
            .map_err(|e| EvalAltResult::ErrorRuntime(e.to_string().into(), pos))?;
        if let Some(module) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(module.clone());
        }
        {
            let mut stack = self.stack.lock().unwrap_or_else(|e| e.into_inner());
            if stack.contains(&key) {
                let mut chain = stack.clone();
                chain.push(key.clone());
                return Err(EvalAltResult::ErrorRuntime(
                    format!("import cycle: {}", chain.join(" -> ")).into(),
                    pos,
                )
                .into());
            }
            stack.push(key.clone());
        }
        let result: Result<Shared<Module>, Box<EvalAltResult>> = (|| {
            let mut ast = engine.compile(&text).map_err(|e| {
                EvalAltResult::ErrorRuntime(format!("in module {key}: {e}").into(), pos)
            })?;
            ast.set_source(key.clone());
            let mut module = Module::eval_ast_as_new(Scope::new(), &ast, engine)?;
            if key == "stdlib:sweep" {
                module.set_native_fn("grid", sweep_grid);
            }
            Ok(Shared::new(module))
        })();
        self.stack.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let module = result?;
        self.cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, module.clone());
        Ok(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_module_names_what_was_searched() {
        let dir = tempfile::tempdir().unwrap();
        let resolver = ModuleResolver::new(dir.path().to_path_buf(), vec![dir.path().join("lib")]);
        let err = resolver.locate(dir.path(), "./nosuch").unwrap_err();
        match &err {
            ImportError::NotFound {
                module, searched, ..
            } => {
                assert_eq!(module, "./nosuch");
                assert_eq!(
                    searched,
                    &vec![
                        dir.path().join("./nosuch.rhai"),
                        dir.path().join("lib/./nosuch.rhai")
                    ]
                );
            }
            other => panic!("expected NotFound, got {other}"),
        }
        assert!(
            err.to_string().starts_with(
                "module `./nosuch` not found; stdlib modules: sweep, scenarios, models; searched: "
            ),
            "{err}"
        );
        assert!(resolver.locate(dir.path(), "sweep").is_ok());
    }

    #[test]
    fn grid_is_the_cartesian_product_with_the_last_key_fastest() {
        let mut axes = Map::new();
        axes.insert(
            "b".into(),
            Dynamic::from_array(vec![Dynamic::from("x"), Dynamic::from("y")]),
        );
        axes.insert(
            "a".into(),
            Dynamic::from_array(vec![Dynamic::from(1_i64), Dynamic::from(2_i64)]),
        );
        let grid = sweep_grid(axes).unwrap();
        let pairs: Vec<String> = grid
            .into_iter()
            .map(|m| {
                let m = m.cast::<Map>();
                format!("{}{}", m["a"], m["b"])
            })
            .collect();
        assert_eq!(pairs, ["1x", "1y", "2x", "2y"]);
    }

    #[test]
    fn grid_rejects_a_non_array_axis() {
        let mut axes = Map::new();
        axes.insert("a".into(), Dynamic::from(1_i64));
        let err = sweep_grid(axes).unwrap_err().to_string();
        assert!(err.contains("axis `a` must be an array"), "{err}");
    }
}
