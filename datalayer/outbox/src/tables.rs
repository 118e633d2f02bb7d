//! The outbox's own tables and the queries over them, declared with `#[derive(Table)]`
//! and `#[query_group]` rooted at `datalayer_core` (this crate sits below the facade).
//!
//! All names start with `_dl_outbox`, a prefix reserved for datalayer (see
//! [`datalayer_core::schema::validate_identifier`]); they are accepted by
//! [`TableSchema::validate`](datalayer_core::TableSchema::validate) through
//! [`is_internal_table`]; the names themselves live in
//! [`datalayer_core::schema::internal`], the one list of reserved table names.
//!
//! The schemas are part of every engine's stored format: table, column and index names,
//! column types, keys and column order never change (a unit test pins them).

use datalayer_core::TableSchema;
use datalayer_core::schema::Table as _;
use datalayer_macros::{Table, query_group};

pub use datalayer_core::schema::internal::{
    OUTBOX_EVENTS as EVENTS, OUTBOX_GROUPS as GROUPS, OUTBOX_MEMBERS as MEMBERS,
    OUTBOX_PENDING as PENDING, OUTBOX_SCHEDULED as SCHEDULED, OUTBOX_SEQ as SEQ,
    OUTBOX_TOPICS as TOPICS, is_internal_table,
};

/// A row of [`TOPICS`].
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = TOPICS)]
pub(crate) struct TopicRow {
    #[pk]
    pub topic: String,
    pub partitions: i32,
}

/// A row of [`SEQ`].
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = SEQ)]
pub(crate) struct SeqRow {
    #[pk]
    pub topic: String,
    #[pk]
    pub part: i32,
    /// The last seq assigned in this partition (0: none yet).
    pub last: i64,
}

#[query_group(crate = "datalayer_core")]
impl SeqRow {
    /// Takes the partition's next seq (the row lock orders concurrent emitters).
    fn bump_seq(topic: &str, part: i32) -> u64 {
        Self::filter(|s| s.topic == topic && s.part == part).update(|s| s.last += 1)
    }
}

/// A row of [`EVENTS`].
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = EVENTS)]
pub(crate) struct EventRow {
    #[pk]
    pub topic: String,
    #[pk]
    pub part: i32,
    #[pk]
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

#[query_group(crate = "datalayer_core")]
impl EventRow {
    /// Retention: deletes a partition's events up to seq `upto`.
    fn purge(topic: &str, part: i32, upto: i64) -> u64 {
        Self::filter(|e| e.topic == topic && e.part == part && e.seq <= upto).delete()
    }
}

/// A row of [`SCHEDULED`]: an event emitted with a future delivery time (the
/// scheduled lane, see [`crate::Sched`]). Its seq comes from the partition's counter
/// like every event's; `by_due` orders a partition's rows by delivery time, then seq,
/// so the due ones are a key-range prefix after a group's cursor.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = SCHEDULED)]
#[index(name = "by_due", fields(topic, part, deliver_at_us, seq))]
pub(crate) struct SchedRow {
    #[pk]
    pub topic: String,
    #[pk]
    pub part: i32,
    #[pk]
    pub seq: i64,
    pub deliver_at_us: i64,
    pub id: String,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
}

impl SchedRow {
    /// The event as a row of the seq lane (what the consumer delivers).
    pub fn into_event(self) -> EventRow {
        EventRow {
            topic: self.topic,
            part: self.part,
            seq: self.seq,
            deliver_at_us: self.deliver_at_us,
            id: self.id,
            key: self.key,
            payload: self.payload,
            origin: None,
            attempts: 0,
            error: None,
        }
    }
}

#[query_group(crate = "datalayer_core")]
impl SchedRow {
    /// Retention: deletes a partition's scheduled events due before `before` with seq
    /// up to `upto` (every group processed them).
    fn purge_scheduled(topic: &str, part: i32, before: i64, upto: i64) -> u64 {
        Self::filter(|e| {
            e.topic == topic && e.part == part && e.deliver_at_us < before && e.seq <= upto
        })
        .delete()
    }
}

/// A row of [`GROUPS`]: one consumer group's checkpoint and lease on one partition.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = GROUPS)]
#[index(name = "by_topic", fields(topic, part))]
pub(crate) struct GroupRow {
    #[pk]
    pub grp: String,
    #[pk]
    pub topic: String,
    #[pk]
    pub part: i32,
    /// Every seq `<= high` was seen: processed, or a row of [`PENDING`].
    pub high: i64,
    /// The rest of the group's position, of bounded size ([`crate::Window`]): the
    /// earliest delivery time among its [`PENDING`] rows and the round in flight.
    /// (Stores written before `_dl_outbox_pending` existed hold the postcard of
    /// `Vec<(seq, deliver_at_us)>` here; it is moved to [`PENDING`] at the next
    /// checkpoint.)
    pub pending: Vec<u8>,
    pub lease_owner: String,
    pub lease_until_us: i64,
    /// Incremented on every lease acquisition.
    pub fencing: i64,
}

#[query_group(crate = "datalayer_core")]
impl GroupRow {
    /// Conditional checkpoint: only the lease holder with this fencing value moves it.
    fn checkpoint(
        high: i64,
        pending: Vec<u8>,
        grp: &str,
        topic: &str,
        part: i32,
        owner: &str,
        fencing: i64,
    ) -> u64 {
        Self::filter(|g| {
            g.grp == grp
                && g.topic == topic
                && g.part == part
                && g.lease_owner == owner
                && g.fencing == fencing
        })
        .update(|g| {
            g.high = high;
            g.pending = pending;
        })
    }

    /// Lease acquisition, conditional on the fencing value read when choosing.
    fn acquire(owner: &str, until: i64, grp: &str, topic: &str, part: i32, fencing: i64) -> u64 {
        Self::filter(|g| g.grp == grp && g.topic == topic && g.part == part && g.fencing == fencing)
            .update(|g| {
                g.lease_owner = owner;
                g.lease_until_us = until;
                g.fencing += 1;
            })
    }

    /// Lease acquisition of an expired lease: conditional on the fencing value read
    /// when choosing and, at the time of the write, on the lease having ended before
    /// `now` (a renewal that landed in between wins).
    fn acquire_expired(
        owner: &str,
        until: i64,
        grp: &str,
        topic: &str,
        part: i32,
        fencing: i64,
        now: i64,
    ) -> u64 {
        Self::filter(|g| {
            g.grp == grp
                && g.topic == topic
                && g.part == part
                && g.fencing == fencing
                && g.lease_until_us < now
        })
        .update(|g| {
            g.lease_owner = owner;
            g.lease_until_us = until;
            g.fencing += 1;
        })
    }

    /// Lease renewal or release (`until` 0) by the holder.
    fn renew(until: i64, grp: &str, topic: &str, part: i32, owner: &str, fencing: i64) -> u64 {
        Self::filter(|g| {
            g.grp == grp
                && g.topic == topic
                && g.part == part
                && g.lease_owner == owner
                && g.fencing == fencing
        })
        .update(|g| g.lease_until_us = until)
    }
}

/// A row of [`MEMBERS`]: a worker's heartbeat.
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = MEMBERS)]
pub(crate) struct MemberRow {
    #[pk]
    pub grp: String,
    #[pk]
    pub topic: String,
    #[pk]
    pub worker: String,
    pub until_us: i64,
}

/// A row of [`PENDING`]: a scheduled event that group `grp` read before it was due.
/// The key orders a partition's rows by delivery time, then seq, so the due ones are a
/// key-range prefix; `by_seq` finds the lowest pending seq (retention).
#[derive(Table, Clone, Debug, PartialEq)]
#[table(crate = "datalayer_core", name = PENDING)]
#[index(name = "by_seq", fields(grp, topic, part, seq))]
pub(crate) struct PendingRow {
    #[pk]
    pub grp: String,
    #[pk]
    pub topic: String,
    #[pk]
    pub part: i32,
    #[pk]
    pub deliver_at_us: i64,
    #[pk]
    pub seq: i64,
}

/// Every internal table.
pub(crate) fn schemas() -> Vec<&'static TableSchema> {
    vec![
        TopicRow::schema(),
        SeqRow::schema(),
        EventRow::schema(),
        GroupRow::schema(),
        MemberRow::schema(),
        PendingRow::schema(),
        SchedRow::schema(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use datalayer_core::query::{ArithOp, CmpOp, Expr, ParamDef, QueryDef, QueryKind};
    use datalayer_core::schema::{ColumnDef, IndexDef};
    use datalayer_core::value::{ColumnType, Value};

    /// The stored format: what the hand-written impls declared before the derive.
    #[test]
    fn schemas_are_the_stored_format() {
        use ColumnType::{Bytes, I32, I64, String as Str};
        fn schema(
            name: &str,
            cols: &[(&str, ColumnType, bool)],
            pk: &[usize],
            indexes: Vec<IndexDef>,
        ) -> TableSchema {
            TableSchema {
                version: None,
                name: name.into(),
                columns: cols
                    .iter()
                    .map(|&(c, ty, nullable)| ColumnDef {
                        name: c.into(),
                        field: c.into(),
                        ty,
                        nullable,
                    })
                    .collect(),
                primary_key: pk.to_vec(),
                indexes,
            }
        }
        let by_topic = IndexDef {
            name: "by_topic".into(),
            columns: vec![1, 2],
            unique: false,
            when: None,
        };
        let want = [
            schema(
                "_dl_outbox_topics",
                &[("topic", Str, false), ("partitions", I32, false)],
                &[0],
                vec![],
            ),
            schema(
                "_dl_outbox_seq",
                &[
                    ("topic", Str, false),
                    ("part", I32, false),
                    ("last", I64, false),
                ],
                &[0, 1],
                vec![],
            ),
            schema(
                "_dl_outbox",
                &[
                    ("topic", Str, false),
                    ("part", I32, false),
                    ("seq", I64, false),
                    ("deliver_at_us", I64, false),
                    ("id", Str, false),
                    ("key", Bytes, false),
                    ("payload", Bytes, false),
                    ("origin", Str, true),
                    ("attempts", I32, false),
                    ("error", Str, true),
                ],
                &[0, 1, 2],
                vec![],
            ),
            schema(
                "_dl_outbox_groups",
                &[
                    ("grp", Str, false),
                    ("topic", Str, false),
                    ("part", I32, false),
                    ("high", I64, false),
                    ("pending", Bytes, false),
                    ("lease_owner", Str, false),
                    ("lease_until_us", I64, false),
                    ("fencing", I64, false),
                ],
                &[0, 1, 2],
                vec![by_topic],
            ),
            schema(
                "_dl_outbox_members",
                &[
                    ("grp", Str, false),
                    ("topic", Str, false),
                    ("worker", Str, false),
                    ("until_us", I64, false),
                ],
                &[0, 1, 2],
                vec![],
            ),
            schema(
                "_dl_outbox_pending",
                &[
                    ("grp", Str, false),
                    ("topic", Str, false),
                    ("part", I32, false),
                    ("deliver_at_us", I64, false),
                    ("seq", I64, false),
                ],
                &[0, 1, 2, 3, 4],
                vec![IndexDef {
                    name: "by_seq".into(),
                    columns: vec![0, 1, 2, 4],
                    unique: false,
                    when: None,
                }],
            ),
            schema(
                "_dl_outbox_scheduled",
                &[
                    ("topic", Str, false),
                    ("part", I32, false),
                    ("seq", I64, false),
                    ("deliver_at_us", I64, false),
                    ("id", Str, false),
                    ("key", Bytes, false),
                    ("payload", Bytes, false),
                ],
                &[0, 1, 2],
                vec![IndexDef {
                    name: "by_due".into(),
                    columns: vec![0, 1, 3, 2],
                    unique: false,
                    when: None,
                }],
            ),
        ];
        let got: Vec<TableSchema> = schemas().into_iter().cloned().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn schemas_validate_and_queries_build() {
        for s in schemas() {
            s.validate().unwrap();
            assert!(is_internal_table(&s.name));
        }
        // Each `_query()` builds its definition and panics if the builder refuses it.
        let queries = <crate::OutboxQueries as datalayer_core::QueryGroup>::queries();
        assert_eq!(queries.len(), 7);
        assert!(!is_internal_table("_dl_catalog"));
    }

    /// The queries the hand-built definitions had: callers pass parameters by position.
    #[test]
    fn queries_are_the_hand_built_ones() {
        use Expr::{Column as C, Param as P};
        fn eq(a: Expr, b: Expr) -> Expr {
            Expr::cmp(CmpOp::Eq, a, b)
        }
        fn params(q: &QueryDef) -> Vec<(&str, ColumnType)> {
            assert!(q.params.iter().all(|p: &ParamDef| !p.nullable));
            q.params.iter().map(|p| (p.name.as_str(), p.ty)).collect()
        }
        let plus_one = |c| Expr::arith(ArithOp::Add, C(c), Expr::Literal(Value::I64(1)));
        let update = |assignments| QueryKind::Update { assignments };
        let (s, i, l, b) = (
            ColumnType::String,
            ColumnType::I32,
            ColumnType::I64,
            ColumnType::Bytes,
        );

        let q = SeqRow::bump_seq_query();
        assert_eq!(params(q), [("topic", s), ("part", i)]);
        assert_eq!(
            q.filter,
            Some(Expr::And(vec![eq(C(0), P(0)), eq(C(1), P(1))]))
        );
        assert_eq!(q.kind, update(vec![(2, plus_one(2))]));

        // (grp, topic, part) = ($a, $b, $c)
        let pk = |a, b, c| vec![eq(C(0), P(a)), eq(C(1), P(b)), eq(C(2), P(c))];
        let q = GroupRow::checkpoint_query();
        let want = [("high", l), ("pending", b), ("grp", s), ("topic", s)];
        assert_eq!(params(q)[..4], want);
        assert_eq!(params(q)[4..], [("part", i), ("owner", s), ("fencing", l)]);
        let mut f = pk(2, 3, 4);
        f.extend([eq(C(5), P(5)), eq(C(7), P(6))]);
        assert_eq!(q.filter, Some(Expr::And(f)));
        assert_eq!(q.kind, update(vec![(3, P(0)), (4, P(1))]));

        let q = GroupRow::acquire_query();
        let want = [("owner", s), ("until", l), ("grp", s), ("topic", s)];
        assert_eq!(params(q)[..4], want);
        assert_eq!(params(q)[4..], [("part", i), ("fencing", l)]);
        let mut f = pk(2, 3, 4);
        f.push(eq(C(7), P(5)));
        assert_eq!(q.filter, Some(Expr::And(f)));
        assert_eq!(q.kind, update(vec![(5, P(0)), (6, P(1)), (7, plus_one(7))]));

        let q = GroupRow::acquire_expired_query();
        assert_eq!(params(q)[..4], want);
        let tail = [("part", i), ("fencing", l), ("now", l)];
        assert_eq!(params(q)[4..], tail);
        let mut f = pk(2, 3, 4);
        f.push(eq(C(7), P(5)));
        f.push(Expr::cmp(CmpOp::Lt, C(6), P(6)));
        assert_eq!(q.filter, Some(Expr::And(f)));
        assert_eq!(q.kind, update(vec![(5, P(0)), (6, P(1)), (7, plus_one(7))]));

        let q = GroupRow::renew_query();
        let want = [("until", l), ("grp", s), ("topic", s), ("part", i)];
        assert_eq!(params(q)[..4], want);
        assert_eq!(params(q)[4..], [("owner", s), ("fencing", l)]);
        let mut f = pk(1, 2, 3);
        f.extend([eq(C(5), P(4)), eq(C(7), P(5))]);
        assert_eq!(q.filter, Some(Expr::And(f)));
        assert_eq!(q.kind, update(vec![(6, P(0))]));

        let q = EventRow::purge_query();
        assert_eq!(params(q), [("topic", s), ("part", i), ("upto", l)]);
        let f = vec![
            eq(C(0), P(0)),
            eq(C(1), P(1)),
            Expr::cmp(CmpOp::Le, C(2), P(2)),
        ];
        assert_eq!(q.filter, Some(Expr::And(f)));
        assert_eq!(q.kind, QueryKind::Delete);
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
        assert_eq!(
            e.key(),
            [Value::String("t".into()), Value::I32(1), Value::I64(2)]
        );
        let t = TopicRow {
            topic: "t".into(),
            partitions: 4,
        };
        assert_eq!(TopicRow::from_row(t.to_row()).unwrap(), t);
        let s = SeqRow {
            topic: "t".into(),
            part: 1,
            last: 7,
        };
        assert_eq!(SeqRow::from_row(s.to_row()).unwrap(), s);
        let m = MemberRow {
            grp: "g".into(),
            topic: "t".into(),
            worker: "w".into(),
            until_us: 8,
        };
        assert_eq!(MemberRow::from_row(m.to_row()).unwrap(), m);
        assert_eq!(m.key(), m.to_row()[..3]);
    }

    #[test]
    fn a_bad_row_names_the_table() {
        let e = TopicRow::from_row(vec![Value::String("t".into())]).unwrap_err();
        assert!(e.is_invalid_input());
        assert_eq!(
            e.message(),
            "table _dl_outbox_topics has 2 columns, the row has 1"
        );
        let e = TopicRow::from_row(vec![Value::String("t".into()), Value::String("x".into())])
            .unwrap_err();
        assert!(
            e.message()
                .starts_with("column _dl_outbox_topics.partitions: ")
        );
    }
}
