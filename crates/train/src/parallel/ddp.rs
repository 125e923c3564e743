//! Data parallelism for the trainer, on c10d (`clip-dist`): joining the group that
//! torchrun or srun describes, the start-of-run parameter broadcast, gradient
//! synchronisation (DDP's Reducer, or one coalesced all-reduce after the backward),
//! sums of step and evaluation figures, and errors that name the failed rank.
//!
//! Semantics (as `torch.nn.parallel.DistributedDataParallel` + a DistributedSampler
//! that pads nothing): `data.loader.batch_size` is per rank, the global batch is
//! `batch_size x world x train.grad_accum`; global batch `k` is the single-process
//! batch `k` of `batch_size x world` samples, split over the ranks
//! ([`clip_data::Shard`]); each rank's loss is weighted by its share of the global
//! batch, so the averaged gradients and the reported loss equal one process's.

use std::time::Duration;

use tch::{Device, Kind, Tensor, nn};

use clip_dist::{Backend, DistEnv, ProcessGroup, Reducer};
use clip_optim::AdamW;

use super::Strategy;
use crate::config::{DistBackend, GradSync, RunConfig, RunSection};
use crate::error::{Result, TrainError};

/// How long a failing rank waits for the others to check in before it names the
/// silent ones.
const DIAGNOSE_WAIT: Duration = Duration::from_secs(3);

/// This process's part in a data-parallel run.
pub struct DataParallel {
    pg: ProcessGroup,
    sync: GradSync,
    bucket_mb: f64,
    /// The Reducer and the trainable parameters (names) it was built for.
    reducer: Option<(Reducer, Vec<String>)>,
    /// Whether the reducer was prepared for this step's backward.
    prepared: bool,
    /// The trainable parameters of the step in progress.
    trainable: Vec<(String, Tensor)>,
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataParallel({:?})", self.pg)
    }
}

impl DataParallel {
    /// Joins the group the launcher describes; `None` for a single process.
    /// `device` is the run's device before the local rank picks its GPU.
    pub fn join(run: &RunSection, device: Device) -> Result<Option<Self>> {
        let Some(env) = DistEnv::detect()? else {
            return Ok(None);
        };
        let backend = match (run.dist_backend, device) {
            (DistBackend::Gloo, _) => Backend::Gloo,
            (DistBackend::Nccl, Device::Cuda(_)) => Backend::Nccl,
            (DistBackend::Nccl, _) => {
                return Err(TrainError::config(
                    "run.dist_backend",
                    "\"nccl\" needs CUDA, but the run's device is the CPU: use \"gloo\" or \"auto\"",
                ));
            }
            (DistBackend::Auto, Device::Cuda(_)) => Backend::Nccl,
            (DistBackend::Auto, _) => Backend::Gloo,
        };
        let timeout = Duration::from_secs_f64(run.dist_timeout_s);
        let pg = ProcessGroup::new(env, backend, timeout)?;
        tracing::info!(
            "rank {} of {} ({} via {}:{})",
            pg.rank(),
            pg.world(),
            backend.name(),
            pg.env().master_addr,
            pg.env().master_port
        );
        Ok(Some(Self {
            pg,
            sync: run.grad_sync,
            bucket_mb: run.ddp_bucket_mb,
            reducer: None,
            prepared: false,
            trainable: Vec::new(),
        }))
    }

    /// Whether a launcher (torchrun, srun) started this process as one of several.
    pub fn launched() -> Result<bool> {
        Ok(DistEnv::detect()?.is_some())
    }

    /// The command that continues the run in `run_dir`: relaunched under torchrun
    /// or srun as this process was, else `train-cli --resume` (`exe`: the binary).
    pub fn resume_command(exe: &str, run_dir: &std::path::Path) -> String {
        match DistEnv::detect() {
            Ok(Some(env)) => env.resume_command(exe, run_dir),
            _ => format!("{exe} --resume {}", run_dir.display()),
        }
    }

    /// torchrun's `TORCHELASTIC_RESTART_COUNT` (0 outside torchrun or before any
    /// restart).
    pub fn restart_count() -> u32 {
        DistEnv::detect()
            .ok()
            .flatten()
            .map_or(0, |e| e.restart_count)
    }
}

impl Strategy for DataParallel {
    fn rank(&self) -> usize {
        self.pg.rank()
    }

    fn world(&self) -> usize {
        self.pg.world()
    }

    /// The device of this rank: CUDA device `LOCAL_RANK` when the run is on CUDA.
    fn device(&self, device: Device) -> Device {
        match device {
            Device::Cuda(_) => Device::Cuda(self.pg.env().local_rank),
            d => d,
        }
    }

    fn barrier(&self) -> Result<()> {
        Ok(self.pg.barrier()?)
    }

    /// Sums `values` over the ranks.
    fn sum(&self, values: &mut [f64]) -> Result<()> {
        Ok(self.pg.all_reduce_f64(values)?)
    }

    /// Every rank's `local` rows (in fp32), in rank order, for a loss that every
    /// rank computes over the global batch (the contrastive one): open_clip's
    /// `gather_with_grad`. The gradient reaches this rank's rows only, multiplied
    /// by the world size: that is the sum over the ranks of each rank's (equal)
    /// gradient for these rows, what `torch.distributed.nn.all_gather`'s backward
    /// (a reduce-scatter) gives, so DDP's averaging yields the gradient of the
    /// global-batch loss; parameters outside the gathered rows (the logit scale)
    /// keep their unscaled gradient. Ranks may hold different numbers of rows (the
    /// epoch's last batch).
    fn gather_with_grad(&self, local: &Tensor) -> Result<Tensor> {
        let local = local.to_kind(Kind::Float);
        let rows = local.size().first().copied().unwrap_or(0);
        let counts = self
            .pg
            .all_gather(&Tensor::from_slice(&[rows]).to_device(local.device()))?;
        let counts = Vec::<i64>::try_from(counts.to_device(Device::Cpu))?;
        let most = counts.iter().copied().max().unwrap_or(0);
        let padded = if rows < most {
            let mut shape = local.size();
            shape[0] = most - rows;
            Tensor::cat(
                &[
                    local.detach(),
                    Tensor::zeros(shape.as_slice(), (Kind::Float, local.device())),
                ],
                0,
            )
        } else {
            local.detach()
        };
        let all = self.pg.all_gather(&padded)?;
        let w = self.world() as f64;
        let pieces: Vec<Tensor> = counts
            .iter()
            .enumerate()
            .map(|(r, &n)| {
                if r == self.rank() {
                    // Value `local` exactly (the added term is 0); gradient x world.
                    &local + (&local - local.detach()) * (w - 1.0)
                } else {
                    all.narrow(0, r as i64 * most, n)
                }
            })
            .collect();
        Ok(Tensor::cat(&pieces, 0))
    }

    /// Every variable of `vs` from rank 0 (in name order, the same on every rank),
    /// as DDP does at construction.
    fn broadcast_variables(&self, vs: &nn::VarStore) -> Result<()> {
        let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let tensors: Vec<Tensor> = vars.into_iter().map(|(_, t)| t).collect();
        tch::no_grad(|| self.pg.broadcast(&tensors, 0))?;
        Ok(())
    }

    /// Notes the step's trainable parameters (they do not change within a step:
    /// unfreezing happens between epochs) and keeps the Reducer when it covers
    /// exactly them (it is built after the first step that used them, as it must
    /// know which parameters get gradients; unfreezing drops it and the next step
    /// builds another); the step's last backward then prepares it.
    fn begin_step(&mut self, opt: &AdamW) {
        let trainable: Vec<(String, Tensor)> = opt
            .groups()
            .iter()
            .flat_map(|g| &g.params)
            .filter(|(_, t)| t.requires_grad())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        let same = self.reducer.as_ref().is_some_and(|(_, names)| {
            names.len() == trainable.len() && names.iter().zip(&trainable).all(|(n, (m, _))| n == m)
        });
        if !same {
            self.reducer = None;
        }
        self.prepared = same;
        self.trainable = trainable;
    }

    /// The step's last backward averages the gradients through DDP's Reducer
    /// when there is one for this trainable set; earlier micro-batches
    /// accumulate locally (`no_sync`).
    fn before_backward(&self, loss: &Tensor, last: bool) -> Result<()> {
        match &self.reducer {
            Some((r, _)) if last && self.prepared => Ok(r.prepare(loss)?),
            _ => Ok(()),
        }
    }

    /// After the step's backward passes: unless the Reducer already averaged the
    /// gradients, one coalesced all-reduce of every trainable gradient (parameters
    /// without a gradient on every rank keep none); then the Reducer for the next
    /// steps is built over the parameters that got one.
    fn finish_gradients(&mut self) -> Result<()> {
        if std::mem::take(&mut self.prepared) {
            return Ok(());
        }
        let trainable = std::mem::take(&mut self.trainable);
        let world = self.world() as f64;
        let mut has: Vec<f64> = trainable
            .iter()
            .map(|(_, t)| f64::from(u8::from(t.grad().defined())))
            .collect();
        self.sum(&mut has)?;
        if let Some(((name, _), h)) = trainable
            .iter()
            .zip(&has)
            .find(|(_, h)| **h > 0.0 && **h < world)
        {
            return Err(TrainError::config(
                "run.grad_sync",
                format!(
                    "{name} got a gradient on {h} of {world} ranks: the model's graph must be the same on every rank"
                ),
            ));
        }
        let used: Vec<&(String, Tensor)> = trainable
            .iter()
            .zip(&has)
            .filter(|(_, h)| **h > 0.0)
            .map(|(p, _)| p)
            .collect();
        if !used.is_empty() {
            tch::no_grad(|| -> Result<()> {
                let grads: Vec<Tensor> =
                    used.iter().map(|(_, t)| t.grad().flatten(0, -1)).collect();
                let mut flat = Tensor::cat(&grads, 0);
                self.pg.all_reduce_sum(&mut flat)?;
                let flat = flat / world;
                let mut offset = 0i64;
                for (_, t) in &used {
                    let n = t.numel() as i64;
                    t.grad().copy_(&flat.narrow(0, offset, n).view_as(t));
                    offset += n;
                }
                Ok(())
            })?;
        }
        if self.sync == GradSync::Reducer {
            let params: Vec<Tensor> = used.iter().map(|(_, t)| t.shallow_clone()).collect();
            let names = trainable.iter().map(|(n, _)| n.clone()).collect();
            self.reducer = None;
            if !params.is_empty() {
                self.reducer = Some((Reducer::new(&self.pg, &params, self.bucket_mb)?, names));
            }
        }
        Ok(())
    }

    /// Rank 0's config (as given) and data fingerprint are the reference: each
    /// rank compares its own with them and publishes what differs; then every
    /// rank reads every answer, so all stop together.
    fn agree(&self, cfg: &RunConfig, data: &str) -> Result<()> {
        let (me, world) = (self.rank(), self.world());
        let wait = self.pg.timeout();
        let unanswered = |what: &str| {
            TrainError::Usage(format!(
                "rank {me}: no {what} within run.dist_timeout_s = {:.0} s while the ranks compared their configs",
                wait.as_secs_f64()
            ))
        };
        // Rank 0's config and data are the reference.
        if me == 0 {
            self.pg
                .store_set_text("clip/agree/config", &cfg.to_toml())?;
            self.pg.store_set("clip/agree/data", data)?;
        }
        let reference = self
            .pg
            .store_wait_text("clip/agree/config", wait)?
            .ok_or_else(|| unanswered("config from rank 0"))?;
        let reference_data = self
            .pg
            .store_wait("clip/agree/data", wait)?
            .ok_or_else(|| unanswered("data fingerprint from rank 0"))?;
        let mut differ = cfg.differences(&reference);
        if reference_data != data {
            differ.push(format!("the data: {reference_data} -> {data}"));
        }
        let mine = match differ.len() {
            0 => String::new(),
            n => {
                let shown: Vec<&str> = differ.iter().take(5).map(String::as_str).collect();
                format!(
                    "{}{}",
                    shown.join("; "),
                    if n > 5 {
                        format!("; and {} more", n - 5)
                    } else {
                        String::new()
                    }
                )
            }
        };
        self.pg
            .store_set(&format!("clip/agree/rank/{me}"), &format!("{world} {mine}"))?;
        let mut others = Vec::new();
        for r in (0..world).filter(|&r| r != me) {
            let v = self
                .pg
                .store_wait(&format!("clip/agree/rank/{r}"), wait)?
                .ok_or_else(|| unanswered(&format!("answer from rank {r}")))?;
            let (their_world, what) = v.split_once(' ').unwrap_or((v.as_str(), ""));
            if !what.is_empty() {
                others.push(r.to_string());
            } else if their_world != world.to_string() {
                others.push(format!("{r} (world size {their_world})"));
            }
        }
        if !mine.is_empty() {
            return Err(TrainError::Usage(format!(
                "rank {me} was launched with another config or data than rank 0 ({mine} on this rank): every rank must run the same config on the same data"
            )));
        }
        if !others.is_empty() {
            return Err(TrainError::Usage(format!(
                "rank(s) {} were launched with another config or data than rank 0 (their errors name the keys): every rank must run the same config on the same data",
                others.join(", ")
            )));
        }
        Ok(())
    }

    /// Wraps this rank's error with what the other ranks reported (see
    /// [`ProcessGroup::diagnose`]); publishes it for them first.
    fn explain(&self, e: TrainError) -> TrainError {
        if matches!(e, TrainError::Rank { .. }) {
            return e;
        }
        let peers = self.pg.diagnose(&e.to_string(), DIAGNOSE_WAIT);
        TrainError::Rank {
            rank: self.rank(),
            world: self.world(),
            source: Box::new(e),
            peers,
        }
    }
}
