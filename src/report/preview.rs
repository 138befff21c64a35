//! `--preview out.png`: an overview image for a quick look. One row per
//! non-empty category (label order), three panels per row: the axial,
//! coronal and sagittal slices through that category's centroid. The CT is
//! shown in a soft-tissue window (level 40, width 400 HU) and every
//! category's mask is blended over it at 50 % in its fixed colour
//! ([`super::labels::category_color`]); a small swatch in the row's top-left
//! corner shows whose centroid the row is. Without any non-empty category
//! the image is one row through the volume's centre.
//!
//! Panels are square (256 px, or 128 px above 12 rows), the slice scaled to
//! its physical aspect (nearest voxel) and centred. Orientation is
//! radiological, from the affine: each array axis is matched to the world
//! (RAS) axis it runs closest to; axial and coronal show the patient's right
//! on the left, axial anterior up, coronal and sagittal superior up,
//! sagittal anterior on the left.

use std::path::Path;

use super::labels::category_color;
use crate::error::{Error, Result};
use crate::io::nifti::CtVolume;
use crate::io::write::write_bytes_atomic;

const LEVEL: f32 = 40.0;
const WIDTH: f32 = 400.0;
const SWATCH: usize = 10;

/// The three views, in panel order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    Axial,
    Coronal,
    Sagittal,
}

pub const VIEWS: [View; 3] = [View::Axial, View::Coronal, View::Sagittal];

impl View {
    /// (normal, screen-right direction, screen-down direction) as (world
    /// axis, sign) pairs.
    fn axes(self) -> [(usize, f64); 3] {
        match self {
            View::Axial => [(2, 1.0), (0, -1.0), (1, -1.0)],
            View::Coronal => [(1, 1.0), (0, -1.0), (2, -1.0)],
            View::Sagittal => [(0, 1.0), (1, -1.0), (2, -1.0)],
        }
    }
}

/// How array axes map to world axes: `array[w]` is the array axis running
/// along world axis `w`, `sign[w]` whether it runs the same way, `spacing`
/// the voxel size along each array axis.
#[derive(Clone, Debug)]
struct Orientation {
    array: [usize; 3],
    sign: [f64; 3],
    spacing: [f64; 3],
}

impl Orientation {
    fn of(ct: &CtVolume) -> Orientation {
        let a = ct.affine();
        let col = |ax: usize| [a[0][ax], a[1][ax], a[2][ax]];
        let spacing = [0, 1, 2].map(|ax| {
            let n = col(ax).iter().map(|v| v * v).sum::<f64>().sqrt();
            if n > 0.0 && n.is_finite() {
                n
            } else {
                1.0
            }
        });
        let mut array = [usize::MAX; 3];
        let mut sign = [1.0; 3];
        for ax in 0..3 {
            let c = col(ax);
            let w = (0..3)
                .max_by(|&x, &y| c[x].abs().total_cmp(&c[y].abs()))
                .expect("three axes");
            if array[w] == usize::MAX {
                array[w] = ax;
                sign[w] = if c[w] < 0.0 { -1.0 } else { 1.0 };
            }
        }
        // A grid too oblique to pair axes one to one is shown in array order.
        if array.contains(&usize::MAX) {
            array = [0, 1, 2];
            sign = [1.0; 3];
        }
        Orientation {
            array,
            sign,
            spacing,
        }
    }
}

/// Where things are in the image: enough to find the voxel behind a pixel.
#[derive(Clone, Debug)]
pub struct PreviewLayout {
    pub panel: usize,
    /// Per row: the category (0-based) whose centroid it cuts, or `None` for
    /// the volume-centre row; and the voxel (i, j, k) the slices go through.
    pub rows: Vec<(Option<usize>, [usize; 3])>,
    dims: [usize; 3],
    orient: Orientation,
}

/// A rendered preview: RGB pixels, row-major.
#[derive(Clone, Debug)]
pub struct Preview {
    pub width: usize,
    pub height: usize,
    pub rgb: Vec<u8>,
    pub layout: PreviewLayout,
}

impl PreviewLayout {
    /// The voxel (i, j, k) shown at pixel (`x`, `y`) of the whole image, or
    /// `None` in a panel's padding.
    pub fn voxel_at(&self, x: usize, y: usize) -> Option<[usize; 3]> {
        let p = self.panel;
        let (row, view) = (y / p, x / p);
        let through = self.rows.get(row)?.1;
        let view = *VIEWS.get(view)?;
        self.panel_voxel(view, through, x % p, y % p)
    }

    fn panel_voxel(
        &self,
        view: View,
        through: [usize; 3],
        px: usize,
        py: usize,
    ) -> Option<[usize; 3]> {
        let [_, (wc, sc), (wr, sr)] = view.axes();
        let o = &self.orient;
        let (ac, ar) = (o.array[wc], o.array[wr]);
        let (nc, nr) = (self.dims[ac], self.dims[ar]);
        let (mc, mr) = (nc as f64 * o.spacing[ac], nr as f64 * o.spacing[ar]);
        let scale = self.panel as f64 / mc.max(mr);
        let (wpx, hpx) = (
            ((mc * scale).round() as usize).clamp(1, self.panel),
            ((mr * scale).round() as usize).clamp(1, self.panel),
        );
        let (x0, y0) = ((self.panel - wpx) / 2, (self.panel - hpx) / 2);
        if px < x0 || px >= x0 + wpx || py < y0 || py >= y0 + hpx {
            return None;
        }
        let index = |offset: usize, extent_px: usize, n: usize, flip: bool| {
            let u = (((offset as f64 + 0.5) / extent_px as f64) * n as f64) as usize;
            let u = u.min(n - 1);
            if flip {
                n - 1 - u
            } else {
                u
            }
        };
        let mut v = through;
        v[ac] = index(px - x0, wpx, nc, o.sign[wc] != sc);
        v[ar] = index(py - y0, hpx, nr, o.sign[wr] != sr);
        Some(v)
    }
}

fn window(hu: f32) -> u8 {
    let t = (hu - (LEVEL - WIDTH / 2.0)) / WIDTH;
    if t.is_nan() {
        0
    } else {
        (t.clamp(0.0, 1.0) * 255.0).round() as u8
    }
}

/// Renders the preview of `labels` (file order, `c + 1` for `names[c]`)
/// over `ct`'s intensities.
pub fn render(ct: &CtVolume, labels: &[u16], names: &[String]) -> Result<Preview> {
    let n = ct.dims.iter().product::<usize>();
    if ct.data.len() != n || labels.len() != n {
        return Err(Error::Invalid(format!(
            "preview: the CT has {} intensities in memory and the label map {} voxels, \
             for a {}x{}x{} grid",
            ct.data.len(),
            labels.len(),
            ct.dims[0],
            ct.dims[1],
            ct.dims[2]
        )));
    }
    let [di, dj, _] = ct.dims;
    let k = names.len();
    let mut counts = vec![0usize; k];
    let mut sums = vec![[0f64; 3]; k];
    for (idx, &l) in labels.iter().enumerate() {
        if l == 0 || l as usize > k {
            continue;
        }
        let c = l as usize - 1;
        counts[c] += 1;
        let ijk = [idx % di, (idx / di) % dj, idx / (di * dj)];
        for (s, x) in sums[c].iter_mut().zip(ijk) {
            *s += x as f64;
        }
    }
    let mut rows: Vec<(Option<usize>, [usize; 3])> = (0..k)
        .filter(|&c| counts[c] > 0)
        .map(|c| {
            let at = [0, 1, 2]
                .map(|a| ((sums[c][a] / counts[c] as f64).round() as usize).min(ct.dims[a] - 1));
            (Some(c), at)
        })
        .collect();
    if rows.is_empty() {
        rows.push((None, ct.dims.map(|d| d / 2)));
    }
    let panel = if rows.len() > 12 { 128 } else { 256 };
    let layout = PreviewLayout {
        panel,
        rows,
        dims: ct.dims,
        orient: Orientation::of(ct),
    };
    let colors: Vec<[u8; 3]> = names.iter().map(|n| category_color(n)).collect();
    let (width, height) = (3 * panel, layout.rows.len() * panel);
    let mut rgb = vec![0u8; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let Some([i, j, kk]) = layout.voxel_at(x, y) else {
                continue;
            };
            let idx = ct.index(i, j, kk);
            let g = window(ct.data[idx]);
            let px = match labels[idx] as usize {
                0 => [g; 3],
                l if l <= k => colors[l - 1].map(|c| ((u16::from(g) + u16::from(c)) / 2) as u8),
                _ => [g; 3],
            };
            rgb[(y * width + x) * 3..][..3].copy_from_slice(&px);
        }
    }
    for (r, (c, _)) in layout.rows.iter().enumerate() {
        if let Some(c) = c {
            for y in 2..2 + SWATCH {
                for x in 2..2 + SWATCH {
                    rgb[((r * panel + y) * width + x) * 3..][..3].copy_from_slice(&colors[*c]);
                }
            }
        }
    }
    Ok(Preview {
        width,
        height,
        rgb,
        layout,
    })
}

impl Preview {
    /// The image as PNG bytes (8-bit RGB).
    pub fn png(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let err = |e: png::EncodingError| Error::Invalid(format!("PNG encoding: {e}"));
        {
            let mut enc = png::Encoder::new(&mut out, self.width as u32, self.height as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut w = enc.write_header().map_err(err)?;
            w.write_image_data(&self.rgb).map_err(err)?;
            w.finish().map_err(err)?;
        }
        Ok(out)
    }

    /// Writes the PNG atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        write_bytes_atomic(path, &self.png()?)
    }
}

/// Checks a `--preview` path before any work: a `.png` name in an existing
/// folder.
pub fn check_preview_path(path: &Path) -> Result<()> {
    let ok = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("png"));
    if !ok {
        return Err(Error::Invalid(format!(
            "--preview {}: the file name must end in .png",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "--preview {}: the folder {} does not exist",
            path.display(),
            dir.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::affine::from_spacing;

    fn cube_case(affine: crate::io::affine::Affine) -> (CtVolume, Vec<u16>) {
        // 40×30×20 voxels of 1 mm; label 1 on i 10..20, j 5..15, k 8..12.
        let dims = [40, 30, 20];
        let ct = CtVolume::from_array("t", dims, vec![40.0; 40 * 30 * 20], affine).unwrap();
        let mut labels = vec![0u16; ct.len()];
        for k in 8..12 {
            for j in 5..15 {
                for i in 10..20 {
                    labels[ct.index(i, j, k)] = 1;
                }
            }
        }
        (ct, labels)
    }

    fn px(p: &Preview, x: usize, y: usize) -> [u8; 3] {
        let o = (y * p.width + x) * 3;
        [p.rgb[o], p.rgb[o + 1], p.rgb[o + 2]]
    }

    #[test]
    fn overlay_lands_on_the_mask_in_radiological_orientation() {
        let (ct, labels) = cube_case(from_spacing([1.0; 3]));
        let p = render(&ct, &labels, &["liver".to_string()]).unwrap();
        assert_eq!((p.width, p.height), (768, 256));
        // Centroid (14.5, 9.5, 9.5) rounds to (15, 10, 10) (half away from 0).
        assert_eq!(p.layout.rows, vec![(Some(0), [15, 10, 10])]);
        let gray = [window(40.0); 3];
        let blend =
            category_color("liver").map(|c| ((u16::from(gray[0]) + u16::from(c)) / 2) as u8);
        // Axial: 40 mm across (i, flipped: x = (39 − i + 0.5)·6.4), 30 mm
        // down (j flipped, 32 px top padding: y = 32 + (29 − j + 0.5)·6.4).
        let axial = |i: usize, j: usize| {
            (
                ((39 - i) as f64 * 6.4 + 3.2) as usize,
                (32.0 + (29 - j) as f64 * 6.4 + 3.2) as usize,
            )
        };
        let (x, y) = axial(15, 10);
        assert_eq!(px(&p, x, y), blend);
        let (x, y) = axial(5, 10); // left of the cube in i: shown to its right
        assert_eq!(px(&p, x, y), gray);
        assert!(x > axial(15, 10).0);
        let (x, y) = axial(15, 20);
        assert_eq!(px(&p, x, y), gray);
        assert_eq!(px(&p, 100, 10), [0, 0, 0]); // padding above the slice
                                                // Coronal (panel 2): i across flipped, k down flipped (20 mm tall:
                                                // 6.4 px per mm, 192 px wide... of 256: 40 mm wide fills it).
        let coronal = |i: usize, k: usize| {
            (
                256 + ((39 - i) as f64 * 6.4 + 3.2) as usize,
                (64.0 + (19 - k) as f64 * 6.4 + 3.2) as usize,
            )
        };
        assert_eq!(px(&p, coronal(12, 9).0, coronal(12, 9).1), blend);
        assert_eq!(px(&p, coronal(12, 14).0, coronal(12, 14).1), gray);
        // Sagittal (panel 3): j across flipped (30 mm = 256 px: 8.533 px per
        // mm), k down flipped.
        let s: f64 = 256.0 / 30.0;
        let sag = |j: usize, k: usize| {
            let h = (20.0 * s).round();
            let y0 = ((256.0 - h) / 2.0).floor();
            (
                512 + ((29 - j) as f64 * s + s / 2.0) as usize,
                (y0 + (19 - k) as f64 * s + s / 2.0) as usize,
            )
        };
        assert_eq!(px(&p, sag(7, 10).0, sag(7, 10).1), blend);
        assert_eq!(px(&p, sag(20, 10).0, sag(20, 10).1), gray);
        // The swatch.
        assert_eq!(px(&p, 5, 5), category_color("liver"));
        // Every pixel: coloured exactly where the mask is.
        for y in 0..p.height {
            for x in 0..p.width {
                if x < 2 + SWATCH && y < 2 + SWATCH {
                    continue;
                }
                let want = match p.layout.voxel_at(x, y) {
                    None => [0, 0, 0],
                    Some([i, j, k]) if labels[ct.index(i, j, k)] == 1 => blend,
                    Some(_) => gray,
                };
                assert_eq!(px(&p, x, y), want, "pixel ({x}, {y})");
            }
        }
    }

    #[test]
    fn flipped_axes_follow_the_affine() {
        // i runs towards −x (an LPS-like grid): the cube moves across.
        let mut a = from_spacing([1.0; 3]);
        a[0][0] = -1.0;
        let (ct, labels) = cube_case(a);
        let p = render(&ct, &labels, &["liver".to_string()]).unwrap();
        // Now i itself runs right-to-left on screen: x = (i + 0.5)·6.4.
        let y = (32.0 + 19.0 * 6.4 + 3.2) as usize;
        assert_ne!(px(&p, (15.0 * 6.4 + 3.2) as usize, y), px(&p, 0, y));
        assert_eq!(px(&p, (5.0 * 6.4 + 3.2) as usize, y), [window(40.0); 3]);
        assert_ne!(px(&p, (15.0 * 6.4 + 3.2) as usize, y), [window(40.0); 3]);
    }

    #[test]
    fn empty_masks_give_one_centre_row_and_png_round_trips() {
        let (ct, _) = cube_case(from_spacing([1.0, 1.0, 2.5]));
        let labels = vec![0u16; ct.len()];
        let p = render(&ct, &labels, &["liver".to_string()]).unwrap();
        assert_eq!(p.layout.rows, vec![(None, [20, 15, 10])]);
        let bytes = p.png().unwrap();
        let mut dec = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; dec.output_buffer_size().unwrap()];
        let info = dec.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (768, 256));
        assert_eq!(&buf[..info.buffer_size()], &p.rgb[..]);
    }

    #[test]
    fn bad_paths_and_sizes_are_refused() {
        assert!(check_preview_path(Path::new("x.jpg")).is_err());
        assert!(check_preview_path(Path::new("/no/such/folder/x.png")).is_err());
        assert!(check_preview_path(Path::new("x.PNG")).is_ok());
        let (ct, _) = cube_case(from_spacing([1.0; 3]));
        assert!(render(&ct, &[0u16; 5], &[]).is_err());
    }
}
