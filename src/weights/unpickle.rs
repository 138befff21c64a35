//! A data-only unpickler for torch checkpoints (`data.pkl`).
//!
//! Pickle is a program for a stack machine that may import and call any
//! Python object; loading one with Python's `pickle` runs arbitrary code. This
//! machine never calls anything: it understands the opcodes `torch.save`
//! emits (protocols 2–5), accepts only the globals that rebuild tensors and
//! ordered dicts, and turns those calls into plain data ([`TensorRef`],
//! [`StorageRef`]). Every other global is refused by name the moment it is
//! named, before anything could use it, and opcodes that build arbitrary
//! objects (INST, OBJ, NEWOBJ, ...) are refused too. Memo, stack and object
//! counts are bounded, so a hostile file can cost at most a bounded amount
//! of memory; containers live in an arena and nothing recurses over them,
//! so deep nesting cannot overflow the Rust stack.
//!
//! Allowed globals, and why:
//! * `torch._utils._rebuild_tensor_v2`: how every tensor is pickled.
//! * `collections.OrderedDict`: state dicts and `_backward_hooks` are ordered dicts.
//! * `torch.{Float,Half,BFloat16,Double,Long,Int}Storage`: the storage type
//!   inside a persistent id names the element type; Double and Int cover
//!   checkpoints saved in f64 or with int32 buffers.
//! * `torch._utils._rebuild_parameter`: what a pickled `nn.Parameter`
//!   becomes (e.g. `torch.save(dict(model.named_parameters()))`); it only wraps
//!   a tensor, so we unwrap it.

use std::collections::HashMap;
use std::rc::Rc;

mod calls;
mod value;

pub use value::{Global, Obj, Pickle, StorageRef, TensorRef, UnpickleError, Value};

/// Most values the pickle stack (and open MARKs) may hold.
pub const MAX_STACK: usize = 1 << 20;
/// Largest memo index accepted. Picklers number memo slots 0, 1, 2, ...; a
/// checkpoint uses a few per tensor.
pub const MAX_MEMO_INDEX: u64 = 1 << 24;
/// Most containers (tuples, lists, dicts) one pickle may create.
pub const MAX_OBJECTS: usize = 1 << 22;
/// Most values all containers may hold together.
pub const MAX_ITEMS: usize = 1 << 24;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 16;

/// Parses `data` without executing anything. Fails on any forbidden global,
/// object-building opcode, malformed or truncated input.
pub fn unpickle(data: &[u8]) -> Result<Pickle, UnpickleError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        items: 0,
        out: Pickle {
            root: Value::None,
            objects: Vec::new(),
            storages: Vec::new(),
            tensors: Vec::new(),
        },
    };
    let root = m.run()?;
    m.out.root = root;
    Ok(m.out)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of the opcode being executed, for messages.
    op_at: usize,
    stack: Vec<Value>,
    /// Stack heights at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    items: usize,
    out: Pickle,
}

type R<T> = Result<T, UnpickleError>;

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
}

/// Opcodes that create objects from arbitrary classes or look up code by
/// other routes; refused with their name.
fn refused_opcode(code: u8) -> Option<&'static str> {
    Some(match code {
        b'i' => "INST (instantiates an arbitrary class)",
        b'o' => "OBJ (instantiates an arbitrary class)",
        0x81 => "NEWOBJ (instantiates an arbitrary class)",
        0x92 => "NEWOBJ_EX (instantiates an arbitrary class)",
        0x82..=0x84 => "EXT1/EXT2/EXT4 (imports through the copyreg extension registry)",
        b'P' => "PERSID (text persistent id; torch uses BINPERSID)",
        b'I' | b'L' | b'F' | b'S' | b'V' | b'g' | b'p' => {
            "a protocol-0 text opcode (torch.save writes binary protocols)"
        }
        0x8f..=0x91 => "a set opcode (checkpoints hold no sets)",
        0x96..=0x98 => "a protocol-5 out-of-band buffer opcode",
        _ => return None,
    })
}

impl<'a> Machine<'a> {
    fn err<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(UnpickleError {
            offset: self.op_at,
            msg: msg.into(),
        })
    }

    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self
            .pos
            .checked_add(n)
            .and_then(|end| data.get(self.pos..end))
        {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => self.err(format!(
                "pickle truncated: needs {n} more bytes at byte {}, only {} left",
                self.pos,
                data.len().saturating_sub(self.pos)
            )),
        }
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len_u64(&mut self, n: u64) -> R<usize> {
        match usize::try_from(n) {
            Ok(n) => Ok(n),
            Err(_) => self.err(format!("length {n} does not fit in memory")),
        }
    }
    fn line(&mut self) -> R<&'a str> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos.min(data.len())..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("pickle truncated inside a GLOBAL name");
        };
        self.pos += nl + 1;
        match std::str::from_utf8(&rest[..nl]) {
            Ok(s) => Ok(s),
            Err(_) => self.err("GLOBAL name is not UTF-8"),
        }
    }

    fn push(&mut self, v: Value) -> R<()> {
        if self.stack.len() >= MAX_STACK {
            return self.err(format!("pickle stack exceeds {MAX_STACK} items"));
        }
        self.stack.push(v);
        Ok(())
    }
    fn pop(&mut self) -> R<Value> {
        match self.stack.pop() {
            Some(v) => Ok(v),
            None => self.err("pickle stack underflow"),
        }
    }
    fn top(&self) -> R<&Value> {
        match self.stack.last() {
            Some(v) => Ok(v),
            None => self.err("pickle stack is empty"),
        }
    }
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let Some(at) = self.marks.pop() else {
            return self.err("no MARK on the pickle stack");
        };
        if at > self.stack.len() {
            return self.err("MARK lies above the stack top");
        }
        Ok(self.stack.split_off(at))
    }
    fn new_obj(&mut self, o: Obj) -> R<Value> {
        let n = match &o {
            Obj::Tuple(v) | Obj::List(v) => v.len(),
            Obj::Dict { items, .. } => items.len(),
        };
        self.count_items(n)?;
        if self.out.objects.len() >= MAX_OBJECTS {
            return self.err(format!("pickle creates more than {MAX_OBJECTS} containers"));
        }
        self.out.objects.push(o);
        Ok(Value::Obj(self.out.objects.len() - 1))
    }
    fn count_items(&mut self, n: usize) -> R<()> {
        self.items = self.items.saturating_add(n);
        if self.items > MAX_ITEMS {
            return self.err(format!("pickle holds more than {MAX_ITEMS} values"));
        }
        Ok(())
    }
    fn tuple(&mut self, v: Vec<Value>) -> R<()> {
        let t = self.new_obj(Obj::Tuple(v))?;
        self.push(t)
    }
    fn memo_put(&mut self, idx: u64) -> R<()> {
        if idx >= MAX_MEMO_INDEX {
            return self.err(format!(
                "memo index {idx} is beyond the limit of {MAX_MEMO_INDEX}"
            ));
        }
        let v = self.top()?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }
    fn memo_get(&mut self, idx: u64) -> R<()> {
        match self.memo.get(&idx) {
            Some(v) => {
                let v = v.clone();
                self.push(v)
            }
            None => self.err(format!("memo index {idx} is read before it is written")),
        }
    }
    fn int_from_le(&self, b: &[u8]) -> Value {
        if b.is_empty() {
            return Value::Int(0);
        }
        let negative = b[b.len() - 1] & 0x80 != 0;
        let fill = if negative { 0xFF } else { 0 };
        if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
            return Value::BigInt;
        }
        let mut w = [fill; 8];
        let n = b.len().min(8);
        w[..n].copy_from_slice(&b[..n]);
        let v = i64::from_le_bytes(w);
        // A 9+ byte encoding whose sign differs from the low 8 bytes' is out of range.
        if b.len() > 8 && (v < 0) != negative {
            return Value::BigInt;
        }
        Value::Int(v)
    }
    fn global(&mut self, module: &str, name: &str) -> R<()> {
        match Global::resolve(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => self.err(format!(
                "forbidden global {module}.{name}: only tensor-rebuilding globals \
                 (torch._utils._rebuild_tensor_v2, collections.OrderedDict, torch.*Storage) \
                 are allowed, because loading anything else could run code. The whole file is \
                 refused even when the object sits outside the model weights (optimizer, \
                 scheduler, ...): it cannot be skipped safely. Re-save only the state dict \
                 (torch.save(ckpt['model'], path)) or convert the file to safetensors"
            )),
        }
    }

    fn run(&mut self) -> R<Value> {
        loop {
            self.op_at = self.pos;
            if self.pos >= self.data.len() {
                return self.err("pickle ended without STOP (truncated)");
            }
            let code = self.u8()?;
            match code {
                op::PROTO => {
                    let p = self.u8()?;
                    if p > 5 {
                        return self.err(format!("unsupported pickle protocol {p}"));
                    }
                }
                op::FRAME => {
                    self.u64()?;
                }
                op::STOP => return self.pop(),
                op::MARK => {
                    if self.marks.len() >= MAX_STACK {
                        return self.err(format!("more than {MAX_STACK} open MARKs"));
                    }
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    // POP with an open MARK at the top discards the mark, as in Python.
                    if self.marks.last() == Some(&self.stack.len()) {
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BININT => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                op::BININT2 => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                op::LONG1 | op::LONG4 => {
                    let n = if code == op::LONG1 {
                        self.u8()? as usize
                    } else {
                        let n = self.u32()? as i32;
                        if !(0..=1 << 16).contains(&n) {
                            return self.err(format!("LONG4 length {n} is out of range"));
                        }
                        n as usize
                    };
                    let b = self.take(n)?;
                    let v = self.int_from_le(b);
                    self.push(v)?
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                    let n = match code {
                        op::SHORT_BINUNICODE => self.u8()? as u64,
                        op::BINUNICODE => self.u32()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_u64(n)?;
                    let b = self.take(n)?;
                    let Ok(s) = std::str::from_utf8(b) else {
                        return self.err("string is not valid UTF-8");
                    };
                    self.push(Value::Str(Rc::from(s)))?
                }
                op::BINSTRING | op::SHORT_BINSTRING => {
                    // Python 2 byte strings; torch reads them as UTF-8 text.
                    let n = if code == op::SHORT_BINSTRING {
                        self.u8()? as usize
                    } else {
                        let n = self.u32()? as i32;
                        if n < 0 {
                            return self.err(format!("BINSTRING has negative length {n}"));
                        }
                        n as usize
                    };
                    let b = self.take(n)?;
                    let s = String::from_utf8_lossy(b);
                    self.push(Value::Str(Rc::from(s.as_ref())))?
                }
                op::BINBYTES | op::SHORT_BINBYTES | op::BINBYTES8 => {
                    let n = match code {
                        op::SHORT_BINBYTES => self.u8()? as u64,
                        op::BINBYTES => self.u32()? as u64,
                        _ => self.u64()?,
                    };
                    let n = self.len_u64(n)?;
                    let b = self.take(n)?;
                    self.push(Value::Bytes(Rc::from(b)))?
                }
                op::EMPTY_TUPLE => self.tuple(Vec::new())?,
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = (code - op::TUPLE1 + 1) as usize;
                    if self.stack.len() < n {
                        return self.err("pickle stack underflow building a tuple");
                    }
                    if self.marks.last().is_some_and(|&m| m > self.stack.len() - n) {
                        return self.err("TUPLE opcode would consume a MARK");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.tuple(items)?
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    self.tuple(items)?
                }
                op::EMPTY_LIST => {
                    let l = self.new_obj(Obj::List(Vec::new()))?;
                    self.push(l)?
                }
                op::LIST => {
                    let items = self.pop_mark()?;
                    let l = self.new_obj(Obj::List(items))?;
                    self.push(l)?
                }
                op::EMPTY_DICT => {
                    let d = self.new_obj(Obj::Dict {
                        items: Vec::new(),
                        ordered: false,
                    })?;
                    self.push(d)?
                }
                op::DICT => {
                    let flat = self.pop_mark()?;
                    let items = self.pairs(flat)?;
                    let d = self.new_obj(Obj::Dict {
                        items,
                        ordered: false,
                    })?;
                    self.push(d)?
                }
                op::APPEND => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.extend_dict(vec![(k, v)])?
                }
                op::SETITEMS => {
                    let flat = self.pop_mark()?;
                    let items = self.pairs(flat)?;
                    self.extend_dict(items)?
                }
                op::BINPUT => {
                    let i = self.u8()? as u64;
                    self.memo_put(i)?
                }
                op::LONG_BINPUT => {
                    let i = self.u32()? as u64;
                    self.memo_put(i)?
                }
                op::MEMOIZE => {
                    let i = self.memo.len() as u64;
                    self.memo_put(i)?
                }
                op::BINGET => {
                    let i = self.u8()? as u64;
                    self.memo_get(i)?
                }
                op::LONG_BINGET => {
                    let i = self.u32()? as u64;
                    self.memo_get(i)?
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(module, name)?
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            let (m, n) = (m.to_string(), n.to_string());
                            self.global(&m, &n)?
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let s = self.storage(&pid)?;
                    self.push(s)?
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = self.reduce(func, args)?;
                    self.push(v)?
                }
                op::BUILD => {
                    let state = self.pop()?;
                    self.build(state)?
                }
                other => {
                    return match refused_opcode(other) {
                        Some(what) => self.err(format!("refused opcode {what}")),
                        None => self.err(format!("unknown pickle opcode 0x{other:02x}")),
                    }
                }
            }
        }
    }

    fn pairs(&self, flat: Vec<Value>) -> R<Vec<(Value, Value)>> {
        if flat.len() % 2 != 0 {
            return self.err("odd number of items for a dict");
        }
        let mut it = flat.into_iter();
        let mut out = Vec::new();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            out.push((k, v));
        }
        Ok(out)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> R<()> {
        self.count_items(items.len())?;
        let target = self.top()?.clone();
        match target {
            Value::Obj(i) => match &mut self.out.objects[i] {
                Obj::List(l) => {
                    l.extend(items);
                    Ok(())
                }
                _ => self.err("APPEND on something that is not a list"),
            },
            other => self.err(format!("APPEND on a {}", other.kind())),
        }
    }

    fn extend_dict(&mut self, items: Vec<(Value, Value)>) -> R<()> {
        self.count_items(items.len())?;
        let target = self.top()?.clone();
        match target {
            Value::Obj(i) => match &mut self.out.objects[i] {
                Obj::Dict { items: d, .. } => {
                    d.extend(items);
                    Ok(())
                }
                _ => self.err("SETITEM on something that is not a dict"),
            },
            other => self.err(format!("SETITEM on a {}", other.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_of_every_width() {
        let m = Machine {
            data: &[],
            pos: 0,
            op_at: 0,
            stack: vec![],
            marks: vec![],
            memo: HashMap::new(),
            items: 0,
            out: Pickle {
                root: Value::None,
                objects: vec![],
                storages: vec![],
                tensors: vec![],
            },
        };
        let int = |b: &[u8]| match m.int_from_le(b) {
            Value::Int(i) => Some(i),
            _ => None,
        };
        assert_eq!(int(&[]), Some(0));
        assert_eq!(int(&[0xff]), Some(-1));
        assert_eq!(int(&[0x00, 0x01]), Some(256));
        assert_eq!(int(&[0xff, 0x00]), Some(255));
        assert_eq!(int(&[0xff; 9]), Some(-1));
        assert_eq!(int(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), None);
        assert_eq!(int(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), None);
    }

    #[test]
    fn plain_data_roundtrip() {
        // {'a': [1, 2.5, None, True], 'b': ('x', b'yz')}, protocol 2 style.
        let mut p = vec![
            0x80, 2, b'}', b'q', 0, b'(', b'X', 1, 0, 0, 0, b'a', b']', b'q', 1, b'(',
        ];
        p.extend([b'K', 1, b'G']);
        p.extend(2.5f64.to_be_bytes());
        p.extend([
            b'N', 0x88, b'e', b'X', 1, 0, 0, 0, b'b', b'X', 1, 0, 0, 0, b'x',
        ]);
        p.extend([b'C', 2, b'y', b'z', 0x86, b'u', b'.']);
        let pk = unpickle(&p).unwrap();
        let a = pk.dict_get(&pk.root, "a").unwrap();
        match pk.obj(a) {
            Some(Obj::List(l)) => {
                assert_eq!(l.len(), 4);
                assert!(matches!(l[0], Value::Int(1)));
                assert!(matches!(l[1], Value::Float(f) if f == 2.5));
                assert!(matches!(l[3], Value::Bool(true)));
            }
            other => panic!("{other:?}"),
        }
        assert!(pk.dict_get(&pk.root, "b").is_some());
    }
}
