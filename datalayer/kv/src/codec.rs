//! The KV key layout and its order-preserving codec.
//!
//! Every key part is encoded with the `memcomparable` crate (MySQL/MyRocks memcomparable
//! format), so byte order equals value order and encodings are self-delimiting. A column
//! value is one tag byte (`0x00` NULL, `0x01` present: NULL sorts first) followed by the
//! memcomparable bytes of the value in the column's type (timestamps as `i64`
//! microseconds, dates as `i32` days, UUIDs as their 16 bytes, decimals in
//! [`datalayer_core::Numeric::encode_sortable`]'s form).
//!
//! ```text
//! 'c' <table>                          → catalog: the TableSchema (postcard)
//! 'r' <table> <pk...>                  → the row (postcard of Vec<Value>)
//! 'i' <table> <index> <cols...> <pk...> → <pk...>   non-unique index entry
//! 'u' <table> <index> <cols...>        → <pk...>   unique index entry (if any indexed
//!                                                  column is NULL, <pk...> is appended
//!                                                  to the key: NULLs never collide)
//! 'f' <table>                          → (empty)   change capture is on for the table
//! 's' <table>                          → u64 BE    the table's last change position
//! 'h' <table> <position u64 BE>        → kind byte + the row image (postcard)
//! ```
//! Change kinds: 0 insert, 1 update, 2 delete; insert and update carry the new image,
//! delete the old one. See `datalayer/kv/FORMAT.md` for the layout byte by byte.
//! `<table>` and `<index>` are memcomparable strings; `<pk...>` is the encoded primary-key
//! values ("key suffix"), also stored as the index entry's value so a row is found
//! without decoding keys.

use datalayer_core::ChangeKind;
use datalayer_core::error::{Error, Result};
use datalayer_core::schema::{IndexDef, TableSchema};
use datalayer_core::value::{ColumnType, Row, Value};
use serde::Serialize;

/// Catalog namespace.
pub const CATALOG: u8 = b'c';
/// Row namespace.
pub const ROW: u8 = b'r';
/// Non-unique index namespace.
pub const INDEX: u8 = b'i';
/// Unique index namespace.
pub const UNIQUE: u8 = b'u';
/// Change-capture flag namespace: `'f' <table>` exists while capture is on.
pub const CAPTURE: u8 = b'f';
/// Open-epoch key: the single key `'e'` counts the opens of the store (u64 BE); see
/// `FORMAT.md`, "Positions survive lost commits".
pub const EPOCH: u8 = b'e';
/// Bits of a change position below the open epoch: in epoch `E`, positions are at
/// least `E << EPOCH_SHIFT`.
pub const EPOCH_SHIFT: u32 = 40;
/// Schema-change progress namespace: `'m' <table>` exists while a row rewrite of
/// the table is cut short (the target schema and the last row key rewritten; see
/// `datalayer_kv::alter`).
pub const MIGRATING: u8 = b'm';
/// Change-sequence namespace: `'s' <table>` holds the table's last change position.
pub const CHANGE_SEQ: u8 = b's';
/// Change-record namespace: `'h' <table> <position u64 big-endian>`.
pub const CHANGE: u8 = b'h';

/// The key of the change record of `table` at `position`: `'h' <table>` then the
/// position as 8 big-endian bytes, so records sort by position.
pub fn change_key(table: &str, position: u64) -> Vec<u8> {
    change_key_at(&table_prefix(CHANGE, table), position)
}

/// [`change_key`] from the table's record prefix `'h' <table>` (encoded once).
pub fn change_key_at(prefix: &[u8], position: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(prefix.len() + 8);
    k.extend_from_slice(prefix);
    k.extend_from_slice(&position.to_be_bytes());
    k
}

/// Encodes a change record: one kind byte (0 insert, 1 update, 2 delete), then the row
/// image already encoded by [`encode_row`] (the row is encoded once for both).
pub fn encode_change(kind: ChangeKind, image: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + image.len());
    v.push(match kind {
        ChangeKind::Insert => 0u8,
        ChangeKind::Update => 1,
        ChangeKind::Delete => 2,
    });
    v.extend_from_slice(image);
    v
}

/// Decodes a change record of `table` ([`encode_change`]).
///
/// # Errors
/// `Corrupted` for an unknown kind byte or an undecodable image.
pub fn decode_change(table: &TableSchema, bytes: &[u8]) -> Result<(ChangeKind, Row)> {
    let kind = match bytes.first() {
        Some(0) => ChangeKind::Insert,
        Some(1) => ChangeKind::Update,
        Some(2) => ChangeKind::Delete,
        other => {
            return Err(Error::corrupted(format!(
                "table {}: change record with kind byte {other:?}",
                table.name
            )));
        }
    };
    Ok((kind, decode_row(table, &bytes[1..])?))
}

fn mc<T: Serialize + ?Sized>(buf: &mut Vec<u8>, v: &T) {
    let mut s = memcomparable::Serializer::new(buf);
    v.serialize(&mut s)
        .expect("memcomparable encodes primitives");
}

/// Appends one column value.
pub fn encode_value(buf: &mut Vec<u8>, v: &Value) {
    if v.is_null() {
        buf.push(0);
        return;
    }
    buf.push(1);
    match v {
        Value::Null => unreachable!(),
        Value::Bool(x) => mc(buf, x),
        Value::I16(x) => mc(buf, x),
        Value::I32(x) => mc(buf, x),
        Value::I64(x) => mc(buf, x),
        Value::F32(x) => mc(buf, x),
        Value::F64(x) => mc(buf, x),
        Value::String(x) => mc(buf, x.as_str()),
        Value::Bytes(x) => mc(buf, &serde_bytes(x)),
        // Byte order is UUID order (RFC 9562 §6.11: compare as unsigned bytes).
        Value::Uuid(x) => buf.extend_from_slice(x),
        Value::Timestamp(x) => mc(buf, x),
        Value::Date(x) => mc(buf, x),
        Value::Decimal(x) => x.encode_sortable(buf),
        // Never in a key (`TableSchema::validate`); text, so the encoding is total.
        Value::Json(x) => mc(buf, x.as_str()),
    }
}

struct SerdeBytes<'a>(&'a [u8]);
impl Serialize for SerdeBytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}
fn serde_bytes(b: &[u8]) -> SerdeBytes<'_> {
    SerdeBytes(b)
}

/// Appends several column values.
pub fn encode_values<'a>(buf: &mut Vec<u8>, vs: impl IntoIterator<Item = &'a Value>) {
    for v in vs {
        encode_value(buf, v);
    }
}

/// `ns <table>`.
pub fn table_prefix(ns: u8, table: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(2 + table.len() * 9 / 8 + 9);
    b.push(ns);
    mc(&mut b, table);
    b
}

/// The catalog key of a table.
pub fn catalog_key(table: &str) -> Vec<u8> {
    table_prefix(CATALOG, table)
}

/// `'r' <table>`: the prefix of every row key of the table.
pub fn row_prefix(table: &TableSchema) -> Vec<u8> {
    table_prefix(ROW, &table.name)
}

/// The encoded primary key of `row` (the key suffix).
pub fn pk_suffix(table: &TableSchema, row: &Row) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    encode_values(&mut b, table.primary_key.iter().map(|&i| &row[i]));
    b
}

/// `'i'|'u' <table> <index>`: the prefix of every entry of the index.
pub fn index_prefix(table: &TableSchema, ix: &IndexDef) -> Vec<u8> {
    let mut b = table_prefix(if ix.unique { UNIQUE } else { INDEX }, &table.name);
    mc(&mut b, ix.name.as_str());
    b
}

/// Where a non-unique secondary index entry keeps its value inside its key: the
/// entry `'i' <table> <index> <cols...> <pk...> → <pk...>` ends with its own value, so
/// a store can find the row an entry points at from the key alone (one round trip
/// fewer on a server store, [`crate::KvTxn::scan_with_targets`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryLayout {
    /// Length of `'i' <table> <index>` in bytes.
    prefix_len: usize,
    /// The indexed columns' types, in key order.
    columns: Vec<ColumnType>,
}

impl EntryLayout {
    /// The layout of index `ix` of `table`; `None` for a unique index (its key holds
    /// the primary key only when an indexed column is NULL).
    pub fn of(table: &TableSchema, ix: &IndexDef) -> Option<Self> {
        if ix.unique {
            return None;
        }
        Some(EntryLayout {
            prefix_len: index_prefix(table, ix).len(),
            columns: ix.columns.iter().map(|&c| table.columns[c].ty).collect(),
        })
    }

    /// The entry's value (the encoded primary key) as the tail of `key`: the bytes
    /// after the index prefix and one encoded value per indexed column (tag byte, then
    /// the memcomparable encoding of the column's type). `None` when `key` is not an
    /// entry of this shape (too short, or an unknown tag or group marker).
    pub fn value_of<'k>(&self, key: &'k [u8]) -> Option<&'k [u8]> {
        let mut pos = self.prefix_len;
        for ty in &self.columns {
            match *key.get(pos)? {
                0 => pos += 1,
                1 => pos = skip_encoded(key, pos + 1, *ty)?,
                _ => return None,
            }
        }
        key.get(pos..)
    }
}

/// The end of the memcomparable encoding of one `ty` value starting at `pos`: fixed
/// widths for booleans, integers, floats, timestamps, dates and UUIDs; a decimal's
/// own terminated encoding ([`datalayer_core::Numeric::encode_sortable`]); for text
/// and bytes a flag byte (`0` empty,
/// `1` not), then groups of 8 bytes each followed by a marker (`9`: more groups follow,
/// `1..=8`: the group's used bytes, last group).
fn skip_encoded(key: &[u8], pos: usize, ty: ColumnType) -> Option<usize> {
    let fixed = |n: usize| (pos + n <= key.len()).then_some(pos + n);
    match ty {
        ColumnType::Bool => fixed(1),
        ColumnType::I16 => fixed(2),
        ColumnType::I32 | ColumnType::F32 | ColumnType::Date => fixed(4),
        ColumnType::I64 | ColumnType::F64 | ColumnType::Timestamp => fixed(8),
        ColumnType::Uuid => fixed(16),
        ColumnType::Decimal => {
            let (_, n) = datalayer_core::Numeric::decode_sortable(key.get(pos..)?).ok()?;
            Some(pos + n)
        }
        ColumnType::String | ColumnType::Bytes | ColumnType::Json => {
            let mut p = pos;
            match *key.get(p)? {
                0 => return Some(p + 1),
                1 => p += 1,
                _ => return None,
            }
            loop {
                match *key.get(p + 8)? {
                    9 => p += 9,
                    1..=8 => return Some(p + 9),
                    _ => return None,
                }
            }
        }
    }
}

/// The key prefixes of one table, computed once per operation rather than per row.
#[derive(Clone, Debug)]
pub struct TableKeys {
    /// `'r' <table>`.
    pub row: Vec<u8>,
    /// `'i'|'u' <table> <index>`, one per index in schema order.
    pub indexes: Vec<Vec<u8>>,
}

impl TableKeys {
    /// The prefixes of `table`.
    pub fn new(table: &TableSchema) -> Self {
        TableKeys {
            row: row_prefix(table),
            indexes: table
                .indexes
                .iter()
                .map(|ix| index_prefix(table, ix))
                .collect(),
        }
    }
    /// The row key of `row` (`'r' <table> <pk...>`); the key suffix starts at `self.row.len()`.
    pub fn row_key(&self, table: &TableSchema, row: &Row) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.row.len() + 16);
        k.extend_from_slice(&self.row);
        encode_values(&mut k, table.primary_key.iter().map(|&i| &row[i]));
        k
    }
}

/// The full key of `row`'s entry in index `ix` (see the module docs).
pub fn index_key(
    prefix: &[u8],
    table: &TableSchema,
    ix: &IndexDef,
    row: &Row,
    pk: &[u8],
) -> Vec<u8> {
    let mut b = Vec::with_capacity(prefix.len() + 16 + pk.len());
    b.extend_from_slice(prefix);
    let mut any_null = false;
    for &c in &ix.columns {
        any_null |= row[c].is_null();
        encode_value(&mut b, &row[c]);
    }
    let _ = table;
    if !ix.unique || any_null {
        b.extend_from_slice(pk);
    }
    b
}

/// The smallest key greater than every key that starts with `prefix`; `None` when there
/// is none (the prefix is all `0xFF`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

/// Encodes a row for storage (postcard of the values).
pub fn encode_row(row: &Row) -> Vec<u8> {
    postcard::to_allocvec(row).expect("postcard encodes values")
}

/// Decodes a stored row.
///
/// # Errors
/// `Corrupted` when the bytes are not a postcard row of the table's arity.
pub fn decode_row(table: &TableSchema, bytes: &[u8]) -> Result<Row> {
    let row: Row = postcard::from_bytes(bytes)
        .map_err(|e| Error::corrupted(format!("table {}: undecodable row: {e}", table.name)))?;
    if row.len() != table.columns.len() {
        return Err(Error::corrupted(format!(
            "table {}: stored row has {} values, schema has {} columns",
            table.name,
            row.len(),
            table.columns.len()
        )));
    }
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_core::schema::ColumnDef;
    use proptest::prelude::*;

    fn enc(v: &Value) -> Vec<u8> {
        let mut b = Vec::new();
        encode_value(&mut b, v);
        b
    }

    proptest! {
        #[test]
        fn i64_order_preserved(a: i64, b: i64) {
            prop_assert_eq!(a.cmp(&b), enc(&Value::I64(a)).cmp(&enc(&Value::I64(b))));
        }
        #[test]
        fn string_order_preserved(a: String, b: String) {
            prop_assert_eq!(a.cmp(&b), enc(&Value::String(a.clone())).cmp(&enc(&Value::String(b.clone()))));
        }
        #[test]
        fn f64_order_preserved(a in -1e12f64..1e12, b in -1e12f64..1e12) {
            prop_assert_eq!(a.partial_cmp(&b).unwrap(), enc(&Value::F64(a)).cmp(&enc(&Value::F64(b))));
        }
        #[test]
        fn tuples_order_preserved(a: (String, i32), b: (String, i32)) {
            let ka = [enc(&Value::String(a.0.clone())), enc(&Value::I32(a.1))].concat();
            let kb = [enc(&Value::String(b.0.clone())), enc(&Value::I32(b.1))].concat();
            prop_assert_eq!(a.cmp(&b), ka.cmp(&kb));
        }
    }

    fn entry_table() -> TableSchema {
        let col = |n: &str, ty| ColumnDef::new(n, ty, true);
        let mut pk = col("id", ColumnType::String);
        pk.nullable = false;
        TableSchema {
            version: None,
            name: "t".into(),
            columns: vec![
                pk,
                col("s", ColumnType::String),
                col("n", ColumnType::I64),
                col("b", ColumnType::Bytes),
                col("f", ColumnType::F32),
                col("o", ColumnType::Bool),
                col("h", ColumnType::I16),
                col("u", ColumnType::Uuid),
                col("t", ColumnType::Timestamp),
                col("d", ColumnType::Date),
                col("m", ColumnType::Decimal),
            ],
            primary_key: vec![0, 2],
            indexes: vec![IndexDef {
                name: "by_all".into(),
                columns: vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
                unique: false,
                when: None,
            }],
        }
    }

    proptest! {
        #[test]
        fn an_entry_value_is_found_in_its_key(
            id: String,
            s: Option<String>,
            n: i64,
            b: Option<Vec<u8>>,
            f: Option<f32>,
            o: bool,
            h: Option<i16>,
            u: Option<[u8; 16]>,
            ts: Option<i64>,
            d: i32,
            m: Option<(i64, u32)>,
        ) {
            let t = entry_table();
            let ix = &t.indexes[0];
            let row: Row = vec![
                Value::String(id),
                s.map_or(Value::Null, Value::String),
                Value::I64(n),
                b.map_or(Value::Null, Value::Bytes),
                f.map_or(Value::Null, Value::F32),
                Value::Bool(o),
                h.map_or(Value::Null, Value::I16),
                u.map_or(Value::Null, Value::Uuid),
                ts.map_or(Value::Null, Value::Timestamp),
                Value::Date(d),
                m.map_or(Value::Null, |(x, s)| {
                    Value::Decimal(datalayer_core::Numeric::new(x.into(), s % 29).unwrap())
                }),
            ];
            let pk = pk_suffix(&t, &row);
            let key = index_key(&index_prefix(&t, ix), &t, ix, &row, &pk);
            let layout = EntryLayout::of(&t, ix).expect("non-unique");
            prop_assert_eq!(layout.value_of(&key), Some(pk.as_slice()));
            // A cut key is not an entry; an unknown tag byte is refused.
            let cols_end = key.len() - pk.len();
            prop_assert_eq!(layout.value_of(&key[..cols_end - 1]), None);
            let mut bad = key.clone();
            bad[layout.prefix_len] = 7;
            prop_assert_eq!(layout.value_of(&bad), None);
        }
    }

    proptest! {
        #[test]
        fn new_types_order_preserved(a: i64, b: i64, sa in 0u32..=28, ua: [u8; 16], ub: [u8; 16]) {
            let num = |x: i64, s| Value::Decimal(datalayer_core::Numeric::new(x.into(), s).unwrap());
            let (x, y) = (num(a, sa), num(b, sa));
            prop_assert_eq!(a.cmp(&b), enc(&x).cmp(&enc(&y)));
            prop_assert_eq!(a.cmp(&b), enc(&Value::Timestamp(a)).cmp(&enc(&Value::Timestamp(b))));
            prop_assert_eq!(ua.cmp(&ub), enc(&Value::Uuid(ua)).cmp(&enc(&Value::Uuid(ub))));
        }
    }

    #[test]
    fn a_unique_index_has_no_entry_layout() {
        let mut t = entry_table();
        t.indexes[0].unique = true;
        assert_eq!(EntryLayout::of(&t, &t.indexes[0]), None);
    }

    #[test]
    fn null_sorts_first() {
        assert!(enc(&Value::Null) < enc(&Value::I64(i64::MIN)));
        assert!(enc(&Value::Null) < enc(&Value::String(String::new())));
    }

    #[test]
    fn prefix_end_carries() {
        assert_eq!(prefix_end(&[1, 2]), Some(vec![1, 3]));
        assert_eq!(prefix_end(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xFF]), None);
    }
}
