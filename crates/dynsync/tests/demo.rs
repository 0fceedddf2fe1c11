//! The README's main command, `dynsync demo`, run as a user runs it: it must pass on a fresh machine.

use std::process::Command;

#[test]
fn the_demo_passes_on_the_embedded_emulator() {
    let output = Command::new(env!("CARGO_BIN_EXE_dynsync"))
        .args(["demo", "--contacts", "1500"])
        .output()
        .expect("dynsync runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("PASS: all 1500 contacts hold the statuses and names they should"), "{stdout}");
    assert!(stdout.contains("excluded            3") && stdout.contains("failed              1"), "{stdout}");
}
