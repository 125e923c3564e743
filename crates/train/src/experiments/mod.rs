//! Experiments built from runs: `train-cli compare` (zero-shot, linear probe,
//! LoRA, full fine-tuning, WiSE-FT and FLYP side by side), WiSE-FT's weight
//! interpolation, model soups and sweeps.

pub(crate) mod compare;
pub(crate) mod soup;
pub(crate) mod sweep;
pub(crate) mod wise_ft;
