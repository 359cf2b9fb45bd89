//! Links the release `herd` binary with `tools/hot-code.ld`, which puts the functions a
//! running server executes together at the start of its code, so a lone server maps
//! about a third of the code pages it otherwise would (tools/hot-code.sh says why and
//! how the list is made), and with its relative relocations packed (DT_RELR). Only the
//! layout changes, never what the code does.
//!
//! Skipped (with a warning where it is a surprise) for debug builds, off Linux, with a
//! linker whose scripts have no `INSERT` (mold, gold), or when `HERD_NO_CODE_LAYOUT` is
//! set.

fn main() {
    println!("cargo:rerun-if-changed=tools/hot-code.ld");
    println!("cargo:rerun-if-env-changed=HERD_NO_CODE_LAYOUT");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("PROFILE") != "release"
        || var("CARGO_CFG_TARGET_OS") != "linux"
        || std::env::var_os("HERD_NO_CODE_LAYOUT").is_some()
    {
        return;
    }
    // The linker named in RUSTFLAGS (-C link-arg=-fuse-ld=mold) or in a
    // `target.<triple>.linker` setting (RUSTC_LINKER).
    let linker = format!("{} {}", var("CARGO_ENCODED_RUSTFLAGS"), var("RUSTC_LINKER"));
    if ["mold", "gold"].iter().any(|l| linker.contains(l)) {
        println!("cargo:warning=herd: this linker takes no INSERT scripts; the binary keeps the default code layout");
        return;
    }
    let script = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("tools/hot-code.ld");
    if !script.is_file() {
        println!("cargo:warning=herd: tools/hot-code.ld is missing; the binary keeps the default code layout");
        return;
    }
    // Relative relocations packed (DT_RELR, glibc 2.36+; a linker or C library without
    // it ignores the flag): the loader reads 1 KiB of them at start instead of 77 KiB,
    // and the binary stays position-independent.
    for arg in ["-Xlinker", "-z", "-Xlinker", "pack-relative-relocs"] {
        println!("cargo:rustc-link-arg-bin=herd={arg}");
    }
    // -Xlinker passes each word as it is (a path may hold commas, which -Wl, would split).
    for arg in ["-Xlinker", "-T", "-Xlinker", &script.display().to_string()] {
        println!("cargo:rustc-link-arg-bin=herd={arg}");
    }
}
