//! A whole checkpoint from bytes: format sniffing, the zip reader, the
//! torch record layout and unpickler together, safetensors, key
//! normalisation. Every tensor of an accepted checkpoint must convert.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(ck) = segvol::weights::Checkpoint::from_bytes("fuzz.bin", data.to_vec()) {
        let names: Vec<String> = ck.names().map(str::to_string).collect();
        for n in names {
            let v = ck.require(&n).expect("listed name");
            let _ = v.to_f32();
        }
    }
});
