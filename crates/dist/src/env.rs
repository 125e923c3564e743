//! Who this process is: rank and world from torchrun's environment, or from Slurm's
//! inside an `srun` step.

use crate::error::{DistError, Result};

/// The launcher that set the environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `torchrun` (or anything that sets `RANK`/`WORLD_SIZE` as torch's `env://` does).
    Torchrun,
    /// An `srun` step (`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`).
    Slurm,
}

/// This process's place in a data-parallel job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// Processes on this node (`LOCAL_WORLD_SIZE`, `SLURM_NTASKS_PER_NODE`).
    pub local_world: Option<usize>,
    pub launcher: Launcher,
    /// Where the store is served (`MASTER_ADDR`).
    pub master_addr: String,
    /// `MASTER_PORT`.
    pub master_port: u16,
    /// torchrun's agent serves the store (`TORCHELASTIC_USE_AGENT_STORE=True`): every
    /// rank connects as a client. Otherwise rank 0 serves it.
    pub agent_store: bool,
    /// torchrun's `TORCHELASTIC_RESTART_COUNT`: how often the group was restarted.
    pub restart_count: u32,
    /// `GLOO_SOCKET_IFNAME`: the network interface Gloo binds to.
    pub gloo_interface: Option<String>,
}

/// Port used when `MASTER_PORT` is not set (torch's default).
pub const DEFAULT_PORT: u16 = 29500;

impl DistEnv {
    /// From the process environment; `None` for a single process (no launcher, or
    /// a world of one).
    pub fn detect() -> Result<Option<Self>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// From the variables `get` returns (testable without touching the environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let num = |var: &str| -> Result<Option<usize>> {
            get(var)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| DistError::Env {
                        var: var.into(),
                        reason: format!("{v:?} is not a non-negative integer"),
                    })
                })
                .transpose()
        };
        let (launcher, rank, world, local) = if let Some(world) = num("WORLD_SIZE")? {
            let rank = num("RANK")?.ok_or_else(|| DistError::Env {
                var: "RANK".into(),
                reason: "WORLD_SIZE is set but RANK is not (launch with torchrun)".into(),
            })?;
            (Launcher::Torchrun, rank, world, num("LOCAL_RANK")?)
        } else if get("SLURM_STEP_ID").is_some() || get("SLURM_STEPID").is_some() {
            // Only inside an srun step: a batch script itself also sees SLURM_NTASKS.
            match (num("SLURM_PROCID")?, num("SLURM_NTASKS")?) {
                (Some(rank), Some(world)) => (Launcher::Slurm, rank, world, num("SLURM_LOCALID")?),
                _ => return Ok(None),
            }
        } else {
            return Ok(None);
        };
        if world <= 1 {
            return Ok(None);
        }
        if rank >= world {
            return Err(DistError::Env {
                var: if launcher == Launcher::Slurm {
                    "SLURM_PROCID"
                } else {
                    "RANK"
                }
                .into(),
                reason: format!("rank {rank} is not below the world size {world}"),
            });
        }
        let master_addr = match get("MASTER_ADDR") {
            Some(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ => {
                return Err(DistError::Env {
                    var: "MASTER_ADDR".into(),
                    reason: match launcher {
                        Launcher::Torchrun => "not set: launch with torchrun, which sets it".into(),
                        Launcher::Slurm => "not set: export MASTER_ADDR=$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n1) before srun".into(),
                    },
                });
            }
        };
        let master_port = match get("MASTER_PORT") {
            None => DEFAULT_PORT,
            Some(p) => p.trim().parse::<u16>().map_err(|_| DistError::Env {
                var: "MASTER_PORT".into(),
                reason: format!("{p:?} is not a port number"),
            })?,
        };
        Ok(Some(Self {
            rank,
            world,
            local_rank: local.unwrap_or(0),
            local_world: match launcher {
                Launcher::Torchrun => num("LOCAL_WORLD_SIZE")?,
                // "4" or "4(x2)".
                Launcher::Slurm => get("SLURM_NTASKS_PER_NODE")
                    .and_then(|v| v.split('(').next().and_then(|n| n.trim().parse().ok())),
            },
            launcher,
            master_addr,
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
            restart_count: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0) as u32,
            gloo_interface: get("GLOO_SOCKET_IFNAME").filter(|s| !s.is_empty()),
        }))
    }

    /// The command that continues this job's run in `run_dir`, launched as this
    /// job was: `torchrun` with this job's process layout, or `srun` with its
    /// task count (a plain `train-cli --resume` would run one process). `exe` is
    /// the binary's path.
    pub fn resume_command(&self, exe: &str, run_dir: &std::path::Path) -> String {
        let resume = format!("{exe} --resume {}", run_dir.display());
        match self.launcher {
            Launcher::Torchrun => {
                let local = self
                    .local_world
                    .filter(|l| *l > 0 && self.world.is_multiple_of(*l))
                    .unwrap_or(self.world);
                let nodes = self.world / local;
                let rdzv = match nodes {
                    1 => String::new(),
                    _ => format!(
                        " --rdzv-backend c10d --rdzv-endpoint {}:{}",
                        self.master_addr, self.master_port
                    ),
                };
                format!(
                    "torchrun --nnodes {nodes} --nproc-per-node {local}{rdzv} --no-python {resume}"
                )
            }
            Launcher::Slurm => format!("srun --ntasks {} {resume}", self.world),
        }
    }

    /// The process that serves the job's store: "torchrun's agent" or "rank 0".
    pub fn store_server(&self) -> &'static str {
        match self.agent_store {
            true => "torchrun's agent",
            false => "rank 0",
        }
    }

    /// Whether the store is on this machine's loopback (single-node tests).
    pub fn is_loopback(&self) -> bool {
        matches!(self.master_addr.as_str(), "localhost" | "::1")
            || self.master_addr.starts_with("127.")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> Result<Option<DistEnv>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29400"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((e.rank, e.world, e.local_rank), (3, 8, 1));
        assert_eq!(e.launcher, Launcher::Torchrun);
        assert_eq!((e.master_addr.as_str(), e.master_port), ("10.0.0.5", 29400));
        assert!(e.agent_store && !e.is_loopback());
        assert_eq!(e.restart_count, 2);
        assert_eq!(e.local_world, None);
    }

    /// The resume hint relaunches as the job was launched, not as one process.
    #[test]
    fn the_resume_command_relaunches_the_job() {
        let vars = |world: &'static str, local: &'static str| {
            vec![
                ("RANK", "0"),
                ("WORLD_SIZE", world),
                ("LOCAL_WORLD_SIZE", local),
                ("MASTER_ADDR", "node0"),
                ("MASTER_PORT", "29400"),
            ]
        };
        let dir = std::path::Path::new("runs/a");
        let one_node = env(&vars("4", "4")).unwrap().unwrap();
        assert_eq!(
            one_node.resume_command("bin/train-cli", dir),
            "torchrun --nnodes 1 --nproc-per-node 4 --no-python bin/train-cli --resume runs/a"
        );
        let two = env(&vars("16", "8")).unwrap().unwrap();
        assert_eq!(
            two.resume_command("train-cli", dir),
            "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint node0:29400 --no-python train-cli --resume runs/a"
        );
        let slurm = env(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_NTASKS_PER_NODE", "4(x2)"),
            ("MASTER_ADDR", "n1"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(slurm.local_world, Some(4));
        assert_eq!(
            slurm.resume_command("train-cli", dir),
            "srun --ntasks 8 train-cli --resume runs/a"
        );
    }

    #[test]
    fn slurm_only_inside_an_srun_step() {
        let batch_script = [
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "4"),
            ("MASTER_ADDR", "n1"),
        ];
        assert_eq!(env(&batch_script).unwrap(), None);
        let mut step = batch_script.to_vec();
        step.extend([
            ("SLURM_STEP_ID", "0"),
            ("SLURM_LOCALID", "0"),
            ("SLURM_PROCID", "2"),
        ]);
        // The later SLURM_PROCID wins in the map.
        let e = env(&step).unwrap().unwrap();
        assert_eq!((e.rank, e.world, e.launcher), (2, 4, Launcher::Slurm));
        assert_eq!(e.master_port, DEFAULT_PORT);
    }

    #[test]
    fn single_process_and_bad_values() {
        assert_eq!(env(&[]).unwrap(), None);
        assert_eq!(env(&[("RANK", "0"), ("WORLD_SIZE", "1")]).unwrap(), None);
        let err = |v: &[(&str, &str)]| env(v).unwrap_err().to_string();
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2")]).contains("RANK"));
        assert!(err(&[("WORLD_SIZE", "2")]).contains("RANK"));
        assert!(
            err(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "a")]).contains("not below")
        );
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2")]).contains("MASTER_ADDR"));
        let port = err(&[
            ("RANK", "0"),
            ("WORLD_SIZE", "2"),
            ("MASTER_ADDR", "a"),
            ("MASTER_PORT", "99999"),
        ]);
        assert!(port.contains("MASTER_PORT"), "{port}");
    }
}
