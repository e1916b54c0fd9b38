//! Reads the schema of a migrated SQLite or PostgreSQL database into one engine-neutral model,
//! and lists where two models differ: the tests prove with it that `migrations/sqlite` and
//! `migrations/postgres` define the same tables, columns, keys, constraints and indexes.
//!
//! What the model normalizes, because the engines spell the same thing differently:
//! - types: SQLite's INTEGER and BIGINT and PostgreSQL's `bigint` are `integer`; TEXT/`text`;
//!   BLOB/`bytea` are `blob`; REAL/`double precision` are `real`. Any other PostgreSQL type
//!   (a 32-bit `integer`, say) stays apart, so it never matches.
//! - NOT NULL: a primary-key column counts as NOT NULL (PostgreSQL makes it so; SQLite's
//!   pragma reports only what was declared).
//! - defaults and CHECK expressions: casts (`'{}'::text`) and grouping parentheses are dropped,
//!   `x = ANY (ARRAY[...])` (PostgreSQL's rewrite of `x IN (...)`) reads as `x in (...)`, and
//!   the literals of every `in` list are sorted.
//! - UNIQUE constraints and unique indexes are column lists (SQLite names them itself); other
//!   indexes keep their names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use sqlx::{AssertSqlSafe, PgPool, SqlitePool};

/// Every table but the migrator's own, by name.
pub type Schema = BTreeMap<String, Table>;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<Column>,
    pub primary_key: Vec<String>,
    /// UNIQUE constraints and unique indexes (the primary key's excluded).
    pub unique: BTreeSet<Vec<String>>,
    pub foreign_keys: BTreeSet<ForeignKey>,
    /// Non-unique indexes: name → columns.
    pub indexes: BTreeMap<String, Vec<String>>,
    pub checks: BTreeSet<Check>,
    /// Rows the migrations leave in the table.
    pub rows: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ColumnType {
    Integer,
    Text,
    Blob,
    Real,
    /// As the engine names it, prefixed with the engine.
    Other(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub not_null: bool,
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub columns: Vec<String>,
    pub table: String,
    pub references: Vec<String>,
    pub on_delete: String,
    pub on_update: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Check {
    /// The table's columns the expression mentions.
    pub columns: BTreeSet<String>,
    /// The normalized expression.
    pub expr: String,
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Integer => f.write_str("integer"),
            Self::Text => f.write_str("text"),
            Self::Blob => f.write_str("blob"),
            Self::Real => f.write_str("real"),
            Self::Other(t) => f.write_str(t),
        }
    }
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.ty)?;
        if self.not_null {
            f.write_str(" NOT NULL")?;
        }
        if let Some(d) = &self.default {
            write!(f, " DEFAULT {d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ForeignKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} {} ON DELETE {} ON UPDATE {}",
            list(&self.columns),
            self.table,
            list(&self.references),
            self.on_delete,
            self.on_update
        )
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns: Vec<&str> = self.columns.iter().map(String::as_str).collect();
        write!(f, "CHECK ({}) on [{}]", self.expr, columns.join(", "))
    }
}

fn list(columns: &[String]) -> String {
    format!("({})", columns.join(", "))
}

/// Every difference between two models, one line each, naming which side has what; empty when
/// they are equal.
pub fn differences(
    left_name: &str,
    left: &Schema,
    right_name: &str,
    right: &Schema,
) -> Vec<String> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = left.keys().chain(right.keys()).collect();
    for name in names {
        let (l, r) = match (left.get(name), right.get(name)) {
            (Some(l), Some(r)) => (l, r),
            (Some(_), None) => {
                out.push(format!("table {name}: only in {left_name}"));
                continue;
            }
            (None, _) => {
                out.push(format!("table {name}: only in {right_name}"));
                continue;
            }
        };
        let mut say = |what: String| out.push(format!("table {name}: {what}"));
        for i in 0..l.columns.len().max(r.columns.len()) {
            let (lc, rc) = (l.columns.get(i), r.columns.get(i));
            if lc != rc {
                let show = |c: Option<&Column>| c.map_or("(none)".to_owned(), Column::to_string);
                say(format!(
                    "column {}: {left_name} `{}`, {right_name} `{}`",
                    i + 1,
                    show(lc),
                    show(rc)
                ));
            }
        }
        if l.primary_key != r.primary_key {
            say(format!(
                "primary key: {left_name} {}, {right_name} {}",
                list(&l.primary_key),
                list(&r.primary_key)
            ));
        }
        let sides = (left_name, right_name);
        set_differences(&mut say, "unique", sides, &l.unique, &r.unique, |u| list(u));
        set_differences(
            &mut say,
            "foreign key",
            sides,
            &l.foreign_keys,
            &r.foreign_keys,
            ToString::to_string,
        );
        let index = |(n, c): (&String, &Vec<String>)| format!("{n} {}", list(c));
        let (li, ri): (BTreeSet<_>, BTreeSet<_>) = (
            l.indexes.iter().map(index).collect(),
            r.indexes.iter().map(index).collect(),
        );
        set_differences(&mut say, "index", sides, &li, &ri, String::clone);
        set_differences(
            &mut say,
            "check",
            sides,
            &l.checks,
            &r.checks,
            ToString::to_string,
        );
        if l.rows != r.rows {
            say(format!(
                "rows after migrating: {left_name} {}, {right_name} {}",
                l.rows, r.rows
            ));
        }
    }
    out
}

fn set_differences<T: Ord>(
    say: &mut impl FnMut(String),
    what: &str,
    (left_name, right_name): (&str, &str),
    left: &BTreeSet<T>,
    right: &BTreeSet<T>,
    show: impl Fn(&T) -> String,
) {
    for x in left.difference(right) {
        say(format!("{what} only in {left_name}: {}", show(x)));
    }
    for x in right.difference(left) {
        say(format!("{what} only in {right_name}: {}", show(x)));
    }
}

/// The schema of a SQLite database: `pragma_table_info`, `pragma_index_list`,
/// `pragma_index_info`, `pragma_foreign_key_list`, and the CHECKs parsed from the `CREATE TABLE`
/// text in `sqlite_master` (which SQLite keeps up to date through `ALTER TABLE`).
pub async fn sqlite(pool: &SqlitePool) -> sqlx::Result<Schema> {
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await?;
    let mut schema = Schema::new();
    for (name, sql) in tables {
        let mut table = Table::default();
        let columns: Vec<(String, String, i64, Option<String>, i64)> = sqlx::query_as(
            "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?) ORDER BY cid",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let mut pk = Vec::new();
        for (column, ty, not_null, default, pk_pos) in columns {
            if pk_pos > 0 {
                pk.push((pk_pos, column.clone()));
            }
            table.columns.push(Column {
                ty: match ty.to_ascii_uppercase().as_str() {
                    "INTEGER" | "BIGINT" => ColumnType::Integer,
                    "TEXT" => ColumnType::Text,
                    "BLOB" => ColumnType::Blob,
                    "REAL" => ColumnType::Real,
                    other => ColumnType::Other(format!("sqlite {other}")),
                },
                not_null: not_null != 0 || pk_pos > 0,
                default: default.as_deref().map(normalize_expression),
                name: column,
            });
        }
        pk.sort();
        table.primary_key = pk.into_iter().map(|(_, c)| c).collect();

        let indexes: Vec<(String, i64, String)> =
            sqlx::query_as("SELECT name, \"unique\", origin FROM pragma_index_list(?)")
                .bind(&name)
                .fetch_all(pool)
                .await?;
        for (index, unique, origin) in indexes {
            if origin == "pk" {
                continue;
            }
            let columns: Vec<(String,)> =
                sqlx::query_as("SELECT name FROM pragma_index_info(?) ORDER BY seqno")
                    .bind(&index)
                    .fetch_all(pool)
                    .await?;
            let columns = columns.into_iter().map(|(c,)| c).collect();
            if unique != 0 {
                table.unique.insert(columns);
            } else {
                table.indexes.insert(index, columns);
            }
        }

        let keys: Vec<(i64, String, String, Option<String>, String, String)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\", \"to\", on_delete, on_update \
             FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let mut grouped: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, target, from, to, on_delete, on_update) in keys {
            let key = grouped.entry(id).or_insert_with(|| ForeignKey {
                columns: Vec::new(),
                table: target,
                references: Vec::new(),
                on_delete,
                on_update,
            });
            key.columns.push(from);
            // No column named: the referenced table's primary key (filled in below).
            key.references.extend(to);
        }
        table.foreign_keys = grouped.into_values().collect();

        let names: BTreeSet<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        table.checks = check_bodies(&tokenize(&sql))
            .into_iter()
            .map(|body| check(&body, &names))
            .collect();
        table.rows = count_rows_sqlite(pool, &name).await?;
        schema.insert(name, table);
    }
    let primary_keys: BTreeMap<String, Vec<String>> = schema
        .iter()
        .map(|(n, t)| (n.clone(), t.primary_key.clone()))
        .collect();
    for table in schema.values_mut() {
        table.foreign_keys = std::mem::take(&mut table.foreign_keys)
            .into_iter()
            .map(|mut k| {
                if k.references.is_empty() {
                    k.references = primary_keys.get(&k.table).cloned().unwrap_or_default();
                }
                k
            })
            .collect();
    }
    Ok(schema)
}

async fn count_rows_sqlite(pool: &SqlitePool, table: &str) -> sqlx::Result<i64> {
    let (n,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM \"{}\"",
        table.replace('"', "\"\"")
    )))
    .fetch_one(pool)
    .await?;
    Ok(n)
}

/// The schema of the current schema (search path) of a PostgreSQL database, from `pg_catalog`:
/// `pg_attribute` and `pg_attrdef` for columns, `pg_index` for indexes, `pg_constraint` (with
/// `pg_get_constraintdef`) for keys and CHECKs.
pub async fn postgres(pool: &PgPool) -> sqlx::Result<Schema> {
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
         AND c.relname <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await?;
    let mut schema = Schema::new();
    for (name,) in tables {
        let mut table = Table::default();
        let columns: Vec<(String, String, bool, Option<String>)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
                    pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a \
             LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = quote_ident($1)::regclass AND a.attnum > 0 AND NOT a.attisdropped \
             ORDER BY a.attnum",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let primary_key: Vec<(String,)> = sqlx::query_as(
            "SELECT a.attname::text FROM pg_constraint c \
             CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum \
             WHERE c.conrelid = quote_ident($1)::regclass AND c.contype = 'p' \
             ORDER BY k.ord",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        table.primary_key = primary_key.into_iter().map(|(c,)| c).collect();
        for (column, ty, not_null, default) in columns {
            table.columns.push(Column {
                ty: match ty.as_str() {
                    "bigint" => ColumnType::Integer,
                    "text" => ColumnType::Text,
                    "bytea" => ColumnType::Blob,
                    "double precision" => ColumnType::Real,
                    other => ColumnType::Other(format!("postgres {other}")),
                },
                not_null: not_null || table.primary_key.contains(&column),
                default: default.as_deref().map(normalize_expression),
                name: column,
            });
        }

        let indexes: Vec<(String, bool, bool, Vec<String>)> = sqlx::query_as(
            "SELECT i.relname::text, x.indisunique, x.indisprimary, \
                    array_agg(a.attname::text ORDER BY k.ord) \
             FROM pg_index x \
             JOIN pg_class i ON i.oid = x.indexrelid \
             CROSS JOIN LATERAL unnest(x.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum \
             WHERE x.indrelid = quote_ident($1)::regclass \
             GROUP BY i.relname, x.indisunique, x.indisprimary",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        for (index, unique, primary, columns) in indexes {
            if primary {
                continue;
            }
            if unique {
                table.unique.insert(columns);
            } else {
                table.indexes.insert(index, columns);
            }
        }

        let keys: Vec<PgForeignKeyRow> = sqlx::query_as(
            "SELECT r.relname::text, c.confdeltype::text, c.confupdtype::text, \
                    array_agg(a.attname::text ORDER BY k.ord), \
                    array_agg(f.attname::text ORDER BY k.ord) \
             FROM pg_constraint c \
             JOIN pg_class r ON r.oid = c.confrelid \
             CROSS JOIN LATERAL unnest(c.conkey, c.confkey) WITH ORDINALITY AS k(src, dst, ord) \
             JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.src \
             JOIN pg_attribute f ON f.attrelid = c.confrelid AND f.attnum = k.dst \
             WHERE c.conrelid = quote_ident($1)::regclass AND c.contype = 'f' \
             GROUP BY c.conname, r.relname, c.confdeltype, c.confupdtype",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        table.foreign_keys = keys
            .into_iter()
            .map(
                |(target, on_delete, on_update, columns, references)| ForeignKey {
                    columns,
                    table: target,
                    references,
                    on_delete: referential_action(&on_delete),
                    on_update: referential_action(&on_update),
                },
            )
            .collect();

        let checks: Vec<(String,)> = sqlx::query_as(
            "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c \
             WHERE c.conrelid = quote_ident($1)::regclass AND c.contype = 'c'",
        )
        .bind(&name)
        .fetch_all(pool)
        .await?;
        let names: BTreeSet<&str> = table.columns.iter().map(|c| c.name.as_str()).collect();
        table.checks = checks
            .iter()
            .flat_map(|(definition,)| check_bodies(&tokenize(definition)))
            .map(|body| check(&body, &names))
            .collect();

        let (rows,): (i64,) = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM \"{}\"",
            name.replace('"', "\"\"")
        )))
        .fetch_one(pool)
        .await?;
        table.rows = rows;
        schema.insert(name, table);
    }
    Ok(schema)
}

/// Referenced table, `confdeltype`, `confupdtype`, columns, referenced columns.
type PgForeignKeyRow = (String, String, String, Vec<String>, Vec<String>);

/// `pg_constraint.confdeltype` / `confupdtype`, as SQLite's pragma spells the action.
fn referential_action(code: &str) -> String {
    match code {
        "a" => "NO ACTION",
        "r" => "RESTRICT",
        "c" => "CASCADE",
        "n" => "SET NULL",
        "d" => "SET DEFAULT",
        other => other,
    }
    .to_owned()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    /// An identifier or keyword, lowercased (a quoted identifier as written).
    Word(String),
    /// A string literal's value.
    Str(String),
    Number(String),
    Punct(String),
    /// A normalized `in` list: its literals, sorted.
    InList(Vec<String>),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Word(w) | Self::Number(w) | Self::Punct(w) => f.write_str(w),
            Self::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Self::InList(items) => write!(f, "in ({})", items.join(", ")),
        }
    }
}

/// SQL text as tokens; comments and whitespace dropped.
fn tokenize(sql: &str) -> Vec<Token> {
    let chars: Vec<char> = sql.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let take_while = |mut i: usize, f: &dyn Fn(char) -> bool| {
        while i < chars.len() && f(chars[i]) {
            i += 1;
        }
        i
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            i = take_while(i, &|c| c != '\n');
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let mut value = String::new();
            i += 1;
            while i < chars.len() {
                if chars[i] == c {
                    if chars.get(i + 1) == Some(&c) {
                        value.push(c);
                        i += 2;
                        continue;
                    }
                    break;
                }
                value.push(chars[i]);
                i += 1;
            }
            i += 1;
            tokens.push(if c == '\'' {
                Token::Str(value)
            } else {
                Token::Word(value)
            });
        } else if c.is_ascii_digit() {
            let end = take_while(i, &|c| c.is_ascii_digit() || c == '.');
            tokens.push(Token::Number(chars[i..end].iter().collect()));
            i = end;
        } else if c.is_alphabetic() || c == '_' {
            let end = take_while(i, &|c| c.is_alphanumeric() || c == '_' || c == '$');
            let word: String = chars[i..end].iter().collect();
            tokens.push(Token::Word(word.to_lowercase()));
            i = end;
        } else {
            let pair: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            if ["<=", ">=", "<>", "!=", "==", "||", "::"].contains(&pair.as_str()) {
                tokens.push(Token::Punct(pair));
                i += 2;
            } else {
                tokens.push(Token::Punct(c.to_string()));
                i += 1;
            }
        }
    }
    tokens
}

fn is_word(t: Option<&Token>, w: &str) -> bool {
    matches!(t, Some(Token::Word(x)) if x == w)
}

fn is_punct(t: Option<&Token>, p: &str) -> bool {
    matches!(t, Some(Token::Punct(x)) if x == p)
}

/// The expression inside every `CHECK ( ... )` of a statement (or of a constraint definition).
fn check_bodies(tokens: &[Token]) -> Vec<Vec<Token>> {
    let mut bodies = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_word(tokens.get(i), "check") && is_punct(tokens.get(i + 1), "(") {
            let start = i + 2;
            let mut depth = 1;
            let mut j = start;
            while j < tokens.len() {
                if is_punct(tokens.get(j), "(") {
                    depth += 1;
                } else if is_punct(tokens.get(j), ")") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                j += 1;
            }
            bodies.push(tokens[start..j.min(tokens.len())].to_vec());
            i = j;
        }
        i += 1;
    }
    bodies
}

/// The literals of a list `[ ( | [ ] lit , lit ... [ ) | ] ]` starting at `i` (at its opening
/// bracket), and the index after its closing one.
fn literal_list(
    tokens: &[Token],
    i: usize,
    open: &str,
    close: &str,
) -> Option<(Vec<String>, usize)> {
    if !is_punct(tokens.get(i), open) {
        return None;
    }
    let mut items = Vec::new();
    let mut j = i + 1;
    loop {
        match tokens.get(j) {
            Some(t @ (Token::Str(_) | Token::Number(_))) => items.push(t.to_string()),
            _ => return None,
        }
        j += 1;
        if is_punct(tokens.get(j), ",") {
            j += 1;
        } else if is_punct(tokens.get(j), close) {
            items.sort();
            return Some((items, j + 1));
        } else {
            return None;
        }
    }
}

/// One engine-neutral spelling of an expression: casts and grouping parentheses dropped, `IN`
/// lists (and PostgreSQL's `= ANY (ARRAY[...])`, `<> ALL (ARRAY[...])`) as sorted literal sets.
fn normalize(tokens: &[Token]) -> Vec<Token> {
    // Casts out first: `'x'::text` and `ARRAY['a'::text]` alike.
    let mut uncast = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        if is_punct(tokens.get(i), "::") {
            i += 2;
            while is_word(tokens.get(i), "precision") || is_word(tokens.get(i), "varying") {
                i += 1;
            }
            if is_punct(tokens.get(i), "[") && is_punct(tokens.get(i + 1), "]") {
                i += 2;
            }
            continue;
        }
        uncast.push(tokens[i].clone());
        i += 1;
    }
    let tokens = uncast;
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens.get(i);
        // x = ANY (ARRAY[...]) / x <> ALL (ARRAY[...])
        let array_op = if is_punct(t, "=") && is_word(tokens.get(i + 1), "any") {
            Some(false)
        } else if is_punct(t, "<>") && is_word(tokens.get(i + 1), "all") {
            Some(true)
        } else {
            None
        };
        if let Some(negated) = array_op
            && is_punct(tokens.get(i + 2), "(")
            && is_word(tokens.get(i + 3), "array")
            && let Some((items, after)) = literal_list(&tokens, i + 4, "[", "]")
            && is_punct(tokens.get(after), ")")
        {
            if negated {
                out.push(Token::Word("not".to_owned()));
            }
            out.push(Token::InList(items));
            i = after + 1;
            continue;
        }
        if is_word(t, "in")
            && let Some((items, after)) = literal_list(&tokens, i + 1, "(", ")")
        {
            out.push(Token::InList(items));
            i = after;
            continue;
        }
        match t {
            Some(Token::Punct(p)) if p == "(" || p == ")" => {}
            Some(Token::Punct(p)) if p == "==" => out.push(Token::Punct("=".to_owned())),
            Some(Token::Punct(p)) if p == "!=" => out.push(Token::Punct("<>".to_owned())),
            Some(other) => out.push(other.clone()),
            None => {}
        }
        i += 1;
    }
    out
}

fn render(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn normalize_expression(sql: &str) -> String {
    render(&normalize(&tokenize(sql)))
}

fn check(body: &[Token], columns: &BTreeSet<&str>) -> Check {
    let normalized = normalize(body);
    Check {
        columns: normalized
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) if columns.contains(w.as_str()) => Some(w.clone()),
                _ => None,
            })
            .collect(),
        expr: render(&normalized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks(sql: &str, columns: &[&str]) -> Vec<Check> {
        let columns = columns.iter().copied().collect();
        check_bodies(&tokenize(sql))
            .iter()
            .map(|b| check(b, &columns))
            .collect()
    }

    #[test]
    fn both_spellings_of_a_check_normalize_alike() {
        let sqlite = checks(
            "CREATE TABLE t (\n  -- a comment (with a CHECK (x) in it)\n  role TEXT NOT NULL \
             CHECK (role IN ('operator', 'agent', 'viewer')),\n  n BIGINT CHECK (n > 0 AND n <= 65536))",
            &["role", "n"],
        );
        let postgres: Vec<Check> = [
            "CHECK ((role = ANY (ARRAY['operator'::text, 'agent'::text, 'viewer'::text])))",
            "CHECK (((n > 0) AND (n <= 65536)))",
        ]
        .iter()
        .flat_map(|d| checks(d, &["role", "n"]))
        .collect();
        assert_eq!(sqlite, postgres);
        assert_eq!(sqlite[0].expr, "role in ('agent', 'operator', 'viewer')");
        assert_eq!(sqlite[0].columns, BTreeSet::from(["role".to_owned()]));
        assert_eq!(sqlite[1].expr, "n > 0 and n <= 65536");
        assert_eq!(
            checks("CHECK ((k <> ALL (ARRAY['a'::text])))", &["k"]),
            checks("CREATE TABLE t (k TEXT CHECK (k NOT IN ('a')))", &["k"])
        );
    }

    #[test]
    fn defaults_lose_their_casts() {
        assert_eq!(normalize_expression("'{}'::text"), "'{}'");
        assert_eq!(normalize_expression("'{}'"), "'{}'");
        assert_eq!(normalize_expression("''::text"), "''");
        assert_eq!(normalize_expression("0"), "0");
        assert_eq!(
            normalize_expression("'it''s'::character varying"),
            "'it''s'"
        );
    }
}
