//! Records what a run's numbers were built from: the git commit (and whether the tree had
//! uncommitted changes), the build profile and the compiler, as compile-time environment
//! variables the binary writes into every results row.

use std::process::Command;

fn run(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    // A source tarball has no git: the commit is then unknown, and the crate version says
    // what was built.
    let commit = run("git", &["rev-parse", "HEAD"]).unwrap_or_default();
    let dirty = if commit.is_empty() {
        String::new()
    } else {
        // Untracked files that git ignores (build outputs) do not make a tree dirty.
        run("git", &["status", "--porcelain", "--untracked-files=no"])
            .map(|s| (!s.is_empty()).to_string())
            .unwrap_or_default()
    };
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc_version = run(&rustc, &["--version"]).unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    println!("cargo:rustc-env=LLMEFF_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=LLMEFF_GIT_DIRTY={dirty}");
    println!("cargo:rustc-env=LLMEFF_RUSTC_VERSION={rustc_version}");
    println!("cargo:rustc-env=LLMEFF_BUILD_PROFILE={profile}");
    // Rerun when the commit moves or a tracked file changes (the index and HEAD cover
    // commits and checkouts; the source folders cover uncommitted edits).
    if let Some(git_dir) = run("git", &["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
        if let Some(head_ref) = run("git", &["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={git_dir}/{head_ref}");
        }
    }
    for dir in [
        "src",
        "engine",
        "backends",
        "results",
        "stdlib",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={dir}");
    }
}
