//! `cargo xtask crash`: kill -9 loops against the durable adapters.
//!
//! Each cycle starts `taskctx-crash-child write`, which appends, puts and writes `put_many`
//! batches from several tasks at once and prints each write after the store acknowledged it;
//! after a random delay the child is killed with SIGKILL. Then `taskctx-crash-child verify`
//! reopens the store and checks every acknowledgement so far: present, exactly once, in order,
//! and no batch stored in part. The store must open after every kill (a torn tail is repaired, a
//! stale lock is not an error).

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use crate::{cargo, root};

/// A tiny xorshift generator: kill moments need no cryptographic randomness, and the seed is
/// printed so a failing run can be repeated.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut cycles = 200u32;
    let mut adapters = vec!["fs", "sled"];
    let mut release = true;
    let mut seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--cycles" => {
                cycles = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--cycles needs a number")?
            }
            "--adapter" => {
                adapters = match iter.next().map(String::as_str) {
                    Some("fs") => vec!["fs"],
                    Some("sled") => vec!["sled"],
                    _ => bail!("--adapter needs fs or sled"),
                }
            }
            "--seed" => {
                seed = iter
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--seed needs a number")?
            }
            "--debug" => release = false,
            other => bail!("unknown argument `{other}` for crash"),
        }
    }
    let profile = if release { "release" } else { "debug" };
    let mut build = vec![
        "build",
        "-p",
        "taskctx-tests",
        "--bin",
        "taskctx-crash-child",
    ];
    if release {
        build.push("--release");
    }
    cargo(&build)?;
    let child = target_dir().join(profile).join("taskctx-crash-child");
    println!(
        "\n==> crash: {cycles} cycles per adapter ({}), seed {seed}",
        adapters.join(", ")
    );
    let mut rng = Rng(seed);
    for adapter in adapters {
        crash_adapter(&child, adapter, cycles, &mut rng)?;
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn crash_adapter(child: &Path, adapter: &str, cycles: u32, rng: &mut Rng) -> anyhow::Result<()> {
    let dir = target_dir().join("crash").join(adapter);
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    fs::create_dir_all(&dir)?;
    let url = match adapter {
        "fs" => format!("fs:{}", dir.join("store").display()),
        _ => format!("sled:{}", dir.join("store.sled").display()),
    };
    let acks_path = dir.join("acks.txt");
    File::create(&acks_path)?;
    let started = Instant::now();
    let mut total_acks = 0usize;
    let mut killed_mid_write = 0u32;
    for cycle in 0..cycles {
        let delay = Duration::from_millis(5 + rng.below(150));
        let outcome = one_cycle(child, &url, cycle, delay, &acks_path)
            .with_context(|| format!("{adapter} cycle {cycle}"))?;
        total_acks += outcome.acks;
        killed_mid_write += u32::from(outcome.acks > 0);
        let verify = Command::new(child)
            .args(["verify", &url, &acks_path.to_string_lossy()])
            .output()
            .context("running the verifier")?;
        if !verify.status.success() {
            bail!(
                "{adapter} cycle {cycle}: verification failed: {}{}",
                String::from_utf8_lossy(&verify.stderr).trim(),
                String::from_utf8_lossy(&verify.stdout).trim()
            );
        }
    }
    println!(
        "    {adapter}: {cycles} kill -9 cycles ({killed_mid_write} killed while writing), {total_acks} acknowledged writes, 0 lost, 0 duplicated, store opened after every kill ({:.0}s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

struct CycleOutcome {
    acks: usize,
}

/// Starts a writer, lets it run `delay` after it is ready, kills it with SIGKILL, and appends
/// every complete acknowledgement line to `acks_path`.
fn one_cycle(
    child: &Path,
    url: &str,
    cycle: u32,
    delay: Duration,
    acks_path: &Path,
) -> anyhow::Result<CycleOutcome> {
    let mut process = Command::new(child)
        .args(["write", url, &cycle.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting the writer")?;
    let stdout = process.stdout.take().context("writer stdout")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = thread::spawn(move || -> std::io::Result<Vec<String>> {
        let mut lines = Vec::new();
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                break;
            }
            // A line without its newline was cut by the kill: not an acknowledgement.
            if !line.ends_with('\n') {
                break;
            }
            if line == "READY\n" {
                let _ = ready_tx.send(());
            } else {
                lines.push(line.trim_end().to_owned());
            }
        }
        Ok(lines)
    });
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(()) => thread::sleep(delay),
        Err(_) => {
            let _ = process.kill();
            let output = process.wait_with_output()?;
            bail!(
                "the writer did not open the store: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    // Child::kill sends SIGKILL on Unix: no destructor, flush or exit handler runs.
    process.kill().context("killing the writer")?;
    let status = process.wait()?;
    let lines = reader
        .join()
        .map_err(|_| anyhow::anyhow!("the ack reader panicked"))??;
    if status.success() {
        let mut stderr = String::new();
        if let Some(mut e) = process.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        bail!(
            "the writer exited by itself before the kill: {}",
            stderr.trim()
        );
    }
    let mut acks = OpenOptions::new().append(true).open(acks_path)?;
    for line in &lines {
        writeln!(acks, "{line}")?;
    }
    Ok(CycleOutcome { acks: lines.len() })
}
