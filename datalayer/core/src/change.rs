//! Change data capture: the row changes of a table, in commit order, resumable.
//!
//! SQL engines capture with triggers into a `_dl_cdc_log` table, so writes made with
//! raw SQL outside datalayer are captured too; KV engines write change records in the
//! same transaction as the data. Every change has a `position`, strictly increasing in
//! commit order within one engine; a reader resumes after the last position it
//! processed, and may trim the log up to it.
//!
//! # Examples
//!
//! ```
//! # extern crate datalayer_core as datalayer;
//! # use datalayer::{ChangeKind, Db, Value};
//! # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
//! # #[table(name = "users")]
//! # struct User { #[pk] id: i64, name: String }
//! # async fn memory_db() -> datalayer::Result<Db> {
//! #     let engine = std::sync::Arc::new(datalayer_etch::memory());
//! #     Db::with_engine(engine).table::<User>().connect().await
//! # }
//! # #[tokio::main]
//! # async fn main() -> datalayer::Result<()> {
//! let db = memory_db().await?;
//! db.enable_changes("users").await?;
//!
//! let users = db.repo::<User>();
//! users.insert(&User { id: 1, name: "ann".into() }).await?;
//! users.update(&User { id: 1, name: "ann b".into() }).await?;
//! users.delete(1).await?;
//!
//! let log = db.read_changes("users", 0, 100).await?;
//! let kinds: Vec<_> = log.iter().map(|c| c.kind).collect();
//! assert_eq!(kinds, [ChangeKind::Insert, ChangeKind::Update, ChangeKind::Delete]);
//! assert_eq!(log[1].get("name"), Some(&Value::String("ann b".into())));
//!
//! // A reader that processed the first change resumes after its position ...
//! let rest = db.read_changes("users", log[0].position, 100).await?;
//! assert_eq!(rest, log[1..]);
//! // ... and trims the log up to it.
//! assert_eq!(db.trim_changes("users", log[0].position).await?, 1);
//! assert_eq!(db.read_changes("users", 0, 100).await?, rest);
//! # Ok(())
//! # }
//! ```

use crate::db::Db;
use crate::error::Result;
use crate::value::{Row, Value};
use futures::Stream;
use std::time::Duration;

/// What happened to a row.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ChangeKind {
    /// A new row (`values` = the new image).
    Insert,
    /// A changed row (`values` = the new image).
    Update,
    /// A removed row (`values` = the old image).
    Delete,
}

/// One captured row change.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// Position in the change log: strictly increasing in commit order; resume after it.
    pub position: u64,
    /// Table name.
    pub table: String,
    /// Insert, update or delete.
    pub kind: ChangeKind,
    /// Column names of the image, resolved when the log is read.
    pub columns: Vec<String>,
    /// The row image, aligned with `columns`.
    pub values: Row,
}

impl Change {
    /// The value of column `name` in the image.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.columns
            .iter()
            .position(|c| c == name)
            .map(|i| &self.values[i])
    }
}

/// Options of [`Db::changes`].
#[derive(Clone, Debug)]
pub struct ChangeOptions {
    /// Resume after this position. Default: 0 (from the start of the log).
    pub after: u64,
    /// Changes read per round trip. Default: 1,000.
    pub batch: usize,
    /// Wait between polls when the log has nothing new. Default: 50 ms.
    pub poll_interval: Duration,
}

impl Default for ChangeOptions {
    fn default() -> Self {
        ChangeOptions {
            after: 0,
            batch: 1_000,
            poll_interval: Duration::from_millis(50),
        }
    }
}

impl Db {
    /// Installs change capture on `table` (idempotent). SQL engines add triggers, so
    /// later raw-SQL writes are captured as well.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed`; `NotFound` for an unknown table;
    /// `InvalidInput` for a name that is not a valid identifier (SQL engines); the
    /// errors of any write (see [`Executor`](crate::Executor)).
    pub async fn enable_changes(&self, table: &str) -> Result<()> {
        self.engine().enable_changes(table).await
    }

    /// Reads up to `limit` changes of `table` after `after`, in commit order.
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed`; `NotFound` for an unknown table;
    /// `InvalidInput` for a name that is not a valid identifier (SQL engines);
    /// `Corrupted` for a change record that cannot be decoded; the errors of any read
    /// (see [`Executor`](crate::Executor)). A table without capture has no changes (not
    /// an error).
    pub async fn read_changes(&self, table: &str, after: u64, limit: usize) -> Result<Vec<Change>> {
        self.engine().read_changes(table, after, limit).await
    }

    /// Deletes the changes of `table` up to and including `upto` (what a consumer has
    /// processed); returns how many were removed (0 for a table with no changes).
    ///
    /// # Errors
    /// `Unsupported` without `Capability::change_feed`; `InvalidInput` for a name that
    /// is not a valid identifier (SQL engines); the errors of any write (see
    /// [`Executor`](crate::Executor)).
    pub async fn trim_changes(&self, table: &str, upto: u64) -> Result<u64> {
        self.engine().trim_changes(table, upto).await
    }

    /// An endless stream of the changes of `table` after `opts.after`, in commit order,
    /// polling every `opts.poll_interval` when idle. Stop by dropping the stream.
    ///
    /// # Errors
    /// An item is `Err` when a read fails, with the errors of [`Db::read_changes`]; the
    /// stream ends after it. To go on, open a new stream after the position of the last
    /// change handled.
    ///
    /// # Examples
    ///
    /// ```
    /// # extern crate datalayer_core as datalayer;
    /// # use datalayer::{ChangeKind, ChangeOptions, Db, Value};
    /// # #[derive(datalayer_macros::Table, Clone, Debug, PartialEq)]
    /// # #[table(name = "users")]
    /// # struct User { #[pk] id: i64, name: String }
    /// # async fn memory_db() -> datalayer::Result<Db> {
    /// #     let engine = std::sync::Arc::new(datalayer_etch::memory());
    /// #     Db::with_engine(engine).table::<User>().connect().await
    /// # }
    /// # #[tokio::main]
    /// # async fn main() -> datalayer::Result<()> {
    /// use futures::StreamExt;
    ///
    /// let db = memory_db().await?;
    /// db.enable_changes("users").await?;
    /// let users = db.repo::<User>();
    /// users.insert(&User { id: 1, name: "ann".into() }).await?;
    /// users.insert(&User { id: 2, name: "bob".into() }).await?;
    ///
    /// let mut feed = std::pin::pin!(db.changes("users", ChangeOptions::default()));
    /// let first = feed.next().await.expect("endless")?;
    /// assert_eq!(first.kind, ChangeKind::Insert);
    /// assert_eq!(first.get("id"), Some(&Value::I64(1)));
    ///
    /// // Resume after the last change handled (a position kept by the consumer).
    /// let opts = ChangeOptions { after: first.position, ..Default::default() };
    /// let mut feed = std::pin::pin!(db.changes("users", opts));
    /// let next = feed.next().await.expect("endless")?;
    /// assert_eq!(next.get("name"), Some(&Value::String("bob".into())));
    /// # Ok(())
    /// # }
    /// ```
    pub fn changes(
        &self,
        table: &str,
        opts: ChangeOptions,
    ) -> impl Stream<Item = Result<Change>> + Send + 'static {
        let db = self.clone();
        let table = table.to_owned();
        futures::stream::try_unfold(
            (opts.after, std::collections::VecDeque::<Change>::new()),
            move |(mut pos, mut buf)| {
                let db = db.clone();
                let table = table.clone();
                let opts = opts.clone();
                async move {
                    loop {
                        if let Some(c) = buf.pop_front() {
                            pos = c.position;
                            return Ok(Some((c, (pos, buf))));
                        }
                        let got = db.read_changes(&table, pos, opts.batch).await?;
                        if got.is_empty() {
                            tokio::time::sleep(opts.poll_interval).await;
                        }
                        buf.extend(got);
                    }
                }
            },
        )
    }
}
