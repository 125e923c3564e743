//! CUDA tests (feature `cuda-tests`; `scripts/gpu_check.sh` runs them): a
//! vit-b-32-shaped training step on the GPU against the same step on the CPU, the
//! fp16 GradScaler skipping overflowing steps on the GPU, and the GPU memory
//! figures. Each test says it is skipped, and passes, where libtorch sees no GPU.

#![cfg(feature = "cuda-tests")]
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use clip_model::{ClipConfig, ClipModel};
use clip_train::{MemoryKind, RunConfig, Trainer};
use tch::Tensor;

#[path = "../../../tests/support/image_folder.rs"]
mod image_folder;

/// One test at a time: they share the GPU and libtorch's global generator.
static SERIAL: Mutex<()> = Mutex::new(());

fn gpu() -> bool {
    let n = clip_model::cuda_device_count();
    if n == 0 {
        eprintln!("skipped: libtorch sees no CUDA device");
    }
    n > 0
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// A CLIP with vit-b-32's vision tower (768 wide, 12 blocks, patch 32 at 224)
/// and tiny-a's text tower and tokenizer (for the zero-shot head), random
/// weights, saved as a Hugging Face folder: both devices start from the same
/// weights.
fn vit_b_32_folder(dir: &Path) -> PathBuf {
    let tiny = fixtures().join("model/tiny-a");
    let mut config = ClipConfig::from_json_file(&tiny.join("config.json")).unwrap();
    config.vision_config = ClipConfig::vit_b_32().vision_config;
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let model = ClipModel::new(&vs.root(), &config).unwrap();
    let out = dir.join("vit-b-32-shaped");
    model.save_pretrained(&out).unwrap();
    std::fs::copy(tiny.join("tokenizer.json"), out.join("tokenizer.json")).unwrap();
    out
}

fn config(dir: &Path, model: &Path, device: &str, extra: &[&str]) -> RunConfig {
    let data = dir.join("data");
    if !data.exists() {
        image_folder::make_folder(&data, &["cat", "dog", "fox"], 8);
    }
    let toml = format!(
        r#"
        [run]
        name = "cuda-{device}"
        output_dir = {out:?}
        device = {device:?}
        overwrite = true
        [model]
        pretrained = {model:?}
        [model.head]
        init = "zero_shot"
        [data]
        train = {{ kind = "image_folder", path = {data:?} }}
        val = {{ kind = "image_folder", path = {data:?} }}
        train_transforms = [{{ op = "resize", size = 224 }}, {{ op = "center_crop", size = 224 }}, {{ op = "normalize" }}]
        [data.loader]
        batch_size = 8
        shuffle = false
        threads = 1
        [train]
        grad_accum = 2
        "#,
        out = dir.display().to_string(),
        model = model.display().to_string(),
        data = data.display().to_string(),
    );
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    RunConfig::from_toml(&toml, "cuda.toml", &extra).unwrap()
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    let b = b.to_device(tch::Device::Cpu);
    let a = a.to_device(tch::Device::Cpu);
    let scale = b.abs().max().double_value(&[]).max(1e-12);
    (a - b).abs().max().double_value(&[]) / scale
}

/// The accumulated gradients of one step (2 micro-batches of 8 images at 224) on
/// the GPU equal the CPU's, tensor by tensor, in fp32 (TF32 off, PyTorch's
/// default) and within bf16's precision under bf16 autocast; and FLYP's
/// contrastive step (both towers, the logit scale) in fp32.
#[test]
fn a_vit_b_32_shaped_step_on_cuda_equals_the_cpu_step() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = vit_b_32_folder(tmp.path());
    let contrastive: &[&str] = &["train.objective=\"contrastive\"", "optim.frozen_towers=[]"];
    for (precision, extra, tolerance) in [
        ("fp32", &[][..], 1e-3),
        ("bf16", &[][..], 5e-2),
        ("fp32", contrastive, 1e-3),
    ] {
        let p = format!("train.precision=\"{precision}\"");
        let mut sets = vec![p.as_str()];
        sets.extend_from_slice(extra);
        let precision = format!(
            "{precision}{}",
            if extra.is_empty() { "" } else { " contrastive" }
        );
        let grads = |device: &str| {
            let mut t = Trainer::new(config(tmp.path(), &model, device, &sets)).unwrap();
            t.step_gradients(0, 0).unwrap()
        };
        let (cpu, cuda) = (grads("cpu"), grads("cuda"));
        assert_eq!(cpu.len(), cuda.len());
        assert!(cpu.len() > 150, "{} gradients", cpu.len());
        for ((name, a), (name_b, b)) in cuda.iter().zip(&cpu) {
            assert_eq!(name, name_b);
            let d = max_rel_diff(a, b);
            assert!(
                d < tolerance,
                "{precision} {name}: relative difference {d:e}"
            );
        }
    }
}

/// fp16 with a loss scale far too large on the GPU: the overflowing steps are
/// skipped and halve the scale, as torch.amp.GradScaler does; AdamW counts only
/// the steps taken.
#[test]
fn fp16_and_the_grad_scaler_skip_overflowing_steps_on_cuda() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = vit_b_32_folder(tmp.path());
    let cfg = config(
        tmp.path(),
        &model,
        "cuda",
        &[
            "train.precision=\"fp16\"",
            "optim.scaler={init_scale=1073741824.0, growth_interval=1000}",
            "train.max_steps=30",
            "train.log_every_steps=1",
        ],
    );
    let mut t = Trainer::new(cfg).unwrap();
    let files = clip_train::MetricsFiles::open(t.run_dir(), None, 1).unwrap();
    let r = t
        .fit(&mut [Box::new(files) as Box<dyn clip_train::Observer>])
        .unwrap();
    let steps: Vec<clip_train::StepMetrics> =
        clip_train::read_metrics(&r.run_dir.join("metrics.jsonl"))
            .unwrap()
            .into_iter()
            .filter_map(|l| match l {
                clip_train::MetricsLine::Step(m) => Some(m),
                clip_train::MetricsLine::Eval(_) => None,
            })
            .collect();
    assert_eq!(steps.len(), 30);
    let mut scale = 2f64.powi(30);
    for m in &steps {
        if m.skipped {
            scale *= 0.5;
            assert!(!m.grad_norm.is_finite(), "step {}", m.step);
        }
        assert_eq!(m.loss_scale, Some(scale), "step {}", m.step);
    }
    let skipped = steps.iter().filter(|m| m.skipped).count();
    assert!((1..30).contains(&skipped), "{skipped} skipped");
    assert!(steps.last().unwrap().loss.is_finite());
    let opt: std::collections::HashMap<String, Tensor> =
        clip_model::read_safetensors(&r.latest_checkpoint.unwrap().join("optimizer.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    // AdamW has no state for a tensor before its first step.
    let adam_steps = opt
        .get("classification_head.weight.step")
        .map_or(0.0, |t| t.double_value(&[]));
    assert_eq!(adam_steps as usize, 30 - skipped);
    assert_eq!(r.memory_kind, MemoryKind::CudaAllocated);
}

/// The memory figures are the GPU's (non-zero, reserved at least allocated), and
/// gradient checkpointing lowers the peak of the same steps.
#[test]
fn gpu_memory_figures_are_reported_and_fall_with_gradient_checkpointing() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !gpu() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let model = vit_b_32_folder(tmp.path());
    let bench = |checkpointing: bool| {
        let c = format!("train.gradient_checkpointing={checkpointing}");
        let mut t = Trainer::new(config(
            tmp.path(),
            &model,
            "cuda",
            &[&c, "data.loader.batch_size=24", "train.grad_accum=1"],
        ))
        .unwrap();
        t.bench(1, 2).unwrap()
    };
    let (plain, checkpointed) = (bench(false), bench(true));
    for b in [&plain, &checkpointed] {
        assert_eq!(b.memory_kind, MemoryKind::CudaAllocated);
        assert!(b.peak_memory_mib > 100.0, "{b:?}");
        assert!(b.peak_reserved_mib.unwrap() >= b.peak_memory_mib, "{b:?}");
    }
    assert!(
        checkpointed.peak_memory_mib < plain.peak_memory_mib,
        "checkpointing {:.0} MiB, plain {:.0} MiB",
        checkpointed.peak_memory_mib,
        plain.peak_memory_mib
    );
    eprintln!(
        "vit-b-32 batch 24 fp32 peak allocated: {:.0} MiB plain, {:.0} MiB with gradient checkpointing",
        plain.peak_memory_mib, checkpointed.peak_memory_mib
    );
}
