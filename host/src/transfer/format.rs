//! The file's cells and rows, both ways: a typed value as JSON (blobs as `{"$base64": …}`),
//! a row in column order, the layout of tables, and the running checksum (see the module
//! docs of [`super`] for the format).

use super::*;

/// One typed value as it appears in the file.
pub(super) struct CellJson<'a>(pub(super) &'a Cell);

impl Serialize for CellJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Cell::Null => s.serialize_unit(),
            Cell::Integer(i) => s.serialize_i64(*i),
            Cell::Real(f) => s.serialize_f64(*f),
            Cell::Text(t) => s.serialize_str(t),
            Cell::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(BLOB_KEY, &STANDARD.encode(b))?;
                m.end()
            }
        }
    }
}

/// Key of the one-entry object that encodes a BLOB.
pub const BLOB_KEY: &str = "$base64";

/// A row as an object with keys in `order` (indices into `names`/`cells`).
pub(super) struct RowJson<'a> {
    names: &'a [&'a str],
    order: &'a [usize],
    cells: &'a [Cell],
}

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.order.len()))?;
        for &i in self.order {
            m.serialize_entry(self.names[i], &CellJson(&self.cells[i]))?;
        }
        m.end()
    }
}

/// Column names of a table and the permutation that sorts them.
pub(super) struct Layout<'a> {
    names: Vec<&'a str>,
    sorted: Vec<usize>,
}

impl<'a> Layout<'a> {
    pub(super) fn of(t: &'a TableInfo) -> Self {
        let names: Vec<&str> = t.columns.iter().map(|c| c.name.as_str()).collect();
        let mut sorted: Vec<usize> = (0..names.len()).collect();
        sorted.sort_by_key(|&i| names[i]);
        Layout { names, sorted }
    }

    /// The canonical bytes of a row (see the module docs).
    pub(super) fn canonical(
        &self,
        cells: &[Cell],
        buf: &mut Vec<u8>,
    ) -> Result<(), serde_json::Error> {
        buf.clear();
        serde_json::to_writer(
            &mut *buf,
            &RowJson {
                names: &self.names,
                order: &self.sorted,
                cells,
            },
        )
    }
}

/// The running checksum (see the module docs).
pub(super) struct Checksum(Sha256);

impl Checksum {
    pub(super) fn new(schema_version: i64) -> Self {
        let mut h = Sha256::new();
        h.update(format!("{FORMAT}\n{VERSION}\n{schema_version}\n"));
        Checksum(h)
    }
    pub(super) fn table(&mut self, name: &str) {
        self.0.update(format!("table {name}\n"));
    }
    pub(super) fn row(&mut self, canonical: &[u8]) {
        self.0.update(canonical);
        self.0.update(b"\n");
    }
    pub(super) fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

pub(super) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_i64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Converts one JSON value of the file into a typed cell, or says what is wrong.
pub(super) fn cell_from_json(v: Value) -> std::result::Result<Cell, String> {
    Ok(match v {
        Value::Null => Cell::Null,
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Cell::Integer(i)
            } else if n.is_u64() {
                return Err("integer out of range (64-bit signed)".into());
            } else {
                Cell::Real(n.as_f64().ok_or("not a finite number")?)
            }
        }
        Value::String(s) => Cell::Text(s),
        Value::Object(mut m) if m.len() == 1 && m.contains_key(BLOB_KEY) => {
            match m.remove(BLOB_KEY) {
                Some(Value::String(b)) => Cell::Blob(
                    STANDARD
                        .decode(b.as_bytes())
                        .map_err(|_| format!("{BLOB_KEY} is not valid padded standard base64"))?,
                ),
                _ => return Err(format!("{BLOB_KEY} must be a string")),
            }
        }
        other => {
            return Err(format!(
                "{} is not a value this format uses",
                json_kind(&other)
            ));
        }
    })
}

pub(super) fn cell_kind(c: &Cell) -> &'static str {
    match c {
        Cell::Null => "null",
        Cell::Integer(_) => "an integer",
        Cell::Real(_) => "a real number",
        Cell::Text(_) => "a string",
        Cell::Blob(_) => "a blob",
    }
}

/// Builds a row (values in column order) from an object, checking column
/// names and value kinds against the schema. Errors are `(path suffix, message)`.
pub(super) fn row_from_object(
    t: &TableInfo,
    v: Value,
) -> std::result::Result<Vec<Cell>, (String, String)> {
    let Value::Object(obj) = v else {
        return Err((
            String::new(),
            format!("expected a row object, found {}", json_kind(&v)),
        ));
    };
    let mut cells: Vec<Option<Cell>> = vec![None; t.columns.len()];
    for (k, val) in obj {
        let Some(i) = t.columns.iter().position(|c| c.name == k) else {
            return Err((
                format!(".{k}"),
                format!("unknown column (table {} has no such column)", t.name),
            ));
        };
        let col = &t.columns[i];
        let cell = cell_from_json(val).map_err(|m| (format!(".{k}"), m))?;
        if !col.affinity.accepts(&cell) {
            return Err((
                format!(".{k}"),
                format!(
                    "expected a value for a {} column, found {}",
                    if col.decl_type.is_empty() {
                        "untyped"
                    } else {
                        &col.decl_type
                    },
                    cell_kind(&cell)
                ),
            ));
        }
        cells[i] = Some(cell);
    }
    cells
        .into_iter()
        .zip(&t.columns)
        .map(|(c, col)| c.ok_or_else(|| (format!(".{}", col.name), "missing column".to_string())))
        .collect()
}
