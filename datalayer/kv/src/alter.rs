//! Schema evolution on the KV family ([`Engine::alter_table`]): chunked backfills in
//! ordinary transactions, resumable after a crash.
//!
//! 1. **Build** each added index (every index of a renamed table, whose keys carry
//!    the table's name): rows are read in primary-key chunks of [`CHUNK`], put in
//!    the declared layout, and their entries written; a unique entry already held by
//!    another primary key is a violation. Entries left by an earlier run cut short
//!    are deleted first. On violations (or any error) the new entries are deleted
//!    again and the call fails, with `AlreadyExists` naming up to five values: the
//!    table is as it was.
//! 2. **Rewrite** the rows when their layout changes (a column added or moved) or the
//!    table is renamed, chunk by chunk; each chunk's transaction also writes the
//!    progress marker `'m' <table>` (the target schema and the last row key done), so
//!    that a run cut short resumes: rows up to the marker are already in the new
//!    layout.
//! 3. Delete the dropped indexes' entries, then in one transaction switch the
//!    catalog entry to the declared schema and delete the marker.
//!
//! Writers of this engine ([`crate::fence`]): while indexes are built, those holding
//! the table's stored declaration keep writing and maintain the new indexes too
//! (online); while rows are rewritten or dropped entries deleted, and throughout a
//! rename or a redefined index, they fail with `Conflict` (retryable); afterwards a
//! stale declaration is refused. Writers in other processes must be stopped first
//! (their next connect sees the new schema).

use crate::codec::{self, TableKeys, decode_row, encode_row, index_key, prefix_end};
use crate::engine::KvEngine;
use crate::fence::{Building, Fence};
use datalayer_core::eval::matches;
use datalayer_core::schema::{IndexDef, TableSchema};
use datalayer_core::{Error, ErrorKind, Result, Row, SchemaStep, TablePlan, retry_autocommit};
use serde::{Deserialize, Serialize};
use std::ops::Bound;

/// Rows per backfill transaction.
pub(crate) const CHUNK: usize = 1_000;

/// Rows per index-build transaction on a store with pessimistic locks.
const PESSIMISTIC_CHUNK: usize = 100;

/// The fewest rows per index-build transaction when writers keep conflicting.
const MIN_CHUNK: usize = 16;

/// The progress marker of a row rewrite.
#[derive(Serialize, Deserialize)]
struct Marker {
    /// The target schema's catalog bytes.
    to: Vec<u8>,
    /// The last row key (under the source table's row prefix) rewritten.
    last: Vec<u8>,
}

fn marker_key(table: &str) -> Vec<u8> {
    codec::table_prefix(codec::MIGRATING, table)
}

fn end_of(prefix: &[u8]) -> Bound<Vec<u8>> {
    prefix_end(prefix).map_or(Bound::Unbounded, Bound::Excluded)
}

/// Runs `$body` (which uses the read-write transaction `$tx`) in one transaction,
/// re-run on `Conflict`; commits on `Ok`. A macro rather than a fn taking a closure:
/// the future must be `Send` for `Engine::alter_table`, which a closure over a
/// borrowed transaction cannot promise for every lifetime.
macro_rules! chunk {
    ($e:expr, $tx:ident => $body:expr) => {
        retry_autocommit(|| async {
            let mut $tx = $e.open_rw().await?;
            let r = async { $body }.await;
            match r {
                Ok(v) => $tx.commit().await.map(|()| v),
                Err(err) => {
                    let _ = $tx.rollback().await;
                    Err(err)
                }
            }
        })
        .await
    };
}

/// A stored row of the table being altered, in the declared layout.
struct Layouts<'a> {
    plan: &'a TablePlan,
    sources: Vec<Option<usize>>,
    /// Row keys up to here are in the declared layout already (an earlier run's
    /// rewrite, per its marker).
    done_upto: Option<Vec<u8>>,
}

impl Layouts<'_> {
    fn declared(&self, key: &[u8], bytes: &[u8]) -> Result<Row> {
        let rewritten = self.done_upto.as_deref().is_some_and(|d| key <= d);
        if rewritten {
            decode_row(&self.plan.to, bytes)
        } else {
            let stored = decode_row(&self.plan.from, bytes)?;
            Ok(self.plan.transform_row(&self.sources, &stored))
        }
    }
}

/// See the module docs.
pub(crate) async fn alter(e: &KvEngine, fence: &Fence, plan: &TablePlan) -> Result<()> {
    if let Some(s) = plan.steps.iter().find(|s| !s.is_safe()) {
        return Err(Error::unsupported(
            e.store_name(),
            format!("schema step: {s}"),
        ));
    }
    let (from, to) = (&plan.from, &plan.to);
    let renamed = from.name != to.name;
    let capture_key = codec::table_prefix(codec::CAPTURE, &from.name);
    let marker = chunk!(e, tx => {
        let m = marker_key(&from.name);
        Ok((tx.raw_get(&capture_key).await?.is_some(), tx.raw_get(&m).await?))
    })?;
    let (capture, marker) = marker;
    if renamed && capture {
        return Err(Error::unsupported(
            e.store_name(),
            format!(
                "renaming table {} while its change capture is on",
                from.name
            ),
        ));
    }
    let done_upto = match marker {
        Some(b) => {
            let m: Marker = postcard::from_bytes(&b).map_err(|err| {
                Error::corrupted(format!("table {}: migration marker: {err}", from.name))
            })?;
            if m.to != to.catalog_bytes()? {
                return Err(Error::conflict(format!(
                    "table {}: a schema change to another declaration was cut short; finish it with that declaration first",
                    from.name
                )));
            }
            Some(m.last)
        }
        None => None,
    };
    let layouts = Layouts {
        plan,
        sources: plan.column_sources(),
        done_upto,
    };
    let builds: Vec<(usize, &IndexDef)> =
        to.indexes
            .iter()
            .enumerate()
            .filter(|(_, ix)| {
                renamed
                    || plan.steps.iter().any(
                        |s| matches!(s, SchemaStep::AddIndex { index } if index.name == ix.name),
                    )
            })
            .collect();
    let from_keys = TableKeys::new(from);
    let to_keys = TableKeys::new(to);
    let prefixes: Vec<Vec<u8>> = builds
        .iter()
        .map(|(i, _)| to_keys.indexes[*i].clone())
        .collect();
    let rewrites = renamed || plan.changes_row_layout();
    // An index redefined under its name is rebuilt at its old key prefix.
    let redefined = !renamed
        && builds
            .iter()
            .any(|(_, b)| from.indexes.iter().any(|f| f.name == b.name));
    // Entries of dropped indexes (all of a renamed table's old ones).
    let dropped: Vec<&Vec<u8>> = from
        .indexes
        .iter()
        .zip(&from_keys.indexes)
        .filter(|(ix, _)| renamed || !to.indexes.iter().any(|t| t.name == ix.name))
        .map(|(_, p)| p)
        .collect();
    // Online (writers maintain the new indexes) unless rows move to another table's
    // keys, an earlier run left rows in two layouts, or writers maintain an index's
    // old definition at the prefix being built.
    let online = !renamed && layouts.done_upto.is_none() && !redefined;
    let names: &[&String] = if renamed {
        &[&from.name, &to.name]
    } else {
        &[&from.name]
    };
    if online {
        // Leftovers of an earlier run cut short go before writers maintain them.
        for p in &prefixes {
            delete_prefix(e, p).await?;
        }
        fence
            .build(
                &from.name,
                Building {
                    plan: plan.clone(),
                    sources: layouts.sources.clone(),
                    indexes: builds
                        .iter()
                        .map(|(i, _)| *i)
                        .zip(prefixes.clone())
                        .collect(),
                },
            )
            .await;
    } else {
        for n in names {
            fence.hold(n).await;
        }
        for p in &prefixes {
            if let Err(err) = delete_prefix(e, p).await {
                for n in names {
                    fence.open(n).await;
                }
                return Err(err);
            }
        }
    }
    let r = async {
        if let Err(err) = build(e, &layouts, &from_keys, &builds, &prefixes).await {
            // Writers stop maintaining the new entries first, then they go.
            fence.open(&from.name).await;
            for p in &prefixes {
                delete_prefix(e, p).await?;
            }
            return Err(err);
        }
        if online && (rewrites || !dropped.is_empty()) {
            fence.hold(&from.name).await;
        }
        if rewrites {
            rewrite(e, &layouts, &from_keys, &to_keys).await?;
        }
        for p in &dropped {
            delete_prefix(e, p).await?;
        }
        let bytes = to.catalog_bytes()?;
        chunk!(e, tx => {
            tx.catalog_put(&to.name, bytes.clone()).await?;
            let mut w = vec![(marker_key(&from.name), None)];
            if renamed {
                w.push((codec::catalog_key(&from.name), None));
            }
            tx.raw_write(w).await
        })
    }
    .await;
    if r.is_ok() {
        if renamed {
            fence.forget(&from.name);
        }
        fence.set_live(to);
    }
    for n in names {
        fence.open(n).await;
    }
    r
}

/// Phase 1: entries of `builds` (positions in the declared indexes, with their key
/// prefixes) for every row; the caller deletes them again on an error.
async fn build(
    e: &KvEngine,
    l: &Layouts<'_>,
    from_keys: &TableKeys,
    builds: &[(usize, &IndexDef)],
    prefixes: &[Vec<u8>],
) -> Result<()> {
    if builds.is_empty() {
        return Ok(());
    }
    let to = &l.plan.to;
    let row_prefix = from_keys.row.clone();
    // Rows up to the last one stored now: rows written later are indexed by their
    // writers, and a range open to the end would make every chunk conflict with
    // appends on a store that validates its range reads.
    let Some(upper) = chunk!(e, tx => tx.raw_last(&row_prefix).await)? else {
        return Ok(());
    };
    let mut after: Option<Vec<u8>> = None;
    let mut violations: Vec<String> = Vec::new();
    // Shrunk on a conflict that outlasted the retries (writers keep changing rows of
    // the chunk), grown back after each chunk that commits. On a pessimistic store a
    // chunk locks its rows, so it stays small: writers wait for it.
    let max = if e.kv_capability().pessimistic_locks {
        PESSIMISTIC_CHUNK
    } else {
        CHUNK
    };
    let mut size = max;
    loop {
        let start = after
            .clone()
            .map_or(Bound::Included(row_prefix.clone()), Bound::Excluded);
        let r = chunk!(e, tx => {
            let rows = tx.raw_scan(start.clone(), Bound::Included(upper.clone()), size).await?;
            // Every entry of the chunk first, then the unique ones read ahead in one
            // store call (on a server store one round trip, not one per row).
            let mut entries = Vec::new();
            for (k, v) in &rows {
                let row = l.declared(k, v)?;
                let pk = &k[row_prefix.len()..];
                for ((_, ix), prefix) in builds.iter().zip(prefixes) {
                    if matches(ix.when.as_ref(), &row, &[])? {
                        let key = index_key(prefix, to, ix, &row, pk);
                        // The indexed values and the primary key, for a violation's
                        // message.
                        let vals = ix.unique.then(|| {
                            let text = |cs: &[usize]| {
                                cs.iter().map(|&c| row[c].to_string()).collect::<Vec<_>>().join(", ")
                            };
                            (text(&ix.columns), text(&to.primary_key))
                        });
                        entries.push((*ix, key, pk, vals));
                    }
                }
            }
            let unique: Vec<Vec<u8>> = entries
                .iter()
                .filter(|(ix, ..)| ix.unique)
                .map(|(_, key, ..)| key.clone())
                .collect();
            tx.raw_prefetch(unique).await?;
            let mut found = Vec::new();
            let mut puts: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::with_capacity(entries.len());
            // Unique entries this chunk puts, which the store does not hold yet.
            let mut taken: std::collections::HashMap<Vec<u8>, Vec<u8>> = std::collections::HashMap::new();
            for (ix, key, pk, vals) in entries {
                let held = match taken.get(&key) {
                    Some(h) => Some(h.clone()),
                    None if vals.is_some() => tx.raw_get(&key).await?,
                    None => None,
                };
                if let Some((vals, this)) = vals
                    && let Some(held) = held
                    && held != pk
                {
                    // The row already holding the entry, by its key.
                    let mut other = from_keys.row.clone();
                    other.extend_from_slice(&held);
                    let other = match tx.raw_get(&other).await? {
                        Some(b) => l.declared(&other, &b).map_or_else(
                            |_| "?".to_owned(),
                            |r| {
                                to.primary_key
                                    .iter()
                                    .map(|&c| r[c].to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            },
                        ),
                        None => "?".to_owned(),
                    };
                    found.push(format!("{} ({vals}) in rows ({other}), ({this})", ix.name));
                    continue;
                }
                if ix.unique {
                    taken.insert(key.clone(), pk.to_vec());
                }
                puts.push((key, Some(pk.to_vec())));
            }
            // A pessimistic store checks, as it locks them, that the rows read are
            // still the snapshot's (a writer's change in between is a conflict):
            // locked with the entries in one call, just before the commit, so that
            // writers wait for the chunk as briefly as they can.
            let locks = rows.iter().map(|(k, _)| k.as_slice());
            tx.raw_lock(locks.chain(puts.iter().map(|(k, _)| k.as_slice()))).await?;
            tx.raw_write(puts).await?;
            Ok((rows.last().map(|(k, _)| k.clone()), found))
        });
        let (last, found) = match r {
            Err(err) if err.kind() == ErrorKind::Conflict && size > MIN_CHUNK => {
                size = (size / 4).max(MIN_CHUNK);
                continue;
            }
            r => r?,
        };
        size = (size * 2).min(max);
        violations.extend(found);
        #[cfg(feature = "failpoints")]
        fail::fail_point!(crate::failpoints::AFTER_BUILD_CHUNK, |_| Err(
            Error::engine("failpoint", "cut short after an index build chunk")
        ));
        match last {
            Some(k) if violations.len() < 5 => after = Some(k),
            _ => break,
        }
    }
    if violations.is_empty() {
        return Ok(());
    }
    violations.truncate(5);
    Err(Error::already_exists(format!(
        "table {}: stored rows violate the new unique index (duplicated values and their rows' primary keys: {}); nothing was changed",
        to.name,
        violations.join("; ")
    )))
}

/// Phase 2: every row in the declared layout under the declared name.
async fn rewrite(
    e: &KvEngine,
    l: &Layouts<'_>,
    from_keys: &TableKeys,
    to_keys: &TableKeys,
) -> Result<()> {
    let (from, to) = (&l.plan.from, &l.plan.to);
    let renamed = from.name != to.name;
    let to_bytes = to.catalog_bytes()?;
    let row_prefix = from_keys.row.clone();
    // Rows up to the marker are done: a renamed table's are gone from the old prefix.
    let mut after = if renamed { None } else { l.done_upto.clone() };
    loop {
        let start = after
            .clone()
            .map_or(Bound::Included(row_prefix.clone()), Bound::Excluded);
        let last = chunk!(e, tx => {
            let rows = tx.raw_scan(start.clone(), end_of(&row_prefix), CHUNK).await?;
            let Some((last, _)) = rows.last() else {
                return Ok(None);
            };
            let last = last.clone();
            let mut w = Vec::with_capacity(rows.len() * 2 + 1);
            for (k, v) in &rows {
                let row = l.declared(k, v)?;
                let mut key = to_keys.row.clone();
                key.extend_from_slice(&k[row_prefix.len()..]);
                if renamed {
                    w.push((k.clone(), None));
                }
                w.push((key, Some(encode_row(&row))));
            }
            let m = Marker {
                to: to_bytes.clone(),
                last: last.clone(),
            };
            let m = postcard::to_allocvec(&m)
                .map_err(|err| Error::engine("postcard", err.to_string()))?;
            w.push((marker_key(&from.name), Some(m)));
            tx.raw_write(w).await?;
            Ok(Some(last))
        })?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!(crate::failpoints::AFTER_REWRITE_CHUNK, |_| Err(
            Error::engine("failpoint", "cut short after a rewrite chunk")
        ));
        match last {
            Some(k) => after = Some(k),
            None => return Ok(()),
        }
    }
}

/// Deletes every key under `prefix`, a chunk per transaction.
async fn delete_prefix(e: &KvEngine, prefix: &[u8]) -> Result<()> {
    loop {
        let n = chunk!(e, tx => {
            let keys = tx
                .raw_scan(Bound::Included(prefix.to_vec()), end_of(prefix), CHUNK)
                .await?;
            let n = keys.len();
            tx.raw_write(keys.into_iter().map(|(k, _)| (k, None)).collect())
                .await?;
            Ok(n)
        })?;
        if n < CHUNK {
            return Ok(());
        }
    }
}

/// Every key of table `name`, then its catalog entry (see `Engine::drop_table`).
pub(crate) async fn drop_table(e: &KvEngine, name: &str) -> Result<()> {
    let stored = chunk!(e, tx => tx.catalog_get(name).await)?;
    let Some(bytes) = stored else {
        return Ok(());
    };
    let t = TableSchema::from_catalog_bytes(&bytes)?;
    let keys = TableKeys::new(&t);
    for p in keys.indexes.iter().chain([&keys.row]) {
        delete_prefix(e, p).await?;
    }
    for ns in [
        codec::CHANGE,
        codec::CHANGE_SEQ,
        codec::CAPTURE,
        codec::MIGRATING,
    ] {
        delete_prefix(e, &codec::table_prefix(ns, name)).await?;
    }
    chunk!(e, tx => tx.raw_write(vec![(codec::catalog_key(name), None)]).await)
}
