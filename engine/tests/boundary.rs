//! Architecture Invariant: the engine depends on no burn, CUDA, Arrow or Parquet crate.

#[test]
fn engine_manifest_names_no_backend_or_storage_crate() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or("");
    for forbidden in ["burn", "cubecl", "cudarc", "arrow", "parquet", "nvml"] {
        assert!(
            !deps.lines().any(|l| l.trim_start().starts_with(forbidden)),
            "engine/Cargo.toml must not depend on {forbidden}"
        );
    }
}
