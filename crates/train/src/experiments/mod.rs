//! Experiments built from runs: `train-cli compare` (zero-shot, linear probe,
//! LoRA, full fine-tuning, WiSE-FT and FLYP side by side), WiSE-FT's weight
//! interpolation, model soups and sweeps.

pub(crate) mod compare;
pub(crate) mod soup;
pub(crate) mod sweep;
pub(crate) mod wise_ft;

/// The mean of the accuracies on the evaluation sets (by name); `None` without
/// sets. The "shifted accuracy" of WiSE-FT's and the soups' pictures.
pub(crate) fn mean_accuracy(sets: &std::collections::BTreeMap<String, f64>) -> Option<f64> {
    (!sets.is_empty()).then(|| sets.values().sum::<f64>() / sets.len() as f64)
}
