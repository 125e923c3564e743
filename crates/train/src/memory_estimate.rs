//! What a training step keeps in device memory, estimated from the model's
//! dimensions before anything is allocated: the fp32 weights, the trained ones'
//! gradients and AdamW's two moments, and the activations a micro-batch keeps
//! for the backward. `--dry-run` prints it; on a GPU whose memory it exceeds,
//! full fine-tuning without gradient checkpointing gets a warning.
//!
//! Activations per transformer block and sample, with `s` tokens, width `h` and
//! MLP width `i` (attention through `scaled_dot_product_attention`, whose fused
//! kernels keep no `s x s` matrix): the two layer norms' inputs (the residual
//! stream, fp32 under autocast), and in the activation precision the inputs of
//! the q/k/v, output, fc1 and fc2 projections, q, k, v and the attention's
//! output, and the activation function's input — `2·4·s·h + 7·b·s·h + 2·b·s·i`
//! bytes with `b` bytes per element (4 in fp32, 2 under bf16 / fp16 autocast).
//! Under gradient checkpointing a block keeps only its input (`4·s·h`), and one
//! block's activations exist again while it is recomputed. Not counted: the
//! CUDA context and kernels' workspaces (about 0.5-1 GiB), the caching
//! allocator's fragmentation, the loader's batches.

use clip_model::{ClipConfig, Tower};

use crate::precision::Precision;

/// The estimate, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct MemoryEstimate {
    /// Every weight in fp32, plus the trained ones' gradients and AdamW's two
    /// moments (fp32 each).
    pub states: u64,
    /// What one micro-batch keeps for its backward.
    pub activations: u64,
}

/// One tower's shape, as the estimate needs it.
struct Stack {
    layers: u64,
    tokens: u64,
    width: u64,
    mlp: u64,
}

impl Stack {
    /// Bytes one block keeps per sample for its backward.
    fn per_block(&self, bytes: u64) -> u64 {
        let (s, h, i) = (self.tokens, self.width, self.mlp);
        2 * 4 * s * h + 7 * bytes * s * h + 2 * bytes * s * i
    }

    /// Bytes the whole stack keeps per sample.
    fn per_sample(&self, bytes: u64, checkpointing: bool) -> u64 {
        if checkpointing {
            self.layers * 4 * self.tokens * self.width + self.per_block(bytes)
        } else {
            self.layers * self.per_block(bytes)
        }
    }
}

impl MemoryEstimate {
    /// The estimate for `config` with `total` parameters of which `trained`
    /// train, the towers in `forward` run forward and backward every step
    /// (the vision tower; the text tower too when it trains on captions), at
    /// `batch` samples per micro-batch in `precision`.
    pub fn of(
        config: &ClipConfig,
        total: u64,
        trained: u64,
        forward: &[Tower],
        batch: u64,
        precision: Precision,
        checkpointing: bool,
    ) -> Self {
        let bytes = match precision {
            Precision::Fp32 => 4,
            Precision::Bf16 | Precision::Fp16 => 2,
        };
        let v = &config.vision_config;
        let t = &config.text_config;
        let n = |x: i64| u64::try_from(x).unwrap_or(0);
        let patches = n(v.image_size) / n(v.patch_size).max(1);
        let mut stacks = Vec::new();
        if forward.contains(&Tower::Vision) {
            stacks.push(Stack {
                layers: n(v.num_hidden_layers),
                tokens: patches * patches + 1,
                width: n(v.hidden_size),
                mlp: n(v.intermediate_size),
            });
        }
        if forward.contains(&Tower::Text) {
            stacks.push(Stack {
                layers: n(t.num_hidden_layers),
                tokens: n(t.max_position_embeddings),
                width: n(t.hidden_size),
                mlp: n(t.intermediate_size),
            });
        }
        Self {
            states: 4 * total + 12 * trained,
            activations: batch
                * stacks
                    .iter()
                    .map(|s| s.per_sample(bytes, checkpointing))
                    .sum::<u64>(),
        }
    }

    pub fn total(&self) -> u64 {
        self.states + self.activations
    }
}

/// The estimate for `model` trained as `cfg` says (with gradient checkpointing
/// as `checkpointing` says): `groups` are its trained parameters, `trained`
/// their towers (the vision and text ones among them run forward and backward
/// every step).
pub(crate) fn for_run(
    cfg: &crate::config::RunConfig,
    model: &clip_model::ClipClassifier,
    groups: &[clip_optim::ParamGroup],
    trained: &[Tower],
    checkpointing: bool,
) -> MemoryEstimate {
    let total = u64::try_from(model.params().count(|_| true)).unwrap_or(0);
    let trained_params = u64::try_from(groups.iter().map(|g| g.numel()).sum::<i64>()).unwrap_or(0);
    let forward: Vec<Tower> = trained
        .iter()
        .copied()
        .filter(|t| matches!(t, Tower::Vision | Tower::Text))
        .collect();
    MemoryEstimate::of(
        model.clip.config(),
        total,
        trained_params,
        &forward,
        cfg.data.loader.batch_size as u64,
        cfg.train.precision,
        checkpointing,
    )
}

/// What the CUDA context and kernels' workspaces take besides (an allowance).
pub const CONTEXT: u64 = 1 << 30;

/// The warning for a run without gradient checkpointing whose estimate
/// (`without`, plus [`CONTEXT`]) exceeds 90 % of the GPU's `device_total`
/// bytes: what to set, with the estimate under checkpointing (`with`).
pub(crate) fn gpu_advice(
    without: MemoryEstimate,
    with: MemoryEstimate,
    device_total: u64,
    batch: usize,
) -> Option<String> {
    let need = without.total() + CONTEXT;
    (need as f64 > 0.9 * device_total as f64 && with.activations < without.activations).then(|| {
        format!(
            "the run's estimated memory, {:.1} GiB (weights and optimizer states {:.1}, \
             activations of a batch of {batch} {:.1}, the CUDA context ~1), exceeds 90% of the \
             GPU's {:.1} GiB: set `train.gradient_checkpointing = true` (activations ~{:.1} GiB), \
             or halve `data.loader.batch_size` and double `train.grad_accum` (the same global \
             batch)",
            gib(need),
            gib(without.states),
            gib(without.activations),
            gib(device_total),
            gib(with.activations)
        )
    })
}

/// Bytes as GiB, for messages.
pub fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ViT-B/32 at batch 256 in bf16, worked by hand: 50 tokens of width 768,
    /// MLP 3072; a block keeps 8·50·768 + 14·50·768 + 4·50·3072 = 1,459,200
    /// bytes per image; 12 blocks x 256 images = 4.48 GB. 151,277,313 weights
    /// (the vision tower and head trained: 87,849,216 + 512 x 10 + 10).
    #[test]
    fn vit_b_32_by_hand() {
        let cfg = clip_model::ClipConfig::preset("vit-b-32").unwrap();
        let trained = 87_849_216 + 512 * 10 + 10;
        let e = MemoryEstimate::of(
            &cfg,
            151_277_313,
            trained,
            &[Tower::Vision],
            256,
            Precision::Bf16,
            false,
        );
        assert_eq!(e.activations, 256 * 12 * 1_459_200);
        assert_eq!(e.states, 4 * 151_277_313 + 12 * trained);
        // fp32 doubles what autocast keeps in 16 bits; checkpointing keeps each
        // block's input and one block.
        let fp32 = MemoryEstimate::of(&cfg, 1, 0, &[Tower::Vision], 256, Precision::Fp32, false);
        assert_eq!(
            fp32.activations,
            256 * 12 * (8 * 38_400 + 28 * 38_400 + 8 * 153_600)
        );
        let ckpt = MemoryEstimate::of(&cfg, 1, 0, &[Tower::Vision], 256, Precision::Bf16, true);
        assert_eq!(ckpt.activations, 256 * (12 * 4 * 38_400 + 1_459_200));
        assert!(ckpt.activations * 5 < e.activations);
        // The text tower adds its 77 positions when it trains (FLYP).
        let both = MemoryEstimate::of(
            &cfg,
            1,
            0,
            &[Tower::Vision, Tower::Text],
            256,
            Precision::Bf16,
            false,
        );
        assert!(both.activations > e.activations);
        assert!((gib(e.total()) - 5.7).abs() < 0.2, "{}", gib(e.total()));
    }

    /// The GPU warning: only when the estimate (with the context) passes 90 %
    /// of the device, and it names the setting and the checkpointed figure.
    #[test]
    fn gpu_advice_when_the_estimate_exceeds_the_device() {
        let cfg = clip_model::ClipConfig::preset("vit-b-32").unwrap();
        let at = |batch, ckpt| {
            MemoryEstimate::of(
                &cfg,
                151_277_313,
                87_854_346,
                &[Tower::Vision],
                batch,
                Precision::Bf16,
                ckpt,
            )
        };
        let gpu16 = 16u64 << 30;
        assert_eq!(gpu_advice(at(256, false), at(256, true), gpu16, 256), None);
        let a = gpu_advice(at(1024, false), at(1024, true), gpu16, 1024).unwrap();
        assert!(
            a.contains("train.gradient_checkpointing = true") && a.contains("16.0 GiB"),
            "{a}"
        );
        assert_eq!(
            gpu_advice(at(1024, false), at(1024, true), 80 << 30, 1024),
            None
        );
    }
}
