//! The plugin binary survives an environment it did not expect.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::process::{Command, Stdio};

#[test]
fn a_non_utf8_environment_variable_is_not_a_panic() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh"))
        .env("CNI_COMMAND", "VERSION")
        .env(
            "SOMETHING_ELSE",
            std::ffi::OsStr::from_bytes(&[0xff, 0xfe, b'x']),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(br#"{"cniVersion":"1.1.0"}"#)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("supportedVersions"));
}
