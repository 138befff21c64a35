//! Preprocessing against the reference (fixtures/README.md, "preprocess/"):
//! thresholds, percentiles, crop, the cropped and zoom-out images, the
//! nearest-exact index tables, and a GT box mapped to the zoom-out frame.

mod common;

use common::fixture;
use common::golden::*;
use safetensors::SafeTensors;
use segvol::backend::interp::nearest_index;
use segvol::backend::Interp;
use segvol::io::nifti::read_ct;
use segvol::pipeline::preprocess::preprocess;
use segvol::pipeline::prompt_frames::{Frame, FrameMap, UserBox};

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn run_case(name: &str, ct_file: &str, label: Option<(&str, f32, bool)>) {
    let (Some(st_path), Some(ct_path)) = (
        fixture(&format!("preprocess/{name}.safetensors")),
        fixture(&format!("data/{ct_file}")),
    ) else {
        return;
    };
    let bytes = std::fs::read(st_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ct = read_ct(&ct_path).unwrap();
    let dims = [ct.dims[2], ct.dims[1], ct.dims[0]];
    let pre = preprocess(&ct.data, dims, [32, 256, 256]).unwrap();

    let stats = f64s(&st, "stats_f64"); // threshold, lo, hi, fg_mean, fg_std
    println!(
        "{name}: threshold {} (ref {}), lo {} (ref {}), hi {} (ref {})",
        pre.stats.threshold, stats[0], pre.stats.lo, stats[1], pre.stats.hi, stats[2]
    );
    assert!((pre.stats.threshold - stats[0]).abs() <= 1e-3);
    assert!((pre.stats.lo - stats[1]).abs() <= 1e-6 * stats[1].abs().max(1.0));
    assert!((pre.stats.hi - stats[2]).abs() <= 1e-6 * stats[2].abs().max(1.0));
    let cs: Vec<i64> = pre.crop_start.iter().map(|&v| v as i64).collect();
    let ce: Vec<i64> = pre.crop_end.iter().map(|&v| v as i64).collect();
    assert_eq!(cs, i64s(&st, "crop_start_dhw"));
    assert_eq!(ce, i64s(&st, "crop_end_dhw"));

    let cd = pre.cropped_dims();
    for (a, axis) in ["d", "h", "w"].iter().enumerate() {
        let want = i64s(&st, &format!("zoom_out_src_index_{axis}"));
        let got: Vec<i64> = (0..want.len())
            .map(|i| nearest_index(Interp::NearestExact, i, cd[a], want.len()) as i64)
            .collect();
        assert_eq!(got, want, "nearest-exact index table {axis}");
    }
    let zo = max_abs(&pre.zoom_out, &f32s(&st, "zoom_out_image"));
    println!("{name}: zoom_out_image max abs {zo:.2e}");
    assert!(zo <= 1e-6);
    if st.names().contains(&"image") {
        let im = max_abs(&pre.image, &f32s(&st, "image"));
        println!("{name}: cropped image max abs {im:.2e}");
        assert!(im <= 1e-6);
    }

    // A box drawn tight around the GT label (in the CT's voxel frame) maps
    // to the zoom-out voxels sampled inside it: it contains the reference
    // demo's box from the resized label, and equals it when the label
    // reaches its bbox faces at sampled voxels (`exact`).
    if let Some((label_file, value, exact)) = label {
        let Some(lp) = fixture(&format!("data/{label_file}")) else {
            return;
        };
        let lab = read_ct(&lp).unwrap();
        let [x, y, _] = lab.dims;
        let (mut lo, mut hi) = ([usize::MAX; 3], [0usize; 3]);
        for (idx, &v) in lab.data.iter().enumerate() {
            if v == value {
                let ijk = [idx % x, (idx / x) % y, idx / (x * y)];
                for a in 0..3 {
                    lo[a] = lo[a].min(ijk[a]);
                    hi[a] = hi[a].max(ijk[a]);
                }
            }
        }
        let ub = UserBox::new([lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]].map(|v| v as f64));
        let fm = FrameMap {
            dims,
            crop_start: pre.crop_start,
            crop_end: pre.crop_end,
            zoom: [32, 256, 256],
            world_to_voxel: None,
        };
        let zb = fm.bbox(&ub, Frame::Voxel).unwrap();
        let want: Vec<f32> = i64s(&st, "zoom_out_label_box")
            .iter()
            .map(|&v| v as f32)
            .collect();
        println!(
            "{name}: GT box {} -> zoom {zb:?}, reference {want:?}",
            ub.text
        );
        if exact {
            assert_eq!(
                zb.to_vec(),
                want,
                "GT box {} in the zoom-out frame",
                ub.text
            );
        }
        for a in 0..3 {
            assert!(
                zb[a] <= want[a] && zb[a + 3] >= want[a + 3],
                "zoom box {zb:?} must contain {want:?}"
            );
            assert!(
                want[a] - zb[a] <= 4.0 && zb[a + 3] - want[a + 3] <= 4.0,
                "zoom box {zb:?} too loose around {want:?}"
            );
        }
    }
}

#[test]
fn preprocess_example_ct_sm() {
    run_case(
        "example_ct_sm",
        "example_ct_sm.nii.gz",
        Some(("example_seg.nii.gz", 5.0, true)),
    );
}

#[test]
fn preprocess_lung1() {
    run_case(
        "lung1",
        "lung1_image.nii.gz",
        Some(("lung1_label.nii.gz", 1.0, false)),
    );
}
