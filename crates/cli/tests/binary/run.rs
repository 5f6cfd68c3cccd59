//! Running the `keyward` binary on a database, as the tests of several modules do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests")]

use std::process::{Command, Output};

use serde_json::Value;

/// `keyward ARGS` on the database `db`, with no admin password in its environment.
pub fn keyward(db: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .env("KEYWARD_DATABASE_URL", db)
        .env_remove("KEYWARD_USER_PASSWORD")
        .output()
        .expect("run keyward")
}

/// `keyward --json ARGS`: the exit code and the JSON printed (results go to stdout, also a
/// clean "invalid" verdict; errors to stderr).
pub fn json(db: &str, args: &[&str]) -> (i32, Value) {
    let out = keyward(db, &[&["--json"], args].concat());
    let body = if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    };
    let v = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

/// A command line's words, split at spaces (none of the tests' arguments holds one).
pub fn args(line: &str) -> Vec<&str> {
    line.split(' ').collect()
}
