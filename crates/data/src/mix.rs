//! Batch-level MixUp and CutMix with soft labels, as timm's `Mixup` (batch mode):
//! each image is mixed with the batch's reversed order, `lambda ~ Beta(a, a)`.

use serde::{Deserialize, Serialize};

use crate::DataError;
use crate::rng::SampleRng;

/// `[data.loader.mix]`; off unless an alpha is positive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixConfig {
    /// MixUp's Beta parameter (0 = off).
    pub mixup_alpha: f64,
    /// CutMix's Beta parameter (0 = off).
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// With both on, the probability of CutMix rather than MixUp.
    pub switch_prob: f64,
    /// Label smoothing folded into the soft targets.
    pub label_smoothing: f64,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 0.0,
            cutmix_alpha: 0.0,
            prob: 1.0,
            switch_prob: 0.5,
            label_smoothing: 0.0,
        }
    }
}

impl MixConfig {
    pub fn enabled(&self) -> bool {
        self.mixup_alpha > 0.0 || self.cutmix_alpha > 0.0
    }

    /// Every bad value, each naming its key under `prefix` (`data.loader.mix` in
    /// a run config).
    pub fn problems(&self, prefix: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (k, v) in [
            ("mixup_alpha", self.mixup_alpha),
            ("cutmix_alpha", self.cutmix_alpha),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                problems.push(format!("`{prefix}.{k}` must be >= 0, got {v}"));
            }
        }
        for (k, v) in [
            ("prob", self.prob),
            ("switch_prob", self.switch_prob),
            ("label_smoothing", self.label_smoothing),
        ] {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("`{prefix}.{k}` must be in [0, 1], got {v}"));
            }
        }
        problems
    }

    /// Every bad value at once (keys under `data.loader.mix`).
    pub fn validate(&self) -> Result<(), DataError> {
        let problems = self.problems("data.loader.mix");
        if problems.is_empty() {
            Ok(())
        } else {
            Err(DataError::config("data.loader.mix", problems.join("; ")))
        }
    }
}

fn normal(rng: &mut SampleRng) -> f64 {
    let u1 = rng.next_f64().max(f64::MIN_POSITIVE);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) by Marsaglia and Tsang.
fn gamma(shape: f64, rng: &mut SampleRng) -> f64 {
    if shape < 1.0 {
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.next_f64().max(f64::MIN_POSITIVE);
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A draw from Beta(a, a).
pub fn beta(a: f64, rng: &mut SampleRng) -> f64 {
    let x = gamma(a, rng);
    let y = gamma(a, rng);
    x / (x + y)
}

/// Mixes `images` (`batch x 3 x h x w`) in place and returns soft targets
/// (`batch x classes`) and the lambda used (1 when the batch was left alone).
pub fn mix_batch(
    images: &mut [f32],
    labels: &[i64],
    h: usize,
    w: usize,
    classes: usize,
    cfg: &MixConfig,
    rng: &mut SampleRng,
) -> (Vec<f32>, f64) {
    let b = labels.len();
    let per = 3 * h * w;
    let off = cfg.label_smoothing / classes as f64;
    let on = 1.0 - cfg.label_smoothing + off;
    let mut lam = 1.0;
    if cfg.enabled() && b > 1 && rng.bernoulli(cfg.prob) {
        let cutmix =
            cfg.cutmix_alpha > 0.0 && (cfg.mixup_alpha <= 0.0 || rng.bernoulli(cfg.switch_prob));
        let original = images.to_vec();
        if cutmix {
            lam = beta(cfg.cutmix_alpha, rng);
            let cut = (1.0 - lam).sqrt();
            let (ch, cw) = ((h as f64 * cut) as i64, (w as f64 * cut) as i64);
            let cy = rng.int_range(0, h as i64 - 1);
            let cx = rng.int_range(0, w as i64 - 1);
            let (y0, y1) = (
                (cy - ch / 2).clamp(0, h as i64) as usize,
                (cy + ch / 2).clamp(0, h as i64) as usize,
            );
            let (x0, x1) = (
                (cx - cw / 2).clamp(0, w as i64) as usize,
                (cx + cw / 2).clamp(0, w as i64) as usize,
            );
            for i in 0..b {
                let j = b - 1 - i;
                for c in 0..3 {
                    for y in y0..y1 {
                        let row = c * h * w + y * w;
                        images[i * per + row + x0..i * per + row + x1]
                            .copy_from_slice(&original[j * per + row + x0..j * per + row + x1]);
                    }
                }
            }
            lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
        } else {
            lam = beta(cfg.mixup_alpha, rng);
            let l = lam as f32;
            for i in 0..b {
                let j = b - 1 - i;
                for (x, &y) in images[i * per..(i + 1) * per]
                    .iter_mut()
                    .zip(&original[j * per..(j + 1) * per])
                {
                    *x = *x * l + y * (1.0 - l);
                }
            }
        }
    }
    let mut targets = vec![0f32; b * classes];
    for i in 0..b {
        let row = &mut targets[i * classes..(i + 1) * classes];
        let (a, z) = (labels[i] as usize, labels[b - 1 - i] as usize);
        for (k, t) in row.iter_mut().enumerate() {
            let ya = if k == a { on } else { off };
            let yb = if k == z { on } else { off };
            *t = (ya * lam + yb * (1.0 - lam)) as f32;
        }
    }
    (targets, lam)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_draws_have_the_right_mean_and_range() {
        let mut rng = SampleRng::new(1, 2, 3);
        let draws: Vec<f64> = (0..20_000).map(|_| beta(0.2, &mut rng)).collect();
        assert!(draws.iter().all(|d| (0.0..=1.0).contains(d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        // Beta(0.2, 0.2) is U-shaped: most mass near 0 and 1.
        let edges = draws.iter().filter(|d| **d < 0.1 || **d > 0.9).count();
        assert!(edges > draws.len() / 2);
    }

    #[test]
    fn mixup_targets_sum_to_one_and_match_lambda() {
        let (h, w, classes) = (2, 2, 3);
        let mut images: Vec<f32> = (0..2 * 12)
            .map(|i| if i < 12 { 1.0 } else { 0.0 })
            .collect();
        let cfg = MixConfig {
            mixup_alpha: 1.0,
            ..MixConfig::default()
        };
        let (t, lam) = mix_batch(
            &mut images,
            &[0, 2],
            h,
            w,
            classes,
            &cfg,
            &mut SampleRng::new(0, 0, 0),
        );
        assert!(
            (images[0] as f64 - lam).abs() < 1e-6,
            "image 0 = lam * 1 + (1 - lam) * 0"
        );
        assert!((t[0] as f64 - lam).abs() < 1e-6 && (t[2] as f64 - (1.0 - lam)).abs() < 1e-6);
        for row in t.chunks(classes) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
    }

    #[test]
    fn cutmix_pastes_a_box_and_sets_lambda_to_the_kept_area() {
        let (h, w) = (8, 8);
        let mut images: Vec<f32> = (0..2 * 3 * 64)
            .map(|i| if i < 192 { 1.0 } else { 0.0 })
            .collect();
        let cfg = MixConfig {
            cutmix_alpha: 1.0,
            label_smoothing: 0.1,
            ..MixConfig::default()
        };
        let (t, lam) = mix_batch(
            &mut images,
            &[0, 1],
            h,
            w,
            2,
            &cfg,
            &mut SampleRng::new(0, 0, 5),
        );
        let kept = images[..192].iter().filter(|v| **v == 1.0).count() as f64 / 192.0;
        assert!((kept - lam).abs() < 1e-9, "kept {kept} vs lambda {lam}");
        let (on, off) = (0.95, 0.05);
        assert!((t[0] as f64 - (on * lam + off * (1.0 - lam))).abs() < 1e-6);
    }
}
