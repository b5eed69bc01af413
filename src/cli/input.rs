//! The input formats of `import`: JSONL, fvecs and npy, read one record at a time.
//!
//! Every error names the file and the line (JSONL, from 1) or row (fvecs and npy, from 0, the
//! row number being the record's id). Every format is read front to back once, so the input
//! may be a pipe; only a Fortran-order .npy file is read with positioned reads (from a pipe it
//! is read whole instead).

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::common::{EXIT_NO_INPUT, Failure};

/// An input format.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line: {"id": "...", "vector": [...], "metadata": {"k": "v"}}.
    Jsonl,
    /// Rows of an i32 little-endian dimension then that many f32; the row number is the id.
    Fvecs,
    /// A NumPy .npy file of float32 ('<f4'), 2-D, C or Fortran order; the row number is the id.
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

/// A reader of records (on a thread of its own: see src/cli/read_ahead.rs).
pub trait Source: Send {
    /// The next record, `None` at the end of the input.
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure>;
    /// Bytes of the file consumed so far (for progress).
    fn bytes_read(&self) -> u64;
    /// Where the last record read came from ("line 7", "row 12").
    fn location(&self) -> String;
    /// For a source whose records are lines parsed apart from reading them (JSONL), the parser
    /// of its lines: then [`Source::next_line`] reads them. `None` for the others.
    fn line_parser(&self) -> Option<LineParser> {
        None
    }
    /// Appends the next line that is not blank to `buf` (which it may have grown and left so
    /// if it failed or the input ended) and returns its number, `None` at the end of the input.
    /// Only for a source with a [`Source::line_parser`].
    fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, Failure> {
        let _ = buf;
        unreachable!("only a source with a line parser reads lines")
    }
}

/// The input path that names standard input, as for most command-line tools.
pub const STDIN: &str = "-";

/// How messages name the input at `path`.
pub fn display_name(path: &Path) -> String {
    match path.as_os_str() == STDIN {
        true => "standard input".to_string(),
        false => path.display().to_string(),
    }
}

/// Opens `path` as `format`, for a store of `dimension` ([`STDIN`]: standard input); returns the
/// source and the file size (`None` for a pipe, a terminal or a device: then nothing depends on
/// it, and nothing seeks).
pub fn open(path: &Path, format: Format, dimension: usize) -> Result<(Box<dyn Source>, Option<u64>), Failure> {
    // Its own exit code: 1 says the store (or an id) is missing, 3 that the store is damaged.
    let cannot_open = |reason: String| {
        Failure::new(
            EXIT_NO_INPUT,
            format!("cannot open the input file {}: {reason}", display_name(path)),
        )
    };
    let file = match path.as_os_str() == STDIN {
        // A descriptor of its own for standard input, read as any other file.
        true => std::io::stdin()
            .as_fd()
            .try_clone_to_owned()
            .map(File::from)
            .map_err(|e| cannot_open(e.to_string()))?,
        false => File::open(path).map_err(|e| cannot_open(e.to_string()))?,
    };
    let metadata = file
        .metadata()
        .map_err(|e| Failure::io(format!("cannot read the size of {}", display_name(path)), e))?;
    if metadata.is_dir() {
        return Err(cannot_open("it is a directory".into()));
    }
    let len = metadata.is_file().then_some(metadata.len());
    let reader = BufReader::with_capacity(1 << 20, file);
    let path = PathBuf::from(display_name(path));
    let source: Box<dyn Source> = match format {
        Format::Jsonl => Box::new(Jsonl {
            parser: LineParser::for_file(path),
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

/// The UTF-8 encoding of U+FEFF, which some editors write at the start of a text file.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

struct Jsonl {
    /// Its lines' parser, which also names the file in messages.
    parser: LineParser,
    reader: BufReader<File>,
    line_no: u64,
    bytes: u64,
    buf: Vec<u8>,
}

/// Parses JSONL lines of one file, on any thread: what a line read by
/// [`Source::next_line`] becomes.
#[derive(Clone, Debug)]
pub struct LineParser {
    path: PathBuf,
}

impl LineParser {
    /// The parser of the lines of the file at `path` (named in its messages).
    pub fn for_file(path: PathBuf) -> LineParser {
        LineParser { path }
    }

    fn fail(&self, line_no: u64, reason: impl std::fmt::Display) -> Failure {
        Failure::input(format!("{} line {line_no}: {reason}", self.path.display()))
    }

    /// The record on line `line_no`, `bytes` (not blank).
    pub fn parse(&self, line_no: u64, bytes: &[u8]) -> Result<InputRecord, Failure> {
        let line: Line = serde_json::from_slice(bytes).map_err(|e| {
            let text = e.to_string();
            let reason = text.rfind(" at line ").map_or(text.as_str(), |at| &text[..at]);
            self.fail(line_no, format!("column {}: {reason}", e.column()))
        })?;
        let id = match line.id {
            Value::String(id) => id,
            Value::Number(n) => n.to_string(),
            other => return Err(self.fail(line_no, format!("\"id\" must be a string, not {other}"))),
        };
        let mut metadata = Vec::new();
        for (key, value) in line.metadata.unwrap_or_default() {
            let value = match value {
                Value::String(value) => value,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => {
                    return Err(self.fail(
                        line_no,
                        format!("metadata value of {key:?} must be a string, number or boolean, not {other}"),
                    ));
                }
            };
            metadata.push((key, value));
        }
        Ok(InputRecord {
            id,
            vector: line.vector,
            metadata,
            location: format!("line {line_no}"),
        })
    }
}

impl Source for Jsonl {
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let record = self
            .next_line(&mut buf)
            .and_then(|line| line.map(|line_no| self.parser.parse(line_no, &buf)).transpose());
        self.buf = buf;
        record
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }

    fn location(&self) -> String {
        format!("line {}", self.line_no)
    }

    fn line_parser(&self) -> Option<LineParser> {
        Some(self.parser.clone())
    }

    fn next_line(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>, Failure> {
        let start = buf.len();
        loop {
            buf.truncate(start);
            let n = self.reader.read_until(b'\n', buf).map_err(|e| {
                Failure::io(
                    format!("reading {} after line {}", self.parser.path.display(), self.line_no),
                    e,
                )
            })?;
            if n == 0 {
                return Ok(None);
            }
            self.line_no += 1;
            self.bytes += n as u64;
            // A byte order mark before the first line (editors on Windows write one): not
            // JSON, and RFC 8259 lets a parser ignore it.
            if self.line_no == 1 && buf[start..].starts_with(UTF8_BOM) {
                buf.drain(start..start + UTF8_BOM.len());
            }
            if !buf[start..].iter().all(|b| b.is_ascii_whitespace()) {
                return Ok(Some(self.line_no));
            }
        }
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
    /// True if the data is column by column (element (i, j) at `j * rows + i`), as NumPy saves
    /// any array whose transpose is contiguous; false if row by row (C order).
    pub fortran_order: bool,
    /// Where the data starts.
    pub data_offset: u64,
}

const NPY_MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Parses a .npy header from the start of a file: float32 little-endian, 2-D only.
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
    let fortran_order = match field("fortran_order")? {
        Py::Bool(fortran_order) => *fortran_order,
        other => return Err(format!("bad 'fortran_order' {other:?}")),
    };
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
        fortran_order,
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

/// Bytes of a Fortran-order array held at once while it is transposed from a file: a block of
/// rows this large (at least one row), read as one contiguous run per column.
const FORTRAN_BLOCK_BYTES: u64 = 64 << 20;
/// The largest Fortran-order array read from a pipe (which cannot be read twice): it is held
/// whole in memory to be transposed.
pub const FORTRAN_PIPE_LIMIT_BYTES: u64 = 2 << 30;
/// The longest .npy header accepted (NumPy writes a few hundred bytes).
const NPY_HEADER_LIMIT_BYTES: usize = 1 << 24;

/// The array of an .npy file: its shape and layout, and where its data starts.
struct NpyLayout {
    rows: u64,
    cols: u64,
    fortran_order: bool,
    data_offset: u64,
}

impl NpyLayout {
    fn row_bytes(&self) -> u64 {
        self.cols * 4
    }

    /// Checked when the layout is made (`Npy::open`), so it cannot overflow.
    fn data_bytes(&self) -> u64 {
        self.rows * self.row_bytes()
    }

    /// Why `have` bytes of data are not the array the header promises: the row at fault, if
    /// one is (the first row not wholly present), and the reason. `None` if they are.
    fn length_error(&self, have: u64) -> Option<(Option<u64>, String)> {
        let want = self.data_bytes();
        let shape = format!("{} rows of {} float32s", self.rows, self.cols);
        if have > want {
            let after = match self.rows {
                0 => "the header promises no rows".to_string(),
                rows => format!("after row {}, the last of {shape}", rows - 1),
            };
            return Some((
                None,
                format!("{} bytes follow the end of the array ({after})", have - want),
            ));
        }
        (have < want).then(|| {
            let reason = format!("truncated: the data ends after {have} of the {want} bytes of {shape}");
            (Some(self.first_incomplete_row(have)), reason)
        })
    }

    fn first_incomplete_row(&self, have: u64) -> u64 {
        if !self.fortran_order {
            return have / self.row_bytes().max(1);
        }
        // Column by column: when the last column is short, rows from where it ends lack their
        // last component; when an earlier one is, whole columns are missing from every row.
        let elements = have / 4;
        let (column, row) = (elements / self.rows.max(1), elements % self.rows.max(1));
        if column + 1 >= self.cols { row } else { 0 }
    }
}

/// How the rows of an .npy array are read.
enum NpyRows {
    /// C order, row by row; `length_checked` once the data's length is known to be right (at
    /// open, for a regular file; at the end, for a pipe).
    Stream {
        reader: BufReader<File>,
        length_checked: bool,
    },
    /// Fortran order: rows `start..start + len` held column by column (row `i`, column `j` at
    /// `j * len + i - start`), refilled from `file` with positioned reads (`None`: the block
    /// is the whole array, read from a pipe).
    Columns {
        block: Vec<f32>,
        start: u64,
        len: u64,
        file: Option<File>,
    },
}

struct Npy {
    path: PathBuf,
    layout: NpyLayout,
    rows: NpyRows,
    row: u64,
    /// Bytes of rows per block of a Fortran-order file (`FORTRAN_BLOCK_BYTES`).
    block_bytes: u64,
}

impl Npy {
    /// Reads the header and, for a Fortran-order array from a pipe, the whole array; checks the
    /// data's length against the header when the file's length is known (`len`).
    fn open(path: PathBuf, mut reader: BufReader<File>, len: Option<u64>, dimension: usize) -> Result<Npy, Failure> {
        let header = read_npy_header(&path, &mut reader)?;
        let fail = |reason: String| Failure::input(format!("{}: {reason}", path.display()));
        if header.cols != dimension as u64 {
            return Err(fail(format!(
                "the array holds vectors of dimension {}, the store holds {dimension}",
                header.cols
            )));
        }
        if header.rows.checked_mul(header.cols * 4).is_none() {
            return Err(fail(format!(
                "the shape ({}, {}) is too large",
                header.rows, header.cols
            )));
        }
        let layout = NpyLayout {
            rows: header.rows,
            cols: header.cols,
            fortran_order: header.fortran_order,
            data_offset: header.data_offset,
        };
        let mut npy = Npy {
            path,
            layout,
            rows: NpyRows::Columns {
                block: Vec::new(),
                start: 0,
                len: 0,
                file: None,
            },
            row: 0,
            block_bytes: FORTRAN_BLOCK_BYTES,
        };
        if let Some(len) = len {
            npy.check_length(len.saturating_sub(npy.layout.data_offset))?;
        }
        npy.rows = match (npy.layout.fortran_order, len) {
            (false, _) => NpyRows::Stream {
                reader,
                length_checked: len.is_some(),
            },
            (true, Some(_)) => NpyRows::Columns {
                block: Vec::new(),
                start: 0,
                len: 0,
                file: Some(reader.into_inner()),
            },
            (true, None) => npy.read_whole(reader)?,
        };
        Ok(npy)
    }

    /// Fails if `have` bytes of data are not the array the header promises.
    fn check_length(&self, have: u64) -> Result<(), Failure> {
        match self.layout.length_error(have) {
            None => Ok(()),
            Some((Some(row), reason)) => Err(Failure::input(format!("{} row {row}: {reason}", self.path.display()))),
            Some((None, reason)) => Err(Failure::input(format!("{}: {reason}", self.path.display()))),
        }
    }

    /// Reads a Fortran-order array whole from a pipe, as one block, and checks its length.
    fn read_whole(&self, mut reader: BufReader<File>) -> Result<NpyRows, Failure> {
        let want = self.layout.data_bytes();
        if want > FORTRAN_PIPE_LIMIT_BYTES {
            return Err(Failure::input(format!(
                "{}: the array is in Fortran order (column by column) and {want} bytes long: read from a pipe it \
                 is transposed in memory, up to {FORTRAN_PIPE_LIMIT_BYTES} bytes; import the file by its path \
                 (then it is read in blocks) or save it in C order (numpy.ascontiguousarray)",
                self.path.display()
            )));
        }
        let io = |e| Failure::io(format!("reading {}", self.path.display()), e);
        let mut block: Vec<f32> = Vec::new();
        // Reserved, not touched: a header that promises more than the pipe brings costs
        // address space, and memory only as the data arrives.
        block.try_reserve_exact((want / 4) as usize).map_err(|_| {
            Failure::store(format!(
                "cannot allocate {want} bytes to transpose the Fortran-order array of {}",
                self.path.display()
            ))
        })?;
        let mut chunk = vec![0u8; 1 << 20];
        let mut have = 0u64;
        while have < want {
            let take = (want - have).min(chunk.len() as u64) as usize;
            let n = read_full(&mut reader, &mut chunk[..take]).map_err(io)?;
            block.extend(floats(&chunk[..n]));
            have += n as u64;
            if n < take {
                break;
            }
        }
        let extra = std::io::copy(&mut reader, &mut std::io::sink()).map_err(io)?;
        self.check_length(have + extra)?;
        Ok(NpyRows::Columns {
            block,
            start: 0,
            len: self.layout.rows,
            file: None,
        })
    }
}

/// Reads and parses an .npy header from the start of `reader`, which is left at the data.
fn read_npy_header(path: &Path, reader: &mut BufReader<File>) -> Result<NpyHeader, Failure> {
    let fail = |reason: String| Failure::input(format!("{}: {reason}", path.display()));
    let io = |e| Failure::io(format!("reading the header of {}", path.display()), e);
    let mut head = vec![0u8; 12];
    let n = read_full(reader, &mut head).map_err(io)?;
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
    if header_len > NPY_HEADER_LIMIT_BYTES {
        return Err(fail(format!(
            "the .npy header says it is {header_len} bytes long: more than {NPY_HEADER_LIMIT_BYTES} is not a header"
        )));
    }
    // Read as it arrives: a header that lies about its length allocates no more than the file holds.
    let rest = header_len.saturating_sub(n) as u64;
    let got = reader.take(rest).read_to_end(&mut head).map_err(io)?;
    if (got as u64) < rest {
        return Err(fail(format!(
            "truncated .npy header: it says {header_len} bytes, the file ends after {}",
            head.len()
        )));
    }
    parse_npy_header(&head).map_err(fail)
}

impl Source for Npy {
    fn next_record(&mut self) -> Result<Option<InputRecord>, Failure> {
        if self.row == self.layout.rows {
            self.check_trailing_bytes()?;
            return Ok(None);
        }
        let vector = match &mut self.rows {
            NpyRows::Stream { .. } => self.stream_row()?,
            NpyRows::Columns { .. } => self.column_row()?,
        };
        let record = InputRecord {
            id: self.row.to_string(),
            vector,
            metadata: Vec::new(),
            location: format!("row {}", self.row),
        };
        self.row += 1;
        Ok(Some(record))
    }

    fn bytes_read(&self) -> u64 {
        self.layout.data_offset + self.row * self.layout.row_bytes()
    }

    fn location(&self) -> String {
        format!("row {}", self.row.saturating_sub(1))
    }
}

impl Npy {
    /// The next row of a C-order array; a short one is an error naming it.
    fn stream_row(&mut self) -> Result<Vec<f32>, Failure> {
        let NpyRows::Stream { reader, .. } = &mut self.rows else {
            unreachable!("called for C order only")
        };
        let mut body = vec![0u8; self.layout.row_bytes() as usize];
        let n = read_full(reader, &mut body)
            .map_err(|e| Failure::io(format!("reading {} at row {}", self.path.display(), self.row), e))?;
        if n < body.len() {
            self.check_length(self.row * self.layout.row_bytes() + n as u64)?;
        }
        Ok(floats(&body))
    }

    /// At the end of a C-order array read from a pipe: nothing may follow its last row.
    fn check_trailing_bytes(&mut self) -> Result<(), Failure> {
        let NpyRows::Stream { reader, length_checked } = &mut self.rows else {
            return Ok(());
        };
        if *length_checked {
            return Ok(());
        }
        let extra = std::io::copy(reader, &mut std::io::sink())
            .map_err(|e| Failure::io(format!("reading {} after the last row", self.path.display()), e))?;
        *length_checked = true;
        self.check_length(self.layout.data_bytes() + extra)
    }

    /// The next row of a Fortran-order array, gathered from its block (refilled as needed).
    fn column_row(&mut self) -> Result<Vec<f32>, Failure> {
        let NpyRows::Columns { start, len, .. } = &self.rows else {
            unreachable!("called for Fortran order only")
        };
        if !(*start..*start + *len).contains(&self.row) {
            self.refill_block()?;
        }
        let NpyRows::Columns { block, start, len, .. } = &self.rows else {
            unreachable!("still Fortran order")
        };
        let (at, len) = ((self.row - start) as usize, *len as usize);
        Ok((0..self.layout.cols as usize).map(|j| block[j * len + at]).collect())
    }

    /// Reads the block of rows from `self.row` on: one positioned read per column.
    fn refill_block(&mut self) -> Result<(), Failure> {
        let layout = &self.layout;
        let NpyRows::Columns {
            block,
            start,
            len,
            file,
        } = &mut self.rows
        else {
            unreachable!("called for Fortran order only")
        };
        let Some(file) = file else {
            unreachable!("an array read whole is one block that holds every row")
        };
        let rows = (self.block_bytes / layout.row_bytes()).clamp(1, layout.rows - self.row);
        let mut bytes = vec![0u8; rows as usize * 4];
        block.clear();
        for column in 0..layout.cols {
            let offset = layout.data_offset + (column * layout.rows + self.row) * 4;
            std::os::unix::fs::FileExt::read_exact_at(file, &mut bytes, offset).map_err(|e| {
                Failure::io(
                    format!("reading {} at row {} (column {column})", self.path.display(), self.row),
                    e,
                )
            })?;
            block.extend(floats(&bytes));
        }
        (*start, *len) = (self.row, rows);
        Ok(())
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
                fortran_order: false,
                data_offset: header.len() as u64
            })
        );
    }

    #[test]
    fn npy_headers_of_other_dtypes_and_shapes_are_refused() {
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
        assert!(
            matches!(
                &fortran,
                Ok(NpyHeader {
                    fortran_order: true,
                    rows: 2,
                    cols: 3,
                    ..
                })
            ),
            "Fortran order is read (and transposed): {fortran:?}"
        );
        let one_d = parse_npy_header(&make("{'descr': '<f4', 'fortran_order': False, 'shape': (6,), }"));
        assert!(matches!(&one_d, Err(e) if e.contains("2-D")), "{one_d:?}");
        let ok = parse_npy_header(&make("{\"shape\": (2L, 3L), 'fortran_order': False, 'descr': '<f4'}"));
        assert!(matches!(ok, Ok(NpyHeader { rows: 2, cols: 3, .. })), "{ok:?}");
    }

    /// An .npy file of `rows` in Fortran order (column by column), as NumPy saves `a.T`.
    fn fortran_npy(rows: &[Vec<f32>]) -> Vec<u8> {
        let cols = rows[0].len();
        let dict = format!(
            "{{'descr': '<f4', 'fortran_order': True, 'shape': ({}, {cols}), }}\n",
            rows.len()
        );
        let mut bytes = NPY_MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        bytes.extend_from_slice(dict.as_bytes());
        for column in 0..cols {
            for row in rows {
                bytes.extend_from_slice(&row[column].to_le_bytes());
            }
        }
        bytes
    }

    #[test]
    fn fortran_order_files_are_transposed_block_by_block() {
        let rows: Vec<Vec<f32>> = (0..7).map(|i| (0..3).map(|j| (i * 10 + j) as f32).collect()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.npy");
        std::fs::write(&path, fortran_npy(&rows)).unwrap();
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut npy = Npy::open(path, BufReader::new(file), Some(len), 3).unwrap();
        // Two rows a block: rows 0-1, 2-3, 4-5 and 6 are read in four blocks.
        npy.block_bytes = 2 * 3 * 4;
        for (i, row) in rows.iter().enumerate() {
            let record = npy.next_record().unwrap().expect("a row");
            assert_eq!((record.id, &record.vector), (i.to_string(), row), "row {i}");
        }
        assert!(npy.next_record().unwrap().is_none(), "seven rows");
    }
}
