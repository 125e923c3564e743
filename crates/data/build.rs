//! Compiles the JPEG decoder's shim (`src/jpeg.c`) against libjpeg-turbo's
//! libjpeg API (Debian's `libjpeg62-turbo-dev`, which scripts/setup.sh installs;
//! `CLIP_JPEG_INCLUDE` / `CLIP_JPEG_LIB` name other folders) and, with the `tch`
//! feature, gives this package's binaries, tests and benches an rpath to
//! libtorch.
include!("../libtorch_build.rs");

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=src/jpeg.c");
    println!("cargo:rerun-if-env-changed=CLIP_JPEG_INCLUDE");
    println!("cargo:rerun-if-env-changed=CLIP_JPEG_LIB");
    let include = std::env::var("CLIP_JPEG_INCLUDE").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&include).join("jpeglib.h").is_file() {
        panic!(
            "clip-data needs libjpeg-turbo's headers ({include}/jpeglib.h is missing): run \
             scripts/setup.sh (it installs Debian's libjpeg62-turbo-dev) or set CLIP_JPEG_INCLUDE \
             to the folder holding jpeglib.h (and CLIP_JPEG_LIB to the one holding libjpeg.so)"
        );
    }
    cc::Build::new()
        .file("src/jpeg.c")
        .include(&include)
        .opt_level(3)
        .warnings(false)
        .compile("clip_jpeg");
    if let Ok(lib) = std::env::var("CLIP_JPEG_LIB") {
        println!("cargo:rustc-link-search=native={lib}");
    }
    println!("cargo:rustc-link-lib=jpeg");
    if std::env::var_os("DEP_TCH_LIBTORCH_LIB").is_some() {
        rpath_to_libtorch();
    }
}
