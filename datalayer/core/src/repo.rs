//! `Repo<T>`: the table-level API that runs unchanged on every engine.

use crate::db::Executor;
use crate::engine::{Op, Output, ScanRequest, WriteMode};
use crate::error::{Error, Result};
use crate::schema::{BelongsTo, IdList, Table, TableSchema};
use crate::value::{Key, Row, ToValue, Value};
use base64::Engine as _;
use futures::Stream;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::ops::Bound;

/// Typed access to one table through an executor (`db.repo::<User>()`,
/// `tx.repo::<User>()`, or `Repo::<User, _>::new(&db)`).
///
/// The errors every method can return besides its own are listed on [`Executor`].
///
/// # Examples
///
/// ```
/// # extern crate datalayer_core as datalayer;
/// # use datalayer::{Db, ErrorKind};
/// #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
/// struct User {
///     #[pk]
///     id: i64,
///     name: String,
/// }
/// # #[tokio::main]
/// # async fn main() -> datalayer::Result<()> {
/// # let engine = std::sync::Arc::new(datalayer_etch::memory());
/// # let db = Db::with_engine(engine).table::<User>().connect().await?;
/// let users = db.repo::<User>();
///
/// let mut ann = User { id: 1, name: "ann".into() };
/// users.insert(&ann).await?;
/// let err = users.insert(&ann).await.unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::AlreadyExists);
///
/// ann.name = "ann b".into();
/// users.update(&ann).await?;
/// assert_eq!(users.get(1).await?, Some(ann));
///
/// assert!(users.delete(1).await?);
/// assert!(!users.delete(1).await?, "deleting a missing key succeeds");
/// assert_eq!(users.get(1).await?, None);
/// # Ok(())
/// # }
/// ```
pub struct Repo<'e, T, E: ?Sized> {
    ex: &'e E,
    _t: PhantomData<fn() -> T>,
}

impl<T, E: ?Sized> Clone for Repo<'_, T, E> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T, E: ?Sized> Copy for Repo<'_, T, E> {}

pub(crate) fn unexpected(o: Output) -> Error {
    Error::engine(
        "output",
        format!("engine returned an unexpected output shape: {o:?}"),
    )
}

fn count(o: Output) -> Result<u64> {
    match o {
        Output::Count(n) => Ok(n),
        o => Err(unexpected(o)),
    }
}

fn decode_rows<T: Table>(o: Output) -> Result<Vec<T>> {
    match o {
        Output::Rows(rows) => rows.into_iter().map(T::from_row).collect(),
        o => Err(unexpected(o)),
    }
}

impl<'e, T: Table, E: Executor + ?Sized> Repo<'e, T, E> {
    /// A repository over `ex`.
    pub fn new(ex: &'e E) -> Self {
        Repo {
            ex,
            _t: PhantomData,
        }
    }

    fn schema(&self) -> &'static TableSchema {
        T::schema()
    }

    /// `row` as inserted: on a table with a version column, at version 1.
    fn inserted(&self, row: &T) -> Row {
        let mut r = row.to_row();
        if let Some(v) = self.schema().version {
            r[v] = Value::I64(1);
        }
        r
    }

    /// `InvalidInput` for an upsert on a table with a version column: replacing a row
    /// whatever its version would defeat the check every update makes.
    fn no_upsert(&self) -> Result<()> {
        match self.schema().version {
            Some(v) => Err(Error::invalid_input(format!(
                "table {} has a version column ({}): write it with insert and update, not upsert",
                self.schema().name,
                self.schema().columns[v].name
            ))),
            None => Ok(()),
        }
    }

    /// Inserts one row (on a table with a `#[version]` column, at version 1 whatever
    /// the row says).
    ///
    /// # Errors
    /// `AlreadyExists` when the primary key or a unique index value exists;
    /// `InvalidInput` for an oversize row.
    pub async fn insert(&self, row: &T) -> Result<()> {
        self.insert_many(std::slice::from_ref(row))
            .await
            .map(|_| ())
    }

    /// Inserts rows atomically (all or none); returns how many were inserted.
    ///
    /// # Errors
    /// As [`Repo::insert`]; a duplicate within `rows` is `AlreadyExists` too.
    pub async fn insert_many(&self, rows: &[T]) -> Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        let rows = rows.iter().map(|r| self.inserted(r)).collect();
        let op = Op::Insert {
            table: self.schema(),
            rows,
            mode: WriteMode::Insert,
        };
        count(self.ex.run(op).await?)
    }

    /// Inserts the row, or replaces the row with the same primary key.
    ///
    /// # Errors
    /// `AlreadyExists` when a unique index value belongs to another row;
    /// `InvalidInput` on a table with a `#[version]` column (use insert and update).
    pub async fn upsert(&self, row: &T) -> Result<()> {
        self.no_upsert()?;
        let op = Op::Insert {
            table: self.schema(),
            rows: vec![row.to_row()],
            mode: WriteMode::Upsert,
        };
        count(self.ex.run(op).await?).map(|_| ())
    }

    /// Upserts rows atomically (all or none); returns how many were written. Loading with
    /// upserts is idempotent, so an interrupted load can simply run again.
    ///
    /// # Errors
    /// As [`Repo::upsert`].
    pub async fn upsert_many(&self, rows: &[T]) -> Result<u64> {
        self.no_upsert()?;
        if rows.is_empty() {
            return Ok(0);
        }
        let op = Op::Insert {
            table: self.schema(),
            rows: rows.iter().map(Table::to_row).collect(),
            mode: WriteMode::Upsert,
        };
        count(self.ex.run(op).await?)
    }

    /// Replaces the row with the same primary key. On a table with a `#[version]`
    /// column, only if the stored version is `row`'s, and the stored version becomes
    /// `row`'s + 1 (optimistic locking: check and increment in the one statement or
    /// transaction of the update).
    ///
    /// # Errors
    /// `NotFound` when no row has that key; `AlreadyExists` for a unique violation;
    /// `Conflict` with [`Error::is_stale_version`] when the stored version is another
    /// (nothing is written: read the row again).
    pub async fn update(&self, row: &T) -> Result<()> {
        let t = self.schema();
        let values = row.to_row();
        let read = t.version_of(&values);
        let op = Op::Update {
            table: t,
            rows: vec![values],
        };
        if count(self.ex.run(op).await?)? > 0 {
            return Ok(());
        }
        let key = row.key();
        // Nothing written: no such row, or (with a version column) another version.
        if let Some(read) = read
            && let Some(now) = self.get(key.clone()).await?
        {
            return Err(Error::stale_version(format!(
                "{}: the row with key {key:?} is at version {}, not {read} (updated since it was read)",
                t.name,
                t.version_of(&now.to_row()).unwrap_or_default(),
            )));
        }
        Err(Error::not_found(format!(
            "{}: no row with key {key:?}",
            t.name
        )))
    }

    /// Deletes the row with key `key`; returns whether it existed (deleting a missing
    /// key is not an error).
    ///
    /// # Errors
    /// `InvalidInput` when the key has the wrong number of values or a value that does
    /// not fit its key column; the errors of any write (see [`Executor`]).
    pub async fn delete(&self, key: impl Key) -> Result<bool> {
        let op = Op::Delete {
            table: self.schema(),
            keys: vec![key.into_key()],
        };
        Ok(count(self.ex.run(op).await?)? > 0)
    }

    /// The row with primary key `key` (a value, or a tuple for composite keys).
    ///
    /// # Errors
    /// As [`Repo::get_many`].
    pub async fn get(&self, key: impl Key) -> Result<Option<T>> {
        let mut v = self.get_many([key]).await?;
        Ok(v.pop().flatten())
    }

    /// The rows with these keys, one entry per key in order, in one batched read.
    ///
    /// # Errors
    /// `InvalidInput` when a key has the wrong number of values or a value that does not
    /// fit its key column, or when a stored row does not decode into `T` (a column of
    /// another type); `Corrupted` for undecodable stored bytes; the errors of any read
    /// (see [`Executor`]).
    pub async fn get_many<K: Key>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<Vec<Option<T>>> {
        let keys: Vec<Row> = keys.into_iter().map(Key::into_key).collect();
        let arity = self.schema().primary_key.len();
        if let Some(k) = keys.iter().find(|k| k.len() != arity) {
            return Err(Error::invalid_input(format!(
                "{}: the primary key has {arity} column(s), got key {k:?}",
                self.schema().name
            )));
        }
        let op = Op::Get {
            table: self.schema(),
            keys,
        };
        match self.ex.run(op).await? {
            Output::Optional(rows) => rows
                .into_iter()
                .map(|r| r.map(T::from_row).transpose())
                .collect(),
            o => Err(unexpected(o)),
        }
    }

    /// The number of rows in the table.
    ///
    /// # Errors
    /// Only the errors of any read (see [`Executor`]).
    pub async fn count(&self) -> Result<u64> {
        count(
            self.ex
                .run(Op::Count {
                    table: self.schema(),
                })
                .await?,
        )
    }

    /// A keyset scan over the secondary index named `index`.
    ///
    /// # Errors
    /// The returned builder's methods fail with `InvalidInput` for an unknown index.
    pub fn find(&self, index: &str) -> Find<'e, T, E> {
        let (pos, err) = match self.schema().index_position(index) {
            Some(p) => (Some(p), None),
            None => (
                None,
                Some(format!(
                    "table {} has no index named {index:?}",
                    self.schema().name
                )),
            ),
        };
        Find::new(self.ex, pos, err)
    }

    /// A keyset scan in primary-key order (equality prefix and range apply to the
    /// primary-key columns).
    pub fn scan(&self) -> Find<'e, T, E> {
        Find::new(self.ex, None, None)
    }

    /// Every row in primary-key order, read in pages of `page_size` rows (keyset
    /// pagination: memory stays bounded and each page is its own atomic read).
    ///
    /// # Errors
    /// An item is `Err` when reading a page fails, with the errors of [`Find::page`];
    /// the stream ends after it.
    pub fn stream(&self, page_size: usize) -> impl Stream<Item = Result<T>> + 'e {
        let ex = self.ex;
        let page_size = page_size.max(1);
        futures::stream::try_unfold(
            (Some(None::<Cursor>), Vec::<T>::new().into_iter()),
            move |(mut cursor, mut buf)| async move {
                loop {
                    if let Some(row) = buf.next() {
                        return Ok(Some((row, (cursor, buf))));
                    }
                    let Some(after) = cursor.take() else {
                        return Ok(None);
                    };
                    let mut f = Find::<T, E>::new(ex, None, None).limit(page_size);
                    if let Some(c) = &after {
                        f = f.after(c);
                    }
                    let page = f.page().await?;
                    cursor = page.next.map(Some);
                    buf = page.rows.into_iter();
                }
            },
        )
    }

    /// For each child, its parent of type `P` (the belongs-to side), in one batched read.
    /// A NULL foreign key, or one with no parent row, gives `None`.
    ///
    /// # Errors
    /// As [`Repo::get_many`] on `P` with the children's foreign keys.
    pub async fn belongs_to<P: Table + Clone>(&self, children: &[T]) -> Result<Vec<Option<P>>>
    where
        T: BelongsTo<P>,
    {
        let keys: Vec<Option<Row>> = children.iter().map(BelongsTo::parent_key).collect();
        let mut unique: Vec<Row> = Vec::new();
        let mut pos: HashMap<String, usize> = HashMap::new();
        for k in keys.iter().flatten() {
            pos.entry(format!("{k:?}")).or_insert_with(|| {
                unique.push(k.clone());
                unique.len() - 1
            });
        }
        let parents: Vec<Option<P>> = Repo::<P, E>::new(self.ex).get_many(unique).await?;
        Ok(keys
            .iter()
            .map(|k| {
                k.as_ref()
                    .and_then(|k| parents[pos[&format!("{k:?}")]].clone())
            })
            .collect())
    }

    /// For each parent, its children of type `C` (the has-many side), through the
    /// secondary index on `C` whose leading columns are the foreign key; one batched
    /// read for all parents.
    ///
    /// # Errors
    /// `InvalidInput` when `C` has no index starting with its foreign-key columns.
    pub async fn has_many<C: BelongsTo<T>>(&self, parents: &[T]) -> Result<Vec<Vec<C>>> {
        let cs = C::schema();
        let fk: Vec<usize> = C::FOREIGN_KEY
            .iter()
            .map(|f| {
                cs.column_index(f)
                    .expect("derive checked the foreign-key field")
            })
            .collect();
        let index = cs
            .indexes
            .iter()
            .position(|ix| ix.when.is_none() && ix.columns.starts_with(&fk))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "has_many: table {} needs an index whose leading columns are {:?}",
                    cs.name,
                    C::FOREIGN_KEY
                ))
            })?;
        let ops = parents
            .iter()
            .map(|p| {
                Op::Scan(ScanRequest {
                    table: cs,
                    index: Some(index),
                    prefix: p.key(),
                    lower: Bound::Unbounded,
                    upper: Bound::Unbounded,
                    after: None,
                    reverse: false,
                    limit: None,
                })
            })
            .collect();
        self.ex
            .run_batch(ops)
            .await?
            .into_iter()
            .map(decode_rows::<C>)
            .collect()
    }

    /// Fills the id-list relation `R` of every row with one batched read of all the
    /// ids (duplicates read once; ids with no row are left out).
    ///
    /// # Errors
    /// As [`Repo::get_many`] on `R` with the ids; on error no row is changed.
    pub async fn load_ids<R: Table + Clone>(&self, rows: &mut [T]) -> Result<()>
    where
        T: IdList<R>,
    {
        let mut unique: Vec<Row> = Vec::new();
        let mut pos: HashMap<String, usize> = HashMap::new();
        let lists: Vec<Vec<Row>> = rows.iter().map(IdList::related_keys).collect();
        for k in lists.iter().flatten() {
            pos.entry(format!("{k:?}")).or_insert_with(|| {
                unique.push(k.clone());
                unique.len() - 1
            });
        }
        let related: Vec<Option<R>> = Repo::<R, E>::new(self.ex).get_many(unique).await?;
        for (row, list) in rows.iter_mut().zip(lists) {
            let items = list
                .iter()
                .filter_map(|k| related[pos[&format!("{k:?}")]].clone())
                .collect();
            row.fill_related(items);
        }
        Ok(())
    }
}

/// An opaque keyset-pagination cursor: the position after the last row of a page.
/// Pass it to [`Find::after`] for the next page. URL-safe text; valid only for the same
/// table, index and direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(String);

impl Cursor {
    fn encode(values: &Row) -> Cursor {
        let bytes = postcard::to_allocvec(values).expect("postcard encodes values");
        Cursor(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
    }
    fn decode(&self) -> Result<Row> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&self.0)
            .map_err(|e| Error::invalid_input(format!("bad cursor: {e}")))?;
        postcard::from_bytes(&bytes).map_err(|e| Error::invalid_input(format!("bad cursor: {e}")))
    }
    /// The cursor's text form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// A cursor from its text form (as received from a client).
    pub fn from_text(s: impl Into<String>) -> Cursor {
        Cursor(s.into())
    }
}

/// One page of a keyset scan.
#[derive(Debug)]
pub struct Page<T> {
    /// The rows, in scan order.
    pub rows: Vec<T>,
    /// Where the next page starts; `None` when this page is the last.
    pub next: Option<Cursor>,
}

/// A keyset scan under construction (see [`Repo::find`]).
#[must_use = "finish with .page(), .all() or .count()"]
pub struct Find<'e, T, E: ?Sized> {
    ex: &'e E,
    index: Option<usize>,
    error: Option<String>,
    prefix: Row,
    lower: Bound<Value>,
    upper: Bound<Value>,
    after: Option<Cursor>,
    reverse: bool,
    limit: Option<usize>,
    _t: PhantomData<fn() -> T>,
}

impl<'e, T: Table, E: Executor + ?Sized> Find<'e, T, E> {
    fn new(ex: &'e E, index: Option<usize>, error: Option<String>) -> Self {
        Find {
            ex,
            index,
            error,
            prefix: Vec::new(),
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
            after: None,
            reverse: false,
            limit: None,
            _t: PhantomData,
        }
    }

    fn columns(&self) -> Vec<usize> {
        let s = T::schema();
        match self.index {
            Some(i) => s.indexes[i].columns.clone(),
            None => s.primary_key.clone(),
        }
    }

    /// Fixes the next index column to `v` (equality).
    pub fn eq(mut self, v: impl ToValue) -> Self {
        self.prefix.push(v.param_value());
        self
    }
    /// Bounds the column after the equality prefix (`10..20`, `..=5`, `"a".."b"`).
    pub fn range<V: ToValue>(mut self, r: impl std::ops::RangeBounds<V>) -> Self {
        let map = |b: Bound<&V>| match b {
            Bound::Included(v) => Bound::Included(v.param_value()),
            Bound::Excluded(v) => Bound::Excluded(v.param_value()),
            Bound::Unbounded => Bound::Unbounded,
        };
        self.lower = map(r.start_bound());
        self.upper = map(r.end_bound());
        self
    }
    /// At most `n` rows per page.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = Some(n);
        self
    }
    /// Continues after a cursor from a previous page.
    pub fn after(mut self, c: &Cursor) -> Self {
        self.after = Some(c.clone());
        self
    }
    /// Descending order.
    pub fn reverse(mut self) -> Self {
        self.reverse = true;
        self
    }

    fn request(&self) -> Result<ScanRequest<'static>> {
        if let Some(e) = &self.error {
            return Err(Error::invalid_input(e.clone()));
        }
        let cols = self.columns();
        let s = T::schema();
        if self.prefix.len() > cols.len()
            || (self.prefix.len() == cols.len()
                && !matches!(
                    (&self.lower, &self.upper),
                    (Bound::Unbounded, Bound::Unbounded)
                ))
        {
            return Err(Error::invalid_input(format!(
                "{}: the scan fixes more columns than the index has ({})",
                s.name,
                cols.len()
            )));
        }
        // Engines convert the values to the columns' types (`ScanRequest::coerce`).
        Ok(ScanRequest {
            table: s,
            index: self.index,
            prefix: self.prefix.clone(),
            lower: self.lower.clone(),
            upper: self.upper.clone(),
            after: self.after.as_ref().map(Cursor::decode).transpose()?,
            reverse: self.reverse,
            limit: self.limit,
        })
    }

    /// Runs the scan; returns the rows and the cursor of the next page (present when the
    /// page is full, i.e. more rows may follow).
    ///
    /// # Errors
    /// `InvalidInput` for an unknown index name (given to [`Repo::find`]), a scan that
    /// fixes more columns than the index has, a cursor that is not one of
    /// [`Page::next`] or belongs to another index, a value that does not fit its
    /// column, or a stored row that does not decode into `T`; `Corrupted` for
    /// undecodable stored bytes; the errors of any read (see [`Executor`]).
    ///
    /// # Examples
    ///
    /// Keyset pagination: each page continues after the cursor of the one before.
    ///
    /// ```
    /// # extern crate datalayer_core as datalayer;
    /// # use datalayer::Db;
    /// # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
    /// # struct User { #[pk] id: i64, name: String }
    /// # async fn memory_db() -> datalayer::Result<Db> {
    /// #     let engine = std::sync::Arc::new(datalayer_etch::memory());
    /// #     Db::with_engine(engine).table::<User>().connect().await
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> datalayer::Result<()> {
    /// let db = memory_db().await?;
    /// let users = db.repo::<User>();
    /// for (id, name) in [(1, "ann"), (2, "bob"), (3, "cid")] {
    ///     users.insert(&User { id, name: name.into() }).await?;
    /// }
    ///
    /// let first = users.scan().limit(2).page().await?;
    /// assert_eq!(first.rows.iter().map(|u| u.id).collect::<Vec<_>>(), [1, 2]);
    /// let cursor = first.next.expect("a full page has a next cursor");
    ///
    /// // The cursor is URL-safe text, to hand to a client and take back.
    /// let cursor = datalayer::Cursor::from_text(cursor.as_str());
    /// let second = users.scan().limit(2).after(&cursor).page().await?;
    /// assert_eq!(second.rows.iter().map(|u| u.id).collect::<Vec<_>>(), [3]);
    /// assert!(second.next.is_none(), "the last page");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn page(self) -> Result<Page<T>> {
        let req = self.request()?;
        let rows = match self.ex.run(Op::Scan(req)).await? {
            Output::Rows(r) => r,
            o => return Err(unexpected(o)),
        };
        let next = match self.limit {
            Some(n) if rows.len() >= n && n > 0 => {
                let s = T::schema();
                let last = rows.last().expect("non-empty page");
                let mut pos: Row = self.columns().iter().map(|&c| last[c].clone()).collect();
                if self.index.is_some() {
                    pos.extend(s.primary_key.iter().map(|&c| last[c].clone()));
                }
                Some(Cursor::encode(&pos))
            }
            _ => None,
        };
        let rows = rows.into_iter().map(T::from_row).collect::<Result<_>>()?;
        Ok(Page { rows, next })
    }

    /// Runs the scan and returns every row (up to the limit).
    ///
    /// # Errors
    /// As [`Find::page`].
    pub async fn all(self) -> Result<Vec<T>> {
        Ok(self.page().await?.rows)
    }

    /// The number of rows the scan would return (up to the limit).
    ///
    /// # Errors
    /// As [`Find::page`], except that rows are not decoded into `T`.
    pub async fn count(self) -> Result<u64> {
        let req = self.request()?;
        match self.ex.run(Op::Scan(req)).await? {
            Output::Rows(r) => Ok(r.len() as u64),
            o => Err(unexpected(o)),
        }
    }
}
