//! Evaluation of [`Expr`] over one row, with SQL's three-valued logic.
//!
//! Used by the KV family for residual filters, conditional-index predicates and update
//! assignments; the SQL family leaves evaluation to the database. NULL semantics follow
//! SQL-92: a comparison with NULL is unknown (`Value::Null`), `AND`/`OR` use Kleene logic,
//! and a filter keeps a row only when it evaluates to `true`.

use crate::error::{Error, Result};
use crate::query::{ArithOp, CmpOp, Expr};
use crate::value::Value;
use std::cmp::Ordering;

/// Compares two non-NULL values of compatible types (integers with integers, any
/// numeric with any numeric, text with text, bytes with bytes, bools with bools, and
/// UUIDs, timestamps, dates and decimals each with their own type). `None` for NULL,
/// JSON or incompatible types.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Null, _) | (_, Value::Null) => None,
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Uuid(x), Value::Uuid(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(y)),
        (Value::Decimal(x), Value::Decimal(y)) => Some(x.cmp(y)),
        // JSON has no order every engine shares (`ColumnType::is_orderable`).
        (Value::Json(_), _) | (_, Value::Json(_)) => None,
        _ => match (a.as_i64(), b.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => a.as_f64()?.partial_cmp(&b.as_f64()?),
        },
    }
}

/// Evaluates `e` over `row` with `params`.
///
/// # Errors
/// `InvalidInput` for arithmetic overflow or arithmetic on non-numeric values, or a
/// column/parameter position out of range.
pub fn eval(e: &Expr, row: &[Value], params: &[Value]) -> Result<Value> {
    Ok(match e {
        Expr::Column(i) => row
            .get(*i)
            .cloned()
            .ok_or_else(|| Error::invalid_input(format!("column {i} out of range")))?,
        Expr::Param(i) => params
            .get(*i)
            .cloned()
            .ok_or_else(|| Error::invalid_input(format!("parameter {i} missing")))?,
        Expr::Literal(v) => v.clone(),
        Expr::Cmp(op, a, b) => {
            let (a, b) = (eval(a, row, params)?, eval(b, row, params)?);
            match compare(&a, &b) {
                None => Value::Null,
                Some(o) => Value::Bool(match op {
                    CmpOp::Eq => o.is_eq(),
                    CmpOp::Ne => o.is_ne(),
                    CmpOp::Lt => o.is_lt(),
                    CmpOp::Le => o.is_le(),
                    CmpOp::Gt => o.is_gt(),
                    CmpOp::Ge => o.is_ge(),
                }),
            }
        }
        Expr::And(v) => {
            let mut unknown = false;
            for x in v {
                match eval(x, row, params)? {
                    Value::Bool(false) => return Ok(Value::Bool(false)),
                    Value::Bool(true) => {}
                    _ => unknown = true,
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(true)
            }
        }
        Expr::Or(v) => {
            let mut unknown = false;
            for x in v {
                match eval(x, row, params)? {
                    Value::Bool(true) => return Ok(Value::Bool(true)),
                    Value::Bool(false) => {}
                    _ => unknown = true,
                }
            }
            if unknown {
                Value::Null
            } else {
                Value::Bool(false)
            }
        }
        Expr::Not(a) => match eval(a, row, params)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => Value::Null,
        },
        Expr::IsNull(a) => Value::Bool(eval(a, row, params)?.is_null()),
        Expr::StartsWith(a, b) => match (eval(a, row, params)?, eval(b, row, params)?) {
            (Value::String(s), Value::String(p)) => Value::Bool(s.starts_with(&p)),
            _ => Value::Null,
        },
        Expr::Arith(op, a, b) => arith(*op, eval(a, row, params)?, eval(b, row, params)?)?,
    })
}

fn arith(op: ArithOp, a: Value, b: Value) -> Result<Value> {
    if a.is_null() || b.is_null() {
        return Ok(Value::Null);
    }
    let overflow = || Error::invalid_input(format!("arithmetic overflow: {a} {op:?} {b}"));
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        let r = match op {
            ArithOp::Add => x.checked_add(y),
            ArithOp::Sub => x.checked_sub(y),
        }
        .ok_or_else(overflow)?;
        // Keep the left operand's width (the column's type); the caller coerces.
        return Ok(Value::I64(r));
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => Ok(Value::F64(match op {
            ArithOp::Add => x + y,
            ArithOp::Sub => x - y,
        })),
        _ => Err(Error::invalid_input(format!(
            "arithmetic on non-numeric values {a} and {b}"
        ))),
    }
}

/// Whether a filter keeps `row`: true only when it evaluates to `true` (false for
/// `false` and for NULL, SQL's unknown). No filter keeps every row.
///
/// # Errors
/// As [`eval`]: `InvalidInput` for arithmetic overflow or arithmetic on non-numeric
/// values, or a column/parameter position out of range.
pub fn matches(filter: Option<&Expr>, row: &[Value], params: &[Value]) -> Result<bool> {
    match filter {
        None => Ok(true),
        Some(f) => Ok(matches!(eval(f, row, params)?, Value::Bool(true))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(i: usize) -> Expr {
        Expr::Column(i)
    }
    fn lit(v: Value) -> Expr {
        Expr::Literal(v)
    }

    #[test]
    fn null_comparisons_are_unknown() {
        let row = vec![Value::Null, Value::I32(3)];
        let e = Expr::cmp(CmpOp::Eq, col(0), lit(Value::I32(3)));
        assert_eq!(eval(&e, &row, &[]).unwrap(), Value::Null);
        assert!(!matches(Some(&e), &row, &[]).unwrap());
        let not = Expr::Not(Box::new(e));
        assert!(!matches(Some(&not), &row, &[]).unwrap());
    }

    #[test]
    fn kleene_or_and() {
        let row = vec![Value::Null, Value::I32(3)];
        let unknown = Expr::cmp(CmpOp::Eq, col(0), lit(Value::I32(1)));
        let t = Expr::cmp(CmpOp::Gt, col(1), lit(Value::I64(2)));
        assert!(matches(Some(&Expr::Or(vec![unknown.clone(), t.clone()])), &row, &[]).unwrap());
        assert_eq!(
            eval(&Expr::And(vec![unknown, t]), &row, &[]).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn arithmetic_overflow_is_an_error() {
        let e = Expr::arith(ArithOp::Add, lit(Value::I64(i64::MAX)), lit(Value::I64(1)));
        assert!(eval(&e, &[], &[]).unwrap_err().is_invalid_input());
        let e = Expr::arith(ArithOp::Sub, lit(Value::I32(5)), Expr::Param(0));
        assert_eq!(eval(&e, &[], &[Value::I32(7)]).unwrap(), Value::I64(-2));
    }
}
