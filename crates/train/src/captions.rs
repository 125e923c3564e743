//! Tokenizing the captions of image-caption data: what contrastive training on
//! captions and retrieval's text embeddings both read.

use tch::{Device, Tensor};

use clip_model::ClipTokenizer;

use crate::error::Result;

/// The token ids, on `device`, of the captions of `data`'s items `indices`.
pub(crate) fn caption_ids(
    data: &clip_data::Dataset,
    indices: &[usize],
    tokenizer: &ClipTokenizer,
    device: Device,
) -> Result<Tensor> {
    let captions: Vec<&str> = indices
        .iter()
        .map(|&i| data.caption(i).unwrap_or_default())
        .collect();
    Ok(tokenizer.encode(&captions)?.to_device(device))
}
