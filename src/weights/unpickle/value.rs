//! What the unpickler produces: plain data, with containers in an arena.

use std::fmt;
use std::rc::Rc;

use crate::weights::DType;

/// A refusal or parse failure, with the byte offset of the opcode at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpickleError {
    pub offset: usize,
    pub msg: String,
}

impl fmt::Display for UnpickleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pickle byte {}: {}", self.offset, self.msg)
    }
}

impl std::error::Error for UnpickleError {}

/// The callables and types a checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    Storage(DType),
}

impl Global {
    pub(super) fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch", "FloatStorage") => Global::Storage(DType::F32),
            ("torch", "HalfStorage") => Global::Storage(DType::F16),
            ("torch", "BFloat16Storage") => Global::Storage(DType::BF16),
            ("torch", "DoubleStorage") => Global::Storage(DType::F64),
            ("torch", "LongStorage") => Global::Storage(DType::I64),
            ("torch", "IntStorage") => Global::Storage(DType::I32),
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
            Global::RebuildParameter => "torch._utils._rebuild_parameter",
            Global::OrderedDict => "collections.OrderedDict",
            Global::Storage(DType::F32) => "torch.FloatStorage",
            Global::Storage(DType::F16) => "torch.HalfStorage",
            Global::Storage(DType::BF16) => "torch.BFloat16Storage",
            Global::Storage(DType::F64) => "torch.DoubleStorage",
            Global::Storage(DType::I64) => "torch.LongStorage",
            Global::Storage(_) => "torch.IntStorage",
        }
    }
}

/// A pickled value. Containers live in [`Pickle::objects`] and are referred
/// to by index, so copying a value (memo gets, DUP) is cheap and cycles are
/// harmless.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too large for i64 (never a valid size or offset).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Global(Global),
    /// Index into [`Pickle::objects`].
    Obj(usize),
    /// Index into [`Pickle::storages`].
    Storage(usize),
    /// Index into [`Pickle::tensors`].
    Tensor(usize),
}

impl Value {
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Global(_) => "global",
            Value::Obj(_) => "container",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Obj {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    /// Items in insertion order; a repeated key is kept twice here and the
    /// later one wins on lookup, as in Python.
    Dict {
        items: Vec<(Value, Value)>,
        ordered: bool,
    },
}

/// A storage named by a persistent id `('storage', type, key, location, numel)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub dtype: DType,
    /// Record name under `<archive>/data/`.
    pub key: String,
    /// Elements of `dtype` the storage holds.
    pub numel: usize,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view into a storage.
/// The view is checked to lie inside the storage's `numel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorRef {
    pub storage: usize,
    /// In elements.
    pub offset: usize,
    pub shape: Vec<usize>,
    /// In elements.
    pub stride: Vec<usize>,
}

impl TensorRef {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Dense C order, so the bytes can be used in place.
    pub fn is_contiguous(&self) -> bool {
        if self.shape.contains(&0) {
            return true;
        }
        let mut expect = 1usize;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expect {
                return false;
            }
            expect *= n;
        }
        true
    }
}

/// The result of unpickling: the root value and the arenas it points into.
#[derive(Debug)]
pub struct Pickle {
    pub root: Value,
    pub objects: Vec<Obj>,
    pub storages: Vec<StorageRef>,
    pub tensors: Vec<TensorRef>,
}

impl Pickle {
    pub fn obj(&self, v: &Value) -> Option<&Obj> {
        match v {
            Value::Obj(i) => self.objects.get(*i),
            _ => None,
        }
    }
    /// The items of a dict value, or `None` when it is not a dict.
    pub fn dict_items(&self, v: &Value) -> Option<&[(Value, Value)]> {
        match self.obj(v)? {
            Obj::Dict { items, .. } => Some(items),
            _ => None,
        }
    }
    /// `d[key]` for a dict with string keys (the last occurrence wins).
    pub fn dict_get<'a>(&'a self, d: &Value, key: &str) -> Option<&'a Value> {
        self.dict_items(d)?
            .iter()
            .rev()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguity() {
        let t = |shape: &[usize], stride: &[usize]| TensorRef {
            storage: 0,
            offset: 0,
            shape: shape.to_vec(),
            stride: stride.to_vec(),
        };
        assert!(t(&[2, 3], &[3, 1]).is_contiguous());
        assert!(!t(&[2, 3], &[1, 2]).is_contiguous());
        assert!(t(&[1, 3], &[99, 1]).is_contiguous());
        assert!(t(&[], &[]).is_contiguous());
        assert!(t(&[0, 3], &[0, 0]).is_contiguous());
        assert!(!t(&[4], &[0]).is_contiguous());
    }
}
