//! The codec against python-blosc2 and the nnInteractive client's own
//! serialization, both directions. `scripts/ci-nninteractive.sh` writes the
//! client's arrays to `$NNIA_CROSSCHECK_DIR`, runs this test, then reads the
//! arrays this test writes to `$NNIA_CROSSCHECK_DIR/out` back with the client.

use std::path::Path;

use super::nnia::{self, Codec, Dtype};

/// A named way to fill a test mask.
type Fill = (&'static str, fn(usize) -> u8);

/// Decoded arrays may be up to this large in the vectors.
const LIMIT: usize = 1 << 28;

#[test]
fn crosscheck_with_python_blosc2() {
    let Some(dir) = std::env::var_os("NNIA_CROSSCHECK_DIR") else {
        eprintln!(
            "SKIPPED crosscheck_with_python_blosc2: NNIA_CROSSCHECK_DIR is not set \
             (scripts/ci-nninteractive.sh generates the vectors with python-blosc2 and sets it)"
        );
        return;
    };
    let dir = Path::new(&dir);
    let manifest: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert!(manifest.len() > 100, "too few vectors: {}", manifest.len());
    for case in &manifest {
        let name = case["name"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let body = std::fs::read(dir.join(format!("{name}.nnia"))).unwrap();
        let got = nnia::unpack(&body, LIMIT);
        if let Some(what) = expect.strip_prefix("error:") {
            let e = got.expect_err(name);
            assert!(e.0.contains(what), "{name}: {e}");
            continue;
        }
        let got = got.unwrap_or_else(|e| panic!("{name}: {e}"));
        let raw = std::fs::read(dir.join(format!("{name}.raw"))).unwrap();
        assert_eq!(got.dtype.name(), case["dtype"].as_str().unwrap(), "{name}");
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got.shape, shape, "{name}");
        assert!(got.data == raw, "{name}: decoded bytes differ");
    }
    eprintln!(
        "crosscheck: {} client-packed arrays decoded",
        manifest.len()
    );

    // The other way: masks (and a few other dtypes) for the client to read.
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let mut written = Vec::new();
    let shapes: [&[usize]; 7] = [
        &[0],
        &[1],
        &[5, 7, 9],
        &[0, 3],
        &[1, 1, 1],
        &[33, 17, 5],
        &[40, 96, 101],
    ];
    for (s, shape) in shapes.iter().enumerate() {
        let n: usize = shape.iter().product();
        let fills: [Fill; 3] = [
            ("zeros", |_| 0),
            ("ones", |_| 1),
            ("blob", |i| ((i / 13) % 5 == 0) as u8),
        ];
        for (fill, f) in &fills {
            for dtype in [Dtype::U8, Dtype::I16, Dtype::F32] {
                let data: Vec<u8> = (0..n)
                    .flat_map(|i| {
                        let v = f(i);
                        match dtype {
                            Dtype::I16 => (v as i16 * 300 - 7).to_le_bytes().to_vec(),
                            Dtype::F32 => (v as f32 * 0.5 - 1.25).to_le_bytes().to_vec(),
                            _ => vec![v],
                        }
                    })
                    .collect();
                for codec in [Codec::Lz4, Codec::Zstd] {
                    let name = format!("s{s}_{fill}_{}_{codec:?}", dtype.name());
                    let body = nnia::pack_with(codec, dtype, shape, &data);
                    // Our own decoder reads it too.
                    assert_eq!(nnia::unpack(&body, LIMIT).unwrap().data, data, "{name}");
                    std::fs::write(out.join(format!("{name}.nnia")), &body).unwrap();
                    std::fs::write(out.join(format!("{name}.raw")), &data).unwrap();
                    written.push(
                        serde_json::json!({"name": name, "dtype": dtype.name(), "shape": shape}),
                    );
                }
            }
        }
    }
    std::fs::write(
        out.join("manifest.json"),
        serde_json::to_vec(&written).unwrap(),
    )
    .unwrap();
}
