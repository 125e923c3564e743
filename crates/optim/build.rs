//! Compiles the multi-tensor kernel shim and gives this package's binaries an rpath
//! to libtorch.
include!("../libtorch_build.rs");

fn main() {
    compile_shim("src/kernels.cpp", "clip_optim_kernels");
}
