//! CUDA from libtorch: loading its CUDA library, the caching allocator's memory
//! figures (what `torch.cuda.max_memory_allocated` / `max_memory_reserved` report)
//! and TF32 matmuls, through a small C++ shim (`cuda.cpp`).

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::OnceLock;

use clip_sys::LIBTORCH_LIB;

use crate::{ModelError, Result};

/// Loads libtorch's CUDA library (`libtorch_cuda.so`, beside `libtorch_cpu.so`)
/// once, so that libtorch sees the GPUs. The linker drops it from binaries that
/// name none of its symbols (tch-rs issues #329, #980), and then
/// `tch::Cuda::is_available()` is false on a GPU machine; loading it on demand
/// also spares CPU-only runs its start-up cost. Call it before anything asks
/// libtorch about CUDA (`tch::Cuda::*`, `tch::manual_seed`, a CUDA tensor):
/// libtorch answers "no CUDA" for good once asked without its CUDA library.
/// Fails with the loader's message (a CPU-only libtorch has no such file).
pub fn load_cuda() -> std::result::Result<(), String> {
    static LOADED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let path = std::path::Path::new(LIBTORCH_LIB).join("libtorch_cuda.so");
            if !path.is_file() {
                return Err(format!(
                    "{} does not exist (a CPU-only libtorch)",
                    path.display()
                ));
            }
            let c = CString::new(path.display().to_string()).map_err(|e| e.to_string())?;
            // SAFETY: dlopen of libtorch's own CUDA library, kept loaded for the
            // life of the process (never closed); its initialisers register the
            // CUDA backend with the libtorch already loaded.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror returns a NUL-terminated message or null.
                let why = unsafe { libc::dlerror() };
                let why = if why.is_null() {
                    "unknown error".to_string()
                } else {
                    // SAFETY: non-null, so a NUL-terminated string owned by libc.
                    unsafe { CStr::from_ptr(why) }
                        .to_string_lossy()
                        .into_owned()
                };
                return Err(format!("cannot load {}: {why}", path.display()));
            }
            Ok(())
        })
        .clone()
}

/// Whether the NVIDIA driver's library (`libcuda.so.1`) is on this machine: without
/// it no GPU can be used, and loading libtorch's CUDA library would only cost memory
/// (~260 MB resident on a CPU machine) and time.
pub fn nvidia_driver_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: probing for a system library; the handle is closed at once.
        unsafe {
            let handle = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if handle.is_null() {
                return false;
            }
            libc::dlclose(handle);
            true
        }
    })
}

/// The number of CUDA devices libtorch sees: 0 without an NVIDIA driver (libtorch's
/// CUDA library is then not loaded) or where that library cannot load.
pub fn cuda_device_count() -> usize {
    if !nvidia_driver_present() || load_cuda().is_err() || !tch::Cuda::is_available() {
        return 0;
    }
    tch::Cuda::device_count().max(0) as usize
}

/// The total memory of CUDA device `device` (an ordinal among the visible
/// devices), bytes, from the NVIDIA driver (`cuDeviceTotalMem_v2`); `None`
/// without a driver or when it does not answer.
pub fn cuda_total_memory(device: usize) -> Option<u64> {
    if !nvidia_driver_present() {
        return None;
    }
    type Init = unsafe extern "C" fn(u32) -> c_int;
    type Get = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type Total = unsafe extern "C" fn(*mut usize, c_int) -> c_int;
    // SAFETY: the driver library stays loaded (libtorch's CUDA library holds it
    // too); each symbol is cast to the driver API's documented signature, and
    // every out-pointer is a live local.
    unsafe {
        let lib = libc::dlopen(c"libcuda.so.1".as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
        if lib.is_null() {
            return None;
        }
        let sym = |name: &CStr| {
            let p = libc::dlsym(lib, name.as_ptr());
            (!p.is_null()).then_some(p)
        };
        let (init, get, total) = (
            sym(c"cuInit")?,
            sym(c"cuDeviceGet")?,
            sym(c"cuDeviceTotalMem_v2")?,
        );
        let init: Init = std::mem::transmute(init);
        let get: Get = std::mem::transmute(get);
        let total: Total = std::mem::transmute(total);
        let mut dev: c_int = 0;
        let mut bytes: usize = 0;
        let ok = init(0) == 0
            && get(&mut dev, c_int::try_from(device).ok()?) == 0
            && total(&mut bytes, dev) == 0;
        ok.then_some(bytes as u64)
    }
}

/// The caching allocator's figures for one CUDA device, bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CudaMemory {
    pub allocated: i64,
    pub peak_allocated: i64,
    pub reserved: i64,
    pub peak_reserved: i64,
}

fn call(what: &str, f: impl FnOnce(*mut c_char, c_int) -> c_int) -> Result<()> {
    clip_sys::call(f).map_err(|m| ModelError::Torch(tch::TchError::Torch(format!("{what}: {m}"))))
}

/// The caching allocator's current and peak bytes on CUDA device `device`.
pub fn cuda_memory(device: usize) -> Result<CudaMemory> {
    let mut out = [0i64; 4];
    call("cannot read the CUDA memory figures", |err, len| {
        // SAFETY: `out` holds the 4 values the shim writes, the buffer is `call`'s;
        // exceptions are caught.
        unsafe { clip_sys::clip_cuda_memory(device as i32, out.as_mut_ptr(), err, len) }
    })?;
    Ok(CudaMemory {
        allocated: out[0],
        peak_allocated: out[1],
        reserved: out[2],
        peak_reserved: out[3],
    })
}

/// Starts a new phase: the peaks of `device` become its current figures.
pub fn reset_cuda_peak(device: usize) -> Result<()> {
    call("cannot reset the CUDA memory peaks", |err, len| {
        // SAFETY: a libtorch call with `call`'s buffer; exceptions are caught by the shim.
        unsafe { clip_sys::clip_cuda_reset_peak(device as i32, err, len) }
    })
}

/// `torch.backends.cuda.matmul.allow_tf32` (PyTorch's default: false).
pub fn set_tf32_matmul(allow: bool) -> Result<()> {
    call("cannot set TF32 matmuls", |err, len| {
        // SAFETY: a libtorch global setting, with `call`'s buffer; exceptions are
        // caught by the shim.
        unsafe { clip_sys::clip_set_tf32_matmul(i32::from(allow), err, len) }
    })
}

/// Whether fp32 matmuls may use TF32 on CUDA.
pub fn tf32_matmul() -> bool {
    let mut allowed = 0;
    // SAFETY: reads a libtorch global setting into a live out-pointer; exceptions
    // are caught by the shim (a failure reads as "off").
    let read = call("cannot read the TF32 setting", |err, len| unsafe {
        clip_sys::clip_tf32_matmul(&mut allowed, err, len)
    });
    read.is_ok() && allowed != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_is_off_by_default_and_can_be_switched() {
        assert!(!tf32_matmul(), "PyTorch's default is off");
        set_tf32_matmul(true).unwrap();
        assert!(tf32_matmul());
        set_tf32_matmul(false).unwrap();
        assert!(!tf32_matmul());
    }

    #[test]
    fn the_cuda_library_loads_and_memory_figures_need_a_device() {
        // The venv's wheel is a CUDA build: its CUDA library loads without a GPU.
        load_cuda().unwrap();
        if !nvidia_driver_present() {
            assert_eq!(cuda_device_count(), 0);
        }
        if cuda_device_count() == 0 {
            let e = cuda_memory(0).unwrap_err().to_string();
            assert!(e.contains("cannot read the CUDA memory figures"), "{e}");
        } else {
            let before = cuda_memory(0).unwrap();
            let t = tch::Tensor::zeros([1 << 20], (tch::Kind::Float, tch::Device::Cuda(0)));
            let after = cuda_memory(0).unwrap();
            assert!(after.allocated >= before.allocated + (4 << 20), "{after:?}");
            drop(t);
            reset_cuda_peak(0).unwrap();
            assert!(cuda_memory(0).unwrap().peak_allocated < after.peak_allocated);
        }
    }
}
