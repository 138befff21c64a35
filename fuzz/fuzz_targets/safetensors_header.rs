//! The safetensors header path: length prefix, JSON, dtypes, shapes and
//! offsets checked against the bytes that follow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = segvol::weights::parse_safetensors_header(data) {
        // Accepted entries must fit in the file.
        let total: usize = tensors
            .iter()
            .map(|(_, dt, shape)| shape.iter().product::<usize>() * dt.size())
            .sum();
        assert!(total <= data.len());
    }
});
