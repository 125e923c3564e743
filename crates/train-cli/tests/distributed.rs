//! Data-parallel training on c10d (Gloo, loopback), launched as a user would: with
//! the venv's `torchrun`, or as two processes with torchrun's variables set by hand
//! (what srun-style launchers do). Compares against one process with the same
//! global batch.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../tests/support/image_folder.rs"]
mod image_folder;
#[path = "../../../tests/support/train_step.rs"]
mod train_step;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn torchrun() -> PathBuf {
    let p = root().join(".venv/bin/torchrun");
    assert!(p.is_file(), "{} missing: run scripts/setup.sh", p.display());
    p
}

/// 13 images per class, 3 classes: 30 train and 9 validation images (odd).
fn data(tmp: &Path) -> PathBuf {
    let d = tmp.join("data");
    image_folder::make_folder(&d, &["cat", "dog", "fox"], 13);
    d
}

fn args(out: &Path, data: &Path, batch: usize, sets: &[&str]) -> Vec<String> {
    let mut a = vec![
        "--config".into(),
        root().join("configs/smoke.toml").display().to_string(),
        "--output-dir".into(),
        out.display().to_string(),
        "--quiet".into(),
        "--set".into(),
        format!(
            "data.train={{kind=\"image_folder\", path={:?}}}",
            data.display().to_string()
        ),
        "--set".into(),
        format!("data.loader.batch_size={batch}"),
        "--set".into(),
        "run.threads=1".into(),
        "--set".into(),
        "run.dist_timeout_s=60".into(),
    ];
    for s in sets {
        a.extend(["--set".into(), (*s).into()]);
    }
    a
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_train-cli")
}

fn check(o: Output) -> Output {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "failed: {err}");
    o
}

fn one_process(args: &[String]) -> Output {
    check(
        Command::new(bin())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap(),
    )
}

fn two_ranks(args: &[String]) -> Output {
    check(
        Command::new(torchrun())
            .args([
                "--standalone",
                "--nproc-per-node",
                "2",
                "--no-python",
                bin(),
            ])
            .args(args)
            .env("RUST_LOG", "warn")
            .env("OMP_NUM_THREADS", "1")
            .output()
            .unwrap(),
    )
}

fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn kind<'a>(m: &'a [serde_json::Value], k: &str) -> Vec<&'a serde_json::Value> {
    m.iter().filter(|l| l["kind"] == k).collect()
}

fn weights(ckpt: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(ckpt.join("model/model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, data)
        })
        .collect()
}

fn latest(run: &Path) -> PathBuf {
    let mut c: Vec<PathBuf> = std::fs::read_dir(run.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    c.sort();
    c.pop().unwrap()
}

/// The largest difference between two checkpoints' weights, over the tensors
/// `keep` selects.
fn max_weight_diff_of(a: &Path, b: &Path, keep: impl Fn(&str) -> bool) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(
        a.keys().collect::<std::collections::BTreeSet<_>>(),
        b.keys().collect()
    );
    a.iter()
        .filter(|(k, _)| keep(k))
        .flat_map(|(k, v)| v.iter().zip(&b[k]).map(|(x, y)| (x - y).abs()))
        .fold(0.0, f32::max)
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    max_weight_diff_of(a, b, |_| true)
}

/// Losses of every step and the validation metrics: 2 ranks x batch 4 equal one
/// process x batch 8 (fp32). The tolerances: the two sum the same per-sample
/// gradients in a different order (per rank, then across ranks), ~1e-7 relative
/// per step; after 20 AdamW steps at lr 3e-3 the weights differ by ~1e-7 (1e-6
/// allowed). Except the attention key biases: softmax is invariant to them, their
/// exact gradient is 0 and AdamW turns rounding noise into steps of ~lr, so they
/// differ by ~2e-4 between any two summation orders (one process with 1 vs 2
/// threads too); they are held to 20 steps x lr.
fn assert_same_run(single: &Path, dist: &Path, steps: usize) {
    let (m1, m2) = (metrics(single), metrics(dist));
    let (s1, s2) = (kind(&m1, "step"), kind(&m2, "step"));
    assert_eq!(s1.len(), steps);
    assert_eq!(s2.len(), steps);
    for (a, b) in s1.iter().zip(&s2) {
        let (la, lb) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {}: loss {la} vs {lb}",
            a["step"]
        );
        let (ga, gb) = (
            a["grad_norm"].as_f64().unwrap(),
            b["grad_norm"].as_f64().unwrap(),
        );
        assert!(
            (ga - gb).abs() <= 1e-4 * ga.max(1.0),
            "grad norm {ga} vs {gb}"
        );
    }
    let (e1, e2) = (kind(&m1, "eval"), kind(&m2, "eval"));
    assert!(!e1.is_empty());
    assert_eq!(e1.len(), e2.len());
    for (a, b) in e1.iter().zip(&e2) {
        // Every validation image counted once: same counts, same confusion matrix.
        assert_eq!(a["val"]["images"], 9);
        assert_eq!(a["val"]["images"], b["val"]["images"]);
        assert_eq!(a["val"]["confusion"], b["val"]["confusion"]);
        assert_eq!(a["val"]["accuracy"], b["val"]["accuracy"]);
        // Image <-> text retrieval (validation data with captions): every rank's
        // embeddings.
        assert_eq!(a["val"]["retrieval"], b["val"]["retrieval"]);
        let (la, lb) = (
            a["val"]["loss"].as_f64().unwrap(),
            b["val"]["loss"].as_f64().unwrap(),
        );
        assert!(
            (la - lb).abs() <= 1e-5 * la.max(1.0),
            "val loss {la} vs {lb}"
        );
    }
    let key_bias = |k: &str| k.contains("k_proj.bias");
    let d = max_weight_diff_of(&latest(single), &latest(dist), |k| !key_bias(k));
    assert!(d <= 1e-6, "final weights differ by {d}");
    let d = max_weight_diff_of(&latest(single), &latest(dist), key_bias);
    assert!(d <= 20.0 * 3e-3, "final key biases differ by {d}");
}

#[test]
fn two_ranks_equal_one_process_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let cases: [(&str, &[&str], usize); 3] = [
        // 20 steps; the last global batch of each epoch (30 = 3 x 8 + 6) is split 3 + 3.
        ("plain", &["train.max_steps=20"], 20),
        // Accumulation (no sync on the first micro-batch) and gradient checkpointing
        // (several backward calls per micro-batch).
        (
            "accum-ckpt",
            &[
                "train.max_steps=20",
                "train.grad_accum=2",
                "train.gradient_checkpointing=true",
            ],
            20,
        ),
        // The trainable set changes every epoch (the Reducer is rebuilt), and the
        // coalesced all-reduce instead of the Reducer.
        (
            "progressive",
            &[
                "train.epochs=4",
                "train.unfreeze={kind=\"progressive\"}",
                "run.grad_sync=\"after_backward\"",
            ],
            16,
        ),
    ];
    for (name, sets, steps) in cases {
        let (one, two) = (
            tmp.path().join(name).join("1"),
            tmp.path().join(name).join("2"),
        );
        one_process(&args(&one, &data, 8, sets));
        // Not quiet: the global batch line is checked.
        let mut two_args = args(&two, &data, 4, sets);
        two_args.retain(|a| a != "--quiet");
        let o = two_ranks(&two_args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("2 ranks, global batch"), "{err}");
        // Rank 0 alone wrote the run's files: one metrics line per step.
        assert_same_run(&one.join("smoke"), &two.join("smoke"), steps);
    }
}

#[test]
fn lora_and_head_only_runs_train_data_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    for (name, set) in [
        ("lora", "model.lora={r=4, alpha=8.0}"),
        ("head", "train.unfreeze={kind=\"head_only\"}"),
    ] {
        let (one, two) = (
            tmp.path().join(name).join("1"),
            tmp.path().join(name).join("2"),
        );
        let sets = ["train.max_steps=8", set];
        one_process(&args(&one, &data, 8, &sets));
        two_ranks(&args(&two, &data, 4, &sets));
        assert_same_run(&one.join("smoke"), &two.join("smoke"), 8);
    }
}

/// FLYP on two ranks: every rank's loss is over the global batch (the other
/// rank's embeddings gathered, the gradient of its own scaled as open_clip's
/// `gather_with_grad`), so 2 ranks x batch 4 equal one process x batch 8, also
/// when the epoch's last global batch is split unevenly or leaves a rank none.
#[test]
fn contrastive_two_ranks_equal_one_process_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let tok = root().join("tests/fixtures/model/tokenizer/tokenizer.json");
    let tok = format!("model.tokenizer={:?}", tok.display().to_string());
    // Validation images with captions: retrieval over embeddings from both ranks.
    let mut csv = String::from("path,label,caption\n");
    for (class, words) in [
        ("cat", "red across"),
        ("dog", "green down"),
        ("fox", "blue"),
    ] {
        for i in 0..3 {
            csv.push_str(&format!("{class}/{i}.png,{class},{words} {i}\n"));
        }
    }
    std::fs::write(data.join("val.csv"), csv).unwrap();
    let val = format!(
        "data.val={{kind=\"csv\", path={:?}, caption_column=\"caption\"}}",
        data.join("val.csv").display().to_string()
    );
    let sets = [
        &val,
        "train.objective=\"contrastive\"",
        "optim.frozen_towers=[]",
        "model.architecture.text={hidden_size=32, intermediate_size=64, num_hidden_layers=2, \
         num_attention_heads=4, vocab_size=1514, eos_token_id=1513}",
        &tok,
        "train.max_steps=8",
    ];
    // 29 images: each epoch ends with a global batch of 5, split 3 + 2; 25: with
    // one image, and rank 1 runs a stand-in that must not enter the loss (and
    // then with gradient accumulation and checkpointing: each micro-batch's loss
    // over its global micro-batch, the towers' activations recomputed).
    for (limit, more) in [
        (29, &[][..]),
        (25, &[][..]),
        (
            25,
            &["train.grad_accum=2", "train.gradient_checkpointing=true"][..],
        ),
    ] {
        let limit = format!("data.train_limit={limit}");
        let mut sets = sets.to_vec();
        sets.push(&limit);
        sets.extend(more);
        let dir = tmp.path().join(format!("{limit}{}", more.len()));
        let (one, two) = (dir.join("1"), dir.join("2"));
        one_process(&args(&one, &data, 8, &sets));
        two_ranks(&args(&two, &data, 4, &sets));
        assert_same_run(&one.join("smoke"), &two.join("smoke"), 8);
        let m = metrics(&two.join("smoke"));
        let evals = kind(&m, "eval");
        assert!(
            evals[0]["val"]["retrieval"]["mean_recall"].is_f64(),
            "{}",
            evals[0]
        );
    }
}

/// FLYP on two ranks against PyTorch itself (not only against one process of
/// the same code): the first step of the contrastive objective on tiny-a, each
/// global micro-batch of 2 split over the ranks, `grad_accum = 3`, label
/// smoothing 0.1, captions from a template (the first micro-batch holds two cats:
/// a duplicate caption), has the loss and the gradient norm (before clipping) of
/// open_clip's `ClipLoss` accumulated in PyTorch (scripts/gen_train_fixtures.py).
#[test]
fn contrastive_two_ranks_equal_open_clips_step_accumulated_in_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let fixtures = train_step::fixtures();
    let config = tmp.path().join("flyp.toml");
    let toml = train_step::config(
        tmp.path(),
        "flyp",
        1,
        [
            "threads = 1\ndist_timeout_s = 60",
            "objective = \"contrastive\"\nmax_steps = 1\nlog_every_steps = 1",
            "[optim]\nfrozen_towers = []\nschedule = { kind = \"constant\" }",
        ],
    );
    std::fs::write(&config, toml).unwrap();
    two_ranks(&[
        "--config".into(),
        config.display().to_string(),
        "--quiet".into(),
    ]);
    let m = metrics(&tmp.path().join("flyp"));
    let step = kind(&m, "step")[0];
    let reference: HashMap<String, f64> = {
        let bytes =
            std::fs::read(fixtures.join("train_step/contrastive_step.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        ["a.loss", "a.grad_norm"]
            .into_iter()
            .map(|k| {
                let t = st.tensor(k).unwrap();
                let v = f32::from_le_bytes(t.data()[..4].try_into().unwrap());
                (k.to_string(), f64::from(v))
            })
            .collect()
    };
    for (key, field) in [("a.loss", "loss"), ("a.grad_norm", "grad_norm")] {
        let (got, want) = (step[field].as_f64().unwrap(), reference[key]);
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "step 1 {field}: {got} on 2 ranks vs PyTorch's {want}"
        );
    }
}

#[test]
fn a_resumed_two_rank_run_equals_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let sets = [
        "train.max_steps=16",
        "train.checkpoints.every_steps=5",
        "train.checkpoints.keep_last=10",
        "train.grad_accum=2",
    ];
    let full = tmp.path().join("full");
    two_ranks(&args(&full, &data, 4, &sets));
    let run = full.join("smoke");
    // The run as it was at step 5: mid-epoch (4 global batches per epoch, 2 per step,
    // so epoch 2 after its first step), resumed by two ranks to the end.
    let cut = tmp.path().join("cut/smoke");
    copy_cut_at(&run, &cut, "step-00000005");
    let resumed = Command::new(torchrun())
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--no-python",
            bin(),
        ])
        .args(["--quiet", "--resume", cut.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    check(resumed);
    assert_eq!(max_weight_diff(&latest(&run), &latest(&cut)), 0.0);

    // The same checkpoint resumed by one process: a continuation, with a warning.
    let single = tmp.path().join("single/smoke");
    copy_cut_at(&run, &single, "step-00000005");
    let o = check(
        Command::new(bin())
            .args(["--quiet", "--resume", single.to_str().unwrap()])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap(),
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("resuming on 1 rank(s) a run that 2 rank(s) wrote")
            && err.contains("global batch changes from 16 to 8"),
        "{err}"
    );
}

/// A copy of the run folder `from` as it was when `checkpoint` was its newest.
fn copy_cut_at(from: &Path, to: &Path, checkpoint: &str) {
    copy_dir(from, to);
    for e in std::fs::read_dir(to.join("checkpoints")).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != checkpoint {
            std::fs::remove_dir_all(p).unwrap();
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        let dst = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_dir(&p, &dst);
        } else {
            std::fs::copy(&p, &dst).unwrap();
        }
    }
}

/// The two ranks of a run launched by hand with torchrun's variables (rank 0
/// serves the store), once training has started.
fn two_processes(
    out: &Path,
    data: &Path,
    sets: &[&str],
) -> (std::process::Child, std::process::Child) {
    let port = free_port().to_string();
    let a = args(out, data, 4, sets);
    let rank0 = spawn_rank(&a, "0", &port);
    let rank1 = spawn_rank(&a, "1", &port);
    wait_for_steps(&out.join("smoke/metrics.jsonl"), 3);
    (rank0, rank1)
}

/// Rank `rank` of a world of two with `args`, its store at 127.0.0.1:`port`.
fn spawn_rank(args: &[String], rank: &str, port: &str) -> std::process::Child {
    Command::new(bin())
        .args(args)
        .env("RANK", rank)
        .env("WORLD_SIZE", "2")
        .env("LOCAL_RANK", rank)
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port)
        .env("RUST_LOG", "warn")
        // C++ frames are shown only with RUST_BACKTRACE.
        .env_remove("RUST_BACKTRACE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until rank 0 has logged `n` lines.
fn wait_for_steps(metrics: &Path, n: usize) {
    let t0 = Instant::now();
    while std::fs::read_to_string(metrics).map_or(0, |s| s.lines().count()) < n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "training did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn killing_a_rank_ends_the_other_with_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let out = tmp.path().join("run");
    let sets = ["train.epochs=100000", "run.dist_timeout_s=20"];
    let (rank0, mut rank1) = two_processes(&out, &data, &sets);
    rank1.kill().unwrap();
    let killed = Instant::now();
    let o = rank0.wait_with_output().unwrap();
    let _ = rank1.wait();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    // The peer's socket closes at once: well within the collective timeout (20 s)
    // plus the 3 s check-in.
    assert!(
        killed.elapsed() < Duration::from_secs(20),
        "{:?}",
        killed.elapsed()
    );
    assert!(err.contains("rank 0 of 2"), "{err}");
    assert!(err.contains("no answer from rank 1"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_stop_signal_on_one_rank_stops_every_rank_at_the_same_step() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let out = tmp.path().join("run");
    let (rank0, rank1) = two_processes(&out, &data, &["train.epochs=100000"]);
    // SIGTERM (what Slurm and torchrun send) to rank 1 alone.
    let pid = rank1.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (o0, o1) = (
        rank0.wait_with_output().unwrap(),
        rank1.wait_with_output().unwrap(),
    );
    let err = String::from_utf8_lossy(&o0.stderr);
    // 128 + SIGTERM where it arrived; 130 (interrupted) for the rank it stopped.
    assert_eq!(o0.status.code(), Some(130), "{err}");
    assert_eq!(
        o1.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&o1.stderr)
    );
    // Relaunched as it was launched: two processes, not one.
    assert!(
        err.contains("continue with: torchrun --nnodes 1 --nproc-per-node 2 --no-python ")
            && err.contains("train-cli --resume"),
        "{err}"
    );
    let run = out.join("smoke");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["interrupted"], true);
    assert_eq!(summary["world_size"], 2);
    // One checkpoint, at the step where both stopped.
    let step = summary["global_step"].as_u64().unwrap();
    assert_eq!(
        latest(&run).file_name().unwrap().to_str().unwrap(),
        format!("step-{step:08}")
    );
}

#[test]
fn a_hung_rank_ends_the_other_after_the_timeout_naming_it() {
    // Either rank: rank 0 also serves the store, whose requests then hang too.
    for hung in [1, 0] {
        let tmp = tempfile::tempdir().unwrap();
        let data = data(tmp.path());
        let out = tmp.path().join("run");
        let sets = ["train.epochs=100000", "run.dist_timeout_s=4"];
        let (rank0, rank1) = two_processes(&out, &data, &sets);
        let (mut stopped, other) = match hung {
            0 => (rank0, rank1),
            _ => (rank1, rank0),
        };
        // The rank stops responding (as a process stuck in I/O or a deadlock would).
        let pid = stopped.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success()
        );
        let t0 = Instant::now();
        let o = other.wait_with_output().unwrap();
        let waited = t0.elapsed();
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let _ = stopped.kill();
        let _ = stopped.wait();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{err}");
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(30),
            "the other rank ended {waited:?} after rank {hung} hung (timeout 4 s): {err}"
        );
        assert!(err.contains(&format!("rank {hung}")), "{err}");
        assert!(!err.contains("frame #"), "{err}");
    }
}

/// The worker processes torchrun `parent` started (train-cli children).
fn workers(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if ppid == parent && String::from_utf8_lossy(&cmd).contains("train-cli") {
            found.push(pid);
        }
    }
    found
}

#[test]
fn torchrun_restarts_a_failed_group_from_the_latest_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let out = tmp.path().join("run");
    let sets = ["train.max_steps=60", "train.checkpoints.every_steps=2"];
    let child = Command::new(torchrun())
        .args([
            "--standalone",
            "--nproc-per-node",
            "2",
            "--max-restarts",
            "1",
        ])
        .args(["--monitor-interval", "0.2", "--no-python", bin()])
        .args(args(&out, &data, 4, &sets))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ckpts = out.join("smoke/checkpoints");
    let t0 = Instant::now();
    while std::fs::read_dir(&ckpts).map_or(0, |d| d.count()) < 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no checkpoint written"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let pids = workers(child.id());
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert!(
        Command::new("kill")
            .args(["-KILL", &pids[1].to_string()])
            .status()
            .unwrap()
            .success()
    );
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("torchrun restart 1: continuing"), "{err}");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("smoke/summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["global_step"], 60);
}

/// Ranks launched with different configs (or on different data) stop before
/// anything trains, each with one clear error: the rank that differs names the
/// keys, the others name that rank; none aborts in a collective.
#[test]
fn ranks_launched_with_different_configs_stop_naming_the_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    let out = tmp.path().join("run");
    let port = free_port().to_string();
    let spawn = |rank: &str, sets: &[&str]| spawn_rank(&args(&out, &data, 4, sets), rank, &port);
    // Templates that make the config span several store values.
    let templates: Vec<String> = (0..60)
        .map(|i| format!("\"a photo number {i} of a {{}}.\""))
        .collect();
    let long = format!("compare.templates=[{}]", templates.join(", "));
    let rank0 = spawn("0", &[&long]);
    let rank1 = spawn("1", &[&long, "train.epochs=5", "optim.lr=0.01"]);
    let (o0, o1) = (
        rank0.wait_with_output().unwrap(),
        rank1.wait_with_output().unwrap(),
    );
    let (e0, e1) = (
        String::from_utf8_lossy(&o0.stderr),
        String::from_utf8_lossy(&o1.stderr),
    );
    assert_eq!(o0.status.code(), Some(1), "{e0}");
    assert_eq!(o1.status.code(), Some(1), "{e1}");
    assert!(
        e1.contains("rank 1 was launched with another config or data than rank 0")
            && e1.contains("train.epochs: 3 -> 5")
            && e1.contains("optim.lr: 0.003 -> 0.01")
            && !e1.contains("compare.templates"),
        "{e1}"
    );
    assert!(
        e0.contains("rank(s) 1 were launched with another config or data than rank 0"),
        "{e0}"
    );
    assert!(!out.join("smoke/metrics.jsonl").exists(), "nothing trains");
    // One line each, not pages of libtorch's C++ frames.
    for e in [&e0, &e1] {
        assert!(!e.contains("frame #"), "{e}");
        assert!(!e.contains("peers: no answer"), "{e}");
    }
}

/// A rank alone, and a rank whose MASTER_PORT is held by a program that never
/// answers, say whom they wait for, then stop after run.dist_timeout_s with an
/// error naming the address, instead of hanging.
#[test]
fn a_rank_whose_store_never_answers_stops_after_the_timeout() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data(tmp.path());
    // A program that accepts connections and never says a word.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    for (port, what) in [(silent_port, "silent program"), (free_port(), "nobody")] {
        let t0 = Instant::now();
        let o = Command::new(bin())
            .args(args(
                &tmp.path().join("run"),
                &data,
                4,
                &["run.dist_timeout_s=3"],
            ))
            .env("RANK", "1")
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env("RUST_LOG", "warn")
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        let waited = t0.elapsed();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        assert!(
            waited < Duration::from_secs(30),
            "{what}: {waited:?}: {err}"
        );
        assert!(
            err.contains(&format!(
                "could not join the process group (gloo via the store at 127.0.0.1:{port})"
            )),
            "{what}: {err}"
        );
        assert!(
            err.contains("waiting") && err.contains("rank 0 serves the store"),
            "{what}: {err}"
        );
        assert!(!err.contains("frame #"), "{what}: {err}");
    }
}
