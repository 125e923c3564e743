//! The bad-input corpus (tests/fixtures/bad_inputs, made by
//! scripts/gen_bad_inputs.py): every case of its cases.toml run against the binary
//! in a fresh copy of the corpus, asserting the exit code, that nothing panicked,
//! aborted or hung, and the key or file the message names.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(serde::Deserialize)]
struct Cases {
    case: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    args: Vec<String>,
    exit: i32,
    expect: Vec<String>,
    #[serde(default)]
    non_utf8_class: Option<String>,
    /// Strings stdout must hold (`--dry-run`'s plan).
    #[serde(default)]
    expect_stdout: Vec<String>,
    /// Strings stderr must not hold (a spurious second message).
    #[serde(default)]
    expect_not: Vec<String>,
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/bad_inputs")
}

/// Copies `from` into `to`, links as links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        let kind = e.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src).unwrap(), &dst).unwrap();
        } else if kind.is_dir() {
            copy_tree(&src, &dst);
        } else {
            std::fs::copy(&src, &dst).unwrap();
        }
    }
}

/// Runs `case` in a fresh copy of the corpus; the problems found, if any.
fn run_case(case: &Case) -> Option<String> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("corpus");
    copy_tree(&corpus(), &dir);
    if let Some(d) = &case.non_utf8_class {
        use std::os::unix::ffi::OsStrExt;
        let class = dir.join(d).join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::copy(dir.join("data/good/cat/0.png"), class.join("0.png")).unwrap();
    }
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/smoke.toml");
    let args = case
        .args
        .iter()
        .map(|a| a.replace("{smoke}", &smoke.display().to_string()));
    let (out, err) = (tmp.path().join("stdout"), tmp.path().join("stderr"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_train-cli"))
        .args(args)
        .current_dir(&dir)
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = std::fs::read_to_string(&err).unwrap_or_default();
    let mut problems = Vec::new();
    match status.map(|s| s.code()) {
        None => problems.push("hung (killed after 300 s)".to_string()),
        Some(None) => problems.push(format!("killed by a signal: {status:?}")),
        Some(Some(c)) if c != case.exit => {
            problems.push(format!("exit code {c}, expected {}", case.exit))
        }
        Some(Some(_)) => {}
    }
    for bad in [
        "panicked",
        "stack overflow",
        "Aborted",
        "core dumped",
        "RUST_BACKTRACE",
    ] {
        if stderr.contains(bad) {
            problems.push(format!("`{bad}` in the output"));
        }
    }
    // Each cause once: not one the line above already quotes.
    for pair in stderr.lines().collect::<Vec<_>>().windows(2) {
        if let Some(cause) = pair[1].strip_prefix("  caused by: ")
            && pair[0].contains(cause)
        {
            problems.push(format!("a repeated cause: `{cause}`"));
        }
    }
    for want in &case.expect {
        if !stderr.contains(want.as_str()) {
            problems.push(format!("stderr does not say `{want}`"));
        }
    }
    for unwanted in &case.expect_not {
        if stderr.contains(unwanted.as_str()) {
            problems.push(format!("stderr says `{unwanted}`"));
        }
    }
    let stdout = std::fs::read_to_string(&out).unwrap_or_default();
    for want in &case.expect_stdout {
        if !stdout.contains(want.as_str()) {
            problems.push(format!("stdout does not say `{want}`"));
        }
    }
    (!problems.is_empty()).then(|| {
        format!(
            "case {:?} ({}): {}\n--- stderr:\n{stderr}",
            case.name,
            case.args.join(" "),
            problems.join("; ")
        )
    })
}

#[test]
fn every_bad_input_gets_its_exit_code_and_names_its_key_or_file_without_a_panic() {
    let text = std::fs::read_to_string(corpus().join("cases.toml")).unwrap();
    let cases: Cases = toml::from_str(&text).unwrap();
    assert!(cases.case.len() >= 100, "{} cases", cases.case.len());
    // Two at a time (the machine's cores); each case has its own copy.
    let (left, right) = cases.case.split_at(cases.case.len() / 2);
    let failures: Vec<String> = std::thread::scope(|s| {
        let a = s.spawn(|| left.iter().filter_map(run_case).collect::<Vec<_>>());
        let b = s.spawn(|| right.iter().filter_map(run_case).collect::<Vec<_>>());
        let mut f = a.join().unwrap();
        f.extend(b.join().unwrap());
        f
    });
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.case.len(),
        failures.join("\n\n")
    );
}
