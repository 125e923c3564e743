//! Compiles the libtorch shims (autocast; CUDA memory and TF32) and gives this
//! package's binaries an rpath to libtorch.
include!("../libtorch_build.rs");

fn main() {
    compile_shim("src/autocast.cpp", "clip_autocast");
    compile_shim("src/cuda.cpp", "clip_cuda");
    // Where `load_cuda` finds libtorch_cuda.so.
    let lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-env=CLIP_LIBTORCH_LIB={lib}");
}
