//! Hostile and damaged inputs: every one must be an `Err` naming the
//! problem, never a panic, and nothing in a pickle is ever executed.

mod common;

use std::path::PathBuf;

use common::gen::{build_zip, global, int, s, torch_pickle, tuple, GOOD, T};
use segvol::weights::unpickle::unpickle;
use segvol::weights::Checkpoint;

fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("weights-hostile");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn open_err(name: &str, bytes: &[u8]) -> String {
    let p = scratch_file(name, bytes);
    let r = Checkpoint::open(&p);
    std::fs::remove_file(&p).unwrap();
    match r {
        Ok(_) => panic!("{name}: loaded a hostile file"),
        Err(e) => e.to_string(),
    }
}

fn pickle_err(bytes: &[u8]) -> String {
    match unpickle(bytes) {
        Ok(p) => panic!("accepted: root {:?}", p.root),
        Err(e) => e.to_string(),
    }
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

// ---- the cases ----

#[test]
fn handmade_torch_zip_loads() {
    // The builders above make a valid file; the failures below are real.
    let pkl = torch_pickle(&[GOOD]);
    let data = f32s(&[1., 2., 3., 4., 5., 6.]);
    let z = build_zip(
        &[
            ("a/data.pkl", &pkl),
            ("a/byteorder", b"little"),
            ("a/data/0", &data),
        ],
        0,
    );
    let p = scratch_file("good.bin", &z);
    let ck = Checkpoint::open(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    assert_eq!(
        &*ck.get("w").unwrap().to_f32().unwrap(),
        &[1., 2., 3., 4., 5., 6.]
    );
}

#[test]
fn os_system_via_global_and_reduce() {
    let mut p = vec![0x80, 2];
    p.extend(global("os", "system"));
    p.extend(tuple(&[s("echo pwned")]));
    p.extend([b'R', b'.']);
    let e = pickle_err(&p);
    assert!(e.contains("forbidden global os.system"), "{e}");
}

#[test]
fn builtins_eval_via_stack_global() {
    let mut p = vec![0x80, 4, 0x8c, 8];
    p.extend(b"builtins");
    p.extend([0x94, 0x8c, 4]);
    p.extend(b"eval");
    p.extend([0x94, 0x93]);
    p.extend(tuple(&[s("1+1")]));
    p.extend([b'R', b'.']);
    let e = pickle_err(&p);
    assert!(e.contains("forbidden global builtins.eval"), "{e}");
}

#[test]
fn getattr_and_other_globals_are_named() {
    for (m, n) in [
        ("__builtin__", "getattr"),
        ("torch", "load"),
        ("numpy.core.multiarray", "scalar"),
    ] {
        let mut p = vec![0x80, 2];
        p.extend(global(m, n));
        p.push(b'.');
        let e = pickle_err(&p);
        assert!(e.contains(&format!("forbidden global {m}.{n}")), "{e}");
    }
}

#[test]
fn reduce_on_ordered_dict_with_wrong_args() {
    let mut p = vec![0x80, 2];
    p.extend(global("collections", "OrderedDict"));
    p.extend(tuple(&[s("x")]));
    p.extend([b'R', b'.']);
    let e = pickle_err(&p);
    assert!(e.contains("OrderedDict called with 1 arguments"), "{e}");

    // Arguments that are not a tuple.
    let mut p = vec![0x80, 2];
    p.extend(global("collections", "OrderedDict"));
    p.extend([b'N', b'R', b'.']);
    let e = pickle_err(&p);
    assert!(
        e.contains("arguments of collections.OrderedDict must be a tuple"),
        "{e}"
    );
}

#[test]
fn reduce_and_build_on_disallowed_targets() {
    let e = pickle_err(&[0x80, 2, b'N', b')', b'R', b'.']);
    assert!(e.contains("REDUCE on a None"), "{e}");
    let mut p = vec![0x80, 2];
    p.extend(global("torch", "FloatStorage"));
    p.extend([b')', b'R', b'.']);
    let e = pickle_err(&p);
    assert!(
        e.contains("torch.FloatStorage may only name a storage type"),
        "{e}"
    );
    // BUILD on a plain list.
    let e = pickle_err(&[0x80, 2, b']', b'}', b'b', b'.']);
    assert!(e.contains("BUILD on a container; only OrderedDict"), "{e}");
    // _rebuild_tensor_v2 with the wrong number of arguments.
    let mut p = vec![0x80, 2];
    p.extend(global("torch._utils", "_rebuild_tensor_v2"));
    p.extend([b')', b'R', b'.']);
    let e = pickle_err(&p);
    assert!(e.contains("takes 6 or 7 arguments, got 0"), "{e}");
}

#[test]
fn object_building_opcodes_are_refused() {
    let e = pickle_err(b"\x80\x02(ios\nsystem\n.");
    assert!(e.contains("refused opcode INST"), "{e}");
    let e = pickle_err(b"\x80\x02()o.");
    assert!(e.contains("refused opcode OBJ"), "{e}");
    let e = pickle_err(b"\x80\x02N)\x81.");
    assert!(e.contains("refused opcode NEWOBJ"), "{e}");
    let e = pickle_err(b"\x80\x02\x82\x01.");
    assert!(e.contains("refused opcode EXT1"), "{e}");
    let e = pickle_err(b"\x80\x02\xff.");
    assert!(e.contains("unknown pickle opcode 0xff"), "{e}");
    let e = pickle_err(b"\x80\x09N.");
    assert!(e.contains("unsupported pickle protocol 9"), "{e}");
}

#[test]
fn memo_abuse() {
    let e = pickle_err(b"\x80\x02Nr\xff\xff\xff\xff.");
    assert!(
        e.contains("memo index 4294967295 is beyond the limit"),
        "{e}"
    );
    let e = pickle_err(b"\x80\x02h\x05.");
    assert!(
        e.contains("memo index 5 is read before it is written"),
        "{e}"
    );
    let e = pickle_err(b"\x80\x02q\x00.");
    assert!(e.contains("pickle stack is empty"), "{e}");
}

#[test]
fn stack_abuse() {
    let e = pickle_err(b"\x80\x02.");
    assert!(e.contains("stack underflow"), "{e}");
    let e = pickle_err(b"\x80\x02Nu.");
    assert!(e.contains("no MARK"), "{e}");
    // A million-deep MARK/EMPTY_LIST tower is refused, not recursed into.
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', (1 << 20) + 1));
    let e = pickle_err(&p);
    assert!(e.contains("pickle stack exceeds 1048576 items"), "{e}");
}

#[test]
fn truncated_pickles_fail_at_every_length() {
    let pkl = torch_pickle(&[
        GOOD,
        T {
            name: "b",
            key: "1",
            storage_numel: 2,
            offset: 0,
            shape: &[2],
            stride: &[1],
        },
    ]);
    assert!(unpickle(&pkl).is_ok());
    for n in 0..pkl.len() {
        let e = pickle_err(&pkl[..n]);
        assert!(
            e.contains("truncated") || e.contains("without STOP") || e.contains("underflow"),
            "prefix {n}: {e}"
        );
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    let pkl = torch_pickle(&[GOOD]);
    let mut rejected = 0;
    for i in 0..pkl.len() {
        for v in [0u8, 0x01, 0x7f, 0x80, 0xff, b'R', b'b', b'(', b'.', b'q'] {
            let mut p = pkl.clone();
            p[i] = v;
            if unpickle(&p).is_err() {
                rejected += 1;
            }
        }
    }
    assert!(
        rejected > pkl.len(),
        "most corruptions must be detected ({rejected})"
    );
}

#[test]
fn records_missing_from_the_zip() {
    let pkl = torch_pickle(&[GOOD]);
    let z = build_zip(&[("a/data.pkl", &pkl)], 0);
    let e = open_err("missing.bin", &z);
    assert!(e.contains("record a/data/0 is missing from the zip"), "{e}");
    let z = build_zip(&[("a/data/0", &f32s(&[0.; 6]))], 0);
    let e = open_err("nopkl.bin", &z);
    assert!(e.contains("no <archive>/data.pkl"), "{e}");
}

#[test]
fn shapes_larger_than_the_storage() {
    let pkl = torch_pickle(&[T {
        shape: &[3, 3],
        ..GOOD
    }]);
    let z = build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &f32s(&[0.; 6]))], 0);
    let e = open_err("big.bin", &z);
    assert!(
        e.contains("tensor of shape [3, 3]")
            && e.contains("needs 9 elements but storage 0 holds 6"),
        "{e}"
    );
}

#[test]
fn offsets_past_the_end() {
    let pkl = torch_pickle(&[T { offset: 4, ..GOOD }]);
    let z = build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &f32s(&[0.; 6]))], 0);
    let e = open_err("offset.bin", &z);
    assert!(
        e.contains("offset 4) needs 10 elements but storage 0 holds 6"),
        "{e}"
    );
    // The persistent id claims more elements than the record holds.
    let pkl = torch_pickle(&[T {
        storage_numel: 100,
        ..GOOD
    }]);
    let z = build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &f32s(&[0.; 6]))], 0);
    let e = open_err("short.bin", &z);
    assert!(
        e.contains("storage 0 claims 100 f32 elements but record a/data/0 holds 24 bytes"),
        "{e}"
    );
    let pkl = torch_pickle(&[T { offset: -1, ..GOOD }]);
    let e = pickle_err(&pkl);
    assert!(e.contains("tensor storage offset is negative (-1)"), "{e}");
}

#[test]
fn damaged_archives() {
    let pkl = torch_pickle(&[GOOD]);
    let data = f32s(&[0.; 6]);
    let z = build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &data)], 8);
    let e = open_err("deflated.bin", &z);
    assert!(e.contains("is compressed (method 8)"), "{e}");
    let z = build_zip(
        &[
            ("a/data.pkl", &pkl),
            ("a/byteorder", b"big"),
            ("a/data/0", &data),
        ],
        0,
    );
    let e = open_err("bigendian.bin", &z);
    assert!(e.contains("only little-endian"), "{e}");
    let z = build_zip(&[("a/data.pkl", &pkl), ("a/data/0", &data)], 0);
    for cut in [z.len() - 1, z.len() / 2, 10] {
        let e = open_err("cut.bin", &z[..cut]);
        assert!(e.contains("zip"), "cut {cut}: {e}");
    }
    // A pickle whose state dict holds something that is not a tensor.
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(s("w"));
    p.extend(int(3));
    p.extend([b'u', b'.']);
    let z = build_zip(&[("a/data.pkl", &p)], 0);
    let e = open_err("notensor.bin", &z);
    assert!(
        e.contains("no state dict found") || e.contains("not a tensor"),
        "{e}"
    );
}

#[test]
fn hostile_safetensors_headers() {
    let file = |header: &str, data: &[u8]| {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend(header.as_bytes());
        v.extend(data);
        v
    };
    let e = open_err(
        "past.safetensors",
        &file(
            r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("bad safetensors header"), "{e}");
    let e = open_err(
        "shape.safetensors",
        &file(
            r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &[0; 8],
        ),
    );
    assert!(e.contains("bad safetensors header"), "{e}");
    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend(b"{}");
    let e = open_err("huge.safetensors", &huge);
    assert!(
        e.contains("not a checkpoint") || e.contains("header"),
        "{e}"
    );
    let e = open_err("json.safetensors", &file("{not json", &[]));
    assert!(e.contains("bad safetensors header"), "{e}");
}
