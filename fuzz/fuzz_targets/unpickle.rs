//! The restricted unpickler: arbitrary opcodes, globals, memo and stack
//! abuse must end in `Err`, never in a panic or unbounded memory.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = segvol::weights::unpickle::unpickle(data);
});
