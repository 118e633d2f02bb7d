//! The closure-expression parser shared by `#[derive(Table)]` (conditional indexes) and
//! `#[query_group]` (filters, updates).
//!
//! A closure body such as `u.age >= min && u.email.is_some()` is parsed into a [`Node`]
//! tree. A node is then
//! - lowered to tokens that build an `Expr` of the root crate ([`Node::lower`]), with columns
//!   resolved by the caller (by field name at run time for queries, to positions at
//!   macro time for indexes);
//! - turned into type-check calls ([`Node::checks`]) placed at the user's tokens, so that
//!   the compiler reports a wrong field or a mismatched type at the user's expression;
//! - described as SQL-like text for generated doc comments ([`Node::describe`]).

use crate::attrs::Root;
use proc_macro2::{Literal, Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{BinOp, Expr, Ident, Lit, Pat, UnOp};

/// The message for every construct the parser does not understand.
pub const UNSUPPORTED: &str = "datalayer: unsupported expression in a query: use comparisons, &&, ||, !, is_none(), is_some(), starts_with, + and -";

/// What names a closure body may use.
pub struct Scope<'a> {
    /// The closure's row parameter (`u` in `|u| u.age > 3`).
    pub row: Ident,
    /// The query fn's parameters, in order; empty for a conditional index.
    pub params: &'a [Ident],
    /// Whether parameters are allowed (false in an index's `when`: literals only).
    pub allow_params: bool,
}

/// A comparison operator.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Cmp {
    fn tokens(self, dl: &Root) -> TokenStream {
        match self {
            Cmp::Eq => quote!(#dl::CmpOp::Eq),
            Cmp::Ne => quote!(#dl::CmpOp::Ne),
            Cmp::Lt => quote!(#dl::CmpOp::Lt),
            Cmp::Le => quote!(#dl::CmpOp::Le),
            Cmp::Gt => quote!(#dl::CmpOp::Gt),
            Cmp::Ge => quote!(#dl::CmpOp::Ge),
        }
    }
    fn sql(self) -> &'static str {
        match self {
            Cmp::Eq => "=",
            Cmp::Ne => "<>",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
        }
    }
}

/// A literal value as written.
#[derive(Clone, Debug)]
pub enum LitValue {
    /// An integer; `suffix` is `i16`, `i32`, `i64` or empty.
    Int(i128, String),
    /// A float; `suffix` is `f32`, `f64` or empty.
    Float(f64, String),
    /// A string.
    Str(String),
    /// A boolean.
    Bool(bool),
}

impl LitValue {
    pub(crate) fn value_tokens(&self, dl: &Root, span: Span) -> syn::Result<TokenStream> {
        let out_of_range = || syn::Error::new(span, "datalayer: integer literal out of range");
        let mut lit = match self {
            LitValue::Int(v, suffix) => match suffix.as_str() {
                "i16" => Literal::i16_suffixed(i16::try_from(*v).map_err(|_| out_of_range())?),
                "i32" => Literal::i32_suffixed(i32::try_from(*v).map_err(|_| out_of_range())?),
                _ => Literal::i64_suffixed(i64::try_from(*v).map_err(|_| out_of_range())?),
            },
            LitValue::Float(v, suffix) if suffix == "f32" => Literal::f32_suffixed(*v as f32),
            LitValue::Float(v, _) => Literal::f64_suffixed(*v),
            LitValue::Str(s) => {
                return Ok(quote!(#dl::Value::String(::std::string::String::from(#s))));
            }
            LitValue::Bool(b) => return Ok(quote!(#dl::Value::Bool(#b))),
        };
        lit.set_span(span);
        let variant = match self {
            LitValue::Int(_, s) if s == "i16" => quote!(I16),
            LitValue::Int(_, s) if s == "i32" => quote!(I32),
            LitValue::Int(..) => quote!(I64),
            LitValue::Float(_, s) if s == "f32" => quote!(F32),
            _ => quote!(F64),
        };
        Ok(quote!(#dl::Value::#variant(#lit)))
    }

    fn describe(&self) -> String {
        match self {
            LitValue::Int(v, _) => v.to_string(),
            LitValue::Float(v, _) => format!("{v:?}"),
            LitValue::Str(s) => format!("'{}'", s.replace('\'', "''")),
            LitValue::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        }
    }
}

/// A parsed expression.
#[derive(Clone)]
pub enum Node {
    /// `u.field`: the field ident and the span of `u`, both the user's.
    Column(Ident, Span),
    /// A parameter of the query fn, by position.
    Param(usize, Ident),
    /// A literal; `tokens` is the Rust expression as written (for type checks).
    Lit(LitValue, TokenStream, Span),
    /// `None`, only as the right-hand side of an assignment.
    Null(Span),
    /// `a op b`; the tokens are the user's operator.
    Cmp(Cmp, Box<Node>, Box<Node>, TokenStream),
    /// `a && b && ...`.
    And(Vec<Node>),
    /// `a || b || ...`.
    Or(Vec<Node>),
    /// `!a`.
    Not(Box<Node>),
    /// `u.f.is_none()`; the tokens are the user's method name.
    IsNull(Box<Node>, TokenStream),
    /// `u.f.starts_with(x)`; the tokens are the user's method name.
    StartsWith(Box<Node>, Box<Node>, TokenStream),
    /// `a + b` (`add` = true) or `a - b`; the tokens are the user's operator.
    Arith(bool, Box<Node>, Box<Node>, TokenStream),
}

fn unsupported(tokens: impl ToTokens) -> syn::Error {
    syn::Error::new_spanned(tokens, UNSUPPORTED)
}

/// Splits `|u| body` into the row ident and the body.
pub fn closure(e: &Expr) -> syn::Result<(Ident, &Expr)> {
    let Expr::Closure(c) = e else {
        return Err(syn::Error::new_spanned(
            e,
            "datalayer: expected a closure over the row, like `|u| u.age > 18`",
        ));
    };
    if c.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &c.inputs,
            "datalayer: the closure takes exactly one parameter, the row",
        ));
    }
    let pat = match &c.inputs[0] {
        Pat::Type(t) => &*t.pat,
        p => p,
    };
    match pat {
        Pat::Ident(p) if p.subpat.is_none() => Ok((p.ident.clone(), &c.body)),
        p => Err(syn::Error::new_spanned(
            p,
            "datalayer: the closure's parameter must be a plain name, like `|u|`",
        )),
    }
}

fn strip(mut e: &Expr) -> &Expr {
    loop {
        match e {
            Expr::Paren(p) => e = &p.expr,
            Expr::Group(g) => e = &g.expr,
            // `|u| { a && b }`
            Expr::Block(b) if b.label.is_none() => match b.block.stmts.as_slice() {
                [syn::Stmt::Expr(inner, None)] => e = inner,
                _ => return e,
            },
            _ => return e,
        }
    }
}

impl Scope<'_> {
    /// `u.field` → the field ident.
    pub fn column(&self, e: &Expr) -> Option<Ident> {
        if let Expr::Field(f) = strip(e)
            && let Expr::Path(p) = strip(&f.base)
            && p.qself.is_none()
            && p.path.is_ident(&self.row)
            && let syn::Member::Named(name) = &f.member
        {
            return Some(name.clone());
        }
        None
    }

    /// `u.field` → a column node.
    pub fn column_node(&self, e: &Expr) -> Option<Node> {
        let field = self.column(e)?;
        let row_span = match strip(e) {
            Expr::Field(f) => f.base.span(),
            _ => field.span(),
        };
        Some(Node::Column(field, row_span))
    }

    /// Parses a boolean filter expression.
    pub fn predicate(&self, e: &Expr) -> syn::Result<Node> {
        let e = strip(e);
        match e {
            Expr::Binary(b) => match b.op {
                BinOp::And(_) => {
                    let mut v = Vec::new();
                    for side in [&*b.left, &*b.right] {
                        match self.predicate(side)? {
                            Node::And(inner) => v.extend(inner),
                            n => v.push(n),
                        }
                    }
                    Ok(Node::And(v))
                }
                BinOp::Or(_) => {
                    let mut v = Vec::new();
                    for side in [&*b.left, &*b.right] {
                        match self.predicate(side)? {
                            Node::Or(inner) => v.extend(inner),
                            n => v.push(n),
                        }
                    }
                    Ok(Node::Or(v))
                }
                op => {
                    let cmp = match op {
                        BinOp::Eq(_) => Cmp::Eq,
                        BinOp::Ne(_) => Cmp::Ne,
                        BinOp::Lt(_) => Cmp::Lt,
                        BinOp::Le(_) => Cmp::Le,
                        BinOp::Gt(_) => Cmp::Gt,
                        BinOp::Ge(_) => Cmp::Ge,
                        _ => return Err(unsupported(e)),
                    };
                    let (l, r) = (self.value(&b.left)?, self.value(&b.right)?);
                    for side in [&l, &r] {
                        if let Node::Null(_) = side {
                            return Err(syn::Error::new_spanned(
                                e,
                                "datalayer: a comparison with `None` is never true (NULL); use `u.field.is_none()` or `u.field.is_some()`",
                            ));
                        }
                    }
                    if !l.has_column() && !r.has_column() {
                        return Err(syn::Error::new_spanned(
                            e,
                            "datalayer: a comparison needs a column (`u.field`) on one side",
                        ));
                    }
                    Ok(Node::Cmp(
                        cmp,
                        Box::new(l),
                        Box::new(r),
                        b.op.to_token_stream(),
                    ))
                }
            },
            Expr::Unary(u) if matches!(u.op, UnOp::Not(_)) => {
                Ok(Node::Not(Box::new(self.predicate(&u.expr)?)))
            }
            Expr::MethodCall(m) => {
                let method = m.method.to_string();
                let col = || self.column_node(&m.receiver).ok_or_else(|| unsupported(e));
                match method.as_str() {
                    "is_none" | "is_some" if m.args.is_empty() => {
                        let n = Node::IsNull(Box::new(col()?), m.method.to_token_stream());
                        Ok(if method == "is_some" {
                            Node::Not(Box::new(n))
                        } else {
                            n
                        })
                    }
                    "starts_with" if m.args.len() == 1 => {
                        let prefix = self.value(&m.args[0])?;
                        if !matches!(prefix, Node::Param(..) | Node::Lit(LitValue::Str(_), ..)) {
                            return Err(syn::Error::new_spanned(
                                &m.args[0],
                                "datalayer: `starts_with` takes a parameter or a string literal",
                            ));
                        }
                        Ok(Node::StartsWith(
                            Box::new(col()?),
                            Box::new(prefix),
                            m.method.to_token_stream(),
                        ))
                    }
                    _ => Err(unsupported(e)),
                }
            }
            Expr::Field(_) => match self.column_node(e) {
                // A bare boolean column: `u.active` means `u.active == true`.
                Some(c) => {
                    let span = first_span(&e.to_token_stream());
                    let lit = Node::Lit(LitValue::Bool(true), quote_spanned!(span=> true), span);
                    Ok(Node::Cmp(
                        Cmp::Eq,
                        Box::new(c),
                        Box::new(lit),
                        e.to_token_stream(),
                    ))
                }
                None => Err(unsupported(e)),
            },
            _ => Err(unsupported(e)),
        }
    }

    /// Parses an operand: a column, a parameter, a literal, `Some(x)`, `None`, `a + b`, `a - b`.
    pub fn value(&self, e: &Expr) -> syn::Result<Node> {
        let e = strip(e);
        if let Some(c) = self.column_node(e) {
            return Ok(c);
        }
        match e {
            Expr::Path(p) if p.qself.is_none() => {
                if p.path.is_ident("None") {
                    return Ok(Node::Null(e.span()));
                }
                let Some(ident) = p.path.get_ident() else {
                    return Err(unsupported(e));
                };
                match self.params.iter().position(|x| x == ident) {
                    Some(_) if !self.allow_params => Err(syn::Error::new_spanned(
                        e,
                        "datalayer: a conditional index's `when` may use columns and literals only",
                    )),
                    Some(i) => Ok(Node::Param(i, ident.clone())),
                    None if !self.allow_params => Err(syn::Error::new_spanned(
                        e,
                        format!(
                            "datalayer: `{ident}` is not allowed here: a conditional index's `when` may use columns (`{}.field`) and literals only",
                            self.row
                        ),
                    )),
                    None => Err(syn::Error::new_spanned(
                        e,
                        format!(
                            "datalayer: `{ident}` is not a parameter of this query fn; use a parameter, a literal or a column (`{}.field`)",
                            self.row
                        ),
                    )),
                }
            }
            Expr::Lit(l) => Ok(Node::Lit(
                lit_value(&l.lit, false)?,
                e.to_token_stream(),
                e.span(),
            )),
            Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => match strip(&u.expr) {
                Expr::Lit(l) if matches!(l.lit, Lit::Int(_) | Lit::Float(_)) => Ok(Node::Lit(
                    lit_value(&l.lit, true)?,
                    e.to_token_stream(),
                    e.span(),
                )),
                _ => Err(unsupported(e)),
            },
            Expr::Call(c) if c.args.len() == 1 => match strip(&c.func) {
                Expr::Path(p) if p.path.is_ident("Some") => {
                    let inner = self.value(&c.args[0])?;
                    if matches!(inner, Node::Null(_)) {
                        return Err(unsupported(e));
                    }
                    Ok(inner)
                }
                _ => Err(unsupported(e)),
            },
            Expr::Binary(b) if matches!(b.op, BinOp::Add(_) | BinOp::Sub(_)) => {
                let (l, r) = (self.value(&b.left)?, self.value(&b.right)?);
                if matches!(l, Node::Null(_)) || matches!(r, Node::Null(_)) {
                    return Err(unsupported(e));
                }
                Ok(Node::Arith(
                    matches!(b.op, BinOp::Add(_)),
                    Box::new(l),
                    Box::new(r),
                    b.op.to_token_stream(),
                ))
            }
            _ => Err(unsupported(e)),
        }
    }
}

pub(crate) fn lit_value(l: &Lit, negate: bool) -> syn::Result<LitValue> {
    let sign: i128 = if negate { -1 } else { 1 };
    Ok(match l {
        Lit::Int(i) => {
            let suffix = i.suffix().to_owned();
            if !matches!(suffix.as_str(), "" | "i16" | "i32" | "i64") {
                return Err(syn::Error::new_spanned(
                    l,
                    "datalayer: integer literals are i16, i32 or i64",
                ));
            }
            LitValue::Int(sign * i.base10_parse::<i128>()?, suffix)
        }
        Lit::Float(f) => {
            let suffix = f.suffix().to_owned();
            LitValue::Float(
                if negate {
                    -f.base10_parse::<f64>()?
                } else {
                    f.base10_parse::<f64>()?
                },
                suffix,
            )
        }
        Lit::Str(s) => LitValue::Str(s.value()),
        Lit::Bool(b) => LitValue::Bool(b.value),
        _ => return Err(unsupported(l)),
    })
}

/// How a lowering resolves columns to tokens.
pub trait Columns {
    /// Tokens evaluating to the `Expr` of column `field`.
    fn expr(&self, field: &Ident) -> TokenStream;
    /// Tokens evaluating to `Option<ColumnType>` for column `field`.
    fn ty(&self, field: &Ident) -> TokenStream;
}

impl Node {
    /// Whether a column is read.
    pub fn has_column(&self) -> bool {
        self.first_column().is_some()
    }

    /// The first column read, which types the literals next to it.
    pub fn first_column(&self) -> Option<&Ident> {
        match self {
            Node::Column(f, _) => Some(f),
            Node::Param(..) | Node::Lit(..) | Node::Null(_) => None,
            Node::Cmp(_, a, b, _) | Node::StartsWith(a, b, _) | Node::Arith(_, a, b, _) => {
                a.first_column().or_else(|| b.first_column())
            }
            Node::And(v) | Node::Or(v) => v.iter().find_map(Node::first_column),
            Node::Not(a) | Node::IsNull(a, _) => a.first_column(),
        }
    }

    /// Tokens building the `Expr` (of the crate at `dl`); `ctx` is the column a literal
    /// is next to.
    pub fn lower(
        &self,
        dl: &Root,
        cols: &dyn Columns,
        ctx: Option<&Ident>,
    ) -> syn::Result<TokenStream> {
        let pair =
            |a: &Node, b: &Node, cols: &dyn Columns| -> syn::Result<(TokenStream, TokenStream)> {
                let ctx = self.first_column().or(ctx);
                Ok((a.lower(dl, cols, ctx)?, b.lower(dl, cols, ctx)?))
            };
        Ok(match self {
            Node::Column(f, _) => cols.expr(f),
            Node::Param(i, _) => quote!(#dl::Expr::Param(#i)),
            Node::Lit(v, _, span) => {
                let value = v.value_tokens(dl, *span)?;
                let ty = match ctx {
                    Some(c) => cols.ty(c),
                    None => quote!(::std::option::Option::None),
                };
                quote!(#dl::check::literal(#value, #ty))
            }
            Node::Null(_) => quote!(#dl::Expr::Literal(#dl::Value::Null)),
            Node::Cmp(op, a, b, _) => {
                let op = op.tokens(dl);
                let (a, b) = pair(a, b, cols)?;
                quote!(#dl::Expr::cmp(#op, #a, #b))
            }
            Node::And(v) | Node::Or(v) => {
                let items = v
                    .iter()
                    .map(|n| n.lower(dl, cols, ctx))
                    .collect::<syn::Result<Vec<_>>>()?;
                let variant = if matches!(self, Node::And(_)) {
                    quote!(And)
                } else {
                    quote!(Or)
                };
                quote!(#dl::Expr::#variant(::std::vec![#(#items),*]))
            }
            Node::Not(a) => {
                let a = a.lower(dl, cols, ctx)?;
                quote!(#dl::Expr::Not(::std::boxed::Box::new(#a)))
            }
            Node::IsNull(a, _) => {
                let a = a.lower(dl, cols, ctx)?;
                quote!(#dl::Expr::IsNull(::std::boxed::Box::new(#a)))
            }
            Node::StartsWith(a, b, _) => {
                let (a, b) = pair(a, b, cols)?;
                quote!(#dl::Expr::StartsWith(::std::boxed::Box::new(#a), ::std::boxed::Box::new(#b)))
            }
            Node::Arith(add, a, b, _) => {
                let op = if *add {
                    quote!(#dl::ArithOp::Add)
                } else {
                    quote!(#dl::ArithOp::Sub)
                };
                let (a, b) = pair(a, b, cols)?;
                quote!(#dl::Expr::arith(#op, #a, #b))
            }
        })
    }

    /// A Rust expression with the operand's type, for type checks: `__row.field` for a
    /// column, the parameter, the literal, `None`; the left operand for `a + b` (the
    /// result keeps the column's type), or the right one when only it reads a column.
    pub fn operand(&self, row: &Ident) -> TokenStream {
        match self {
            Node::Column(f, row_span) => {
                let row = Ident::new(&row.to_string(), *row_span);
                let dot = quote_spanned!(f.span()=> .);
                quote!(#row #dot #f)
            }
            Node::Param(_, p) => p.to_token_stream(),
            Node::Lit(_, tokens, _) => tokens.clone(),
            Node::Null(span) => quote_spanned!(*span=> ::std::option::Option::None),
            Node::Arith(_, a, b, _) => {
                if !a.has_column() && b.has_column() {
                    b.operand(row)
                } else {
                    a.operand(row)
                }
            }
            // Not an operand; never reached for parsed trees.
            _ => quote!(()),
        }
    }

    /// Type-check statements for the compiler (calls into the crate at `dl`), spanned at
    /// the user's tokens; `row` is the `&Table` parameter of the check fn.
    pub fn checks(&self, dl: &Root, row: &Ident, out: &mut Vec<TokenStream>) {
        match self {
            Node::Column(..) | Node::Param(..) | Node::Lit(..) | Node::Null(_) => {}
            Node::Cmp(_, a, b, tokens) => {
                let (c, v) = if a.has_column() { (a, b) } else { (b, a) };
                out.push(check_call(
                    dl,
                    "cmp",
                    c.operand(row),
                    v.operand(row),
                    tokens,
                ));
                a.checks(dl, row, out);
                b.checks(dl, row, out);
            }
            Node::And(v) | Node::Or(v) => v.iter().for_each(|n| n.checks(dl, row, out)),
            Node::Not(a) => a.checks(dl, row, out),
            Node::IsNull(a, tokens) => {
                let c = a.operand(row);
                let span = first_span(tokens);
                let (amp_c, dl) = (amp(&c), dl.at(span));
                out.push(quote_spanned!(span=> #dl::check::nullable(#amp_c #c);));
            }
            Node::StartsWith(a, b, tokens) => {
                out.push(check_call(
                    dl,
                    "text",
                    a.operand(row),
                    b.operand(row),
                    tokens,
                ));
            }
            Node::Arith(_, a, b, tokens) => {
                let (c, v) = if a.has_column() || !b.has_column() {
                    (a, b)
                } else {
                    (b, a)
                };
                out.push(check_call(
                    dl,
                    "arith",
                    c.operand(row),
                    v.operand(row),
                    tokens,
                ));
                a.checks(dl, row, out);
                b.checks(dl, row, out);
            }
        }
    }

    /// SQL-like text for doc comments (parameters as `:name`).
    pub fn describe(&self) -> String {
        let sub = |n: &Node| match n {
            Node::And(_) | Node::Or(_) => format!("({})", n.describe()),
            n => n.describe(),
        };
        match self {
            Node::Column(f, _) => f.to_string(),
            Node::Param(_, p) => format!(":{p}"),
            Node::Lit(v, ..) => v.describe(),
            Node::Null(_) => "NULL".to_owned(),
            Node::Cmp(op, a, b, _) => format!("{} {} {}", sub(a), op.sql(), sub(b)),
            Node::And(v) => v.iter().map(sub).collect::<Vec<_>>().join(" AND "),
            Node::Or(v) => v.iter().map(sub).collect::<Vec<_>>().join(" OR "),
            Node::Not(a) => match &**a {
                Node::IsNull(c, _) => format!("{} IS NOT NULL", sub(c)),
                a => format!("NOT ({})", a.describe()),
            },
            Node::IsNull(a, _) => format!("{} IS NULL", sub(a)),
            Node::StartsWith(a, b, _) => match &**b {
                Node::Lit(LitValue::Str(p), ..) => {
                    format!("{} LIKE '{}%'", sub(a), p.replace('\'', "''"))
                }
                b => format!("{} LIKE {} || '%'", sub(a), sub(b)),
            },
            Node::Arith(add, a, b, _) => {
                format!("{} {} {}", sub(a), if *add { "+" } else { "-" }, sub(b))
            }
        }
    }
}

/// The span of the first token of `tokens` (or the call site).
pub fn first_span(tokens: &TokenStream) -> Span {
    tokens
        .clone()
        .into_iter()
        .next()
        .map_or_else(Span::call_site, |t| t.span())
}

/// `<root>::check::f(&column, &value);` with the callee at the user's operator and
/// each operand at its own tokens, so that the compiler reports a mismatch at the user's
/// operand and names the operator as the call that required it.
fn check_call(dl: &Root, f: &str, c: TokenStream, v: TokenStream, op: &TokenStream) -> TokenStream {
    let span = first_span(op);
    let (f, dl) = (Ident::new(f, span), dl.at(span));
    let (amp_c, amp_v) = (amp(&c), amp(&v));
    quote_spanned!(span=> #dl::check::#f(#amp_c #c, #amp_v #v);)
}

/// A `&` spanned at the start of `operand`.
fn amp(operand: &TokenStream) -> TokenStream {
    let span = first_span(operand);
    quote_spanned!(span=> &)
}
