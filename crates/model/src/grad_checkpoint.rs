//! Gradient checkpointing. libtorch has no `torch.utils.checkpoint`, so a
//! [`GradTape`] records, for each checkpointed block, its input and a detached
//! output leaf; the forward keeps no activations inside blocks. [`GradTape::backward`]
//! back-propagates the loss to the last leaf, then recomputes the blocks one at a
//! time in reverse, back-propagating `sum(y * dL/dy)` through each, so only one
//! block's activations are alive at once. Random draws (dropout, drop-path) are
//! replayed from a per-block seed, so the recomputation equals the forward.

use tch::{Kind, Tensor};

/// What the tape can checkpoint: a block that maps one tensor to another.
pub(crate) trait Block {
    /// The block's forward (dropout and drop-path active when `train`).
    fn forward(&self, x: &Tensor, train: bool) -> Tensor;
    /// Whether any of the block's parameters gets a gradient.
    fn has_trainable(&self) -> bool;
}

struct Segment<'m> {
    layer: &'m dyn Block,
    input: Tensor,
    output: Tensor,
    seed: Option<i64>,
    train: bool,
}

/// How a forward pass runs: `Pass::eval()` or `Pass::train()`, optionally with a
/// tape recording checkpointed blocks (`.tape(&mut tape)`) and with every
/// layer's hidden states returned (`.hidden_states()`).
#[derive(Default)]
pub struct Pass<'t, 'm> {
    /// Dropout and drop-path active.
    pub train: bool,
    /// With gradient checkpointing on, checkpointed blocks are recorded here and
    /// recomputed in [`GradTape::backward`].
    pub tape: Option<&'t mut GradTape<'m>>,
    /// Return every layer's hidden states too.
    pub hidden_states: bool,
}

impl<'t, 'm> Pass<'t, 'm> {
    /// Inference: no dropout, no tape, no hidden states.
    pub fn eval() -> Self {
        Self::default()
    }

    /// Training: dropout and drop-path on.
    pub fn train() -> Self {
        Self {
            train: true,
            ..Self::default()
        }
    }

    /// Records checkpointed blocks on `tape`.
    pub fn tape(self, tape: &'t mut GradTape<'m>) -> Self {
        Self {
            tape: Some(tape),
            ..self
        }
    }

    /// Also returns every layer's hidden states.
    pub fn hidden_states(self) -> Self {
        Self {
            hidden_states: true,
            ..self
        }
    }
}

/// The record of checkpointed blocks of one forward pass; see the module docs.
#[derive(Default)]
pub struct GradTape<'m> {
    segments: Vec<Segment<'m>>,
}

impl<'m> GradTape<'m> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of blocks recorded.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Runs `layer` without keeping activations; `seed` is the one the generator
    /// was just reseeded with, when the block draws random numbers.
    pub(crate) fn checkpoint(
        &mut self,
        layer: &'m dyn Block,
        input: Tensor,
        train: bool,
        seed: Option<i64>,
    ) -> Tensor {
        let needs_grad = input.requires_grad() || layer.has_trainable();
        if !needs_grad {
            return layer.forward(&input, train);
        }
        let output = tch::no_grad(|| layer.forward(&input, train))
            .detach()
            .set_requires_grad(true);
        self.segments.push(Segment {
            layer,
            input,
            output: output.shallow_clone(),
            seed,
            train,
        });
        output
    }

    /// Back-propagates `loss` (a scalar) through the whole graph, recomputing the
    /// checkpointed blocks. Call it under the same autocast state as the forward.
    /// Equivalent to `loss.backward()` when nothing was recorded.
    pub fn backward(self, loss: &Tensor) -> Result<(), tch::TchError> {
        loss.f_backward()?;
        for seg in self.segments.into_iter().rev() {
            let grad = seg.output.grad();
            if !grad.defined() {
                continue;
            }
            let input_needs_grad = seg.input.requires_grad();
            let x = seg.input.detach().set_requires_grad(input_needs_grad);
            if let Some(s) = seg.seed {
                tch::manual_seed(s);
            }
            let y = seg.layer.forward(&x, seg.train);
            (y * &grad).sum(Kind::Float).f_backward()?;
            if input_needs_grad {
                let gx = x.grad();
                (&seg.input * gx).sum(Kind::Float).f_backward()?;
            }
        }
        Ok(())
    }
}
