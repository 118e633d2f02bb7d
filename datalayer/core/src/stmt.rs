//! Staged query calls (`Stmt`) and same-shape batches (`Batch`).
//!
//! `#[query_group]` generates, for each query `fn by_id(id: i64) -> User`, both
//! `User::by_id(&db, id)` (runs now) and `User::by_id_stmt(id)` (a [`Stmt`] to run later
//! or to push into a [`Batch`]).

use crate::db::Executor;
use crate::engine::{Op, Output};
use crate::error::{Error, Result};
use crate::query::QueryDef;
use crate::repo::unexpected;
use crate::schema::Table;
use crate::value::{ColumnValue, Value};

/// One query call with its parameters, and how to decode its output into `R`.
pub struct Stmt<R> {
    query: &'static QueryDef,
    params: Vec<Value>,
    decode: fn(&'static QueryDef, Output) -> Result<R>,
}

impl<R> Stmt<R> {
    /// A call of `query` with `params`; `decode` turns the engine output into `R`
    /// (one of the functions in [`decode`]).
    pub fn new(
        query: &'static QueryDef,
        params: Vec<Value>,
        decode: fn(&'static QueryDef, Output) -> Result<R>,
    ) -> Self {
        Stmt {
            query,
            params,
            decode,
        }
    }
    /// The query.
    pub fn query(&self) -> &'static QueryDef {
        self.query
    }
    /// Runs the call on `ex`.
    pub async fn run<E: Executor + ?Sized>(self, ex: &E) -> Result<R> {
        let out = ex
            .run(Op::Query {
                query: self.query,
                params: &self.params,
            })
            .await?;
        (self.decode)(self.query, out)
    }
}

/// Same-shape query calls staged together and sent as one unit: one pipeline on a
/// server engine, one pass under the write lock on an embedded one. On a `Db` the batch
/// is atomic; on a `Tx` it runs inside the transaction. Results come back in order.
pub struct Batch<R> {
    stmts: Vec<Stmt<R>>,
}

impl<R> Default for Batch<R> {
    fn default() -> Self {
        Batch { stmts: Vec::new() }
    }
}

impl<R> Batch<R> {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }
    /// Stages a call.
    pub fn push(&mut self, s: Stmt<R>) -> &mut Self {
        self.stmts.push(s);
        self
    }
    /// Number of staged calls.
    pub fn len(&self) -> usize {
        self.stmts.len()
    }
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.stmts.is_empty()
    }
    /// Runs every call; results in staging order.
    ///
    /// # Errors
    /// The first failing call's error; on a `Db` nothing of the batch is kept.
    pub async fn run<E: Executor + ?Sized>(self, ex: &E) -> Result<Vec<R>> {
        let ops = self
            .stmts
            .iter()
            .map(|s| Op::Query {
                query: s.query,
                params: &s.params,
            })
            .collect();
        let outs = ex.run_batch(ops).await?;
        self.stmts
            .iter()
            .zip(outs)
            .map(|(s, o)| (s.decode)(s.query, o))
            .collect()
    }
}

impl<R> FromIterator<Stmt<R>> for Batch<R> {
    fn from_iter<I: IntoIterator<Item = Stmt<R>>>(iter: I) -> Self {
        Batch {
            stmts: iter.into_iter().collect(),
        }
    }
}

/// Output decoders used by generated code, one per return shape.
pub mod decode {
    use super::*;

    fn rows(o: Output) -> Result<Vec<Vec<Value>>> {
        match o {
            Output::Rows(r) => Ok(r),
            o => Err(unexpected(o)),
        }
    }
    fn none(q: &QueryDef) -> Error {
        Error::not_found(format!("query {} returned no row", q.name))
    }
    /// `T`: exactly one row, else `NotFound`.
    pub fn one<T: Table>(q: &'static QueryDef, o: Output) -> Result<T> {
        rows(o)?
            .into_iter()
            .next()
            .ok_or_else(|| none(q))
            .and_then(T::from_row)
    }
    /// `Option<T>`.
    pub fn optional<T: Table>(_q: &'static QueryDef, o: Output) -> Result<Option<T>> {
        rows(o)?.into_iter().next().map(T::from_row).transpose()
    }
    /// `Vec<T>`.
    pub fn many<T: Table>(_q: &'static QueryDef, o: Output) -> Result<Vec<T>> {
        rows(o)?.into_iter().map(T::from_row).collect()
    }
    fn first(r: Vec<Value>) -> Value {
        r.into_iter().next().unwrap_or(Value::Null)
    }
    /// A column value of exactly one row, else `NotFound`.
    pub fn scalar<V: ColumnValue>(q: &'static QueryDef, o: Output) -> Result<V> {
        rows(o)?
            .into_iter()
            .next()
            .ok_or_else(|| none(q))
            .and_then(|r| V::from_value(first(r)))
    }
    /// `Option<V>` of a column: `None` when there is no row (or the value is NULL).
    pub fn scalar_optional<V: ColumnValue>(_q: &'static QueryDef, o: Output) -> Result<Option<V>> {
        match rows(o)?.into_iter().next() {
            None => Ok(None),
            Some(r) => Option::<V>::from_value(first(r)),
        }
    }
    /// `Vec<V>` of a column.
    pub fn scalars<V: ColumnValue>(_q: &'static QueryDef, o: Output) -> Result<Vec<V>> {
        rows(o)?
            .into_iter()
            .map(|r| V::from_value(first(r)))
            .collect()
    }
    /// `u64`: a count, or the number of rows affected.
    pub fn count(_q: &'static QueryDef, o: Output) -> Result<u64> {
        match o {
            Output::Count(n) => Ok(n),
            o => Err(unexpected(o)),
        }
    }
}
