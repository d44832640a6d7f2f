//! Hessian 2.0 serialization, the encoding of Dubbo 2's RPC bodies (serialization id 2).
//!
//! No maintained, permissively licensed Rust crate covers Hessian 2.0, so it is ours. It
//! follows the grammar of caucho's "Hessian 2.0 Serialization Protocol" and, where the two
//! differ, what the Java implementations that Dubbo uses write:
//!
//! - `x5f b3 b0` is a double given in thousandths as a 32-bit int (Hessian2Output's
//!   `BC_DOUBLE_MILL`), not a 32-bit float as the draft says;
//! - string lengths count UTF-16 code units, and a character outside the BMP is two surrogates,
//!   each written as a three-octet UTF-8 sequence (as Java's `String` is); both that and
//!   ordinary four-octet UTF-8 are read.
//!
//! [`Value`] is what a body holds. [`Encoder`] writes the compact forms, class definitions
//! once per stream, and references for values it is asked to share; [`Decoder`] reads any
//! form, resolves class and value references, and returns an error for anything truncated,
//! malformed or nested too deeply, never a panic.

use std::collections::HashMap;

/// A Hessian value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i32),
    Long(i64),
    Double(f64),
    /// Milliseconds since the epoch, UTC.
    Date(i64),
    String(String),
    Binary(Vec<u8>),
    List {
        type_name: Option<String>,
        items: Vec<Value>,
    },
    Map {
        type_name: Option<String>,
        entries: Vec<(Value, Value)>,
    },
    /// An instance of a class: its name, field names and values in the definition's order.
    Object {
        class: String,
        fields: Vec<(String, Value)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("truncated at octet {0}")]
    Truncated(usize),
    #[error("unexpected code 0x{code:02x} at octet {at}")]
    BadCode { code: u8, at: usize },
    #[error("invalid UTF-8 in a string at octet {0}")]
    BadUtf8(usize),
    #[error("reference to {what} #{index}, which does not exist")]
    BadRef { what: &'static str, index: i64 },
    #[error("nested more than {0} levels")]
    TooDeep(usize),
    #[error("length {0} out of range")]
    BadLength(i64),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Nesting a decoder accepts (lists in maps in objects ...).
pub const MAX_DEPTH: usize = 64;

/// Writes values, remembering class definitions and type names across calls (a stream, as
/// Dubbo writes one body).
#[derive(Debug, Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
    classes: HashMap<(String, Vec<String>), usize>,
    types: HashMap<String, usize>,
}

impl Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    pub fn write(&mut self, v: &Value) {
        match v {
            Value::Null => self.buf.push(b'N'),
            Value::Bool(b) => self.buf.push(if *b { b'T' } else { b'F' }),
            Value::Int(i) => self.int(*i),
            Value::Long(l) => self.long(*l),
            Value::Double(d) => self.double(*d),
            Value::Date(ms) => {
                if ms % 60_000 == 0
                    && (ms / 60_000) >= i64::from(i32::MIN)
                    && (ms / 60_000) <= i64::from(i32::MAX)
                {
                    self.buf.push(0x4b);
                    self.buf
                        .extend_from_slice(&((ms / 60_000) as i32).to_be_bytes());
                } else {
                    self.buf.push(0x4a);
                    self.buf.extend_from_slice(&ms.to_be_bytes());
                }
            }
            Value::String(s) => self.string(s),
            Value::Binary(b) => self.binary(b),
            Value::List { type_name, items } => {
                let n = items.len();
                match (type_name, n) {
                    (None, 0..=7) => self.buf.push(0x78 + n as u8),
                    (None, _) => {
                        self.buf.push(0x58);
                        self.int(n as i32);
                    }
                    (Some(t), 0..=7) => {
                        self.buf.push(0x70 + n as u8);
                        self.type_name(t);
                    }
                    (Some(t), _) => {
                        self.buf.push(b'V');
                        self.type_name(t);
                        self.int(n as i32);
                    }
                }
                for i in items {
                    self.write(i);
                }
            }
            Value::Map { type_name, entries } => {
                match type_name {
                    Some(t) => {
                        self.buf.push(b'M');
                        self.type_name(t);
                    }
                    None => self.buf.push(b'H'),
                }
                for (k, v) in entries {
                    self.write(k);
                    self.write(v);
                }
                self.buf.push(b'Z');
            }
            Value::Object { class, fields } => {
                let key = (
                    class.clone(),
                    fields.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                );
                let next = self.classes.len();
                let idx = match self.classes.get(&key) {
                    Some(i) => *i,
                    None => {
                        self.buf.push(b'C');
                        self.string(class);
                        self.int(fields.len() as i32);
                        for (n, _) in fields {
                            self.string(n);
                        }
                        self.classes.insert(key, next);
                        next
                    }
                };
                if idx <= 15 {
                    self.buf.push(0x60 + idx as u8);
                } else {
                    self.buf.push(b'O');
                    self.int(idx as i32);
                }
                for (_, v) in fields {
                    self.write(v);
                }
            }
        }
    }

    /// A reference to the `index`-th list, map or object of the stream.
    pub fn write_ref(&mut self, index: u32) {
        self.buf.push(0x51);
        self.int(index as i32);
    }

    fn int(&mut self, i: i32) {
        match i {
            -16..=47 => self.buf.push((0x90 + i) as u8),
            -2048..=2047 => {
                self.buf.push((0xc8 + (i >> 8)) as u8);
                self.buf.push(i as u8);
            }
            -262_144..=262_143 => {
                self.buf.push((0xd4 + (i >> 16)) as u8);
                self.buf.extend_from_slice(&[(i >> 8) as u8, i as u8]);
            }
            _ => {
                self.buf.push(b'I');
                self.buf.extend_from_slice(&i.to_be_bytes());
            }
        }
    }

    fn long(&mut self, l: i64) {
        match l {
            -8..=15 => self.buf.push((0xe0 + l) as u8),
            -2048..=2047 => {
                self.buf.push((0xf8 + (l >> 8)) as u8);
                self.buf.push(l as u8);
            }
            -262_144..=262_143 => {
                self.buf.push((0x3c + (l >> 16)) as u8);
                self.buf.extend_from_slice(&[(l >> 8) as u8, l as u8]);
            }
            _ if l >= i64::from(i32::MIN) && l <= i64::from(i32::MAX) => {
                self.buf.push(0x59);
                self.buf.extend_from_slice(&(l as i32).to_be_bytes());
            }
            _ => {
                self.buf.push(b'L');
                self.buf.extend_from_slice(&l.to_be_bytes());
            }
        }
    }

    fn double(&mut self, d: f64) {
        let i = d as i64;
        if i as f64 == d && !(d == 0.0 && d.is_sign_negative()) {
            match i {
                0 => return self.buf.push(0x5b),
                1 => return self.buf.push(0x5c),
                -128..=127 => return self.buf.extend_from_slice(&[0x5d, i as u8]),
                -32768..=32767 => {
                    self.buf.push(0x5e);
                    return self.buf.extend_from_slice(&(i as i16).to_be_bytes());
                }
                _ => {}
            }
        }
        // Thousandths in an int, when exact (Hessian2Output's BC_DOUBLE_MILL).
        let mills = (d * 1000.0) as i64;
        if d.is_finite()
            && mills >= i64::from(i32::MIN)
            && mills <= i64::from(i32::MAX)
            && 0.001 * mills as f64 == d
        {
            self.buf.push(0x5f);
            return self.buf.extend_from_slice(&(mills as i32).to_be_bytes());
        }
        self.buf.push(b'D');
        self.buf.extend_from_slice(&d.to_bits().to_be_bytes());
    }

    fn type_name(&mut self, t: &str) {
        match self.types.get(t) {
            Some(i) => self.int(*i as i32),
            None => {
                let n = self.types.len();
                self.types.insert(t.to_string(), n);
                self.string(t);
            }
        }
    }

    fn string(&mut self, s: &str) {
        // Chunks of at most 0x8000 UTF-16 units, Java's way (CESU-8 for supplementary chars).
        let units: Vec<u16> = s.encode_utf16().collect();
        let mut chunks = units.chunks(0x8000).peekable();
        if units.is_empty() {
            return self.buf.push(0x00);
        }
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            let n = c.len();
            if last && n <= 31 {
                self.buf.push(n as u8);
            } else if last && n <= 1023 {
                self.buf.push(0x30 + (n >> 8) as u8);
                self.buf.push(n as u8);
            } else {
                self.buf.push(if last { b'S' } else { 0x52 });
                self.buf.extend_from_slice(&(n as u16).to_be_bytes());
            }
            for &u in c {
                match u {
                    0..=0x7f => self.buf.push(u as u8),
                    0x80..=0x7ff => self
                        .buf
                        .extend_from_slice(&[0xc0 | (u >> 6) as u8, 0x80 | (u & 0x3f) as u8]),
                    _ => self.buf.extend_from_slice(&[
                        0xe0 | (u >> 12) as u8,
                        0x80 | ((u >> 6) & 0x3f) as u8,
                        0x80 | (u & 0x3f) as u8,
                    ]),
                }
            }
        }
    }

    fn binary(&mut self, b: &[u8]) {
        if b.len() <= 15 {
            self.buf.push(0x20 + b.len() as u8);
            return self.buf.extend_from_slice(b);
        }
        if b.len() <= 1023 {
            self.buf.push(0x34 + (b.len() >> 8) as u8);
            self.buf.push(b.len() as u8);
            return self.buf.extend_from_slice(b);
        }
        let mut chunks = b.chunks(0x8000).peekable();
        while let Some(c) = chunks.next() {
            let last = chunks.peek().is_none();
            self.buf.push(if last { b'B' } else { 0x41 });
            self.buf.extend_from_slice(&(c.len() as u16).to_be_bytes());
            self.buf.extend_from_slice(c);
        }
    }
}

/// Encodes one value on its own.
pub fn to_bytes(v: &Value) -> Vec<u8> {
    let mut e = Encoder::new();
    e.write(v);
    e.into_bytes()
}

/// Reads values from a stream, keeping its class definitions, type names and references.
#[derive(Debug)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pub pos: usize,
    classes: Vec<(String, Vec<String>)>,
    types: Vec<String>,
    refs: Vec<Value>,
    depth: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            classes: Vec::new(),
            types: Vec::new(),
            refs: Vec::new(),
            depth: 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(Error::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated(self.pos))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(Error::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }

    fn be(&mut self, n: usize) -> Result<u64> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |a, b| (a << 8) | u64::from(*b)))
    }

    /// The next value.
    pub fn read(&mut self) -> Result<Value> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::TooDeep(MAX_DEPTH));
        }
        let r = self.read_inner();
        self.depth -= 1;
        r
    }

    /// An int where the grammar wants one (lengths, indexes).
    pub fn read_int(&mut self) -> Result<i32> {
        let at = self.pos;
        match self.read()? {
            Value::Int(i) => Ok(i),
            _ => Err(Error::BadCode {
                code: self.buf[at],
                at,
            }),
        }
    }

    /// A string where the grammar wants one.
    pub fn read_string(&mut self) -> Result<String> {
        let at = self.pos;
        let code = self.byte()?;
        self.string(code, at)
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.read_int()?;
        usize::try_from(n).map_err(|_| Error::BadLength(i64::from(n)))
    }

    fn type_name(&mut self) -> Result<String> {
        let at = self.pos;
        let code = *self.buf.get(at).ok_or(Error::Truncated(at))?;
        if matches!(code, 0x00..=0x1f | 0x30..=0x33 | 0x52 | b'S') {
            let t = self.read_string()?;
            self.types.push(t.clone());
            Ok(t)
        } else {
            let i = self.read_int()?;
            self.types
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .cloned()
                .ok_or(Error::BadRef {
                    what: "type",
                    index: i64::from(i),
                })
        }
    }

    fn string(&mut self, mut code: u8, at: usize) -> Result<String> {
        let mut units: Vec<u16> = Vec::new();
        loop {
            let (n, last) = match code {
                0x00..=0x1f => (usize::from(code), true),
                0x30..=0x33 => (
                    (usize::from(code - 0x30) << 8) | usize::from(self.byte()?),
                    true,
                ),
                0x52 | b'S' => (self.be(2)? as usize, code == b'S'),
                _ => return Err(Error::BadCode { code, at }),
            };
            // `n` counts UTF-16 units: a four-octet sequence is two.
            let goal = units.len() + n;
            while units.len() < goal {
                let start = self.pos;
                let b0 = self.byte()?;
                if b0 < 0x80 {
                    units.push(u16::from(b0));
                } else if b0 & 0xe0 == 0xc0 {
                    let b1 = self.byte()?;
                    units.push((u16::from(b0 & 0x1f) << 6) | u16::from(b1 & 0x3f));
                } else if b0 & 0xf0 == 0xe0 {
                    let (b1, b2) = (self.byte()?, self.byte()?);
                    units.push(
                        (u16::from(b0 & 0x0f) << 12)
                            | (u16::from(b1 & 0x3f) << 6)
                            | u16::from(b2 & 0x3f),
                    );
                } else if b0 & 0xf8 == 0xf0 {
                    // Four-octet UTF-8 (not Java's way, accepted): two UTF-16 units.
                    let (b1, b2, b3) = (self.byte()?, self.byte()?, self.byte()?);
                    let c = (u32::from(b0 & 0x07) << 18)
                        | (u32::from(b1 & 0x3f) << 12)
                        | (u32::from(b2 & 0x3f) << 6)
                        | u32::from(b3 & 0x3f);
                    let ch = char::from_u32(c).ok_or(Error::BadUtf8(start))?;
                    let mut tmp = [0u16; 2];
                    units.extend_from_slice(ch.encode_utf16(&mut tmp));
                } else {
                    return Err(Error::BadUtf8(start));
                }
            }
            if last {
                break;
            }
            code = self.byte()?;
        }
        String::from_utf16(&units).map_err(|_| Error::BadUtf8(at))
    }

    fn binary(&mut self, mut code: u8, at: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let (n, last) = match code {
                0x20..=0x2f => (usize::from(code - 0x20), true),
                0x34..=0x37 => (
                    (usize::from(code - 0x34) << 8) | usize::from(self.byte()?),
                    true,
                ),
                0x41 | b'B' => (self.be(2)? as usize, code == b'B'),
                _ => return Err(Error::BadCode { code, at }),
            };
            out.extend_from_slice(self.take(n)?);
            if last {
                return Ok(out);
            }
            code = self.byte()?;
        }
    }

    fn items(&mut self, n: Option<usize>) -> Result<Vec<Value>> {
        let mut items = Vec::new();
        match n {
            Some(n) => {
                for _ in 0..n {
                    items.push(self.read()?);
                }
            }
            None => loop {
                if *self.buf.get(self.pos).ok_or(Error::Truncated(self.pos))? == b'Z' {
                    self.pos += 1;
                    break;
                }
                items.push(self.read()?);
            },
        }
        Ok(items)
    }

    /// Lists, maps and objects are numbered in the order they start, for references.
    fn shared(&mut self, f: impl FnOnce(&mut Self) -> Result<Value>) -> Result<Value> {
        let slot = self.refs.len();
        self.refs.push(Value::Null);
        let v = f(self)?;
        self.refs[slot] = v.clone();
        Ok(v)
    }

    fn object(&mut self, idx: usize, at: usize) -> Result<Value> {
        let (class, names) = self.classes.get(idx).cloned().ok_or(Error::BadRef {
            what: "class",
            index: idx as i64,
        })?;
        let _ = at;
        self.shared(|d| {
            let mut fields = Vec::with_capacity(names.len());
            for n in names {
                fields.push((n, d.read()?));
            }
            Ok(Value::Object { class, fields })
        })
    }

    fn read_inner(&mut self) -> Result<Value> {
        let at = self.pos;
        let code = self.byte()?;
        Ok(match code {
            b'N' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            0x80..=0xbf => Value::Int(i32::from(code) - 0x90),
            0xc0..=0xcf => Value::Int(((i32::from(code) - 0xc8) << 8) | i32::from(self.byte()?)),
            0xd0..=0xd7 => Value::Int(((i32::from(code) - 0xd4) << 16) | self.be(2)? as i32),
            b'I' => Value::Int(self.be(4)? as u32 as i32),
            0xd8..=0xef => Value::Long(i64::from(code) - 0xe0),
            0xf0..=0xff => Value::Long(((i64::from(code) - 0xf8) << 8) | i64::from(self.byte()?)),
            0x38..=0x3f => Value::Long(((i64::from(code) - 0x3c) << 16) | self.be(2)? as i64),
            0x59 => Value::Long(i64::from(self.be(4)? as u32 as i32)),
            b'L' => Value::Long(self.be(8)? as i64),
            0x5b => Value::Double(0.0),
            0x5c => Value::Double(1.0),
            0x5d => Value::Double(f64::from(self.byte()? as i8)),
            0x5e => Value::Double(f64::from(self.be(2)? as u16 as i16)),
            0x5f => Value::Double(0.001 * f64::from(self.be(4)? as u32 as i32)),
            b'D' => Value::Double(f64::from_bits(self.be(8)?)),
            0x4a => Value::Date(self.be(8)? as i64),
            0x4b => Value::Date(i64::from(self.be(4)? as u32 as i32) * 60_000),
            0x00..=0x1f | 0x30..=0x33 | 0x52 | b'S' => Value::String(self.string(code, at)?),
            0x20..=0x2f | 0x34..=0x37 | 0x41 | b'B' => Value::Binary(self.binary(code, at)?),
            0x55 => self.shared(|d| {
                let t = d.type_name()?;
                Ok(Value::List {
                    type_name: Some(t),
                    items: d.items(None)?,
                })
            })?,
            b'V' => self.shared(|d| {
                let t = d.type_name()?;
                let n = d.len()?;
                Ok(Value::List {
                    type_name: Some(t),
                    items: d.items(Some(n))?,
                })
            })?,
            0x57 => self.shared(|d| {
                Ok(Value::List {
                    type_name: None,
                    items: d.items(None)?,
                })
            })?,
            0x58 => self.shared(|d| {
                let n = d.len()?;
                Ok(Value::List {
                    type_name: None,
                    items: d.items(Some(n))?,
                })
            })?,
            0x70..=0x77 => self.shared(|d| {
                let t = d.type_name()?;
                Ok(Value::List {
                    type_name: Some(t),
                    items: d.items(Some(usize::from(code - 0x70)))?,
                })
            })?,
            0x78..=0x7f => self.shared(|d| {
                Ok(Value::List {
                    type_name: None,
                    items: d.items(Some(usize::from(code - 0x78)))?,
                })
            })?,
            b'M' | b'H' => self.shared(|d| {
                let type_name = if code == b'M' {
                    Some(d.type_name()?)
                } else {
                    None
                };
                let mut entries = Vec::new();
                loop {
                    if *d.buf.get(d.pos).ok_or(Error::Truncated(d.pos))? == b'Z' {
                        d.pos += 1;
                        break;
                    }
                    let k = d.read()?;
                    let v = d.read()?;
                    entries.push((k, v));
                }
                Ok(Value::Map { type_name, entries })
            })?,
            b'C' => {
                let class = self.read_string()?;
                let n = self.len()?;
                if n > self.buf.len() {
                    return Err(Error::BadLength(n as i64));
                }
                let mut names = Vec::with_capacity(n);
                for _ in 0..n {
                    names.push(self.read_string()?);
                }
                self.classes.push((class, names));
                // A definition is followed by the value it was written for.
                return self.read_inner();
            }
            0x60..=0x6f => self.object(usize::from(code - 0x60), at)?,
            b'O' => {
                let i = self.read_int()?;
                let idx = usize::try_from(i).map_err(|_| Error::BadRef {
                    what: "class",
                    index: i64::from(i),
                })?;
                self.object(idx, at)?
            }
            0x51 => {
                let i = self.read_int()?;
                self.refs
                    .get(usize::try_from(i).unwrap_or(usize::MAX))
                    .cloned()
                    .ok_or(Error::BadRef {
                        what: "value",
                        index: i64::from(i),
                    })?
            }
            _ => return Err(Error::BadCode { code, at }),
        })
    }
}

/// Decodes one value.
pub fn from_bytes(b: &[u8]) -> Result<Value> {
    Decoder::new(b).read()
}

#[cfg(test)]
mod tests;
