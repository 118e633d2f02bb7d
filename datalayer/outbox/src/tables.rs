//! The outbox's own tables (hand-written [`Table`] impls) and the queries over them.
//!
//! All names start with `_dl_outbox`, a prefix reserved for datalayer (see
//! [`datalayer_core::schema::validate_identifier`]); they are accepted by
//! [`TableSchema::validate`] through [`is_internal_table`]; the names themselves live
//! in [`datalayer_core::schema::internal`], the one list of reserved table names.

use datalayer_core::error::{Error, Result};
use datalayer_core::query::{ArithOp, CmpOp, Expr, QueryBuilder, QueryDef, QueryKind};
use datalayer_core::schema::{ColumnDef, IndexDef, Table, TableSchema};
use datalayer_core::value::{ColumnType, ColumnValue, Row, Value};
use std::sync::OnceLock;

pub use datalayer_core::schema::internal::{
    OUTBOX_EVENTS as EVENTS, OUTBOX_GROUPS as GROUPS, OUTBOX_MEMBERS as MEMBERS, OUTBOX_SEQ as SEQ,
    OUTBOX_TOPICS as TOPICS, is_internal_table,
};

fn col(name: &str, ty: ColumnType, nullable: bool) -> ColumnDef {
    ColumnDef {
        name: name.into(),
        field: name.into(),
        ty,
        nullable,
    }
}

fn bad_row(table: &str, row: &Row) -> Error {
    Error::invalid_input(format!("{table}: unexpected row shape {row:?}"))
}

fn take<T: ColumnValue>(it: &mut std::vec::IntoIter<Value>) -> Result<T> {
    T::from_value(it.next().unwrap_or(Value::Null))
}

macro_rules! table_schema {
    ($name:expr, [$($c:expr),* $(,)?], pk = [$($k:expr),*], indexes = [$($ix:expr),*]) => {{
        static S: OnceLock<TableSchema> = OnceLock::new();
        S.get_or_init(|| TableSchema {
            name: $name.into(),
            columns: vec![$($c),*],
            primary_key: vec![$($k),*],
            indexes: vec![$($ix),*],
        })
    }};
}

/// A row of [`TOPICS`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct TopicRow {
    pub topic: String,
    pub partitions: i32,
}

impl Table for TopicRow {
    fn schema() -> &'static TableSchema {
        table_schema!(
            TOPICS,
            [
                col("topic", ColumnType::String, false),
                col("partitions", ColumnType::I32, false)
            ],
            pk = [0],
            indexes = []
        )
    }
    fn to_row(&self) -> Row {
        vec![self.topic.to_value(), self.partitions.to_value()]
    }
    fn from_row(row: Row) -> Result<Self> {
        if row.len() != 2 {
            return Err(bad_row(TOPICS, &row));
        }
        let mut it = row.into_iter();
        Ok(TopicRow {
            topic: take(&mut it)?,
            partitions: take(&mut it)?,
        })
    }
}

/// A row of [`SEQ`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SeqRow {
    pub topic: String,
    pub part: i32,
    /// The last seq assigned in this partition (0: none yet).
    pub last: i64,
}

impl Table for SeqRow {
    fn schema() -> &'static TableSchema {
        table_schema!(
            SEQ,
            [
                col("topic", ColumnType::String, false),
                col("part", ColumnType::I32, false),
                col("last", ColumnType::I64, false)
            ],
            pk = [0, 1],
            indexes = []
        )
    }
    fn to_row(&self) -> Row {
        vec![
            self.topic.to_value(),
            self.part.to_value(),
            self.last.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        if row.len() != 3 {
            return Err(bad_row(SEQ, &row));
        }
        let mut it = row.into_iter();
        Ok(SeqRow {
            topic: take(&mut it)?,
            part: take(&mut it)?,
            last: take(&mut it)?,
        })
    }
}

/// A row of [`EVENTS`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct EventRow {
    pub topic: String,
    pub part: i32,
    pub seq: i64,
    pub deliver_at_us: i64,
    pub id: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// Dead letters: the id of the event that failed.
    pub origin: Option<String>,
    /// Dead letters: delivery attempts made; 0 otherwise.
    pub attempts: i32,
    /// Dead letters: the last handler error.
    pub error: Option<String>,
}

impl Table for EventRow {
    fn schema() -> &'static TableSchema {
        table_schema!(
            EVENTS,
            [
                col("topic", ColumnType::String, false),
                col("part", ColumnType::I32, false),
                col("seq", ColumnType::I64, false),
                col("deliver_at_us", ColumnType::I64, false),
                col("id", ColumnType::String, false),
                col("key", ColumnType::Bytes, false),
                col("payload", ColumnType::Bytes, false),
                col("origin", ColumnType::String, true),
                col("attempts", ColumnType::I32, false),
                col("error", ColumnType::String, true),
            ],
            pk = [0, 1, 2],
            indexes = []
        )
    }
    fn to_row(&self) -> Row {
        vec![
            self.topic.to_value(),
            self.part.to_value(),
            self.seq.to_value(),
            self.deliver_at_us.to_value(),
            self.id.to_value(),
            self.key.to_value(),
            self.payload.to_value(),
            self.origin.to_value(),
            self.attempts.to_value(),
            self.error.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        if row.len() != 10 {
            return Err(bad_row(EVENTS, &row));
        }
        let mut it = row.into_iter();
        Ok(EventRow {
            topic: take(&mut it)?,
            part: take(&mut it)?,
            seq: take(&mut it)?,
            deliver_at_us: take(&mut it)?,
            id: take(&mut it)?,
            key: take(&mut it)?,
            payload: take(&mut it)?,
            origin: take(&mut it)?,
            attempts: take(&mut it)?,
            error: take(&mut it)?,
        })
    }
}

/// A row of [`GROUPS`]: one consumer group's checkpoint and lease on one partition.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct GroupRow {
    pub grp: String,
    pub topic: String,
    pub part: i32,
    /// Every seq `<= high` was seen: processed, or listed in `pending`.
    pub high: i64,
    /// postcard of `Vec<(seq, deliver_at_us)>`: events `<= high` not yet due when seen.
    pub pending: Vec<u8>,
    pub lease_owner: String,
    pub lease_until_us: i64,
    /// Incremented on every lease acquisition.
    pub fencing: i64,
}

impl Table for GroupRow {
    fn schema() -> &'static TableSchema {
        table_schema!(
            GROUPS,
            [
                col("grp", ColumnType::String, false),
                col("topic", ColumnType::String, false),
                col("part", ColumnType::I32, false),
                col("high", ColumnType::I64, false),
                col("pending", ColumnType::Bytes, false),
                col("lease_owner", ColumnType::String, false),
                col("lease_until_us", ColumnType::I64, false),
                col("fencing", ColumnType::I64, false),
            ],
            pk = [0, 1, 2],
            indexes = [IndexDef {
                name: "by_topic".into(),
                columns: vec![1, 2],
                unique: false,
                when: None,
            }]
        )
    }
    fn to_row(&self) -> Row {
        vec![
            self.grp.to_value(),
            self.topic.to_value(),
            self.part.to_value(),
            self.high.to_value(),
            self.pending.to_value(),
            self.lease_owner.to_value(),
            self.lease_until_us.to_value(),
            self.fencing.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        if row.len() != 8 {
            return Err(bad_row(GROUPS, &row));
        }
        let mut it = row.into_iter();
        Ok(GroupRow {
            grp: take(&mut it)?,
            topic: take(&mut it)?,
            part: take(&mut it)?,
            high: take(&mut it)?,
            pending: take(&mut it)?,
            lease_owner: take(&mut it)?,
            lease_until_us: take(&mut it)?,
            fencing: take(&mut it)?,
        })
    }
}

/// A row of [`MEMBERS`]: a worker's heartbeat.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct MemberRow {
    pub grp: String,
    pub topic: String,
    pub worker: String,
    pub until_us: i64,
}

impl Table for MemberRow {
    fn schema() -> &'static TableSchema {
        table_schema!(
            MEMBERS,
            [
                col("grp", ColumnType::String, false),
                col("topic", ColumnType::String, false),
                col("worker", ColumnType::String, false),
                col("until_us", ColumnType::I64, false),
            ],
            pk = [0, 1, 2],
            indexes = []
        )
    }
    fn to_row(&self) -> Row {
        vec![
            self.grp.to_value(),
            self.topic.to_value(),
            self.worker.to_value(),
            self.until_us.to_value(),
        ]
    }
    fn from_row(row: Row) -> Result<Self> {
        if row.len() != 4 {
            return Err(bad_row(MEMBERS, &row));
        }
        let mut it = row.into_iter();
        Ok(MemberRow {
            grp: take(&mut it)?,
            topic: take(&mut it)?,
            worker: take(&mut it)?,
            until_us: take(&mut it)?,
        })
    }
}

/// Every internal table.
pub(crate) fn schemas() -> Vec<&'static TableSchema> {
    vec![
        TopicRow::schema(),
        SeqRow::schema(),
        EventRow::schema(),
        GroupRow::schema(),
        MemberRow::schema(),
    ]
}

/// The queries of the outbox, built once.
pub(crate) struct Queries {
    /// `last = last + 1 WHERE topic = $0 AND part = $1`.
    pub bump_seq: QueryDef,
    /// Conditional checkpoint: `high = $0, pending = $1 WHERE pk = ($2, $3, $4) AND
    /// lease_owner = $5 AND fencing = $6`.
    pub checkpoint: QueryDef,
    /// Lease acquisition: `lease_owner = $0, lease_until_us = $1, fencing = fencing + 1
    /// WHERE pk = ($2, $3, $4) AND fencing = $5` (the fencing value read when choosing).
    pub acquire: QueryDef,
    /// Lease renewal or release: `lease_until_us = $0 WHERE pk = ($1, $2, $3) AND
    /// lease_owner = $4 AND fencing = $5`.
    pub renew: QueryDef,
    /// Retention: `DELETE WHERE topic = $0 AND part = $1 AND seq <= $2`.
    pub purge: QueryDef,
}

fn eq(a: Expr, b: Expr) -> Expr {
    Expr::cmp(CmpOp::Eq, a, b)
}

fn group_pk(b: &mut QueryBuilder) -> Vec<Expr> {
    let (g, t, p) = (b.col("grp"), b.col("topic"), b.col("part"));
    let pg = b.param("grp", ColumnType::String, false);
    let pt = b.param("topic", ColumnType::String, false);
    let pp = b.param("part", ColumnType::I32, false);
    vec![eq(g, pg), eq(t, pt), eq(p, pp)]
}

fn build() -> Result<Queries> {
    let bump_seq = {
        let mut b = QueryBuilder::new("outbox::bump_seq", SeqRow::schema());
        let (t, p, last) = (b.col("topic"), b.col("part"), b.col("last"));
        let pt = b.param("topic", ColumnType::String, false);
        let pp = b.param("part", ColumnType::I32, false);
        b.filter(Expr::And(vec![eq(t, pt), eq(p, pp)]));
        let last_col = b.col("last");
        let Expr::Column(li) = last_col else {
            unreachable!()
        };
        b.kind(QueryKind::Update {
            assignments: vec![(
                li,
                Expr::arith(ArithOp::Add, last, Expr::Literal(Value::I64(1))),
            )],
        });
        b.build()?
    };
    let checkpoint = {
        let mut b = QueryBuilder::new("outbox::checkpoint", GroupRow::schema());
        let ph = b.param("high", ColumnType::I64, false);
        let pn = b.param("pending", ColumnType::Bytes, false);
        let mut f = group_pk(&mut b);
        let (o, fe) = (b.col("lease_owner"), b.col("fencing"));
        let po = b.param("owner", ColumnType::String, false);
        let pf = b.param("fencing", ColumnType::I64, false);
        f.extend([eq(o, po), eq(fe, pf)]);
        b.filter(Expr::And(f));
        let (Expr::Column(hi), Expr::Column(ni)) = (b.col("high"), b.col("pending")) else {
            unreachable!()
        };
        b.kind(QueryKind::Update {
            assignments: vec![(hi, ph), (ni, pn)],
        });
        b.build()?
    };
    let acquire = {
        let mut b = QueryBuilder::new("outbox::acquire", GroupRow::schema());
        let po = b.param("owner", ColumnType::String, false);
        let pu = b.param("until", ColumnType::I64, false);
        let mut f = group_pk(&mut b);
        let fe = b.col("fencing");
        let pf = b.param("fencing", ColumnType::I64, false);
        f.push(eq(fe.clone(), pf));
        b.filter(Expr::And(f));
        let (Expr::Column(oi), Expr::Column(ui), Expr::Column(fi)) =
            (b.col("lease_owner"), b.col("lease_until_us"), fe)
        else {
            unreachable!()
        };
        b.kind(QueryKind::Update {
            assignments: vec![
                (oi, po),
                (ui, pu),
                (
                    fi,
                    Expr::arith(ArithOp::Add, Expr::Column(fi), Expr::Literal(Value::I64(1))),
                ),
            ],
        });
        b.build()?
    };
    let renew = {
        let mut b = QueryBuilder::new("outbox::renew", GroupRow::schema());
        let pu = b.param("until", ColumnType::I64, false);
        let mut f = group_pk(&mut b);
        let (o, fe) = (b.col("lease_owner"), b.col("fencing"));
        let po = b.param("owner", ColumnType::String, false);
        let pf = b.param("fencing", ColumnType::I64, false);
        f.extend([eq(o, po), eq(fe, pf)]);
        b.filter(Expr::And(f));
        let Expr::Column(ui) = b.col("lease_until_us") else {
            unreachable!()
        };
        b.kind(QueryKind::Update {
            assignments: vec![(ui, pu)],
        });
        b.build()?
    };
    let purge = {
        let mut b = QueryBuilder::new("outbox::purge", EventRow::schema());
        let (t, p, s) = (b.col("topic"), b.col("part"), b.col("seq"));
        let pt = b.param("topic", ColumnType::String, false);
        let pp = b.param("part", ColumnType::I32, false);
        let ps = b.param("upto", ColumnType::I64, false);
        b.filter(Expr::And(vec![
            eq(t, pt),
            eq(p, pp),
            Expr::cmp(CmpOp::Le, s, ps),
        ]));
        b.kind(QueryKind::Delete);
        b.build()?
    };
    Ok(Queries {
        bump_seq,
        checkpoint,
        acquire,
        renew,
        purge,
    })
}

/// The outbox's queries (built on first use; the builder cannot fail for these fixed
/// definitions, which a unit test checks).
pub(crate) fn queries() -> &'static Queries {
    static Q: OnceLock<Queries> = OnceLock::new();
    Q.get_or_init(|| build().expect("the outbox's fixed queries are valid"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_validate_and_queries_build() {
        for s in schemas() {
            s.validate().unwrap();
            assert!(is_internal_table(&s.name));
        }
        build().unwrap();
        assert!(!is_internal_table("_dl_catalog"));
    }

    #[test]
    fn rows_round_trip() {
        let g = GroupRow {
            grp: "g".into(),
            topic: "t".into(),
            part: 3,
            high: 9,
            pending: vec![1, 2],
            lease_owner: "w".into(),
            lease_until_us: 5,
            fencing: 2,
        };
        assert_eq!(GroupRow::from_row(g.to_row()).unwrap(), g);
        let e = EventRow {
            topic: "t".into(),
            part: 1,
            seq: 2,
            deliver_at_us: 3,
            id: "t/1/2".into(),
            key: b"k".to_vec(),
            payload: vec![],
            origin: None,
            attempts: 0,
            error: Some("x".into()),
        };
        assert_eq!(EventRow::from_row(e.to_row()).unwrap(), e);
    }
}
