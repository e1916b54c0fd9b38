//! The streaming parser of an export file: a serde visitor on a blocking thread that hands
//! the header, each table and each row to the importer over a bounded channel, so memory does
//! not grow with the file, and names the position of anything malformed.

use super::*;

/// What the parser thread hands to the inserter.
pub(super) enum Item {
    /// Sent when `tables` starts (the header fields must come before it).
    Header {
        format: Option<Value>,
        version: Option<Value>,
        schema_version: Option<Value>,
    },
    Table(String),
    Row(u64, Value),
    Meta(Value),
    End,
    Fail(TransferError),
}

/// Where the parser is, for error messages.
#[derive(Default)]
pub(super) struct Pos {
    pub(super) key: Option<String>,
    pub(super) table: Option<String>,
    pub(super) row: Option<u64>,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.key, &self.table, self.row) {
            (_, Some(t), Some(i)) => write!(f, "tables.{t}[{i}]"),
            (_, Some(t), None) => write!(f, "tables.{t}"),
            (Some(k), None, _) => f.write_str(k),
            (None, None, _) => f.write_str("(top level)"),
        }
    }
}

pub(super) struct Parser {
    tx: mpsc::Sender<Item>,
    pos: RefCell<Pos>,
    header: RefCell<[Option<Value>; 3]>,
    saw_tables: std::cell::Cell<bool>,
    /// A structured error raised inside the visitor (the serde error is a marker).
    failure: RefCell<Option<TransferError>>,
    source_name: String,
}

impl Parser {
    pub(super) fn send<E: serde::de::Error>(&self, item: Item) -> std::result::Result<(), E> {
        // A closed channel means the inserter already failed; stop quietly.
        self.tx
            .blocking_send(item)
            .map_err(|_| E::custom("import stopped"))
    }

    pub(super) fn fail<E: serde::de::Error>(&self, path: String, message: &str) -> E {
        *self.failure.borrow_mut() = Some(TransferError::invalid(&self.source_name, path, message));
        E::custom("invalid")
    }
}

pub(super) struct DocSeed<'p>(&'p Parser);

impl<'de> Visitor<'de> for DocSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an export object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        while let Some(key) = map.next_key::<String>()? {
            p.pos.borrow_mut().key = Some(key.clone());
            let slot = match key.as_str() {
                "format" => Some(0),
                "version" => Some(1),
                "schema_version" => Some(2),
                _ => None,
            };
            if let Some(i) = slot {
                let v: Value = map.next_value()?;
                p.header.borrow_mut()[i] = Some(v);
            } else if key == "meta" {
                let v: Value = map.next_value()?;
                p.send(Item::Meta(v))?;
            } else if key == "tables" {
                if p.saw_tables.replace(true) {
                    return Err(p.fail("tables".into(), "appears twice"));
                }
                let [format, version, schema_version] = p.header.borrow_mut().clone();
                p.send(Item::Header {
                    format,
                    version,
                    schema_version,
                })?;
                map.next_value_seed(TablesSeed(p))?;
            } else {
                return Err(p.fail(key, "unknown top-level field"));
            }
            p.pos.borrow_mut().key = None;
        }
        Ok(())
    }
}

pub(super) struct TablesSeed<'p>(&'p Parser);

impl<'de> DeserializeSeed<'de> for TablesSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TablesSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of tables")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        while let Some(name) = map.next_key::<String>()? {
            {
                let mut pos = p.pos.borrow_mut();
                pos.table = Some(name.clone());
                pos.row = None;
            }
            p.send(Item::Table(name))?;
            map.next_value_seed(RowsSeed(p))?;
        }
        let mut pos = p.pos.borrow_mut();
        pos.table = None;
        pos.row = None;
        Ok(())
    }
}

pub(super) struct RowsSeed<'p>(&'p Parser);

impl<'de> DeserializeSeed<'de> for RowsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> std::result::Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RowsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of rows")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        let p = self.0;
        let mut i = 0u64;
        loop {
            p.pos.borrow_mut().row = Some(i);
            let Some(v) = seq.next_element::<Value>()? else {
                break;
            };
            p.send(Item::Row(i, v))?;
            i += 1;
        }
        p.pos.borrow_mut().row = None;
        Ok(())
    }
}

/// Parses `file` on the current (blocking) thread, sending items to `tx`.
pub(super) fn parse(file: File, source_name: String, tx: mpsc::Sender<Item>) {
    let p = Parser {
        tx,
        pos: RefCell::default(),
        header: RefCell::default(),
        saw_tables: std::cell::Cell::new(false),
        failure: RefCell::default(),
        source_name,
    };
    let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, file));
    let result = de.deserialize_map(DocSeed(&p)).and_then(|()| de.end());
    let item = match result {
        Ok(()) => Item::End,
        Err(e) => {
            if let Some(f) = p.failure.borrow_mut().take() {
                Item::Fail(f)
            } else {
                let path = p.pos.borrow().to_string();
                let (line, col) = (e.line(), e.column());
                let message = match e.classify() {
                    serde_json::error::Category::Eof => {
                        format!("the file ends early (truncated?) at line {line} column {col}")
                    }
                    serde_json::error::Category::Syntax => {
                        // serde_json's syntax messages name the expected token, not content.
                        let m = e.to_string();
                        let m = m.split(" at line ").next().unwrap_or("syntax error");
                        format!("invalid JSON at line {line} column {col}: {m}")
                    }
                    // Type errors may quote the offending value: say where, not what.
                    serde_json::error::Category::Data => {
                        format!("unexpected kind of value at line {line} column {col}")
                    }
                    serde_json::error::Category::Io => format!("read error: {e}"),
                };
                Item::Fail(TransferError::invalid(&p.source_name, path, message))
            }
        }
    };
    let _ = p.tx.blocking_send(item);
}
