//! `examples/plugin.rs`, run as a user would run it: the host process spawns its
//! plugin (the same program) and checks every hook and callback; it exits
//! non-zero if anything is not as expected.

use std::path::PathBuf;
use std::process::Command;

/// The example, built by `cargo test` (and nextest) beside this test binary:
/// `target/<profile>/examples/plugin`, next to `target/<profile>/deps/`.
fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    profile_dir.join("examples").join("plugin")
}

#[test]
fn the_plugin_example_runs_its_host_and_plugin() {
    let path = example();
    assert!(path.exists(), "{} not built", path.display());
    let out = Command::new(&path).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the plugin example failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "host: plugin connected",
        "host: plugin replied",
        "host: the plugin visited 3 words",
        "host: plugin exited with",
    ] {
        assert!(stdout.contains(line), "missing {line:?} in:\n{stdout}");
    }
}
