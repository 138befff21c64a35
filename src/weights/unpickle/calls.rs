//! The only calls a checkpoint may make: persistent storage ids, REDUCE on
//! the allowed globals, and BUILD on a state dict. Each becomes plain data.

use super::{Global, Machine, Obj, StorageRef, TensorRef, Value, MAX_DIMS, MAX_OBJECTS, R};

impl Machine<'_> {
    /// The items of a tuple of at most `max` items. The bound is checked
    /// before copying, so a huge memoized tuple costs nothing to refuse.
    fn tuple_items(&self, v: &Value, what: &str, max: usize) -> R<Vec<Value>> {
        match self.out.obj(v) {
            Some(Obj::Tuple(items)) if items.len() <= max => Ok(items.clone()),
            Some(Obj::Tuple(items)) => self.err(format!(
                "{what} has {} items, at most {max} expected",
                items.len()
            )),
            _ => self.err(format!("{what} must be a tuple, got a {}", v.kind())),
        }
    }

    fn usize_of(&self, v: &Value, what: &str) -> R<usize> {
        match v {
            Value::Int(i) if *i >= 0 => match usize::try_from(*i) {
                Ok(u) => Ok(u),
                Err(_) => self.err(format!("{what} {i} does not fit in memory")),
            },
            Value::Int(i) => self.err(format!("{what} is negative ({i})")),
            other => self.err(format!("{what} must be an int, got a {}", other.kind())),
        }
    }

    /// `('storage', torch.XStorage, key, location, numel)`.
    pub(super) fn storage(&mut self, pid: &Value) -> R<Value> {
        let items = self.tuple_items(pid, "persistent id", 5)?;
        if items.len() != 5 || items[0].as_str() != Some("storage") {
            return self.err(
                "persistent id is not ('storage', type, key, location, numel); \
                 only tensor storages may be referenced",
            );
        }
        let dtype = match &items[1] {
            Value::Global(Global::Storage(d)) => *d,
            Value::Global(g) => {
                return self.err(format!("{} is not a storage type", g.name()));
            }
            other => {
                return self.err(format!(
                    "storage type must be a torch storage class, got a {}",
                    other.kind()
                ));
            }
        };
        let Some(key) = items[2].as_str() else {
            return self.err("storage key must be a string");
        };
        // torch numbers its records; a long key would be copied per use.
        if key.len() > 64 {
            return self.err(format!("storage key of {} bytes is too long", key.len()));
        }
        if key.is_empty() || key.contains('/') || key.contains("..") {
            return self.err(format!("storage key {key:?} is not a record name"));
        }
        let numel = self.usize_of(&items[4], "storage size")?;
        if self.out.storages.len() >= MAX_OBJECTS {
            return self.err(format!("pickle names more than {MAX_OBJECTS} storages"));
        }
        self.out.storages.push(StorageRef {
            dtype,
            key: key.to_string(),
            numel,
        });
        Ok(Value::Storage(self.out.storages.len() - 1))
    }

    pub(super) fn reduce(&mut self, func: Value, args: Value) -> R<Value> {
        let g = match func {
            Value::Global(g) => g,
            other => {
                return self.err(format!(
                    "REDUCE on a {}, not an allowed callable",
                    other.kind()
                ))
            }
        };
        let args = self.tuple_items(&args, &format!("arguments of {}", g.name()), 7)?;
        match g {
            Global::OrderedDict => {
                if !args.is_empty() {
                    return self.err(format!(
                        "collections.OrderedDict called with {} arguments; only OrderedDict() is allowed",
                        args.len()
                    ));
                }
                self.new_obj(Obj::Dict {
                    items: Vec::new(),
                    ordered: true,
                })
            }
            Global::RebuildTensorV2 => self.rebuild_tensor(&args),
            Global::RebuildParameter => {
                if !(2..=3).contains(&args.len()) {
                    return self.err(format!(
                        "torch._utils._rebuild_parameter takes (data, requires_grad, hooks), got {} arguments",
                        args.len()
                    ));
                }
                match &args[0] {
                    Value::Tensor(_) => Ok(args[0].clone()),
                    other => self.err(format!(
                        "torch._utils._rebuild_parameter on a {}, not a tensor",
                        other.kind()
                    )),
                }
            }
            Global::Storage(_) => self.err(format!(
                "{} may only name a storage type inside a persistent id, not be called",
                g.name()
            )),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    fn rebuild_tensor(&mut self, args: &[Value]) -> R<Value> {
        if !(6..=7).contains(&args.len()) {
            return self.err(format!(
                "torch._utils._rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                args.len()
            ));
        }
        let storage = match args[0] {
            Value::Storage(s) => s,
            ref other => {
                return self.err(format!(
                    "tensor storage must be a persistent storage, got a {}",
                    other.kind()
                ));
            }
        };
        let offset = self.usize_of(&args[1], "tensor storage offset")?;
        let size = self.tuple_items(&args[2], "tensor size", MAX_DIMS)?;
        let stride = self.tuple_items(&args[3], "tensor stride", MAX_DIMS)?;
        if size.len() != stride.len() || size.len() > MAX_DIMS {
            return self.err(format!(
                "tensor size has {} dims and stride {} (at most {MAX_DIMS})",
                size.len(),
                stride.len()
            ));
        }
        let shape = size
            .iter()
            .map(|v| self.usize_of(v, "tensor size"))
            .collect::<R<Vec<_>>>()?;
        let stride = stride
            .iter()
            .map(|v| self.usize_of(v, "tensor stride"))
            .collect::<R<Vec<_>>>()?;
        let st = &self.out.storages[storage];
        // Elements the view reaches: offset + Σ (n−1)·stride + 1, or none when empty.
        let mut needed = Some(offset);
        let mut numel = Some(1usize);
        for (&n, &s) in shape.iter().zip(&stride) {
            numel = numel.and_then(|x| x.checked_mul(n));
            if n > 0 {
                needed = needed.and_then(|x| x.checked_add((n - 1).checked_mul(s)?));
            }
        }
        let (Some(needed), Some(numel)) = (needed, numel) else {
            return self.err(format!("tensor size {shape:?} stride {stride:?} overflows"));
        };
        let needed = if numel == 0 { offset } else { needed + 1 };
        if needed > st.numel {
            return self.err(format!(
                "tensor of shape {shape:?} (stride {stride:?}, offset {offset}) needs {needed} \
                 elements but storage {} holds {}",
                st.key, st.numel
            ));
        }
        if self.out.tensors.len() >= MAX_OBJECTS {
            return self.err(format!("pickle builds more than {MAX_OBJECTS} tensors"));
        }
        self.out.tensors.push(TensorRef {
            storage,
            offset,
            shape,
            stride,
        });
        Ok(Value::Tensor(self.out.tensors.len() - 1))
    }

    /// BUILD sets attributes. The only object a checkpoint builds is a state
    /// dict (an OrderedDict carrying `_metadata`); the state is data and is
    /// dropped.
    pub(super) fn build(&mut self, state: Value) -> R<()> {
        let target = self.top()?.clone();
        match self.out.obj(&target) {
            Some(Obj::Dict { ordered: true, .. }) => {}
            _ => {
                return self.err(format!(
                    "BUILD on a {}; only OrderedDict state may be set",
                    target.kind()
                ))
            }
        }
        match (&state, self.out.obj(&state)) {
            (Value::None, _) | (_, Some(Obj::Dict { .. })) | (_, Some(Obj::Tuple(_))) => Ok(()),
            _ => self.err(format!("BUILD state is a {}, not a dict", state.kind())),
        }
    }
}
