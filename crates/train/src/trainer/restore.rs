//! The restore step of a resumed run: what its checkpoint gives back (the model,
//! the optimizer, scaler and EMA states, the progress), checked against the run
//! as it is configured now.

use tch::nn;

use clip_model::ClipClassifier;
use clip_optim::AdamW;

use crate::config::RunConfig;
use crate::ema::Ema;
use crate::error::{Result, TrainError};
use crate::mixed_precision::MixedPrecision;
use crate::run::checkpoint::{Checkpoint, Checkpoints, DataFingerprint, TrainState};

/// The checkpoint's model, on `vs`, with the config's regularization and
/// gradient checkpointing; its classes must be the data's.
pub(super) fn model(
    ckpt: &Checkpoint,
    vs: &nn::VarStore,
    cfg: &RunConfig,
    classes: &[String],
) -> Result<ClipClassifier> {
    let mut m = ckpt.load_model(vs)?;
    if m.class_names() != classes {
        return Err(TrainError::Resume {
            path: ckpt.dir().to_path_buf(),
            reason: format!(
                "its classes {:?} differ from the data's {:?}",
                m.class_names(),
                classes
            ),
        });
    }
    m.clip.set_regularization(cfg.model.regularization)?;
    m.clip
        .set_gradient_checkpointing(cfg.train.gradient_checkpointing);
    Ok(m)
}

/// Restores the optimizer, scaler and EMA and returns the progress the run
/// continues from, for `world` ranks with `cfg` (whose differences from the
/// checkpoint's config are warned about). On another number of ranks the global
/// batch changes: the epoch continues after the samples already seen (a whole
/// number of new global batches), which is a continuation, not an exact resume.
/// Checkpoints the saved progress lists that are gone from `checkpoints` are
/// forgotten.
#[allow(clippy::too_many_arguments)]
pub(super) fn progress(
    ckpt: &Checkpoint,
    cfg: &RunConfig,
    world: usize,
    parts: (&mut AdamW, &mut MixedPrecision, Option<&Ema>),
    checkpoints: &Checkpoints,
    total_steps: u64,
    batches_per_epoch: usize,
    data: (DataFingerprint, bool),
) -> Result<TrainState> {
    let saved = ckpt.state()?;
    let (data, allow_data_change) = data;
    check_data(ckpt, cfg, saved.data.as_ref(), &data, allow_data_change)?;
    let config_hash = cfg.hash();
    let differences = match ckpt.config_text() {
        Some(earlier) => cfg.differences(&earlier),
        // A checkpoint written before checkpoints kept their config.
        None if saved.config_hash != config_hash => {
            vec!["(this checkpoint does not say which keys)".to_string()]
        }
        None => Vec::new(),
    };
    // The model comes from the checkpoint: what shapes it cannot change on resume.
    let structural: Vec<&String> = differences
        .iter()
        .filter(|d| {
            [
                "model.architecture",
                "model.pretrained",
                "model.lora",
                "model.head.kind",
                "model.head.bias",
            ]
            .iter()
            .any(|k| d.starts_with(k))
        })
        .collect();
    if !structural.is_empty() {
        return Err(TrainError::Resume {
            path: ckpt.dir().to_path_buf(),
            reason: format!(
                "the model's shape cannot change on resume ({}): a resumed run keeps its \
                 checkpoint's model; start a new run (another `run.name`) to train another",
                structural
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        });
    }
    if !differences.is_empty() {
        tracing::warn!(
            "the config differs from the one {} was written with; continuing with the new one: {}",
            ckpt.dir().display(),
            differences.join("; ")
        );
    }
    let (optimizer, precision, ema) = parts;
    ckpt.restore(optimizer, precision, ema)?;
    let saved_world = saved.world_size;
    let mut state = TrainState {
        config_hash,
        world_size: world,
        data: Some(data),
        ..saved
    };
    if saved_world != world {
        let b = cfg.data.loader.batch_size;
        let accum = cfg.train.grad_accum;
        let seen = state.batch_in_epoch * b * saved_world;
        state.batch_in_epoch = seen / (b * world);
        tracing::warn!(
            "resuming on {world} rank(s) a run that {saved_world} rank(s) wrote: the global batch \
             changes from {} to {} images (batch_size {b} x ranks x grad_accum {accum}) and the \
             run has {total_steps} steps in all; the epoch continues at global batch {} \
             ({} of its samples seen before), which is a continuation, not an exact resume",
            b * saved_world * accum,
            b * world * accum,
            state.batch_in_epoch,
            seen
        );
    }
    if state.batch_in_epoch >= batches_per_epoch && state.batch_in_epoch > 0 {
        tracing::warn!(
            "the checkpoint was written after micro-batch {} of epoch {}, but an epoch now has \
             {batches_per_epoch} micro-batches (the data or the batch size changed): continuing \
             from the start of epoch {}",
            state.batch_in_epoch,
            state.epoch + 1,
            state.epoch + 2
        );
        state.epoch += 1;
        state.batch_in_epoch = 0;
    }
    state.checkpoints.retain(|c| checkpoints.has(&c.name));
    extend_if_asked(&mut state, &differences, total_steps);
    Ok(state)
}

/// A resume on data other than the checkpoint's (images added, removed or
/// relabelled) is refused, naming what changed, unless `allow`ed; then it is
/// warned about, saying that a `data.val_fraction` split was made again.
fn check_data(
    ckpt: &Checkpoint,
    cfg: &RunConfig,
    saved: Option<&DataFingerprint>,
    now: &DataFingerprint,
    allow: bool,
) -> Result<()> {
    let Some(change) = saved.and_then(|s| s.change(now)) else {
        return Ok(());
    };
    let split = match cfg.data.val {
        None => format!(
            " (data.val_fraction = {} splits the new listing again: images the run trained on may now be validation images, and the other way round)",
            cfg.data.val_fraction
        ),
        Some(_) => String::new(),
    };
    if !allow {
        return Err(TrainError::Resume {
            path: ckpt.dir().to_path_buf(),
            reason: format!(
                "the data changed since this checkpoint was written: {change}{split}. A resumed run continues on the data it started with; resume with --allow-data-change to continue on the new data anyway, or start a new run"
            ),
        });
    }
    tracing::warn!("continuing on changed data (--allow-data-change): {change}{split}");
    Ok(())
}

/// A run that had ended (its steps done, or stopped early) and is resumed with a
/// longer length (`train.epochs` / `train.max_steps` raised) or another early
/// stopping continues, saying so: the schedule now spans the new length, and
/// early stopping starts counting again (its best so far kept). Resumed
/// unchanged, it stays ended, with a hint.
fn extend_if_asked(state: &mut TrainState, differences: &[String], total_steps: u64) {
    let changed = |key: &str| differences.iter().any(|d| d.starts_with(key));
    let length_changed = changed("train.epochs:") || changed("train.max_steps:");
    let ended = state.stopped_early || state.global_step >= total_steps;
    if !ended && !length_changed {
        return;
    }
    let step = state.global_step;
    if state.stopped_early {
        if (length_changed || changed("train.early_stopping")) && step < total_steps {
            state.stopped_early = false;
            state.early_stopping.bad_evals = 0;
            tracing::warn!(
                "the run had stopped early at step {step}; continuing to step {total_steps} as the \
                 changed config asks (early stopping counts again from here, its best so far kept; \
                 the learning-rate schedule now spans {total_steps} steps)"
            );
        } else {
            tracing::warn!(
                "the run stopped early at step {step}: nothing to train. To continue it, raise \
                 train.epochs or train.max_steps, or change train.early_stopping, with --set"
            );
        }
    } else if step >= total_steps {
        tracing::warn!(
            "the run is complete (step {step} of {total_steps}): nothing to train. To continue it, \
             raise train.epochs or train.max_steps with --set"
        );
    } else if length_changed {
        tracing::warn!(
            "the run's length changed: it continues from step {step} to step {total_steps}, and the \
             learning-rate schedule (warmup and decay) is recomputed for {total_steps} steps, so the \
             learning rate from here differs from the original run's"
        );
    }
}
