//! # clip-model
//!
//! CLIP in [`tch`]: the vision and text towers, Hugging Face checkpoints, the
//! tokenizer, classification heads and LoRA adapters.
//!
//! Layering: this is the bottom crate of the workspace. It knows nothing of
//! optimizers (`clip-optim`), data (`clip-data`) or training (`clip-train`); those
//! read the typed parameter tags this crate attaches when it creates each tensor.
//!
//! ```
//! use clip_model::Device;
//! let device = Device::Cpu;
//! let x = tch::Tensor::ones([2, 3], (tch::Kind::Float, device));
//! assert_eq!(x.sum(tch::Kind::Float).double_value(&[]), 6.0);
//! ```

pub use tch::Device;

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    #[test]
    fn libtorch_links_and_computes() {
        let a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        let b = Tensor::from_slice(&[4.0f32, 5.0, 6.0]);
        let dot = (&a * &b).sum(Kind::Float).double_value(&[]);
        assert_eq!(dot, 32.0);
    }
}
