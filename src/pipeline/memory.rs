//! Memory budget: the peak a run will need, estimated from the header
//! before the voxels are read, checked against `--max-memory` so that an
//! oversized volume is refused with a message instead of being killed by
//! the OOM killer.
//!
//! The model follows the buffers `segvol segment` / `eval` hold at once
//! (N voxels in the CT, C in its foreground crop, K categories):
//!
//! | phase        | held at once                                          |
//! |--------------|-------------------------------------------------------|
//! | read         | the CT as float32 (4N) + one decode chunk             |
//! | preprocess   | the CT (4N) + foreground copy or cropped image (≤ 4N) |
//! | segmentation | cropped image (4C) + K cropped logits (4KC) + encoder |
//! | output       | K logits (4KC) + label map (u16 then u8: 3N)          |
//! | probabilities| K logits + label map (2N) + K float maps (4KN)        |
//!
//! `--statistics` / `--preview` keep the CT (4N) from preprocessing to the
//! output, where the statistics copy the masked intensities (≤ 4N);
//! plus, throughout, the model weights as float32, the window-embedding
//! cache, the encoder's activations for one window batch and a fixed
//! allowance for the runtime. `eval` also holds the label map (4N).

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::weights::expected::expected_tensors;

use super::windows::WindowGrid;

const GIB: f64 = (1u64 << 30) as f64;
/// Allocator slack, thread stacks, tokenizer and text tables.
const RUNTIME_BYTES: u64 = 256 << 20;

/// Where the limit came from, for messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitSource {
    /// `--max-memory`.
    Flag,
    /// `MemAvailable` (or the cgroup's limit, when lower) at start-up.
    Available,
    /// No limit could be read, or `--max-memory unlimited`.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimit {
    pub bytes: u64,
    pub source: LimitSource,
}

impl MemoryLimit {
    pub const UNLIMITED: MemoryLimit = MemoryLimit {
        bytes: u64::MAX,
        source: LimitSource::None,
    };

    /// `--max-memory` when given, else what the machine has available.
    pub fn from_arg(arg: Option<&str>) -> Result<MemoryLimit> {
        match arg {
            Some(s) => Ok(match parse_size(s)? {
                None => MemoryLimit::UNLIMITED,
                Some(bytes) => MemoryLimit {
                    bytes,
                    source: LimitSource::Flag,
                },
            }),
            None => Ok(
                available_memory().map_or(MemoryLimit::UNLIMITED, |bytes| MemoryLimit {
                    bytes,
                    source: LimitSource::Available,
                }),
            ),
        }
    }

    fn describe(&self) -> String {
        match self.source {
            LimitSource::Flag => format!("limit {} (--max-memory)", gib(self.bytes)),
            LimitSource::Available => format!(
                "limit {}, the memory available at start (--max-memory to change)",
                gib(self.bytes)
            ),
            LimitSource::None => "no limit".into(),
        }
    }
}

fn gib(bytes: u64) -> String {
    format!("{:.2} GiB", bytes as f64 / GIB)
}

/// `8G`, `512M`, `1.5GiB`, `300000000` (bytes): binary multiples, an
/// optional `B` / `iB`. `unlimited` (or `none`, `0`) turns the check off.
pub fn parse_size(s: &str) -> Result<Option<u64>> {
    let bad = || {
        Error::Invalid(format!(
            "--max-memory {s:?}: expected a size such as 8G, 512M or 1.5GiB, or \"unlimited\""
        ))
    };
    let t = s.trim().to_ascii_lowercase();
    if matches!(t.as_str(), "unlimited" | "none" | "0") {
        return Ok(None);
    }
    let t = t
        .strip_suffix("ib")
        .or_else(|| t.strip_suffix('b'))
        .unwrap_or(&t);
    let (num, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        Some(c) if c.is_ascii_digit() || c == '.' => (t, 0),
        _ => return Err(bad()),
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    let bytes = v * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

/// `MemAvailable` from /proc/meminfo, lowered to what the cgroup (v2)
/// still allows when that is less. `None` where neither can be read.
pub fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let field = |name: &str| -> Option<u64> {
        meminfo.as_deref()?.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            let kb: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
            Some(kb * 1024)
        })
    };
    // Old kernels lack MemAvailable: three quarters of the total then.
    let host = field("MemAvailable").or_else(|| field("MemTotal").map(|t| t / 4 * 3));
    let read_u64 =
        |p: &str| -> Option<u64> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let cgroup = match (
        read_u64("/sys/fs/cgroup/memory.max"),
        read_u64("/sys/fs/cgroup/memory.current"),
    ) {
        (Some(max), Some(cur)) => Some(max.saturating_sub(cur)),
        _ => None,
    };
    match (host, cgroup) {
        (Some(h), Some(c)) => Some(h.min(c)),
        (h, c) => h.or(c),
    }
}

/// What the estimate is for.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Voxels along the file's (i, j, k).
    pub dims: [usize; 3],
    /// Foreground crop (D, H, W) = (k, j, i) extents; `None` before
    /// preprocessing, when the whole volume is assumed.
    pub cropped: Option<[usize; 3]>,
    pub categories: usize,
    /// `--probabilities` is written.
    pub probabilities: bool,
    /// `eval`: a ground-truth label map of the same size is held too.
    pub label_map_input: bool,
    /// `--statistics` / `--preview`: the CT's intensities are kept until the
    /// outputs, where the statistics also copy the masked ones.
    pub intensities_kept: bool,
    pub zoom_in: bool,
    pub window_batch: usize,
    pub cache_bytes: usize,
}

/// The estimated peak and the phase that reaches it.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    pub peak: u64,
    pub phase: &'static str,
    /// (phase, bytes) for every phase, constant parts included.
    pub phases: Vec<(&'static str, u64)>,
}

/// Model weights as float32 (how every backend holds them on the host).
pub fn weight_bytes(cfg: &ModelConfig) -> u64 {
    expected_tensors(cfg)
        .iter()
        .map(|t| t.shape.iter().product::<usize>() as u64 * 4)
        .sum()
}

/// What every run holds whatever the volume: the weights and the runtime.
/// A cohort run holds it once for all its cases.
pub fn constant_bytes(cfg: &ModelConfig) -> u64 {
    weight_bytes(cfg) + RUNTIME_BYTES
}

/// Encoder activations of one batch of windows: attention scores dominate,
/// with the MLP and a few token-by-hidden buffers alongside.
fn encoder_bytes(cfg: &ModelConfig, batch: usize) -> u64 {
    let t = cfg.num_tokens() as u64;
    let per = t * t * cfg.vit_heads as u64
        + t * cfg.vit_mlp_dim as u64 * 2
        + t * cfg.hidden_size as u64 * 8
        + cfg.spatial_size.iter().product::<usize>() as u64 * 2;
    per * 4 * batch.max(1) as u64
}

/// The peak of a segment / eval run.
pub fn estimate(cfg: &ModelConfig, w: &Workload) -> Estimate {
    let n = w.dims.iter().map(|&d| d as u64).product::<u64>();
    let cdims = w.cropped.unwrap_or([w.dims[2], w.dims[1], w.dims[0]]);
    let c = cdims.iter().map(|&d| d as u64).product::<u64>();
    let k = w.categories.max(1) as u64;
    let gt = if w.label_map_input { 4 * n } else { 0 };
    let kept = if w.intensities_kept { 4 * n } else { 0 };

    let entry = (cfg.num_tokens() * cfg.hidden_size * 4) as u64;
    let windows = if w.zoom_in {
        WindowGrid::new(cdims, cfg.spatial_size, 0.5).count() as u64
    } else {
        0
    };
    let cache = (windows * entry).min(w.cache_bytes as u64);
    let constant = constant_bytes(cfg);
    let encoder = encoder_bytes(cfg, if w.zoom_in { w.window_batch } else { 1 });

    // eval crops the label map once per class while the CT copy is gone.
    let eval_crop = if w.label_map_input { 4 * c } else { 0 };
    let mut phases = vec![
        ("read", 4 * n + gt),
        ("preprocess", 8 * n + gt),
        (
            "segmentation",
            4 * c + 4 * k * c + encoder + cache + gt + eval_crop + kept,
        ),
        ("output", 4 * k * c + 3 * n + gt + 2 * kept),
    ];
    if w.probabilities {
        phases.push(("probabilities", 4 * k * c + 2 * n + 4 * k * n + kept));
    }
    for p in &mut phases {
        p.1 += constant;
    }
    let (phase, peak) = phases
        .iter()
        .copied()
        .max_by_key(|p| p.1)
        .expect("phases listed above");
    Estimate {
        peak,
        phase,
        phases,
    }
}

/// `Err(Error::Memory)` when the estimate exceeds the limit.
pub fn check(cfg: &ModelConfig, w: &Workload, limit: MemoryLimit) -> Result<Estimate> {
    let e = estimate(cfg, w);
    if e.peak > limit.bytes {
        let [i, j, k] = w.dims;
        return Err(Error::Memory(format!(
            "needs ~{} (peak in {}) for a {i}x{j}x{k} volume with {} categor{}{}; {}",
            gib(e.peak),
            e.phase,
            w.categories,
            if w.categories == 1 { "y" } else { "ies" },
            if w.probabilities {
                " and probabilities"
            } else {
                ""
            },
            limit.describe()
        )));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_size("8G").unwrap(), Some(8 << 30));
        assert_eq!(parse_size("8GiB").unwrap(), Some(8 << 30));
        assert_eq!(parse_size("512m").unwrap(), Some(512 << 20));
        assert_eq!(parse_size("1.5G").unwrap(), Some(3 << 29));
        assert_eq!(parse_size("4096").unwrap(), Some(4096));
        assert_eq!(parse_size("100KB").unwrap(), Some(100 << 10));
        assert_eq!(parse_size("unlimited").unwrap(), None);
        for bad in ["", "G", "-1G", "8X", "1e400", "nan", "0.1"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn available_memory_is_read_here() {
        // Linux CI: /proc/meminfo exists and reports something plausible.
        if std::path::Path::new("/proc/meminfo").exists() {
            let a = available_memory().unwrap();
            assert!(a > 16 << 20, "{a}");
        }
    }

    fn work(dims: [usize; 3], k: usize) -> Workload {
        Workload {
            dims,
            cropped: None,
            categories: k,
            probabilities: false,
            label_map_input: false,
            intensities_kept: false,
            zoom_in: true,
            window_batch: 2,
            cache_bytes: 1 << 30,
        }
    }

    #[test]
    fn estimate_grows_with_volume_and_categories() {
        let cfg = ModelConfig::tiny();
        let small = estimate(&cfg, &work([64, 64, 32], 1));
        let big = estimate(&cfg, &work([1024, 1024, 1000], 1));
        let big3 = estimate(&cfg, &work([1024, 1024, 1000], 3));
        assert!(small.peak < big.peak && big.peak < big3.peak);
        // 1024x1024x1000, one category: about 8 bytes per voxel at peak.
        let n = 1024.0 * 1024.0 * 1000.0;
        let per_voxel = (big.peak - weight_bytes(&cfg)) as f64 / n;
        assert!((8.0..9.5).contains(&per_voxel), "{per_voxel}");
        assert_eq!(big3.phase, "segmentation");
    }

    #[test]
    fn kept_intensities_raise_the_late_phases() {
        let cfg = ModelConfig::tiny();
        let mut w = work([512, 512, 300], 2);
        w.cropped = Some([300, 400, 400]);
        let plain = estimate(&cfg, &w);
        w.intensities_kept = true;
        let kept = estimate(&cfg, &w);
        let n = 512 * 512 * 300 * 4;
        let phase = |e: &Estimate, p: &str| e.phases.iter().find(|x| x.0 == p).unwrap().1;
        assert_eq!(phase(&kept, "read"), phase(&plain, "read"));
        assert_eq!(
            phase(&kept, "segmentation"),
            phase(&plain, "segmentation") + n
        );
        assert_eq!(phase(&kept, "output"), phase(&plain, "output") + 2 * n);
        assert!(kept.peak > plain.peak);
    }

    #[test]
    fn check_names_the_need_and_the_limit() {
        let cfg = ModelConfig::tiny();
        let w = work([1024, 1024, 1000], 2);
        let limit = MemoryLimit {
            bytes: 4 << 30,
            source: LimitSource::Flag,
        };
        let msg = check(&cfg, &w, limit).unwrap_err().to_string();
        assert!(
            msg.contains("needs ~")
                && msg.contains("1024x1024x1000 volume with 2 categories")
                && msg.contains("limit 4.00 GiB (--max-memory)"),
            "{msg}"
        );
        assert!(check(&cfg, &w, MemoryLimit::UNLIMITED).is_ok());
    }
}
