//! Random-weight presets of the new families load within 1.3× their weight bytes of peak
//! resident memory: the real binary generates two tokens, and the kernel's high-water mark of
//! the child (`ru_maxrss`) is compared with parameters × 4 bytes (f32). In a file of its own
//! so that no other test's children share this process's `RUSAGE_CHILDREN`.

use std::process::Command;

/// Runs `llmeff generate` on a preset with random weights and returns the child's peak RSS in
/// bytes.
fn peak_rss_of_a_random_load(model: &str) -> u64 {
    let status = Command::new(env!("CARGO_BIN_EXE_llmeff"))
        .args([
            "generate",
            "--model",
            model,
            "--weights",
            "random",
            "--dtype",
            "f32",
        ])
        .args(["--prompt", "Hi", "--max-new-tokens", "2"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", env!("CARGO_TARGET_TMPDIR"))
        .status()
        .expect("the llmeff binary runs");
    assert!(status.success(), "{model}: {status}");
    // SAFETY: `rusage` is plain data that getrusage fills in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a `rusage` the call may write.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
    assert_eq!(rc, 0, "getrusage");
    // Linux reports kilobytes.
    u64::try_from(usage.ru_maxrss).unwrap() * 1024
}

#[test]
fn new_family_presets_load_within_1_3x_their_weight_bytes() {
    // Counts checked in backends' presets tests; one model at a time, smallest first, so the
    // high-water mark after each is that model's (or an earlier, smaller one's).
    for (model, parameters) in [
        ("Qwen/Qwen2.5-0.5B", 494_032_768u64),
        ("Qwen/Qwen3-0.6B", 596_049_920),
    ] {
        let weights = parameters * 4;
        let peak = peak_rss_of_a_random_load(model);
        let ratio = peak as f64 / weights as f64;
        eprintln!("{model}: peak RSS {peak} B for {weights} B of f32 weights ({ratio:.3}×)");
        assert!(ratio <= 1.3, "{model}: peak RSS {ratio:.3}× the weights");
    }
}
