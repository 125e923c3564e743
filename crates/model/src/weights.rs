//! Reading and writing safetensors checkpoints in Hugging Face's layout.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use tch::{Kind, Tensor};

use crate::error::{ModelError, Result};
use crate::tags::{Param, ParamTable};

/// Reads every tensor of one safetensors file. fp16 and bf16 tensors come back as
/// fp32 (fp64 stays fp64); a truncated or corrupt file is an error naming it.
pub fn read_safetensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes =
        std::fs::read(path).map_err(|e| ModelError::io("cannot read checkpoint", path, e))?;
    let bad = |reason: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(bad(format!(
                    "tensor `{name}` has unsupported dtype {other:?}"
                )));
            }
        };
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        out.push((name, widened(t)));
    }
    Ok(out)
}

/// fp16 and bf16 weights as fp32 (the model's master weights); others as they are.
pub(crate) fn widened(t: Tensor) -> Tensor {
    if matches!(t.kind(), Kind::Half | Kind::BFloat16) {
        t.to_kind(Kind::Float)
    } else {
        t
    }
}

/// The files of a sharded checkpoint: every shard its index (`*.index.json`)
/// names, once each.
fn shards(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let text =
        std::fs::read_to_string(index).map_err(|e| ModelError::io("cannot read", index, e))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| ModelError::ConfigParse {
            path: index.to_path_buf(),
            source,
        })?;
    let map = json["weight_map"]
        .as_object()
        .ok_or_else(|| ModelError::Checkpoint {
            path: index.to_path_buf(),
            reason: "no `weight_map` object".into(),
        })?;
    let mut shards: Vec<PathBuf> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(|f| dir.join(f))
        .collect();
    shards.sort();
    shards.dedup();
    Ok(shards)
}

/// The weight files of a model folder: `model.safetensors` or the shards listed
/// in `model.safetensors.index.json`; without them, PyTorch's
/// `pytorch_model.bin` or the shards of `pytorch_model.bin.index.json`
/// (safetensors is preferred when both are there).
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    for (single, index) in [
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ] {
        if dir.join(single).is_file() {
            return Ok(vec![dir.join(single)]);
        }
        if dir.join(index).is_file() {
            return shards(dir, &dir.join(index));
        }
    }
    Err(ModelError::NotFound {
        model: dir.display().to_string(),
        reason: "no model.safetensors, model.safetensors.index.json, pytorch_model.bin or \
                 pytorch_model.bin.index.json in the folder"
            .into(),
    })
}

/// Reads weight files (a checkpoint and its shards; safetensors, or PyTorch's
/// `.bin`) into one map.
pub fn read_weights(files: &[PathBuf]) -> Result<HashMap<String, Tensor>> {
    let mut all = HashMap::new();
    for file in files {
        if file.extension().is_some_and(|e| e == "safetensors") {
            all.extend(read_safetensors(file)?);
        } else {
            all.extend(crate::torch_pickle::read_torch_pickle(file)?);
        }
    }
    Ok(all)
}

/// Copies checkpoint tensors into the parameters of `table` by name. Legacy
/// `position_ids` buffers are ignored; parameters for which `optional` is true may
/// be absent. Missing, unexpected and wrongly-shaped tensors are all reported in
/// one error naming `source`.
pub fn assign(
    table: &ParamTable,
    mut tensors: HashMap<String, Tensor>,
    source: &Path,
    optional: impl Fn(&Param) -> bool,
) -> Result<()> {
    tensors.retain(|k, _| !k.ends_with("position_ids"));
    let mut missing = Vec::new();
    let mut mismatched = Vec::new();
    tch::no_grad(|| -> Result<()> {
        for p in table.iter() {
            match tensors.remove(&p.name) {
                None if optional(p) => {}
                None => missing.push(p.name.clone()),
                Some(t) if t.size() != p.tensor.size() => mismatched.push(format!(
                    "{} (checkpoint {:?}, model {:?})",
                    p.name,
                    t.size(),
                    p.tensor.size()
                )),
                Some(t) => {
                    let mut dst = p.tensor.shallow_clone();
                    dst.f_copy_(&t.to_device(dst.device()))?;
                }
            }
        }
        Ok(())
    })?;
    let mut unexpected: Vec<String> = tensors.into_keys().collect();
    unexpected.sort();
    if missing.is_empty() && unexpected.is_empty() && mismatched.is_empty() {
        return Ok(());
    }
    let mut details = String::new();
    for (what, list) in [
        ("missing", &missing),
        ("unexpected", &unexpected),
        ("wrong shape", &mismatched),
    ] {
        if !list.is_empty() {
            details.push_str(&format!("\n  {} {what}: {}", list.len(), list.join(", ")));
        }
    }
    Err(ModelError::Mismatch {
        path: source.to_path_buf(),
        details,
    })
}

/// Writes named tensors as one safetensors file (with `format = pt` metadata, as
/// transformers requires), atomically: a temporary file in the same folder, then a
/// rename, so an interrupted write never leaves a broken file behind.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = t.detach().to_device(tch::Device::Cpu).contiguous();
        let dtype = match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::Half => Dtype::F16,
            Kind::BFloat16 => Dtype::BF16,
            Kind::Double => Dtype::F64,
            Kind::Int64 => Dtype::I64,
            Kind::Int => Dtype::I32,
            Kind::Uint8 => Dtype::U8,
            Kind::Bool => Dtype::BOOL,
            other => {
                return Err(ModelError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: format!("cannot write tensor `{name}` of kind {other:?}"),
                });
            }
        };
        let numel = t.numel();
        let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
        t.f_copy_data_u8(&mut data, numel)?;
        let shape: Vec<usize> = t.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, data));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            safetensors::tensor::TensorView::new(*dtype, shape.clone(), data)
                .map(|v| (name.clone(), v))
                .map_err(|e| ModelError::Checkpoint {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut meta: HashMap<String, String> = metadata.into_iter().collect();
    meta.entry("format".into()).or_insert_with(|| "pt".into());
    let bytes =
        safetensors::tensor::serialize(views, Some(meta)).map_err(|e| ModelError::Checkpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io("cannot create folder", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(ModelError::io("cannot write", path, e));
    }
    Ok(())
}
