use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind};

use crate::TrainError;

/// Numeric precision of the forward and backward passes. Weights, optimizer state
/// and gradients of leaves stay fp32 in every mode; `bf16` and `fp16` run matmuls
/// and convolutions under libtorch autocast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    /// The autocast dtype, or `None` for plain fp32.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Runs `f` under libtorch autocast to this precision on `device` (plainly for
    /// fp32).
    pub fn autocast<T>(self, device: Device, f: impl FnOnce() -> T) -> crate::Result<T> {
        match self.autocast_kind() {
            Some(kind) => Ok(clip_model::with_autocast(device, kind, f)?),
            None => Ok(f()),
        }
    }

    /// fp16 needs a gradient scaler; bf16 has fp32's exponent range and does not.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }
}

impl std::fmt::Display for Precision {
    /// `fp32`, `bf16`, `fp16`: as configs write it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
            Precision::Fp16 => "fp16",
        })
    }
}

impl FromStr for Precision {
    type Err = TrainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fp32" => Ok(Precision::Fp32),
            "bf16" => Ok(Precision::Bf16),
            "fp16" => Ok(Precision::Fp16),
            other => Err(TrainError::Config {
                key: "train.precision".into(),
                reason: format!("expected \"fp32\", \"bf16\" or \"fp16\", got {other:?}"),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Section {
        precision: Precision,
    }

    #[test]
    fn parses_from_toml_and_maps_to_autocast_kinds() {
        let s: Section = toml::from_str("precision = \"fp16\"").unwrap();
        assert_eq!(s.precision, Precision::Fp16);
        assert!(s.precision.needs_loss_scaling());
        assert_eq!(Precision::Fp32.autocast_kind(), None);
        assert!(!Precision::Bf16.needs_loss_scaling());
    }

    #[test]
    fn unknown_precision_names_the_key_and_value() {
        let err = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(
            err.contains("train.precision") && err.contains("fp8"),
            "{err}"
        );
        assert!(toml::from_str::<Section>("precision = \"half\"").is_err());
    }

    #[test]
    fn bf16_tensor_round_trips_through_libtorch() {
        let x = tch::Tensor::from_slice(&[1.5f32, -2.25]).to_kind(Kind::BFloat16);
        assert_eq!(x.kind(), Kind::BFloat16);
        let back: Vec<f32> = Vec::try_from(x.to_kind(Kind::Float)).unwrap();
        assert_eq!(back, vec![1.5, -2.25]);
    }
}
