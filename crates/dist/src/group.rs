//! A c10d process group (Gloo or NCCL) and DDP's gradient `Reducer`, behind a safe
//! API. Every call goes through the shim in `c10d.cpp`, which turns C++ exceptions
//! into an error code and message.

use std::ffi::{CString, c_char, c_int, c_long, c_void};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use clip_sys::{
    C_tensor, ERR_LEN, clip_pg_all_gather, clip_pg_all_reduce_sum, clip_pg_barrier,
    clip_pg_broadcast, clip_pg_free, clip_pg_new, clip_quiet_cpp_warnings, clip_reducer_free,
    clip_reducer_new, clip_reducer_prepare, clip_store_get, clip_store_set,
};
use tch::{Kind, Tensor};

use crate::env::DistEnv;
use crate::error::{DistError, Result};

/// Calls a shim function with `call`'s error buffer; a failure is its message.
fn call(f: impl FnOnce(*mut c_char, c_int) -> c_int) -> std::result::Result<(), String> {
    clip_sys::call(f)
}

fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "")).unwrap_or_default()
}

/// The collective backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors.
    Gloo,
    /// NCCL: CUDA tensors (a build with the `nccl` feature).
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// A c10d process group with its store. One per process; used from the thread
/// that created it.
pub struct ProcessGroup {
    raw: NonNull<c_void>,
    env: DistEnv,
    backend: Backend,
    timeout: Duration,
    /// Set when a store request got no answer in time (its server hung): the
    /// request's thread is still blocked inside c10d, so the store is not used
    /// again, nor freed.
    store_hung: std::sync::atomic::AtomicBool,
}

/// libtorch's own warnings off (`quiet`) or back on, unless RUST_BACKTRACE asks
/// for everything: while a group forms (c10d retries a connect with a warning
/// and a C++ stack trace each time) and once a rank fails.
fn quiet_cpp_warnings(quiet: bool) {
    if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
        // SAFETY: sets an int flag of libtorch's logging.
        unsafe { clip_quiet_cpp_warnings(c_int::from(quiet)) };
    }
}

/// A raw pointer handed to the thread that makes one store request.
struct SendPtr(*mut c_void);
// SAFETY: the group is used by one request at a time: its creator waits for the
// request's thread (or abandons the store for good when it does not return).
unsafe impl Send for SendPtr {}

/// How often (at most) a rank that waits for the group to form says so.
const WAITING_NOTE: Duration = Duration::from_secs(30);

/// The longest piece of a text in the store (its values read back up to
/// `ERR_LEN` bytes).
const STORE_PIECE: usize = 1500;

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.env.rank)
            .field("world", &self.env.world)
            .field("backend", &self.backend)
            .finish()
    }
}

impl ProcessGroup {
    /// Joins the group `env` describes. Collectives that do not complete within
    /// `timeout` (a dead or hung peer) fail with [`DistError::Collective`].
    pub fn new(env: DistEnv, backend: Backend, timeout: Duration) -> Result<Self> {
        let server = !env.agent_store && env.rank == 0;
        // torch's env:// rendezvous keys each restart attempt apart.
        let prefix = format!("/worker/attempt_{}", env.restart_count);
        let iface = env.gloo_interface.clone().unwrap_or_default();
        let gloo_host = if iface.is_empty() && env.is_loopback() {
            "127.0.0.1"
        } else {
            ""
        };
        let (host, prefix, iface, gloo_host) = (
            cstring(&env.master_addr),
            cstring(&prefix),
            cstring(&iface),
            cstring(gloo_host),
        );
        let ms = timeout.as_millis().min(c_long::MAX as u128) as c_long;
        let init = |message: String| DistError::Init {
            rank: env.rank,
            world: env.world,
            backend: backend.name().into(),
            addr: format!("{}:{}", env.master_addr, env.master_port),
            message,
        };
        let port = c_int::from(env.master_port);
        let (rank, world, nccl) = (
            env.rank as c_int,
            env.world as c_int,
            c_int::from(backend == Backend::Nccl),
        );
        // Joined on a thread of its own: c10d's connect and handshake wait
        // without a bound on a store server that hangs, or on another program
        // listening on MASTER_PORT. This thread gives up after the timeout (and
        // says every WAITING_NOTE whom it waits for).
        let (tx, rx) = std::sync::mpsc::channel();
        quiet_cpp_warnings(true);
        std::thread::Builder::new()
            .name("clip-dist-join".into())
            .spawn(move || {
                let mut raw = std::ptr::null_mut();
                // SAFETY: NUL-terminated strings and an out-pointer that outlive
                // the call; the buffer is `call`'s.
                let r = call(|err, len| unsafe {
                    clip_pg_new(
                        host.as_ptr(),
                        port,
                        c_int::from(server),
                        prefix.as_ptr(),
                        rank,
                        world,
                        nccl,
                        ms,
                        iface.as_ptr(),
                        gloo_host.as_ptr(),
                        &mut raw,
                        err,
                        len,
                    )
                });
                let _ = tx.send(r.map(|()| SendPtr(raw)));
            })
            .map_err(|e| init(format!("cannot start a thread: {e}")))?;
        let started = Instant::now();
        let limit = timeout + Duration::from_secs(5);
        let note = (timeout / 4).clamp(Duration::from_secs(1), WAITING_NOTE);
        let raw: *mut c_void = loop {
            match rx.recv_timeout(note) {
                Ok(r) => {
                    quiet_cpp_warnings(false);
                    break r.map_err(init)?.0;
                }
                Err(_) if started.elapsed() < limit => {
                    tracing::warn!(
                        "rank {} of {}: waiting {:.0} s so far for the group at {}:{} to form ({} serves the store; the other ranks must start too); giving up after run.dist_timeout_s = {:.0} s",
                        env.rank,
                        env.world,
                        started.elapsed().as_secs_f64(),
                        env.master_addr,
                        env.master_port,
                        if server {
                            "this rank"
                        } else {
                            env.store_server()
                        },
                        timeout.as_secs_f64()
                    );
                }
                Err(_) => {
                    return Err(init(format!(
                        "no answer within run.dist_timeout_s = {:.0} s: the ranks did not all start, the process serving the store hung, or another program listens on MASTER_PORT {}",
                        timeout.as_secs_f64(),
                        env.master_port
                    )));
                }
            }
        };
        let raw =
            NonNull::new(raw).ok_or_else(|| init("the shim returned no process group".into()))?;
        Ok(Self {
            raw,
            env,
            backend,
            timeout,
            store_hung: std::sync::atomic::AtomicBool::new(false),
        })
    }

    pub fn rank(&self) -> usize {
        self.env.rank
    }

    pub fn world(&self) -> usize {
        self.env.world
    }

    pub fn env(&self) -> &DistEnv {
        &self.env
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    fn collective(
        &self,
        op: &'static str,
        f: impl FnOnce(*mut c_char, c_int) -> c_int,
    ) -> Result<()> {
        call(f).map_err(|message| DistError::Collective {
            rank: self.env.rank,
            world: self.env.world,
            op,
            message,
        })
    }

    /// Sums `t` over all ranks, in place.
    pub fn all_reduce_sum(&self, t: &mut Tensor) -> Result<()> {
        let p = t.as_mut_ptr();
        // SAFETY: a live group and a tensor borrowed for the call.
        self.collective("all_reduce", |e, l| unsafe {
            clip_pg_all_reduce_sum(self.raw.as_ptr(), p, e, l)
        })
    }

    /// Every rank's `t` (same shape and kind on every rank), in rank order: the
    /// result is `t`'s shape with the first dimension `world` times as long. No
    /// gradient flows through it.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let mut input = t.detach().contiguous();
        let mut outs: Vec<Tensor> = (0..self.env.world).map(|_| input.empty_like()).collect();
        let ptrs: Vec<*mut C_tensor> = outs.iter_mut().map(Tensor::as_mut_ptr).collect();
        let p = input.as_mut_ptr();
        // SAFETY: a live group; `input` and `outs` (one tensor per rank, each of
        // `input`'s shape) outlive the call.
        self.collective("all_gather", |e, l| unsafe {
            clip_pg_all_gather(
                self.raw.as_ptr(),
                p,
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                e,
                l,
            )
        })?;
        Ok(Tensor::cat(&outs, 0))
    }

    /// Sums `values` over all ranks (in f64, exact for counts below 2^53).
    pub fn all_reduce_f64(&self, values: &mut [f64]) -> Result<()> {
        let mut t = Tensor::from_slice(values).to_kind(Kind::Double);
        if self.backend == Backend::Nccl {
            t = t.to_device(tch::Device::Cuda(self.env.local_rank));
        }
        self.all_reduce_sum(&mut t)?;
        let summed = Vec::<f64>::try_from(t.to_device(tch::Device::Cpu))?;
        values.copy_from_slice(&summed);
        Ok(())
    }

    /// Replaces every tensor with rank `root`'s, coalesced into 250 MB buffers (as
    /// DDP does with a module's parameters and buffers at construction).
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<()> {
        if tensors.is_empty() {
            return Ok(());
        }
        let mut handles: Vec<Tensor> = tensors.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<*mut C_tensor> = handles.iter_mut().map(Tensor::as_mut_ptr).collect();
        // SAFETY: a live group; the handles outlive the call.
        self.collective("broadcast", |e, l| unsafe {
            clip_pg_broadcast(
                self.raw.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                250 * 1024 * 1024,
                root as c_int,
                e,
                l,
            )
        })
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a live group.
        self.collective("barrier", |e, l| unsafe {
            clip_pg_barrier(self.raw.as_ptr(), e, l)
        })
    }

    /// Sets `key` in the job's store (this restart attempt's keys); an error when
    /// the store does not answer within the group's timeout.
    pub fn store_set(&self, key: &str, value: &str) -> Result<()> {
        self.store_set_within(key, value, self.timeout)
    }

    fn store_set_within(&self, key: &str, value: &str, limit: Duration) -> Result<()> {
        let (k, v) = (cstring(key), cstring(value));
        self.store_request("store set", limit, move |p| {
            // SAFETY: a live group and NUL-terminated strings that outlive the call.
            call(|e, l| unsafe { clip_store_set(p, k.as_ptr(), v.as_ptr(), e, l) })
        })
    }

    /// `key`'s value in the store, `None` when it is not set; an error when the
    /// store does not answer within `timeout` (plus a second).
    pub fn store_get(&self, key: &str, timeout: Duration) -> Result<Option<String>> {
        let k = cstring(key);
        let ms = timeout.as_millis().min(c_long::MAX as u128) as c_long;
        self.store_request("store get", timeout + Duration::from_secs(1), move |p| {
            let mut found: c_int = 0;
            let mut out = vec![0 as c_char; ERR_LEN];
            // SAFETY: a live group; `found` and `out` (ERR_LEN bytes, the
            // length passed) outlive the call.
            call(|e, l| unsafe {
                clip_store_get(
                    p,
                    k.as_ptr(),
                    ms,
                    &mut found,
                    out.as_mut_ptr(),
                    ERR_LEN as c_int,
                    e,
                    l,
                )
            })?;
            Ok((found != 0).then(|| clip_sys::c_string(&out)))
        })
    }

    /// Runs one store request `f` on a thread of its own and waits at most
    /// `limit` for it: c10d's store client waits for its server's answer without
    /// a bound (a rank 0 that hangs hangs every other rank's request). A request
    /// left unanswered marks the store as hung: later ones fail at once.
    fn store_request<T: Send + 'static>(
        &self,
        op: &'static str,
        limit: Duration,
        f: impl FnOnce(*mut c_void) -> std::result::Result<T, String> + Send + 'static,
    ) -> Result<T> {
        use std::sync::atomic::Ordering;
        let failed = |message: String| DistError::Collective {
            rank: self.env.rank,
            world: self.env.world,
            op,
            message,
        };
        let server = format!(
            "the store at {}:{} ({} serves it)",
            self.env.master_addr,
            self.env.master_port,
            self.env.store_server()
        );
        if self.store_hung.load(Ordering::SeqCst) {
            return Err(failed(format!(
                "{server} did not answer an earlier request"
            )));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let p = SendPtr(self.raw.as_ptr());
        std::thread::Builder::new()
            .name("clip-dist-store".into())
            .spawn(move || {
                let p = p;
                let _ = tx.send(f(p.0));
            })
            .map_err(|e| failed(format!("cannot start a thread: {e}")))?;
        match rx.recv_timeout(limit) {
            Ok(r) => r.map_err(failed),
            Err(_) => {
                self.store_hung.store(true, Ordering::SeqCst);
                Err(failed(format!(
                    "{server} did not answer within {:.0} s: the process serving it hung",
                    limit.as_secs_f64()
                )))
            }
        }
    }

    /// `key`'s value once some rank set it, polling the store until `timeout`;
    /// `None` when nobody set it in time.
    pub fn store_wait(&self, key: &str, timeout: Duration) -> Result<Option<String>> {
        let deadline = Instant::now() + timeout;
        let short = Duration::from_millis(200);
        loop {
            if let Some(v) = self.store_get(key, short)? {
                return Ok(Some(v));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sets `key` to a text of any length (a store value reads back at most
    /// ~2 KB): its pieces under `key/0`, `key/1`, ... and their count under `key`.
    pub fn store_set_text(&self, key: &str, text: &str) -> Result<()> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let mut end = rest.len().min(STORE_PIECE);
            while !rest.is_char_boundary(end) {
                end -= 1;
            }
            pieces.push(&rest[..end]);
            rest = &rest[end..];
        }
        // Each piece in <...>: a value read back is trimmed of white space, which
        // a piece may begin or end with.
        for (i, piece) in pieces.iter().enumerate() {
            self.store_set(&format!("{key}/{i}"), &format!("<{piece}>"))?;
        }
        // The count last: a reader that sees it finds every piece.
        self.store_set(key, &pieces.len().to_string())
    }

    /// A text [`ProcessGroup::store_set_text`] set, waiting up to `timeout` for it.
    pub fn store_wait_text(&self, key: &str, timeout: Duration) -> Result<Option<String>> {
        let Some(count) = self.store_wait(key, timeout)? else {
            return Ok(None);
        };
        let count: usize = count.parse().unwrap_or(0);
        let mut text = String::new();
        for i in 0..count {
            let piece = self.store_get(&format!("{key}/{i}"), Duration::from_secs(1))?;
            let piece = piece.unwrap_or_default();
            let inner = piece.strip_prefix('<').and_then(|p| p.strip_suffix('>'));
            text.push_str(inner.unwrap_or(&piece));
        }
        Ok(Some(text))
    }

    /// After this rank failed with `message` (its own error, or a collective that
    /// failed because a peer did): publishes the message, checks in, and waits up
    /// to `wait` for the other ranks to do the same. Returns what is known about the
    /// peers: their own errors, and which ranks did not answer (dead, or hung).
    pub fn diagnose(&self, message: &str, wait: Duration) -> String {
        let me = self.env.rank;
        // The failure is reported in one line: peers that are gone make c10d warn
        // with pages of C++ frames.
        quiet_cpp_warnings(true);
        let publish = self
            .store_set_within(&format!("clip/error/{me}"), message, wait)
            .and_then(|()| self.store_set_within(&format!("clip/alive/{me}"), "1", wait));
        if publish.is_err() {
            return format!(
                "the job's store at {}:{} is unreachable: the process serving it ({}) is gone or hung",
                self.env.master_addr,
                self.env.master_port,
                self.env.store_server()
            );
        }
        let others: Vec<usize> = (0..self.env.world).filter(|&r| r != me).collect();
        let deadline = Instant::now() + wait;
        let short = Duration::from_millis(200);
        let mut silent = others.clone();
        loop {
            silent.retain(|&r| {
                !matches!(
                    self.store_get(&format!("clip/alive/{r}"), short),
                    Ok(Some(_))
                )
            });
            if silent.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(short);
        }
        let mut lines: Vec<String> = others
            .iter()
            .filter_map(|&r| {
                let e = self.store_get(&format!("clip/error/{r}"), short).ok()??;
                Some(format!("rank {r} failed: {e}"))
            })
            .collect();
        // The process serving the store stays until the others have read it: its
        // exit would make them report it silent (and c10d warn of broken pipes).
        let _ = self.store_set_within(&format!("clip/read/{me}"), "1", wait);
        if me == 0 && !self.env.agent_store {
            let readers: Vec<usize> = others
                .iter()
                .copied()
                .filter(|r| !silent.contains(r))
                .collect();
            let deadline = Instant::now() + wait;
            while Instant::now() < deadline
                && !readers.iter().all(|r| {
                    matches!(
                        self.store_get(&format!("clip/read/{r}"), short),
                        Ok(Some(_))
                    )
                })
            {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if !silent.is_empty() {
            let ranks: Vec<String> = silent.iter().map(usize::to_string).collect();
            lines.push(format!(
                "no answer from rank {} within {:.0} s (dead, killed, or hung: a collective waits at most run.dist_timeout_s = {:.0} s)",
                ranks.join(", "),
                wait.as_secs_f64(),
                self.timeout.as_secs_f64()
            ));
        }
        if lines.is_empty() {
            "every other rank is alive and reported no error of its own".into()
        } else {
            lines.join("; ")
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // A store request still blocked inside c10d uses the group: it is left
        // to the process's exit.
        if self.store_hung.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        // SAFETY: created by clip_pg_new, freed once.
        if let Err(e) = call(|e, l| unsafe { clip_pg_free(self.raw.as_ptr(), e, l) }) {
            tracing::warn!("closing the process group: {e}");
        }
    }
}

/// DDP's gradient engine (`c10d::Reducer`) over a fixed list of trainable
/// parameters: after [`Reducer::prepare`], the next backward pass all-reduces the
/// gradients in buckets as they become ready (overlapping the rest of the
/// backward) and leaves every parameter's `.grad` averaged over the ranks. Several
/// backward calls (a gradient-checkpoint tape) count as one pass. Without
/// `prepare`, a backward accumulates locally (`no_sync`).
pub struct Reducer {
    raw: NonNull<c_void>,
    rank: usize,
    world: usize,
    params: usize,
}

impl std::fmt::Debug for Reducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reducer")
            .field("params", &self.params)
            .finish()
    }
}

impl Reducer {
    /// Buckets of `bucket_mb` MB (DDP's `bucket_cap_mb`, default 25) after a first
    /// one of 1 MB, parameters in reverse order (the order backward reaches them).
    /// Every parameter must receive a gradient in each synchronised pass.
    pub fn new(pg: &ProcessGroup, params: &[Tensor], bucket_mb: f64) -> Result<Self> {
        let mut handles: Vec<Tensor> = params.iter().map(Tensor::shallow_clone).collect();
        let ptrs: Vec<*mut C_tensor> = handles.iter_mut().map(Tensor::as_mut_ptr).collect();
        let mut raw = std::ptr::null_mut();
        let bytes = (bucket_mb * 1024.0 * 1024.0).max(1.0) as c_long;
        // SAFETY: a live group; the parameter handles and the out-pointer outlive
        // the call.
        pg.collective("Reducer construction", |e, l| unsafe {
            clip_reducer_new(
                pg.raw.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len() as c_int,
                bytes,
                1024 * 1024,
                &mut raw,
                e,
                l,
            )
        })?;
        let raw = NonNull::new(raw).ok_or(DistError::Collective {
            rank: pg.rank(),
            world: pg.world(),
            op: "Reducer construction",
            message: "the shim returned no reducer".into(),
        })?;
        Ok(Self {
            raw,
            rank: pg.rank(),
            world: pg.world(),
            params: params.len(),
        })
    }

    /// Number of parameters it reduces.
    pub fn len(&self) -> usize {
        self.params
    }

    pub fn is_empty(&self) -> bool {
        self.params == 0
    }

    /// The next backward pass (rooted at `loss`) synchronises the gradients.
    pub fn prepare(&self, loss: &Tensor) -> Result<()> {
        let mut l = loss.shallow_clone();
        let p = l.as_mut_ptr();
        // SAFETY: a live reducer and a loss tensor borrowed for the call.
        call(|e, len| unsafe { clip_reducer_prepare(self.raw.as_ptr(), p, e, len) }).map_err(
            |message| DistError::Collective {
                rank: self.rank,
                world: self.world,
                op: "Reducer prepare_for_backward",
                message,
            },
        )
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: created by clip_reducer_new, freed once. The destructor removes the
        // autograd hooks; its failure (none is known) can only be logged here.
        if let Err(e) = call(|e, l| unsafe { clip_reducer_free(self.raw.as_ptr(), e, l) }) {
            tracing::warn!("freeing the gradient reducer: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::env::Launcher;

    /// A text of any length, whose pieces begin and end with white space (a
    /// value read back is trimmed), comes back as it was set; a key nobody sets
    /// is `None` after the wait.
    #[test]
    fn long_texts_round_trip_through_the_store() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let env = DistEnv {
            rank: 0,
            world: 1,
            local_rank: 0,
            local_world: Some(1),
            launcher: Launcher::Torchrun,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
            restart_count: 0,
            gloo_interface: None,
        };
        let pg = ProcessGroup::new(env, Backend::Gloo, Duration::from_secs(30)).unwrap();
        let text = " a = 1\n\n".repeat(1000) + "é\n";
        pg.store_set_text("t", &text).unwrap();
        assert_eq!(
            pg.store_wait_text("t", Duration::from_secs(1))
                .unwrap()
                .unwrap(),
            text
        );
        assert_eq!(
            pg.store_wait("absent", Duration::from_millis(100)).unwrap(),
            None
        );
    }
}
