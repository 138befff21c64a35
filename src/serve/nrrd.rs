//! NRRD output for label maps (3D Slicer's MONAI Label extension asks for
//! `.nrrd` results): a text header carrying the CT's geometry, then the
//! gzip-compressed voxels. NRRD's world space is LPS where NIfTI's affine
//! maps to RAS, so the first two world rows change sign.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::Compression;

use segvol::io::nifti::CtVolume;

/// A uint8 label map (`labels` in file order, i fastest) as NRRD bytes with
/// `like`'s grid and placement.
pub fn encode_label_map(like: &CtVolume, labels: &[u8]) -> std::io::Result<Vec<u8>> {
    let a = like.affine();
    // Voxel axis `c` moves by column `c` of the affine; RAS -> LPS.
    let lps = |r: usize, c: usize| if r < 2 { -a[r][c] } else { a[r][c] };
    let dir = |c: usize| format!("({},{},{})", lps(0, c), lps(1, c), lps(2, c));
    let [di, dj, dk] = like.dims;
    let header = format!(
        "NRRD0004\n\
         # segvol label map\n\
         type: uint8\n\
         dimension: 3\n\
         space: left-posterior-superior\n\
         sizes: {di} {dj} {dk}\n\
         space directions: {} {} {}\n\
         kinds: domain domain domain\n\
         endian: little\n\
         encoding: gzip\n\
         space origin: ({},{},{})\n\n",
        dir(0),
        dir(1),
        dir(2),
        lps(0, 3),
        lps(1, 3),
        lps(2, 3),
    );
    let mut out = header.into_bytes();
    // The fastest level: a label map is mostly runs of zeros, which it
    // compresses nearly as well, and this runs once per click.
    let mut gz = GzEncoder::new(&mut out, Compression::fast());
    gz.write_all(labels)?;
    gz.finish()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use segvol::io::affine;

    #[test]
    fn header_carries_geometry_and_data_round_trips() {
        let ct = CtVolume::from_array(
            "t",
            [3, 2, 2],
            vec![0.0; 12],
            affine::from_spacing([1.5, 2.0, 3.0]),
        )
        .unwrap();
        let labels: Vec<u8> = (0..12).map(|v| (v % 3) as u8).collect();
        let bytes = encode_label_map(&ct, &labels).unwrap();
        let split = bytes.windows(2).position(|w| w == b"\n\n").unwrap();
        let head = std::str::from_utf8(&bytes[..split]).unwrap();
        assert!(head.contains("sizes: 3 2 2"), "{head}");
        assert!(
            head.contains("space directions: (-1.5,-0,0) (-0,-2,0) (-0,-0,3)"),
            "{head}"
        );
        let mut back = Vec::new();
        std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(&bytes[split + 2..]),
            &mut back,
        )
        .unwrap();
        assert_eq!(back, labels);
    }
}
