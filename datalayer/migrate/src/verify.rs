//! Verification: per table, the row count and a checksum per primary-key range
//! ("bucket") on both sides, so that a mismatch names a key range that can be copied
//! again; each index is counted on the target (a full scan of it) and compared with
//! the entries the source's rows call for (one per row, or per row a conditional
//! index's filter matches).
//!
//! Buckets are cut on the source: every `bucket_rows` rows in primary-key order end
//! one. A target row falls in the bucket whose range holds its key (keys compared in
//! the KV family's order-preserving encoding, the order of every engine's primary-key
//! scan), so a row missing, extra or different on the target shows in exactly one
//! bucket. A bucket's checksum is the wrapping sum of its rows' XXH3-128 hashes
//! ([`crate::canonical`]): independent of the order rows arrive in.

use crate::canonical::row_hash;
use crate::copy::{key_bytes, page_scan, read, rows_of};
use datalayer_core::eval::matches;
use datalayer_core::{Db, Executor, Op, Result, Row, TableSchema};

/// Rows per scan page while verifying.
const PAGE: usize = 10_000;

/// A primary-key range `(after, upto]` whose rows differ between source and target.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyRange {
    /// Exclusive lower end (`None`: from the first key).
    pub after: Option<Row>,
    /// Inclusive upper end (`None`: to the last key).
    pub upto: Option<Row>,
    /// Rows in the range on the source.
    pub source_rows: u64,
    /// Rows in the range on the target.
    pub target_rows: u64,
}

/// One index counted on both sides.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexCount {
    /// The index.
    pub index: String,
    /// Entries the source's rows call for: one per row, or per row its filter
    /// matches for a conditional index.
    pub source: u64,
    /// Entries a full scan of the index returns on the target.
    pub target: u64,
}

/// The verification of one table.
#[derive(Clone, Debug, PartialEq)]
pub struct TableCheck {
    /// The table.
    pub table: String,
    /// Rows on the source.
    pub source_rows: u64,
    /// Rows on the target.
    pub target_rows: u64,
    /// Buckets compared.
    pub buckets: usize,
    /// The buckets that differ (count or checksum), in key order.
    pub mismatched: Vec<KeyRange>,
    /// Every secondary index, counted on both sides.
    pub indexes: Vec<IndexCount>,
}

impl TableCheck {
    /// Whether source and target agree: same rows in every bucket, same index counts.
    pub fn is_equal(&self) -> bool {
        self.mismatched.is_empty()
            && self.source_rows == self.target_rows
            && self.indexes.iter().all(|i| i.source == i.target)
    }
}

/// What [`crate::Migration::verify`] found, one entry per table.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VerifyReport {
    /// The tables, in the order they were verified.
    pub tables: Vec<TableCheck>,
}

impl VerifyReport {
    /// Whether every table is equal on both sides.
    pub fn is_equal(&self) -> bool {
        self.tables.iter().all(TableCheck::is_equal)
    }
}

/// One bucket being summed.
#[derive(Clone, Debug, Default)]
struct Bucket {
    /// Upper end: the key of the bucket's last source row (`None`: open end).
    upto: Option<(Vec<u8>, Row)>,
    rows: [u64; 2],
    sum: [u128; 2],
}

/// Scans `table` in `index` order (`None`: primary key) page by page, from after
/// the position `after` (`None`: the start), and calls `f` on every row until it
/// returns `false`; returns the rows passed to `f`.
pub(crate) async fn each_row(
    db: &Db,
    table: &TableSchema,
    index: Option<usize>,
    mut after: Option<Row>,
    mut f: impl FnMut(&Row) -> bool,
) -> Result<u64> {
    let mut n = 0u64;
    loop {
        let rows = rows_of(read(db, page_scan(table, index, after.take(), PAGE)).await?)?;
        for r in &rows {
            n += 1;
            if !f(r) {
                return Ok(n);
            }
        }
        let Some(last) = rows.last() else {
            return Ok(n);
        };
        after = Some(match index {
            None => table.key_of(last),
            Some(i) => table.indexes[i]
                .columns
                .iter()
                .map(|&c| last[c].clone())
                .chain(table.key_of(last))
                .collect(),
        });
        if rows.len() < PAGE {
            return Ok(n);
        }
    }
}

/// The rows of `table` with a primary key in `(after, upto]` (`upto` in the
/// order-preserving key encoding; `None`: to the end), in key order.
///
/// # Errors
/// The read errors of `db`.
pub(crate) async fn rows_in_range(
    db: &Db,
    table: &TableSchema,
    after: Option<Row>,
    upto: Option<&[u8]>,
) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    each_row(db, table, None, after, |r| {
        let inside = upto.is_none_or(|u| key_bytes(table, r).as_slice() <= u);
        if inside {
            out.push(r.clone());
        }
        inside
    })
    .await?;
    Ok(out)
}

/// The keys among `keys` whose rows differ between `source` and `target` (a row
/// missing on one side differs), read by primary key in batches.
///
/// # Errors
/// The read errors of either side.
pub(crate) async fn differing_rows(
    source: &Db,
    target: &Db,
    table: &TableSchema,
    keys: Vec<Row>,
) -> Result<Vec<Row>> {
    let get = |db: &Db, keys: Vec<Row>| {
        let db = db.clone();
        async move {
            match db.run(Op::Get { table, keys }).await? {
                datalayer_core::Output::Optional(v) => Ok(v),
                other => Err(datalayer_core::Error::engine(
                    "migrate",
                    format!("unexpected output of a get: {other:?}"),
                )),
            }
        }
    };
    let mut bad = Vec::new();
    let mut buf = Vec::new();
    for chunk in keys.chunks(1_000) {
        // Both sides at once: under a cut-over's fence this is the write pause.
        let (a, b) = tokio::try_join!(get(source, chunk.to_vec()), get(target, chunk.to_vec()))?;
        for ((k, x), y) in chunk.iter().zip(a).zip(b) {
            let hx = x.map(|r| row_hash(&mut buf, &r));
            let hy = y.map(|r| row_hash(&mut buf, &r));
            if hx != hy {
                bad.push(k.clone());
            }
        }
    }
    Ok(bad)
}

/// Verifies `table` (see the module docs).
///
/// # Errors
/// The read errors of either side.
pub(crate) async fn verify_table(
    source: &Db,
    target: &Db,
    table: &TableSchema,
    bucket_rows: usize,
) -> Result<TableCheck> {
    let bucket_rows = bucket_rows.max(1);
    let mut buckets: Vec<Bucket> = vec![Bucket::default()];
    let mut buf = Vec::new();
    // Index entries the source's rows call for: one per row, or per row matching a
    // conditional index's filter.
    let mut expected = vec![0u64; table.indexes.len()];
    let mut bad_filter = None;
    let source_pass = each_row(source, table, None, None, |r| {
        let b = buckets.last_mut().expect("one bucket at least");
        b.rows[0] += 1;
        b.sum[0] = b.sum[0].wrapping_add(row_hash(&mut buf, r));
        if b.rows[0] == bucket_rows as u64 {
            b.upto = Some((key_bytes(table, r), table.key_of(r)));
            buckets.push(Bucket::default());
        }
        for (n, ix) in expected.iter_mut().zip(&table.indexes) {
            match matches(ix.when.as_ref(), r, &[]) {
                Ok(true) => *n += 1,
                Ok(false) => {}
                Err(e) => bad_filter = Some(e),
            }
        }
        true
    });
    // The target's index scans run meanwhile: they need nothing from the source.
    let target_indexes = async {
        let mut counts = Vec::with_capacity(table.indexes.len());
        for i in 0..table.indexes.len() {
            counts.push(each_row(target, table, Some(i), None, |_| true).await?);
        }
        Ok::<_, datalayer_core::Error>(counts)
    };
    let (source_rows, target_counts) = tokio::join!(source_pass, target_indexes);
    let (source_rows, target_counts) = (source_rows?, target_counts?);
    if let Some(e) = bad_filter {
        return Err(e);
    }
    let ends: Vec<Vec<u8>> = buckets
        .iter()
        .filter_map(|b| b.upto.as_ref().map(|(k, _)| k.clone()))
        .collect();
    let target_rows = each_row(target, table, None, None, |r| {
        let k = key_bytes(table, r);
        let i = ends.partition_point(|end| end < &k);
        let b = &mut buckets[i];
        b.rows[1] += 1;
        b.sum[1] = b.sum[1].wrapping_add(row_hash(&mut buf, r));
        true
    })
    .await?;
    let mut mismatched = Vec::new();
    let mut after: Option<Row> = None;
    for b in &buckets {
        let upto = b.upto.as_ref().map(|(_, r)| r.clone());
        if b.rows[0] != b.rows[1] || b.sum[0] != b.sum[1] {
            mismatched.push(KeyRange {
                after: after.clone(),
                upto: upto.clone(),
                source_rows: b.rows[0],
                target_rows: b.rows[1],
            });
        }
        after = upto;
    }
    let indexes = table
        .indexes
        .iter()
        .zip(expected.into_iter().zip(target_counts))
        .map(|(ix, (source, target))| IndexCount {
            index: ix.name.clone(),
            source,
            target,
        })
        .collect();
    Ok(TableCheck {
        table: table.name.clone(),
        source_rows,
        target_rows,
        buckets: buckets.len(),
        mismatched,
        indexes,
    })
}
