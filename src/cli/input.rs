//! The input formats of `import`: JSONL, fvecs and npy, read one record at a time.
//!
//! Every error names the file and the line (JSONL, from 1) or row (fvecs and npy, from 0, the
//! row number being the record's id).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::Failure;

/// An input format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line: {"id": "...", "vector": [...], "metadata": {"k": "v"}}.
    Jsonl,
    /// Rows of an i32 little-endian dimension then that many f32; the row number is the id.
    Fvecs,
    /// A NumPy .npy file of float32 ('<f4'), 2-D, C order; the row number is the id.
    Npy,
}

impl Format {
    /// The format a file name's extension implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "jsonl" | "ndjson" | "json" => Some(Format::Jsonl),
            "fvecs" => Some(Format::Fvecs),
            "npy" => Some(Format::Npy),
            _ => None,
        }
    }
}

/// One record read from the input.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRecord {
    pub id: String,
    pub vector: Vec<f32>,
    pub metadata: Vec<(String, String)>,
    /// "line 7" or "row 12": where it came from, for messages.
    pub location: String,
}

/// A reader of records.
pub trait Source {
    /// The next record, `None` at the end of the input.
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure>;
    /// Bytes of the file consumed so far (for progress).
    fn bytes_read(&self) -> u64;
    /// Where the last record read came from ("line 7", "row 12").
    fn location(&self) -> String;
}

/// Opens `path` as `format`, for a store of `dimension`; returns the source and the file size.
pub fn open(path: &Path, format: Format, dimension: usize) -> Result<(Box<dyn Source>, u64), Failure> {
    let file = File::open(path).map_err(|e| Failure::io(format!("cannot open {}", path.display()), e))?;
    let len = file
        .metadata()
        .map_err(|e| Failure::io(format!("cannot read the size of {}", path.display()), e))?
        .len();
    let reader = BufReader::with_capacity(1 << 20, file);
    let path = path.to_path_buf();
    let source: Box<dyn Source> = match format {
        Format::Jsonl => Box::new(Jsonl {
            path,
            reader,
            line_no: 0,
            bytes: 0,
            buf: Vec::new(),
        }),
        Format::Fvecs => Box::new(Fvecs {
            path,
            reader,
            row: 0,
            bytes: 0,
            dimension,
        }),
        Format::Npy => Box::new(Npy::open(path, reader, len, dimension)?),
    };
    Ok((source, len))
}

/// A JSONL line as written by people and scripts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    id: Value,
    vector: Vec<f32>,
    #[serde(default)]
    metadata: Option<Map<String, Value>>,
}

struct Jsonl {
    path: PathBuf,
    reader: BufReader<File>,
    line_no: u64,
    bytes: u64,
    buf: Vec<u8>,
}

impl Jsonl {
    fn fail(&self, reason: impl std::fmt::Display) -> Failure {
        Failure::input(format!("{} line {}: {reason}", self.path.display(), self.line_no))
    }

    fn parse(&self) -> Result<InputRecord, Failure> {
        let line: Line = serde_json::from_slice(&self.buf).map_err(|e| {
            let text = e.to_string();
            let reason = text.rfind(" at line ").map_or(text.as_str(), |at| &text[..at]);
            self.fail(format!("column {}: {reason}", e.column()))
        })?;
        let id = match line.id {
            Value::String(id) => id,
            Value::Number(n) => n.to_string(),
            other => return Err(self.fail(format!("\"id\" must be a string, not {other}"))),
        };
        let mut metadata = Vec::new();
        for (key, value) in line.metadata.unwrap_or_default() {
            let value = match value {
                Value::String(value) => value,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.fail(format!(
                        "metadata value of {key:?} must be a string, number or boolean, not {other}"
                    )));
                }
            };
            metadata.push((key, value));
        }
        Ok(InputRecord {
            id,
            vector: line.vector,
            metadata,
            location: format!("line {}", self.line_no),
        })
    }
}

impl Source for Jsonl {
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
        loop {
            self.buf.clear();
            let n = self.reader.read_until(b'\n', &mut self.buf).map_err(|e| {
                Failure::io(
                    format!("reading {} after line {}", self.path.display(), self.line_no),
                    e,
                )
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            if self.buf.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            return self.parse().map(Some);
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn location(&self) -> String {
        format!("line {}", self.line_no)
    }
}

/// Reads up to `buf.len()` bytes; returns how many (fewer only at the end of the file).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

struct Fvecs {
    path: PathBuf,
    reader: BufReader<File>,
    row: u64,
    bytes: u64,
    dimension: usize,
}

impl Fvecs {
    fn fail(&self, reason: impl std::fmt::Display) -> Failure {
        Failure::input(format!("{} row {}: {reason}", self.path.display(), self.row))
    }
}

impl Source for Fvecs {
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
        let io = |e| Failure::io(format!("reading {} at row {}", self.path.display(), self.row), e);
        let mut head = [0u8; 4];
        match read_full(&mut self.reader, &mut head).map_err(io)? {
            0 => return Ok(None),
            4 => {}
            n => return Err(self.fail(format!("truncated: {n} bytes where a 4-byte dimension belongs"))),
        }
        let dimension = i32::from_le_bytes(head);
        if dimension <= 0 || dimension as usize != self.dimension {
            return Err(self.fail(format!(
                "the row has dimension {dimension}, the store holds {}",
                self.dimension
            )));
        }
        let mut body = vec![0u8; self.dimension * 4];
        let io = |e| Failure::io(format!("reading {} at row {}", self.path.display(), self.row), e);
        let n = read_full(&mut self.reader, &mut body).map_err(io)?;
        if n != body.len() {
            return Err(self.fail(format!("truncated: {n} of {} vector bytes", body.len())));
        }
        let record = InputRecord {
            id: self.row.to_string(),
            vector: floats(&body),
            metadata: Vec::new(),
            location: format!("row {}", self.row),
        };
        self.row += 1;
        self.bytes += 4 + body.len() as u64;
        Ok(Some(record))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn location(&self) -> String {
        format!("row {}", self.row.saturating_sub(1))
    }
}

/// The parts of a .npy header that matter.
#[derive(Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub rows: u64,
    pub cols: u64,
    /// Where the data starts.
    pub data_offset: u64,
}

const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Parses a .npy header from the start of a file: float32 little-endian, C order, 2-D only.
pub fn parse_npy_header(bytes: &[u8]) -> Result<NpyHeader, String> {
    if bytes.len() < 10 || &bytes[..6] != NPY_MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let major = bytes[6];
    let (len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err("truncated .npy header".into());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        other => return Err(format!(".npy format version {other} is not supported (1, 2 and 3 are)")),
    };
    let header = bytes
        .get(start..start + len)
        .ok_or_else(|| format!("truncated .npy header: it says {len} bytes"))?;
    let text = std::str::from_utf8(header).map_err(|_| "the .npy header is not text".to_string())?;
    let mut parser = PyParser {
        text: text.as_bytes(),
        at: 0,
    };
    let dict = parser.dict()?;
    let field = |name: &str| {
        dict.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("the .npy header has no '{name}'"))
    };
    match field("descr")? {
        Py::Str(d) if d == "<f4" => {}
        Py::Str(d) => {
            return Err(format!(
                "dtype '{d}' is not supported: save float32 little-endian ('<f4')"
            ));
        }
        other => return Err(format!("bad 'descr' {other:?}")),
    }
    match field("fortran_order")? {
        Py::Bool(false) => {}
        Py::Bool(true) => return Err("the array is in Fortran order: save it in C order".into()),
        other => return Err(format!("bad 'fortran_order' {other:?}")),
    }
    let shape = match field("shape")? {
        Py::Tuple(items) => items,
        other => return Err(format!("bad 'shape' {other:?}")),
    };
    let dims: Vec<u64> = shape
        .iter()
        .map(|d| match d {
            Py::Int(n) => Ok(*n),
            other => Err(format!("bad 'shape' entry {other:?}")),
        })
        .collect::<Result<_, _>>()?;
    let [rows, cols] = dims[..] else {
        return Err(format!(
            "the array has {} dimensions: it must be 2-D (rows, dimension)",
            dims.len()
        ));
    };
    Ok(NpyHeader {
        rows,
        cols,
        data_offset: (start + len) as u64,
    })
}

/// The Python literals a .npy header holds.
#[derive(Debug, PartialEq)]
enum Py {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    Tuple(Vec<Py>),
}

struct PyParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl PyParser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.text.get(self.at).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(format!(
                "bad .npy header: expected '{}' at byte {}",
                byte as char, self.at
            ))
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Py)>, String> {
        self.expect(b'{')?;
        let mut entries = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.at += 1;
                return Ok(entries);
            }
            let Py::Str(key) = self.value()? else {
                return Err("bad .npy header: a key is not a string".into());
            };
            self.expect(b':')?;
            let value = self.value()?;
            entries.push((key, value));
            if self.peek() == Some(b',') {
                self.at += 1;
            }
        }
    }

    fn value(&mut self) -> Result<Py, String> {
        match self.peek() {
            Some(quote @ (b'\'' | b'"')) => {
                self.at += 1;
                let start = self.at;
                while self.at < self.text.len() && self.text[self.at] != quote {
                    self.at += 1;
                }
                if self.at == self.text.len() {
                    return Err("bad .npy header: unterminated string".into());
                }
                let s = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
                self.at += 1;
                Ok(Py::Str(s))
            }
            Some(b'(') => {
                self.at += 1;
                let mut items = Vec::new();
                loop {
                    if self.peek() == Some(b')') {
                        self.at += 1;
                        return Ok(Py::Tuple(items));
                    }
                    items.push(self.value()?);
                    match self.peek() {
                        Some(b',') => self.at += 1,
                        Some(b')') => {}
                        _ => return Err("bad .npy header: malformed tuple".into()),
                    }
                }
            }
            Some(c) if c.is_ascii_digit() => {
                let start = self.at;
                while self.at < self.text.len() && self.text[self.at].is_ascii_digit() {
                    self.at += 1;
                }
                let n = std::str::from_utf8(&self.text[start..self.at])
                    .expect("digits")
                    .parse()
                    .map_err(|_| "bad .npy header: number out of range".to_string())?;
                if self.text.get(self.at) == Some(&b'L') {
                    self.at += 1;
                }
                Ok(Py::Int(n))
            }
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.at;
                while self.at < self.text.len() && self.text[self.at].is_ascii_alphanumeric() {
                    self.at += 1;
                }
                match &self.text[start..self.at] {
                    b"True" => Ok(Py::Bool(true)),
                    b"False" => Ok(Py::Bool(false)),
                    b"None" => Ok(Py::None),
                    word => Err(format!(
                        "bad .npy header: unexpected {:?}",
                        String::from_utf8_lossy(word)
                    )),
                }
            }
            _ => Err(format!("bad .npy header: unexpected byte at {}", self.at)),
        }
    }
}

/// The header of a .npy file of `rows` float32 vectors of `cols` components.
pub fn npy_header(rows: u64, cols: u64) -> Vec<u8> {
    let dict = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Version 1.0: magic, 2 version bytes, u16 header length; the whole header (with its
    // trailing newline) is padded with spaces to a multiple of 64 bytes.
    let unpadded = NPY_MAGIC.len() + 2 + 2 + dict.len() + 1;
    let padding = unpadded.next_multiple_of(64) - unpadded;
    let header_len = dict.len() + padding + 1;
    let mut out = Vec::with_capacity(unpadded + padding);
    out.extend_from_slice(NPY_MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', padding));
    out.push(b'\n');
    out
}

struct Npy {
    path: PathBuf,
    reader: BufReader<File>,
    row: u64,
    rows: u64,
    cols: usize,
    bytes: u64,
}

impl Npy {
    fn open(path: PathBuf, mut reader: BufReader<File>, len: u64, dimension: usize) -> Result<Npy, Failure> {
        let fail = |reason: String| Failure::input(format!("{}: {reason}", path.display()));
        let mut head = vec![0u8; 12];
        let n = read_full(&mut reader, &mut head).map_err(|e| Failure::io(format!("reading {}", path.display()), e))?;
        head.truncate(n);
        let header_len = match head.get(6) {
            Some(1) if n >= 10 => u16::from_le_bytes([head[8], head[9]]) as usize + 10,
            Some(2 | 3) if n >= 12 => u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as usize + 12,
            _ => {
                return Err(fail(
                    parse_npy_header(&head).err().unwrap_or_else(|| "bad header".into()),
                ));
            }
        };
        if header_len as u64 > len.min(1 << 24) {
            return Err(fail(format!("truncated .npy header: it says {header_len} bytes")));
        }
        let mut rest = vec![0u8; header_len.saturating_sub(n)];
        reader
            .read_exact(&mut rest)
            .map_err(|e| Failure::io(format!("reading the header of {}", path.display()), e))?;
        head.extend_from_slice(&rest);
        let header = parse_npy_header(&head).map_err(fail)?;
        if header.cols != dimension as u64 {
            return Err(fail(format!(
                "the array holds vectors of dimension {}, the store holds {dimension}",
                header.cols
            )));
        }
        let data_bytes = header.rows.saturating_mul(header.cols).saturating_mul(4);
        if len < header.data_offset.saturating_add(data_bytes) {
            return Err(fail(format!(
                "truncated: the header promises {} rows ({data_bytes} bytes of data), the file holds {}",
                header.rows,
                len.saturating_sub(header.data_offset)
            )));
        }
        Ok(Npy {
            path,
            reader,
            row: 0,
            rows: header.rows,
            cols: dimension,
            bytes: header.data_offset,
        })
    }
}

impl Source for Npy {
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
        if self.row == self.rows {
            return Ok(None);
        }
        let mut body = vec![0u8; self.cols * 4];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| Failure::io(format!("reading {} at row {}", self.path.display(), self.row), e))?;
        let record = InputRecord {
            id: self.row.to_string(),
            vector: floats(&body),
            metadata: Vec::new(),
            location: format!("row {}", self.row),
        };
        self.row += 1;
        self.bytes += body.len() as u64;
        Ok(Some(record))
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn location(&self) -> String {
        format!("row {}", self.row.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_we_write_parse_back() {
        let header = npy_header(200_000, 384);
        assert_eq!(header.len() % 64, 0, "numpy pads headers to 64 bytes");
        assert_eq!(
            parse_npy_header(&header),
            Ok(NpyHeader {
                rows: 200_000,
                cols: 384,
                data_offset: header.len() as u64
            })
        );
    }

    #[test]
    fn npy_headers_of_other_dtypes_orders_and_shapes_are_refused() {
        let make = |dict: &str| {
            let mut bytes = NPY_MAGIC.to_vec();
            bytes.extend_from_slice(&[1, 0]);
            bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
            bytes.extend_from_slice(dict.as_bytes());
            bytes
        };
        let f8 = parse_npy_header(&make("{'descr': '<f8', 'fortran_order': False, 'shape': (2, 3), }"));
        assert!(matches!(&f8, Err(e) if e.contains("'<f8'")), "{f8:?}");
        let fortran = parse_npy_header(&make("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }"));
        assert!(matches!(&fortran, Err(e) if e.contains("Fortran")), "{fortran:?}");
        let one_d = parse_npy_header(&make("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }"));
        assert!(matches!(&one_d, Err(e) if e.contains("2-D")), "{one_d:?}");
        let ok = parse_npy_header(&make("{\"shape\": (2L, 3L), 'fortran_order': False, 'descr': '<f4'}"));
        assert!(matches!(ok, Ok(NpyHeader { rows: 2, cols: 3, .. })), "{ok:?}");
    }
}
