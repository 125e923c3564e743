//! # clip-model
//!
//! CLIP in [`tch`]: the vision and text towers, Hugging Face checkpoints (load and
//! save, every tensor named as its Hugging Face key), the tokenizer, the image
//! classifier with random or zero-shot heads, typed parameter tags, dropout and
//! drop-path, and per-block gradient checkpointing.
//!
//! Layering: this is the bottom crate of the workspace. It knows nothing of
//! optimizers (`clip-optim`), data (`clip-data`) or training (`clip-train`); those
//! read the typed parameter tags ([`ParamTag`]) this crate attaches when it creates
//! each tensor.
//!
//! ```
//! use clip_model::{ClipConfig, ClipModel, Tower};
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = ClipModel::new(&vs.root(), &ClipConfig::tiny()).unwrap();
//! let pixels = tch::Tensor::randn([2, 3, 32, 32], (tch::Kind::Float, tch::Device::Cpu));
//! let ids = tch::Tensor::from_slice(&[49406i64, 320, 49407]).view([1, 3]);
//! let out = model.forward(&pixels, &ids, clip_model::Pass::eval()).unwrap();
//! assert_eq!(out.logits_per_image.size(), [2, 1]);
//! // Freeze the text tower, as classification fine-tuning does.
//! model.params().set_tower_trainable(Tower::Text, 0..=u32::MAX, false);
//! assert!(model.params().trainable_count() < model.params().count(|_| true));
//! ```

mod adapter;
mod attention;
mod autocast;
mod classifier;
mod clip;
mod config;
mod cuda;
mod dropout;
mod encoder;
mod error;
mod grad_checkpoint;
mod hub;
mod layers;
mod lora;
mod memory;
mod tags;
mod text;
mod tokenizer;
mod torch_pickle;
mod vision;
mod weights;

pub use adapter::LoraAdapter;
pub use autocast::{autocast_enabled, with_autocast};
pub use classifier::{ClipClassifier, HeadConfig, HeadInit, HeadKind, zero_shot_weights};
pub use clip::{ClipModel, ClipOutput, l2_normalize};
pub use config::{Activation, ClipConfig, TextConfig, VisionConfig};
pub use cuda::{
    CudaMemory, cuda_device_count, cuda_memory, cuda_total_memory, load_cuda,
    nvidia_driver_present, reset_cuda_peak, set_tf32_matmul, tf32_matmul,
};
pub use encoder::Regularization;
pub use error::{ModelError, Result};
pub use grad_checkpoint::{GradTape, Pass};
pub use hub::ModelFiles;
pub use layers::{LayerNorm, Linear};
pub use lora::{LoraConfig, LoraTarget, peft_adapter_config, save_peft_adapter};
pub use memory::release_freed_activations;
pub use tags::{
    DecayClass, Module, Param, ParamReport, ParamTable, ParamTag, ReportRow, Scope, Tower,
    depth_label,
};
pub use tch::Device;
pub use text::TextOutput;
pub use tokenizer::ClipTokenizer;
pub use vision::VisionOutput;
pub use weights::{
    assign, read_safetensors, read_weights, weight_files, write_atomic, write_safetensors,
};
