//! Helpers shared by the integration tests (each includes this module with `mod support;`).
#![allow(dead_code)]

pub mod golden;

/// The project's one seeded generator (SplitMix64). (Not every test uses it.)
#[allow(unused_imports)]
pub use vellum::rng::SplitMix64 as Rng;

/// The seed of a randomised test: `$VAR` if set, else `default`, printed so a failure replays.
/// (Not every test uses it.)
#[allow(unused_imports)]
pub use vellum::rng::seed_from_env;

/// True if `python3` runs. Outside CI a missing interpreter skips the calling test (it says so);
/// in CI (`CI` set) it fails it: the reference reader's tests must run there.
pub fn python_available(test: &str) -> bool {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "python3 is not on PATH, and CI is set: the reference reader must run"
        );
        println!("{test}: python3 is not on PATH; test skipped");
    }
    ok
}

/// Runs the reference reader (`format-spec/reference/read_store.py`) with `args`; returns how
/// it exited and the JSON it printed. It must write nothing to stderr.
pub fn reference_reader(args: &[&std::ffi::OsStr]) -> (std::process::ExitStatus, serde_json::Value) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("format-spec/reference/read_store.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .expect("run python3");
    assert!(
        out.stderr.is_empty(),
        "the reader (exit {:?}) wrote to stderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("reader output is not JSON ({e}):\n{stdout}"));
    (out.status, json)
}

/// Runs this test binary's test `entry` alone as a child process with `envs`, kills it with
/// SIGKILL after `run_for`, and returns the last number it printed after `"ack "` (the last
/// commit it acknowledged), if any. Its stderr is dropped.
pub fn run_killed_child(entry: &str, envs: &[(&str, String)], run_for: std::time::Duration) -> Option<u64> {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut last = None;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // libtest may print "test <entry> ... " before the first ack, on one line.
            if let Some((_, k)) = line.rsplit_once("ack ") {
                last = Some(k.trim().parse::<u64>().unwrap());
            }
        }
        last
    });
    std::thread::sleep(run_for);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    reader.join().unwrap()
}
