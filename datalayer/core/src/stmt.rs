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
    ///
    /// # Errors
    /// The errors of running the query (see [`Executor`]), then those of its decoder:
    /// `NotFound` when a query declared to return exactly one row or value finds none,
    /// `InvalidInput` when a row or value does not convert to `R` (see [`decode`]).
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
///
/// # Examples
///
/// A transfer as two updates in one atomic batch; a batch with a failing call keeps
/// nothing:
///
/// ```
/// # extern crate datalayer_core as datalayer;
/// use datalayer::{Batch, Db};
/// use datalayer_macros::{Table, query_group};
///
/// #[derive(Table, Clone, Debug, PartialEq)]
/// struct Account {
///     #[pk]
///     id: i64,
///     balance: i64,
/// }
///
/// #[query_group]
/// impl Account {
///     fn add(id: i64, amount: i64) -> u64 {
///         Self::filter(|a| a.id == id).update(|a| a.balance = a.balance + amount)
///     }
/// }
/// # #[tokio::main]
/// # async fn main() -> datalayer::Result<()> {
/// # let engine = std::sync::Arc::new(datalayer_etch::memory());
/// # let db = Db::with_engine(engine).table::<Account>().queries::<Account>().connect().await?;
/// let accounts = db.repo::<Account>();
/// accounts.insert(&Account { id: 1, balance: 100 }).await?;
/// accounts.insert(&Account { id: 2, balance: 0 }).await?;
///
/// let mut batch = Batch::new();
/// batch.push(Account::add_stmt(1, -30)).push(Account::add_stmt(2, 30));
/// assert_eq!(batch.run(&db).await?, [1, 1], "rows updated, per call");
///
/// // The second call overflows, so the first is not kept either.
/// let mut batch = Batch::new();
/// batch.push(Account::add_stmt(1, -30)).push(Account::add_stmt(2, i64::MAX));
/// assert!(batch.run(&db).await.is_err());
/// assert_eq!(accounts.get(1).await?.map(|a| a.balance), Some(70));
/// # Ok(())
/// # }
/// ```
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
    /// The first failing call's error (see [`Executor`]); on a `Db` nothing of the batch
    /// is kept. Outputs are decoded after the batch has run, so a decoder's error (see
    /// [`Stmt::run`]: `NotFound` for a call declared to return exactly one row that
    /// finds none) fails the result of a batch that was applied.
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
    ///
    /// # Errors
    /// `NotFound` when there is no row; `InvalidInput` when the row does not decode into
    /// `T`; `Engine` (code `output`) when the output is not rows.
    pub fn one<T: Table>(q: &'static QueryDef, o: Output) -> Result<T> {
        rows(o)?
            .into_iter()
            .next()
            .ok_or_else(|| none(q))
            .and_then(T::from_row)
    }
    /// `Option<T>`: the first row, if any.
    ///
    /// # Errors
    /// `InvalidInput` when the row does not decode into `T`; `Engine` (code `output`) when
    /// the output is not rows.
    pub fn optional<T: Table>(_q: &'static QueryDef, o: Output) -> Result<Option<T>> {
        rows(o)?.into_iter().next().map(T::from_row).transpose()
    }
    /// `Vec<T>`.
    ///
    /// # Errors
    /// `InvalidInput` when a row does not decode into `T`; `Engine` (code `output`) when
    /// the output is not rows.
    pub fn many<T: Table>(_q: &'static QueryDef, o: Output) -> Result<Vec<T>> {
        rows(o)?.into_iter().map(T::from_row).collect()
    }
    fn first(r: Vec<Value>) -> Value {
        r.into_iter().next().unwrap_or(Value::Null)
    }
    /// A column value of exactly one row, else `NotFound`.
    ///
    /// # Errors
    /// `NotFound` when there is no row; `InvalidInput` when the value does not convert
    /// to `V` (NULL included, unless `V` is an `Option`); `Engine` (code `output`) when
    /// the output is not rows.
    pub fn scalar<V: ColumnValue>(q: &'static QueryDef, o: Output) -> Result<V> {
        rows(o)?
            .into_iter()
            .next()
            .ok_or_else(|| none(q))
            .and_then(|r| V::from_value(first(r)))
    }
    /// `Option<V>` of a column: `None` when there is no row (or the value is NULL).
    ///
    /// # Errors
    /// `InvalidInput` when the value does not convert to `V`; `Engine` (code `output`)
    /// when the output is not rows.
    pub fn scalar_optional<V: ColumnValue>(_q: &'static QueryDef, o: Output) -> Result<Option<V>> {
        match rows(o)?.into_iter().next() {
            None => Ok(None),
            Some(r) => Option::<V>::from_value(first(r)),
        }
    }
    /// `Vec<V>` of a column.
    ///
    /// # Errors
    /// `InvalidInput` when a value does not convert to `V`; `Engine` (code `output`) when
    /// the output is not rows.
    pub fn scalars<V: ColumnValue>(_q: &'static QueryDef, o: Output) -> Result<Vec<V>> {
        rows(o)?
            .into_iter()
            .map(|r| V::from_value(first(r)))
            .collect()
    }
    /// `u64`: a count, or the number of rows affected.
    ///
    /// # Errors
    /// `Engine` (code `output`) when the output is not a count.
    pub fn count(_q: &'static QueryDef, o: Output) -> Result<u64> {
        match o {
            Output::Count(n) => Ok(n),
            o => Err(unexpected(o)),
        }
    }
}
