//! PyTorch's checkpoint files (`pytorch_model.bin`, what `torch.save` writes
//! since PyTorch 1.6: a zip holding `<name>/data.pkl` and one file per storage
//! under `<name>/data/`) read without Python. The pickle is interpreted by a
//! small machine that knows only what a saved state dict holds — dicts
//! (`collections.OrderedDict` too), tuples, lists, numbers, strings, storages
//! (persistent ids) and the two functions that rebuild tensors and parameters
//! (`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`). Any other global
//! is refused by name: nothing in the file is ever executed.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::{ModelError, Result};

/// A value on the unpickler's stack.
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A bool or a float (`requires_grad`, ...): read past, never used.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// A global the machine knows (`module.name`).
    Global(String),
    /// A storage: its file under `data/`, its element kind.
    Storage(String, Kind),
    Tensor(TensorRef),
    Mark,
}

/// A tensor to build once the storages are read.
#[derive(Debug, Clone)]
struct TensorRef {
    storage: String,
    kind: Kind,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// The functions a state dict may name (besides the storage types of
/// [`storage_kind`]).
const KNOWN: &[&str] = &[
    "collections.OrderedDict",
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
];

/// The element kind of a storage type (`torch.FloatStorage`, ...).
fn storage_kind(global: &str) -> Option<Kind> {
    Some(match global {
        "torch.FloatStorage" => Kind::Float,
        "torch.HalfStorage" => Kind::Half,
        "torch.BFloat16Storage" => Kind::BFloat16,
        "torch.DoubleStorage" => Kind::Double,
        "torch.LongStorage" => Kind::Int64,
        "torch.IntStorage" => Kind::Int,
        "torch.ShortStorage" => Kind::Int16,
        "torch.CharStorage" => Kind::Int8,
        "torch.ByteStorage" => Kind::Uint8,
        "torch.BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

fn ints(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Tuple(xs) | Value::List(xs) => xs
            .iter()
            .map(|x| match x {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// Runs the pickle `data`; the value it ends with.
fn unpickle(data: &[u8]) -> std::result::Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut pos = 0usize;
    let take = |pos: &mut usize, n: usize| -> std::result::Result<&[u8], String> {
        let end = pos.checked_add(n).filter(|&e| e <= data.len());
        let end = end.ok_or_else(|| "the pickle ends early".to_string())?;
        let s = &data[*pos..end];
        *pos = end;
        Ok(s)
    };
    let u32le = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let line = |pos: &mut usize| -> std::result::Result<String, String> {
        let rest = &data[*pos..];
        let n = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or("a line without its end")?;
        *pos += n + 1;
        Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "the stack is empty".to_string());
    // Everything above the topmost mark, the mark removed.
    let pop_mark = |stack: &mut Vec<Value>| -> std::result::Result<Vec<Value>, String> {
        let at = stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("no mark")?;
        let items = stack.split_off(at + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *take(&mut pos, 1)?.first().ok_or("empty")?;
        match op {
            0x80 => {
                take(&mut pos, 1)?;
            } // PROTO
            0x95 => {
                take(&mut pos, 8)?;
            } // FRAME
            b'.' => return pop(&mut stack), // STOP
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 | 0x89 => stack.push(Value::Scalar),
            b'J' => {
                let b = take(&mut pos, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([
                    b[0], b[1], b[2], b[3],
                ]))));
            }
            b'K' => stack.push(Value::Int(i64::from(take(&mut pos, 1)?[0]))),
            b'M' => {
                let b = take(&mut pos, 2)?;
                stack.push(Value::Int(i64::from(u16::from_le_bytes([b[0], b[1]]))));
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = usize::from(take(&mut pos, 1)?[0]);
                let b = take(&mut pos, n)?;
                if n > 8 {
                    return Err("an integer wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= i64::from(x) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                take(&mut pos, 8)?;
                stack.push(Value::Scalar);
            }
            b'X' => {
                let n = u32le(take(&mut pos, 4)?) as usize;
                let s = take(&mut pos, n)?;
                stack.push(Value::Str(String::from_utf8_lossy(s).into_owned()));
            }
            0x8c => {
                let n = usize::from(take(&mut pos, 1)?[0]);
                let s = take(&mut pos, n)?;
                stack.push(Value::Str(String::from_utf8_lossy(s).into_owned()));
            }
            b'U' => {
                let n = usize::from(take(&mut pos, 1)?[0]);
                let s = take(&mut pos, n)?;
                stack.push(Value::Str(String::from_utf8_lossy(s).into_owned()));
            }
            b')' => stack.push(Value::Tuple(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err("the stack is too short for a tuple".into());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err("APPEND to something not a list".into()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err("APPENDS to something not a list".into()),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    let k = pop(&mut stack)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack)?
                };
                let Some(Value::Dict(d)) = stack.last_mut() else {
                    return Err("SETITEMS on something not a dict".into());
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b'q' => {
                let i = u32::from(take(&mut pos, 1)?[0]);
                memo.insert(i, stack.last().cloned().ok_or("PUT on an empty stack")?);
            }
            b'r' => {
                let i = u32le(take(&mut pos, 4)?);
                memo.insert(i, stack.last().cloned().ok_or("PUT on an empty stack")?);
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, stack.last().cloned().ok_or("MEMOIZE on an empty stack")?);
            }
            b'h' | b'j' => {
                let i = if op == b'h' {
                    u32::from(take(&mut pos, 1)?[0])
                } else {
                    u32le(take(&mut pos, 4)?)
                };
                stack.push(memo.get(&i).cloned().ok_or("GET of an unknown memo")?);
            }
            b'c' => {
                let module = line(&mut pos)?;
                let name = line(&mut pos)?;
                let global = format!("{module}.{name}");
                if !KNOWN.contains(&global.as_str()) && storage_kind(&global).is_none() {
                    return Err(format!(
                        "it names `{global}`, which a state dict of tensors does not hold \
                         (refused: nothing in the file is executed)"
                    ));
                }
                stack.push(Value::Global(global));
            }
            b'Q' => {
                // BINPERSID: ('storage', <storage type>, key, location, numel).
                let id = pop(&mut stack)?;
                let Value::Tuple(t) = id else {
                    return Err("a persistent id that is not a tuple".into());
                };
                match (t.first(), t.get(1), t.get(2)) {
                    (Some(Value::Str(tag)), Some(Value::Global(g)), Some(Value::Str(key)))
                        if tag == "storage" =>
                    {
                        let kind = storage_kind(g).ok_or_else(|| format!("storage type {g}"))?;
                        stack.push(Value::Storage(key.clone(), kind));
                    }
                    _ => return Err("a persistent id that is not a storage".into()),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                let Value::Global(f) = f else {
                    return Err("REDUCE of something not a function".into());
                };
                let Value::Tuple(args) = args else {
                    return Err("REDUCE with arguments that are not a tuple".into());
                };
                stack.push(match f.as_str() {
                    "collections.OrderedDict" => Value::Dict(Vec::new()),
                    "torch._utils._rebuild_tensor_v2" => {
                        let (Some(Value::Storage(storage, kind)), Some(Value::Int(offset))) =
                            (args.first(), args.get(1))
                        else {
                            return Err("_rebuild_tensor_v2 without a storage".into());
                        };
                        let size = args
                            .get(2)
                            .and_then(ints)
                            .ok_or("a tensor without a size")?;
                        let stride = args
                            .get(3)
                            .and_then(ints)
                            .ok_or("a tensor without strides")?;
                        Value::Tensor(TensorRef {
                            storage: storage.clone(),
                            kind: *kind,
                            offset: *offset,
                            size,
                            stride,
                        })
                    }
                    "torch._utils._rebuild_parameter" => args
                        .into_iter()
                        .next()
                        .ok_or("_rebuild_parameter without a tensor")?,
                    other => return Err(format!("`{other}` called")),
                });
            }
            b'b' => {
                // BUILD: a dict's attributes (OrderedDict's `_metadata`) are dropped.
                pop(&mut stack)?;
            }
            other => return Err(format!("opcode 0x{other:02x} at byte {}", pos - 1)),
        }
    }
}

/// Every tensor of the `torch.save` file at `path` (a dict of names to
/// tensors), in the order saved; fp16 and bf16 tensors as fp32.
pub fn read_torch_pickle(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let bad = |reason: String| ModelError::Checkpoint {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| ModelError::io("cannot open", path, e))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| {
        bad(format!(
            "not the zip `torch.save` writes since PyTorch 1.6 ({e}): a file cut short, or \
             one an older PyTorch saved (re-save it with a current PyTorch, or as safetensors)"
        ))
    })?;
    let pkl = (0..zip.len())
        .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_string()))
        .find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .ok_or_else(|| bad("no `<name>/data.pkl` in the zip".into()))?;
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let mut read = |name: &str| -> Result<Vec<u8>> {
        let mut f = zip
            .by_name(name)
            .map_err(|e| bad(format!("`{name}` in the zip: {e}")))?;
        let mut out = Vec::with_capacity(f.size() as usize);
        f.read_to_end(&mut out)
            .map_err(|e| bad(format!("`{name}` in the zip: {e}")))?;
        Ok(out)
    };
    let value = unpickle(&read(&pkl)?).map_err(|e| bad(format!("its pickle: {e}")))?;
    let Value::Dict(items) = value else {
        return Err(bad(
            "it holds no dict of named tensors (a state dict)".into()
        ));
    };
    let mut storages: HashMap<String, Tensor> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (k, v) in items {
        let (Value::Str(name), Value::Tensor(t)) = (k, v) else {
            return Err(bad("an entry of its dict is not a name and a tensor".into()));
        };
        if !storages.contains_key(&t.storage) {
            let bytes = read(&format!("{prefix}data/{}", t.storage))?;
            let elem = t.kind.elt_size_in_bytes();
            let n = i64::try_from(bytes.len() / elem).unwrap_or(0);
            let s = Tensor::f_from_data_size(&bytes, &[n], t.kind)
                .map_err(|e| bad(format!("storage {}: {e}", t.storage)))?;
            storages.insert(t.storage.clone(), s);
        }
        let storage = &storages[&t.storage];
        let need = t
            .size
            .iter()
            .zip(&t.stride)
            .map(|(&s, &st)| (s - 1).max(0) * st)
            .sum::<i64>()
            + t.offset
            + 1;
        if !t.size.contains(&0) && need > storage.size()[0] {
            return Err(bad(format!("`{name}` reaches past its storage")));
        }
        let tensor = storage
            .f_as_strided(&t.size, &t.stride, t.offset)
            .and_then(|x| x.f_contiguous())
            .map_err(|e| bad(format!("`{name}`: {e}")))?;
        out.push((name, crate::weights::widened(tensor)));
    }
    Ok(out)
}
