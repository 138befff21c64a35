//! Loading the kernels of `kernels/*.cu`: nvcc's PTX when build.rs produced
//! it for an architecture this device runs, otherwise the embedded sources
//! compiled by NVRTC for the device's own architecture.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx};

use crate::backend::Activation;
use crate::error::{Error, Result};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/kernels.rs"));
}

/// The kernel modules as build.rs embedded them: (name, NVRTC source, PTX,
/// cubin); PTX and cubin are empty when the build had no nvcc or no real
/// target architecture.
pub fn modules() -> &'static [(&'static str, &'static str, &'static str, &'static [u8])] {
    generated::MODULES
}

/// nvcc's machine-code target when cubins are embedded, e.g. `Some("sm_90")`.
pub fn cubin_arch() -> Option<&'static str> {
    generated::CUBIN_ARCH
}

/// nvcc's PTX target when the build had nvcc, e.g. `Some("sm_90")`.
pub fn ptx_arch() -> Option<&'static str> {
    generated::PTX_ARCH
}

/// Activation codes shared with `kernels/common.cuh`.
pub fn act_code(act: Activation) -> i32 {
    match act {
        Activation::None => 0,
        Activation::Gelu => 1,
        Activation::QuickGelu => 2,
        Activation::Relu => 3,
    }
}

/// How the kernels were obtained, for `CudaBackend::name`.
#[derive(Clone, Debug)]
pub enum KernelOrigin {
    Cubin(&'static str),
    Ptx(&'static str),
    Nvrtc(String),
}

impl std::fmt::Display for KernelOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelOrigin::Cubin(a) => write!(f, "nvcc cubin {a}"),
            KernelOrigin::Ptx(a) => write!(f, "nvcc PTX {a}"),
            KernelOrigin::Nvrtc(a) => write!(f, "NVRTC {a}"),
        }
    }
}

pub struct Kernels {
    funcs: HashMap<String, CudaFunction>,
    pub origin: KernelOrigin,
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>, cc: (i32, i32)) -> Result<Self> {
        let cc_num = cc.0 * 10 + cc.1;
        let mut ptx_err = None;
        if let Some(arch) = cubin_arch() {
            if cubin_runs_on(arch, cc) {
                // A cubin the driver refuses (too old a driver, say) still
                // leaves the PTX and NVRTC routes below.
                if let Ok(funcs) =
                    load_all(ctx, |_, _, _, cubin| Ok(Ptx::from_binary(cubin.to_vec())))
                {
                    return finish(ctx, funcs, KernelOrigin::Cubin(arch));
                }
            }
        }
        if let Some(arch) = ptx_arch() {
            if ptx_runs_on(arch, cc_num) {
                match load_all(ctx, |_, _, ptx, _| Ok(Ptx::from_src(ptx))) {
                    Ok(funcs) => {
                        return finish(ctx, funcs, KernelOrigin::Ptx(arch));
                    }
                    Err(e) => ptx_err = Some(e),
                }
            } else {
                ptx_err = Some(Error::Cuda(format!(
                    "the embedded PTX targets {arch}, which compute capability {}.{} cannot run",
                    cc.0, cc.1
                )));
            }
        }
        // NVRTC: compile for exactly this device.
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            let why = match ptx_err {
                Some(e) => format!("{e}; "),
                None => "this build has no nvcc PTX; ".to_string(),
            };
            return Err(Error::Cuda(format!(
                "{why}the kernels must be compiled at run time but NVRTC (libnvrtc.so) was not \
                 found; add the CUDA toolkit's lib64 to LD_LIBRARY_PATH or rebuild with nvcc"
            )));
        }
        let arch = format!("compute_{cc_num}");
        let funcs = load_all(ctx, |name, src, _, _| nvrtc_compile(name, src, &arch))?;
        finish(ctx, funcs, KernelOrigin::Nvrtc(arch))
    }

    pub fn get(&self, name: &str) -> Result<&CudaFunction> {
        self.funcs
            .get(name)
            .ok_or_else(|| Error::Cuda(format!("kernel {name} is missing from the loaded modules")))
    }
}

/// PTX for `arch` (compute_XY / sm_XY / sm_XYa) runs on compute capability
/// `cc_num` (major·10 + minor) when it is at least XY; arch-specific `a`
/// targets run on XY only.
fn ptx_runs_on(arch: &str, cc_num: i32) -> bool {
    let num = arch
        .trim_start_matches("compute_")
        .trim_start_matches("sm_");
    let specific = num.ends_with('a') || num.ends_with('f');
    let Ok(target) = num.trim_end_matches(['a', 'f']).parse::<i32>() else {
        return false;
    };
    if specific {
        target == cc_num
    } else {
        target <= cc_num
    }
}

/// Machine code for `sm_XY` runs on compute capability X.y with y ≥ Y
/// (`sm_XYa`: X.Y only).
fn cubin_runs_on(arch: &str, cc: (i32, i32)) -> bool {
    let num = arch.trim_start_matches("sm_");
    let specific = num.ends_with('a') || num.ends_with('f');
    let Ok(target) = num.trim_end_matches(['a', 'f']).parse::<i32>() else {
        return false;
    };
    let (major, minor) = (target / 10, target % 10);
    if specific {
        (major, minor) == cc
    } else {
        major == cc.0 && minor <= cc.1
    }
}

pub fn nvrtc_compile(name: &str, src: &str, arch: &str) -> Result<Ptx> {
    let opts = CompileOptions {
        options: vec![
            format!("--gpu-architecture={arch}"),
            "--std=c++17".to_string(),
            "-lineinfo".to_string(),
        ],
        name: Some(format!("{name}.cu")),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(src, opts).map_err(|e| match e {
        CompileError::CompileError { nvrtc, log, .. } => Error::Cuda(format!(
            "NVRTC could not compile kernels/{name}.cu for {arch} ({nvrtc:?}):\n{}",
            log.to_string_lossy()
        )),
        other => Error::Cuda(format!("NVRTC on kernels/{name}.cu: {other}")),
    })
}

/// Entry points of a PTX text (`.entry NAME(`).
pub fn ptx_entries(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|l| {
            let i = l.find(".entry ")?;
            let rest = l[i + 7..].trim_start();
            let end = rest.find(|c: char| c == '(' || c.is_whitespace())?;
            Some(rest[..end].to_string())
        })
        .collect()
}

/// Loads every module as `get_image` provides it; entry names come from the
/// PTX (nvcc's, or the NVRTC image itself).
fn load_all(
    ctx: &Arc<CudaContext>,
    get_image: impl Fn(&str, &str, &str, &[u8]) -> Result<Ptx>,
) -> Result<HashMap<String, CudaFunction>> {
    let mut funcs = HashMap::new();
    for &(name, src, ptx, cubin) in modules() {
        let image = get_image(name, src, ptx, cubin)?;
        let text = if ptx.is_empty() {
            image.to_src()
        } else {
            ptx.to_string()
        };
        let module = ctx
            .load_module(image)
            .map_err(|e| Error::Cuda(format!("loading kernels/{name}.cu: {e}")))?;
        for entry in ptx_entries(&text) {
            let f = module
                .load_function(&entry)
                .map_err(|e| Error::Cuda(format!("kernel {entry} of {name}.cu: {e}")))?;
            funcs.insert(entry, f);
        }
    }
    Ok(funcs)
}

/// Lets the attention kernels use the device's whole opt-in shared memory
/// (the tensor-core kernel needs 66 KB at head dim 96).
fn finish(
    ctx: &Arc<CudaContext>,
    funcs: HashMap<String, CudaFunction>,
    origin: KernelOrigin,
) -> Result<Kernels> {
    let optin = ctx
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        .map_err(|e| Error::Cuda(format!("device attribute: {e}")))?;
    for (name, f) in &funcs {
        if name.starts_with("attn_") {
            f.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                optin,
            )
            .map_err(|e| Error::Cuda(format!("{name}: shared memory limit: {e}")))?;
        }
    }
    Ok(Kernels { funcs, origin })
}

/// The `extern "C"` entry points a kernel source defines: written out, or
/// made by a `#define` whose body pastes its parameters into the name
/// (`attn_mma_##D##_##NW(`) and instantiated on a line of its own
/// (`ATTN_MMA(64, 4)`). Enough C preprocessing for `kernels/*.cu`, so the
/// names the host launches can be checked without a CUDA compiler.
#[cfg(test)]
pub(super) fn cu_entries(src: &str) -> std::collections::BTreeSet<String> {
    use std::collections::{BTreeSet, HashMap};
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    // The name after `void` (past an optional `__launch_bounds__(...)`).
    let name_after_void = |rest: &str| -> Option<String> {
        let mut rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("__launch_bounds__") {
            let mut depth = 0;
            let end = r.char_indices().find_map(|(i, c)| {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                None
            })?;
            rest = r[end..].trim_start();
        }
        let end = rest.find(|c: char| !(ident(c) || c == '#'))?;
        Some(rest[..end].to_string())
    };
    let entries_in = |text: &str| -> Vec<String> {
        text.match_indices("extern \"C\"")
            .filter_map(|(i, _)| {
                let after = &text[i..];
                let v = after.find("void")?;
                name_after_void(&after[v + 4..])
            })
            .collect()
    };
    // Logical lines: backslash continuations joined.
    let logical = src.replace("\\\n", " ");
    let mut macros: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    let mut plain = String::new();
    let mut found = BTreeSet::new();
    for line in logical.lines() {
        let t = line.trim();
        if let Some(def) = t.strip_prefix("#define ") {
            let Some(open) = def.find('(') else { continue };
            let Some(close) = def.find(')') else { continue };
            let name = def[..open].to_string();
            if !name.chars().all(ident) {
                continue;
            }
            let params = def[open + 1..close]
                .split(',')
                .map(|p| p.trim().to_string());
            let templates = entries_in(&def[close + 1..]);
            if !templates.is_empty() {
                macros.insert(name, (params.collect(), templates));
            }
            continue;
        }
        let call = t.split_once('(').and_then(|(name, rest)| {
            let args = rest.trim_end().trim_end_matches(';').strip_suffix(')')?;
            Some((macros.get(name.trim())?, args))
        });
        match call {
            Some(((params, templates), args)) => {
                let args: Vec<&str> = args.split(',').map(str::trim).collect();
                for tpl in templates {
                    let name: String = tpl
                        .split("##")
                        .map(|part| match params.iter().position(|p| p == part) {
                            Some(i) => args.get(i).copied().unwrap_or(part),
                            None => part,
                        })
                        .collect();
                    found.insert(name);
                }
            }
            None => {
                plain.push_str(line);
                plain.push('\n');
            }
        }
    }
    found.extend(entries_in(&plain));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ptx_arch_rules() {
        assert!(ptx_runs_on("compute_80", 90));
        assert!(ptx_runs_on("sm_90", 90));
        assert!(!ptx_runs_on("sm_90", 89));
        assert!(ptx_runs_on("sm_90", 100));
        assert!(ptx_runs_on("sm_90a", 90));
        assert!(!ptx_runs_on("sm_90a", 100));
        assert!(!ptx_runs_on("compute_xx", 90));
    }

    #[test]
    fn cubin_arch_rules() {
        assert!(cubin_runs_on("sm_90", (9, 0)));
        assert!(!cubin_runs_on("sm_90", (10, 0)));
        assert!(cubin_runs_on("sm_80", (8, 6)));
        assert!(!cubin_runs_on("sm_86", (8, 0)));
        assert!(!cubin_runs_on("sm_90a", (9, 1)));
    }

    #[test]
    fn cu_entries_expands_pasting_macros() {
        let src = "#define K(T, N) \\\n  extern \"C\" __global__ void __launch_bounds__(32 * N, M(N)) k_##T##_##N( \\\n  int x) {}\nK(f32, 4)\nK(bf16, 1)\nextern \"C\" __global__ void __launch_bounds__(256)\n    plain_f32(int x) {}\n";
        let got: Vec<String> = cu_entries(src).into_iter().collect();
        assert_eq!(got, ["k_bf16_1", "k_f32_4", "plain_f32"]);
    }

    #[test]
    fn entries_parsed() {
        let ptx = ".visible .entry add_f32(\n\t.param .u64 a\n)\n.visible .entry ln_rows_bf16_8(\n";
        assert_eq!(ptx_entries(ptx), vec!["add_f32", "ln_rows_bf16_8"]);
    }

    #[test]
    fn every_module_is_embedded() {
        let names: Vec<&str> = modules().iter().map(|m| m.0).collect();
        for want in [
            "attention",
            "conv_transpose",
            "elementwise",
            "layer_norm",
            "linear",
            "patch_embed",
            "resize",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        for (name, src, ptx, cubin) in modules() {
            assert!(
                !src.contains("#include"),
                "{name}: NVRTC source still has an #include"
            );
            assert!(src.contains("extern \"C\""), "{name}: no entry points");
            assert_eq!(ptx.is_empty(), ptx_arch().is_none(), "{name}: PTX presence");
            assert_eq!(
                cubin.is_empty(),
                cubin_arch().is_none(),
                "{name}: cubin presence"
            );
        }
    }
}
