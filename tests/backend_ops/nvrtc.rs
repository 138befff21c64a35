//! The kernel sources without a device: NVRTC compiles each of them.

/// NVRTC needs no GPU: when libnvrtc is loadable, every embedded kernel
/// source must compile for sm_80 and sm_90 with no include path, and expose
/// the same entry points as the others.
#[test]
fn nvrtc_compiles_every_kernel() {
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        eprintln!("SKIP: no NVRTC (libnvrtc.so not on the library path)");
        return;
    }
    use segvol::backend::cuda::kernels;
    let mut all = Vec::new();
    for arch in ["compute_80", "compute_90"] {
        let mut entries = Vec::new();
        for (name, src, _, _) in kernels::modules() {
            let ptx = kernels::nvrtc_compile(name, src, arch).unwrap_or_else(|e| panic!("{e}"));
            let found = kernels::ptx_entries(&ptx.to_src());
            assert!(!found.is_empty(), "{name}.cu has no entry points");
            entries.extend(found);
        }
        entries.sort();
        eprintln!("NVRTC {arch}: {} kernels", entries.len());
        all.push(entries);
    }
    assert_eq!(all[0], all[1]);
    for must in [
        "attn_mma_64_4",
        "attn_mma_96_1",
        "attn_generic_f32_2",
        "ln_item_apply_bf16",
        "epilogue_f32",
        "convt_scatter_bf16",
        "resize_trilinear_f32",
        "im2col_bf16",
        "cast_f16_bf16",
    ] {
        assert!(all[0].iter().any(|e| e == must), "{must} missing");
    }
}
