//! The NIfTI read path: header validation and affine on the raw bytes, then
//! the whole reader (gzip, offsets, truncation, voxel decoding) on the same
//! bytes as a `.nii` / `.nii.gz` file. Any panic, or an allocation past
//! libFuzzer's -rss_limit_mb, is a finding.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = segvol::io::nifti::parse_header(data);
    if let Ok(ct) = segvol::io::nifti::read_ct_bytes(Path::new("fuzz.nii"), data) {
        // A file the reader accepts must agree with its own header check
        // (for plain files, where the header is the first 348 bytes).
        if !data.starts_with(&[0x1f, 0x8b]) {
            let h = header.expect("read_ct accepted a header parse_header refused");
            assert_eq!(h.dims, ct.dims);
        }
        assert_eq!(ct.data.len(), ct.dims.iter().product::<usize>());
    }
});
