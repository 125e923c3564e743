//! What a run leaves on disk and how it is found again: the run folder and its
//! lock, the checkpoint layout (the one module that writes, reads, verifies and
//! locates checkpoints), locating a model from a spec, exports in the Hugging
//! Face layout, and the test-set evaluation of the selected checkpoint.

pub(crate) mod checkpoint;
pub(crate) mod export;
pub(crate) mod folder;
pub(crate) mod locate;
pub(crate) mod output;
pub(crate) mod test_set;
