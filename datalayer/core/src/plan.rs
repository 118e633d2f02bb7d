//! The access-path planner of the KV family.
//!
//! For each query, once: pick the cheapest path among
//! 1. a primary-key point read (every key column fixed by equality),
//! 2. a unique-index point read,
//! 3. a range scan of the primary key or of a secondary index, fixing the longest
//!    equality prefix of its columns plus an optional range on the next column,
//!    preferring a path whose order already satisfies `ORDER BY` (then a `LIMIT` stops
//!    the scan early),
//! 4. a full scan in primary-key order.
//!
//! A conditional index is usable only when its `when` conjuncts all appear among the
//! query's conjuncts. The full filter is always re-evaluated on every candidate row, so
//! the path only narrows what is read, it never decides what matches.

use crate::query::{CmpOp, Expr, OrderBy, QueryDef};
use crate::schema::TableSchema;

/// One bound on a column: the value expression and whether it is inclusive.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanBound {
    /// A row-independent expression (parameter or literal).
    pub value: Expr,
    /// `<=`/`>=` rather than `<`/`>`.
    pub inclusive: bool,
}

/// How rows are found.
#[derive(Clone, Debug, PartialEq)]
pub enum Access {
    /// Read one row by primary key; one expression per key column.
    PkPoint(Vec<Expr>),
    /// Scan the primary key (`index: None`) or a secondary index.
    Range {
        /// Index position; `None` = primary key.
        index: Option<usize>,
        /// Equality values of the leading columns.
        prefix: Vec<Expr>,
        /// Lower bound on the next column.
        lower: Option<PlanBound>,
        /// Upper bound on the next column.
        upper: Option<PlanBound>,
    },
}

/// The plan of one query.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The access path.
    pub access: Access,
    /// Rows come out of the access path already in `ORDER BY` order.
    pub ordered: bool,
    /// Scan in descending key order (to satisfy a descending `ORDER BY`).
    pub reverse: bool,
    /// Every conjunct of the filter is decided by the access path itself (equality
    /// prefix, range bounds, a conditional index's condition), so rows found need no
    /// re-evaluation and a count can count index entries without reading rows.
    pub covered: bool,
}

#[derive(Default, Clone)]
struct ColumnFacts {
    eq: Option<Expr>,
    lower: Option<PlanBound>,
    upper: Option<PlanBound>,
    /// Positions (in the filter's conjuncts) of the conjuncts behind eq, lower, upper.
    eq_src: Option<usize>,
    lower_src: Option<usize>,
    upper_src: Option<usize>,
}

fn facts(table: &TableSchema, filter: Option<&Expr>) -> Vec<ColumnFacts> {
    let mut f = vec![ColumnFacts::default(); table.columns.len()];
    let Some(filter) = filter else { return f };
    for (pos, c) in filter.conjuncts().into_iter().enumerate() {
        let Expr::Cmp(op, a, b) = c else { continue };
        let (col, op, v) = match (&**a, &**b) {
            (Expr::Column(i), v) if v.is_row_independent() => (*i, *op, v.clone()),
            (v, Expr::Column(i)) if v.is_row_independent() => (*i, op.flip(), v.clone()),
            _ => continue,
        };
        let slot = &mut f[col];
        match op {
            CmpOp::Eq if slot.eq.is_none() => {
                slot.eq = Some(v);
                slot.eq_src = Some(pos);
            }
            CmpOp::Gt | CmpOp::Ge if slot.lower.is_none() => {
                slot.lower = Some(PlanBound {
                    value: v,
                    inclusive: op == CmpOp::Ge,
                });
                slot.lower_src = Some(pos);
            }
            CmpOp::Lt | CmpOp::Le if slot.upper.is_none() => {
                slot.upper = Some(PlanBound {
                    value: v,
                    inclusive: op == CmpOp::Le,
                });
                slot.upper_src = Some(pos);
            }
            _ => {}
        }
    }
    f
}

fn usable(when: Option<&Expr>, filter: Option<&Expr>) -> bool {
    match when {
        None => true,
        Some(w) => {
            let have = filter.map(|f| f.conjuncts()).unwrap_or_default();
            w.conjuncts().iter().all(|c| have.contains(c))
        }
    }
}

/// Whether a scan over `seq` (the columns after the equality prefix, in key order)
/// yields rows in `order` order; returns the direction if so.
fn order_direction(seq: &[usize], fixed: &[usize], order: &[OrderBy]) -> Option<bool> {
    let terms: Vec<&OrderBy> = order
        .iter()
        .filter(|o| !fixed.contains(&o.column))
        .collect();
    if terms.is_empty() {
        return Some(false);
    }
    let desc = terms[0].desc;
    if terms.len() > seq.len() || terms.iter().any(|t| t.desc != desc) {
        return None;
    }
    terms
        .iter()
        .zip(seq)
        .all(|(t, &c)| t.column == c)
        .then_some(desc)
}

/// Plans `q`.
pub fn plan(q: &QueryDef) -> Plan {
    plan_filter(q.table, q.filter.as_ref(), &q.order_by)
}

/// Plans a filter and ordering over `table`.
pub fn plan_filter(table: &TableSchema, filter: Option<&Expr>, order: &[OrderBy]) -> Plan {
    let f = facts(table, filter);
    let conjuncts: Vec<&Expr> = filter.map(|e| e.conjuncts()).unwrap_or_default();
    // Whether the conjuncts consumed by a path (plus a conditional index's condition)
    // are all of them.
    let covers = |cols: &[usize], k: usize, when: Option<&Expr>| {
        let mut used = vec![false; conjuncts.len()];
        for &c in &cols[..k] {
            if let Some(p) = f[c].eq_src {
                used[p] = true;
            }
        }
        if let Some(&c) = cols.get(k) {
            for p in [f[c].lower_src, f[c].upper_src].into_iter().flatten() {
                used[p] = true;
            }
        }
        if let Some(w) = when {
            for wc in w.conjuncts() {
                if let Some(p) = conjuncts.iter().position(|c| *c == wc) {
                    used[p] = true;
                }
            }
        }
        used.iter().all(|u| *u)
    };
    // Candidate column lists: the primary key, then each usable index.
    let mut best: Option<(i64, Plan)> = None;
    let mut consider = |index: Option<usize>, cols: &[usize], unique: bool, when: Option<&Expr>| {
        let k = cols.iter().take_while(|&&c| f[c].eq.is_some()).count();
        let prefix: Vec<Expr> = cols[..k]
            .iter()
            .map(|&c| f[c].eq.clone().expect("eq"))
            .collect();
        let covered = covers(cols, k, when);
        if k == cols.len() && unique && index.is_none() {
            let p = Plan {
                access: Access::PkPoint(prefix),
                ordered: true,
                reverse: false,
                covered,
            };
            best = Some((10_000, p));
            return;
        }
        let next = cols.get(k).map(|&c| &f[c]);
        let lower = next.and_then(|n| n.lower.clone());
        let upper = next.and_then(|n| n.upper.clone());
        let mut seq: Vec<usize> = cols[k..].to_vec();
        if index.is_some() {
            seq.extend(table.primary_key.iter().copied());
        }
        let fixed = &cols[..k];
        let dir = order_direction(&seq, fixed, order);
        let mut score = (k as i64) * 100;
        if lower.is_some() || upper.is_some() {
            score += 50;
        }
        if k == cols.len() && unique {
            score += 1_000;
        }
        if dir.is_some() {
            score += 20;
        }
        if index.is_none() {
            score += 5; // no second lookup
        }
        let p = Plan {
            access: Access::Range {
                index,
                prefix,
                lower,
                upper,
            },
            ordered: dir.is_some(),
            reverse: dir.unwrap_or(false),
            covered,
        };
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((score, p));
        }
    };
    consider(None, &table.primary_key, true, None);
    for (i, ix) in table.indexes.iter().enumerate() {
        if usable(ix.when.as_ref(), filter) {
            consider(Some(i), &ix.columns, ix.unique, ix.when.as_ref());
        }
    }
    best.expect("the primary key is always a candidate").1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{ColumnDef, IndexDef};
    use crate::value::{ColumnType, Value};

    fn table() -> TableSchema {
        let col = |n: &str, ty| ColumnDef {
            name: n.into(),
            field: n.into(),
            ty,
            nullable: false,
        };
        TableSchema {
            version: None,
            name: "flights".into(),
            columns: vec![
                col("id", ColumnType::I64),
                col("origin", ColumnType::String),
                col("day", ColumnType::I32),
                col("dep", ColumnType::I32),
                col("tail", ColumnType::String),
            ],
            primary_key: vec![0],
            indexes: vec![
                IndexDef {
                    name: "by_origin_day".into(),
                    columns: vec![1, 2, 3],
                    unique: false,
                    when: None,
                },
                IndexDef {
                    name: "by_tail".into(),
                    columns: vec![4],
                    unique: false,
                    when: Some(Expr::cmp(
                        CmpOp::Eq,
                        Expr::Column(2),
                        Expr::Literal(Value::I32(1)),
                    )),
                },
            ],
        }
    }

    fn eq(c: usize, p: usize) -> Expr {
        Expr::cmp(CmpOp::Eq, Expr::Column(c), Expr::Param(p))
    }

    #[test]
    fn pk_point_wins() {
        let t = table();
        let p = plan_filter(&t, Some(&Expr::And(vec![eq(1, 1), eq(0, 0)])), &[]);
        assert_eq!(p.access, Access::PkPoint(vec![Expr::Param(0)]));
        assert!(!p.covered, "origin == ? is left to the filter");
        assert!(plan_filter(&t, Some(&eq(0, 0)), &[]).covered);
    }

    #[test]
    fn coverage_counts_every_conjunct() {
        let t = table();
        let f = Expr::And(vec![
            eq(1, 0),
            eq(2, 1),
            Expr::cmp(CmpOp::Lt, Expr::Column(3), Expr::Param(2)),
        ]);
        assert!(plan_filter(&t, Some(&f), &[]).covered);
        let g = Expr::And(vec![
            eq(1, 0),
            Expr::cmp(CmpOp::Ne, Expr::Column(2), Expr::Param(1)),
        ]);
        assert!(!plan_filter(&t, Some(&g), &[]).covered);
        let h = Expr::And(vec![eq(1, 0), eq(1, 1)]);
        assert!(
            !plan_filter(&t, Some(&h), &[]).covered,
            "a second equality on a column is re-checked"
        );
        assert!(plan_filter(&t, None, &[]).covered);
    }

    #[test]
    fn index_prefix_with_order() {
        let t = table();
        let f = Expr::And(vec![eq(1, 0), eq(2, 1)]);
        let p = plan_filter(
            &t,
            Some(&f),
            &[OrderBy {
                column: 3,
                desc: true,
            }],
        );
        assert!(
            matches!(p.access, Access::Range { index: Some(0), ref prefix, .. } if prefix.len() == 2)
        );
        assert!(p.ordered && p.reverse);
    }

    #[test]
    fn conditional_index_needs_its_condition() {
        let t = table();
        let p = plan_filter(&t, Some(&eq(4, 0)), &[]);
        assert!(
            matches!(p.access, Access::Range { index: None, .. }),
            "{p:?}"
        );
        let with = Expr::And(vec![
            eq(4, 0),
            Expr::cmp(CmpOp::Eq, Expr::Column(2), Expr::Literal(Value::I32(1))),
        ]);
        let p = plan_filter(&t, Some(&with), &[]);
        assert!(
            matches!(p.access, Access::Range { index: Some(1), .. }),
            "{p:?}"
        );
    }

    #[test]
    fn range_on_next_column() {
        let t = table();
        let f = Expr::And(vec![
            eq(1, 0),
            Expr::cmp(CmpOp::Ge, Expr::Column(2), Expr::Param(1)),
        ]);
        let p = plan_filter(&t, Some(&f), &[]);
        match p.access {
            Access::Range {
                index: Some(0),
                prefix,
                lower: Some(l),
                upper: None,
            } => {
                assert_eq!(prefix.len(), 1);
                assert!(l.inclusive);
            }
            a => panic!("{a:?}"),
        }
    }
}
