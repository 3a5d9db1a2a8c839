//! Records the optimisation level the crate was built with, for `build_info()`: an
//! unoptimised build is tens of times slower and the Python side warns about it.
fn main() {
    let opt = std::env::var("OPT_LEVEL").unwrap_or_else(|_| "unknown".into());
    let profile = std::env::var("PROFILE").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=FASTMASK_OPT_LEVEL={opt}");
    println!("cargo:rustc-env=FASTMASK_PROFILE={profile}");
    println!("cargo:rerun-if-changed=build.rs");
}
