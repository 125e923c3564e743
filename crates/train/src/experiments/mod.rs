//! Experiments built from runs: `train-cli compare` (zero-shot, linear probe,
//! LoRA, full fine-tuning, WiSE-FT and FLYP side by side) and WiSE-FT's weight
//! interpolation.

pub(crate) mod compare;
pub(crate) mod wise_ft;
