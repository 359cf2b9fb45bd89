//! Links the `herd` binary with `tools/hot-code.ld`, which puts the functions a running
//! server executes together at the start of its code, so a server maps a third of the
//! code pages it otherwise would (tools/hot-code.sh says why and how the list is made).
//! Only the layout changes, never what the code does. Skipped off Linux, with the mold
//! linker (no `INSERT` in its scripts), or when `HERD_NO_CODE_LAYOUT` is set.

fn main() {
    println!("cargo:rerun-if-changed=tools/hot-code.ld");
    println!("cargo:rerun-if-env-changed=HERD_NO_CODE_LAYOUT");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if target_os != "linux"
        || flags.contains("mold")
        || std::env::var_os("HERD_NO_CODE_LAYOUT").is_some()
    {
        return;
    }
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let script = std::path::Path::new(&dir).join("tools/hot-code.ld");
    // `-Wl,` splits at commas: a path holding one would reach the linker cut in two.
    if script.is_file() && !dir.contains(',') {
        println!("cargo:rustc-link-arg-bin=herd=-Wl,-T,{}", script.display());
    }
}
