//! Generators of test inputs, built byte by byte (independently of the
//! library's own encoders): NIfTI-1 headers and files, gzip, pickles in
//! torch.save's shape, stored zips and safetensors files. Shared by the
//! NIfTI, weights and malformed-input corpus tests.
#![allow(dead_code)]

use std::io::Write;

// ---- NIfTI-1 ----

/// A raw NIfTI-1 header edited by byte offset.
#[derive(Clone)]
pub struct Hdr {
    pub b: [u8; 348],
    pub big: bool,
}

impl Hdr {
    pub fn new(dims: &[i16], datatype: i16, bitpix: i16) -> Hdr {
        Self::build(false, dims, datatype, bitpix)
    }
    pub fn new_big_endian(dims: &[i16], datatype: i16, bitpix: i16) -> Hdr {
        Self::build(true, dims, datatype, bitpix)
    }
    fn build(big: bool, dims: &[i16], datatype: i16, bitpix: i16) -> Hdr {
        let mut h = Hdr { b: [0; 348], big };
        h.i32(0, 348);
        h.i16(40, dims.len() as i16);
        for a in 1..8 {
            h.i16(40 + 2 * a, 1);
        }
        for (a, &d) in dims.iter().enumerate() {
            h.i16(42 + 2 * a, d);
        }
        h.i16(70, datatype);
        h.i16(72, bitpix);
        for a in 0..8 {
            h.f32(76 + 4 * a, 1.0);
        }
        h.f32(108, 352.0);
        h.b[344..348].copy_from_slice(b"n+1\0");
        h
    }
    pub fn put(&mut self, off: usize, le: &[u8]) -> &mut Self {
        let mut v = le.to_vec();
        if self.big {
            v.reverse();
        }
        self.b[off..off + v.len()].copy_from_slice(&v);
        self
    }
    pub fn i16(&mut self, off: usize, v: i16) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn i32(&mut self, off: usize, v: i32) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn f32(&mut self, off: usize, v: f32) -> &mut Self {
        self.put(off, &v.to_le_bytes())
    }
    pub fn pixdim(&mut self, qfac: f32, p: [f32; 3]) -> &mut Self {
        self.f32(76, qfac);
        for (a, v) in p.iter().enumerate() {
            self.f32(80 + 4 * a, *v);
        }
        self
    }
    pub fn scale(&mut self, slope: f32, inter: f32) -> &mut Self {
        self.f32(112, slope).f32(116, inter)
    }
    pub fn qform(&mut self, code: i16, bcd: [f32; 3], offset: [f32; 3]) -> &mut Self {
        self.i16(252, code);
        for (a, v) in bcd.iter().chain(&offset).enumerate() {
            self.f32(256 + 4 * a, *v);
        }
        self
    }
    pub fn sform(&mut self, code: i16, rows: [[f32; 4]; 3]) -> &mut Self {
        self.i16(254, code);
        for (r, row) in rows.iter().enumerate() {
            for (a, v) in row.iter().enumerate() {
                self.f32(280 + 16 * r + 4 * a, *v);
            }
        }
        self
    }
    /// Header, the 4-byte extension flag, then `data`.
    pub fn file(&self, data: &[u8]) -> Vec<u8> {
        let mut out = self.b.to_vec();
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(data);
        out
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

pub fn i16_bytes(v: &[i16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A small int16 CT with a bright blob in air: something to segment.
/// Returns the `.nii` bytes for dims (i, j, k).
pub fn phantom_ct(dims: [i16; 3]) -> Vec<u8> {
    let [ni, nj, nk] = dims.map(|d| d as usize);
    let mut v = Vec::with_capacity(ni * nj * nk);
    let c = [ni as f32 / 2.0, nj as f32 / 2.0, nk as f32 / 2.0];
    for k in 0..nk {
        for j in 0..nj {
            for i in 0..ni {
                let r2 = [(i, c[0]), (j, c[1]), (k, c[2])]
                    .iter()
                    .map(|&(x, m)| ((x as f32 + 0.5 - m) / m.max(1.0)).powi(2))
                    .sum::<f32>();
                // Body at 40 HU with a 200 HU core and some texture; air outside.
                let hu = if r2 < 0.15 {
                    200 + ((i * 7 + j * 3 + k) % 11) as i16
                } else if r2 < 0.7 {
                    40 + ((i + j * 5 + k * 3) % 13) as i16
                } else {
                    -1000
                };
                v.push(hu);
            }
        }
    }
    Hdr::new(&dims, 4, 16).file(&i16_bytes(&v))
}

// ---- pickles (protocol 2 opcodes), as torch.save writes them ----

pub fn s(x: &str) -> Vec<u8> {
    let mut v = vec![b'X'];
    v.extend((x.len() as u32).to_le_bytes());
    v.extend(x.as_bytes());
    v
}
pub fn int(i: i32) -> Vec<u8> {
    let mut v = vec![b'J'];
    v.extend(i.to_le_bytes());
    v
}
pub fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}
pub fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![b'('];
    for i in items {
        v.extend(i);
    }
    v.push(b't');
    v
}
pub fn odict() -> Vec<u8> {
    let mut v = global("collections", "OrderedDict");
    v.extend([b')', b'R']);
    v
}

/// One tensor as torch.save pickles it.
#[derive(Clone, Copy)]
pub struct T<'a> {
    pub name: &'a str,
    pub key: &'a str,
    pub storage_numel: i32,
    pub offset: i32,
    pub shape: &'a [i32],
    pub stride: &'a [i32],
}

/// A valid 2x3 float tensor "w" in storage "0".
pub const GOOD: T = T {
    name: "w",
    key: "0",
    storage_numel: 6,
    offset: 0,
    shape: &[2, 3],
    stride: &[3, 1],
};

pub fn torch_pickle(tensors: &[T]) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(odict());
    p.push(b'(');
    for t in tensors {
        p.extend(s(t.name));
        p.extend(global("torch._utils", "_rebuild_tensor_v2"));
        let pid = tuple(&[
            s("storage"),
            global("torch", "FloatStorage"),
            s(t.key),
            s("cpu"),
            int(t.storage_numel),
        ]);
        let mut storage = pid;
        storage.push(b'Q');
        let shape: Vec<Vec<u8>> = t.shape.iter().map(|&d| int(d)).collect();
        let stride: Vec<Vec<u8>> = t.stride.iter().map(|&d| int(d)).collect();
        p.extend(tuple(&[
            storage,
            int(t.offset),
            tuple(&shape),
            tuple(&stride),
            vec![0x89],
            odict(),
        ]));
        p.push(b'R');
    }
    p.extend([b'u', b'.']);
    p
}

/// `os.system("echo pwned")` called through GLOBAL + REDUCE.
pub fn pickle_os_system() -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(global("os", "system"));
    p.extend(tuple(&[s("echo pwned")]));
    p.extend([b'R', b'.']);
    p
}

/// `builtins.eval("1+1")` through protocol 4's STACK_GLOBAL.
pub fn pickle_builtins_eval() -> Vec<u8> {
    let mut p = vec![0x80, 4, 0x8c, 8];
    p.extend(b"builtins");
    p.extend([0x94, 0x8c, 4]);
    p.extend(b"eval");
    p.extend([0x94, 0x93]);
    p.extend(tuple(&[s("1+1")]));
    p.extend([b'R', b'.']);
    p
}

// ---- zips (stored or with a claimed method) ----

pub fn build_zip(files: &[(&str, &[u8])], method: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let off = out.len() as u32;
        let fixed = |v: &mut Vec<u8>| {
            v.extend(method.to_le_bytes());
            v.extend([0; 8]);
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((data.len() as u32).to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend([20, 0, 0, 0]);
        fixed(&mut out);
        out.extend([0, 0]);
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend([20, 0, 20, 0, 0, 0]);
        fixed(&mut central);
        central.extend([0; 12]);
        central.extend(off.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0; 4]);
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((files.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd.to_le_bytes());
    out.extend([0; 2]);
    out
}

/// A torch.save zip of `pickle` with the given storage records.
pub fn torch_zip(pickle: &[u8], records: &[(&str, &[u8])]) -> Vec<u8> {
    let mut files: Vec<(String, &[u8])> = vec![("a/data.pkl".into(), pickle)];
    for (k, d) in records {
        files.push((format!("a/data/{k}"), d));
    }
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, d)| (n.as_str(), *d)).collect();
    build_zip(&refs, 0)
}

// ---- safetensors ----

/// An 8-byte length, the JSON header, then `data`.
pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend(header.as_bytes());
    v.extend(data);
    v
}
