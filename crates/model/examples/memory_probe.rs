//! Peak memory of one forward+backward of the `vit-b-32` classifier on CPU, with
//! or without gradient checkpointing. Prints resident memory after building the
//! model, the process peak, and their difference (activations and gradients).
//!
//! `cargo run --release -p clip-model --example memory_probe -- [--checkpointing] [--batch 32] [--glibc-default]`
//!
//! Unless `--glibc-default`, it calls `release_freed_activations()` first, as the
//! trainer does.

use anyhow::Context;
use clip_model::{ClipClassifier, ClipConfig, GradTape, HeadConfig, Tower};
use tch::{Kind, Tensor, nn::VarStore};

fn status_kib(field: &str) -> anyhow::Result<i64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("malformed")?
        .parse()?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let checkpointing = args.iter().any(|a| a == "--checkpointing");
    let glibc_default = args.iter().any(|a| a == "--glibc-default");
    if !glibc_default {
        anyhow::ensure!(
            clip_model::release_freed_activations(),
            "mallopt refused the mmap threshold"
        );
    }
    let batch: i64 = args
        .iter()
        .position(|a| a == "--batch")
        .and_then(|i| args.get(i + 1))
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(32);
    let vs = VarStore::new(tch::Device::Cpu);
    let cfg = ClipConfig::vit_b_32();
    let mut model = ClipClassifier::new(
        &vs.root(),
        &cfg,
        (0..10).map(|i| i.to_string()).collect(),
        &HeadConfig::default(),
    )?;
    model
        .params()
        .set_tower_trainable(Tower::Text, 0..=u32::MAX, false);
    model.clip.set_gradient_checkpointing(checkpointing);
    let x = Tensor::randn([batch, 3, 224, 224], (Kind::Float, tch::Device::Cpu));
    let base = status_kib("VmRSS:")?;
    let mut tape = GradTape::new();
    let t0 = std::time::Instant::now();
    let loss = model
        .forward(&x, clip_model::Pass::train().tape(&mut tape))?
        .sum(Kind::Float);
    tape.backward(&loss)?;
    let secs = t0.elapsed().as_secs_f64();
    let peak = status_kib("VmHWM:")?;
    let mib = |kib: i64| kib as f64 / 1024.0;
    // Gradient buffers of the trainable parameters are needed with or without
    // checkpointing; what is left of the step's peak is activations.
    let grads_mib = model
        .params()
        .iter()
        .filter(|p| p.tensor.requires_grad())
        .map(|p| p.numel() * 4)
        .sum::<i64>() as f64
        / (1024.0 * 1024.0);
    let step = mib(peak - base);
    println!(
        "{{\"checkpointing\": {checkpointing}, \"glibc_default\": {glibc_default}, \"batch\": {batch}, \"rss_after_build_mib\": {:.0}, \"peak_mib\": {:.0}, \"step_peak_minus_base_mib\": {step:.0}, \"gradients_mib\": {grads_mib:.0}, \"activations_mib\": {:.0}, \"step_seconds\": {secs:.2}}}",
        mib(base),
        mib(peak),
        step - grads_mib
    );
    Ok(())
}
