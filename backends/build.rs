//! Embeds the bundled models (`models/<alias>/`, every file) in the library, so an installed
//! binary needs no source tree: writes `$OUT_DIR/bundled_models.rs`, a table of each alias's
//! files as `include_bytes!` and a fingerprint of their contents (FNV-1a over names and
//! bytes), which tells an unpacked copy made by another build apart.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The aliases embedded, in the order errors list them.
const ALIASES: [&str; 7] = [
    "tiny-stories",
    "tiny-llama3-gqa",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-mistral",
    "tiny-phi3",
    "tiny-gemma2",
];

fn fnv1a(hash: &mut u64, bytes: &[u8]) {
    for &b in bytes {
        *hash ^= u64::from(b);
        *hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
}

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let models = manifest_dir.join("..").join("models");
    println!("cargo:rerun-if-changed={}", models.display());
    let mut out = String::from("&[\n");
    for alias in ALIASES {
        let dir = models.join(alias);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("bundled model folder {}: {e}", dir.display()))
            .map(|entry| entry.expect("a readable folder entry").path())
            .filter(|path| path.is_file())
            .collect();
        files.sort();
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        let mut table = String::new();
        for path in &files {
            let name = file_name(path);
            let bytes = std::fs::read(path)
                .unwrap_or_else(|e| panic!("bundled model file {}: {e}", path.display()));
            fnv1a(&mut hash, name.as_bytes());
            fnv1a(&mut hash, &(bytes.len() as u64).to_le_bytes());
            fnv1a(&mut hash, &bytes);
            let absolute = path.canonicalize().expect("an existing file");
            writeln!(
                table,
                "        ({name:?}, include_bytes!({:?})),",
                absolute.display().to_string()
            )
            .expect("writing to a String");
        }
        writeln!(
            out,
            "    BundledModel {{\n        alias: {alias:?},\n        fingerprint: \"{hash:016x}\",\n        files: &[\n{table}        ],\n    }},"
        )
        .expect("writing to a String");
    }
    out.push(']');
    let target =
        PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("bundled_models.rs");
    std::fs::write(&target, out).expect("OUT_DIR is writable");
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .and_then(|n| n.to_str())
        .expect("bundled file names are UTF-8")
        .to_string()
}
