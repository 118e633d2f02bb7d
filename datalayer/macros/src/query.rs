//! `#[query_group]`.

use crate::attrs::{Root, docs, generic_arg, is_ident_type};
use crate::expr::{Columns, Node, Scope, closure, first_span};
use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::{
    Attribute, BinOp, Expr, FnArg, Ident, ImplItem, ImplItemFn, ItemImpl, Pat, ReturnType, Stmt,
    Type,
};

/// One parameter of a query fn.
struct Param {
    ident: Ident,
    ty: Type,
}

/// `Limit::Const(n)` or `Limit::Param(i)`.
enum LimitSpec {
    Const(u64),
    Param(usize, Ident),
}

/// One `column = value` of an update; `target` is the user's `u.column`, `tokens` the
/// user's `=` (or `+=`, `-=`).
struct Assign {
    column: Ident,
    target: Node,
    value: Node,
    tokens: TokenStream,
}

/// What the query does.
enum Kind {
    /// A select; `Some(field)` projects one column.
    Select(Option<Ident>),
    Count,
    Update(Vec<Assign>),
    Delete,
}

/// One parsed query fn.
struct Query {
    name: Ident,
    docs: Vec<Attribute>,
    params: Vec<Param>,
    ret: Type,
    filter: Option<Node>,
    order_by: Vec<(Ident, bool)>,
    limit: Option<LimitSpec>,
    kind: Kind,
    /// The kind-setting call (`count()`, `update(..)`, ..), for error spans.
    kind_tokens: Option<TokenStream>,
    /// `.one()`, `.first()` or `.all()` at the end, with its tokens.
    terminal: Option<(String, TokenStream)>,
}

/// The shape decided by the return type.
struct Shape {
    returns: TokenStream,
    decode: TokenStream,
    /// For a select of one column: the type a column must be `Selectable` as (the item
    /// type of `T` and `Vec<T>`, the whole `Option<T>`).
    item: Option<Type>,
}

/// Expands `#[query_group]` on an inherent `impl`; the generated code reaches datalayer
/// through `dl`.
pub fn expand(item: ItemImpl, dl: &Root) -> syn::Result<TokenStream> {
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "datalayer: #[query_group] goes on an inherent impl (`impl User { .. }`), not a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "datalayer: #[query_group] does not support generics",
        ));
    }
    let self_ty = &*item.self_ty;
    let type_name = match self_ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().map(|s| s.ident.clone()),
        _ => None,
    }
    .ok_or_else(|| {
        syn::Error::new_spanned(
            self_ty,
            "datalayer: #[query_group] goes on `impl TableType { .. }`",
        )
    })?;

    let mut out = Vec::new();
    let mut query_fns = Vec::new();
    let mut errors: Option<syn::Error> = None;
    for it in &item.items {
        match it {
            ImplItem::Fn(f) => {
                match parse_query(f, &type_name).and_then(|q| generate(&q, dl, self_ty, &type_name))
                {
                    Ok(tokens) => {
                        out.push(tokens);
                        query_fns.push(format_ident!("{}_query", f.sig.ident));
                    }
                    Err(e) => {
                        // Keep the fn's generated API so that callers do not add errors of their own.
                        if f.sig.receiver().is_none() {
                            out.push(stub(f, dl));
                        }
                        query_fns.push(format_ident!("{}_query", f.sig.ident));
                        match &mut errors {
                            Some(all) => all.combine(e),
                            None => errors = Some(e),
                        }
                    }
                }
            }
            other => out.push(other.to_token_stream()),
        }
    }
    let errors = errors.map(syn::Error::into_compile_error);
    let attrs = &item.attrs;
    Ok(quote! {
        #errors

        #(#attrs)*
        impl #self_ty {
            #(#out)*
        }

        impl #dl::QueryGroup for #self_ty {
            fn queries() -> ::std::vec::Vec<&'static #dl::QueryDef> {
                ::std::vec![#(Self::#query_fns()),*]
            }
        }
    })
}

/// Stand-ins for the items of a query fn that failed to expand (its error is reported
/// once, by the macro).
fn stub(f: &ImplItemFn, dl: &Root) -> TokenStream {
    let name = &f.sig.ident;
    let query_fn = format_ident!("{}_query", name);
    let stmt_fn = format_ident!("{}_stmt", name);
    let inputs = &f.sig.inputs;
    let ret = match &f.sig.output {
        ReturnType::Type(_, t) => t.to_token_stream(),
        ReturnType::Default => quote!(()),
    };
    quote! {
        #[doc(hidden)]
        #[allow(unused)]
        pub fn #query_fn() -> &'static #dl::QueryDef {
            ::std::unreachable!()
        }
        #[doc(hidden)]
        #[allow(unused)]
        pub fn #stmt_fn(#inputs) -> #dl::Stmt<#ret> {
            ::std::unreachable!()
        }
        #[doc(hidden)]
        #[allow(unused)]
        pub async fn #name<E: #dl::Executor + ?Sized>(ex: &E, #inputs) -> #dl::Result<#ret> {
            ::std::unreachable!()
        }
    }
}

fn strip(mut e: &Expr) -> &Expr {
    loop {
        match e {
            Expr::Paren(p) => e = &p.expr,
            Expr::Group(g) => e = &g.expr,
            _ => return e,
        }
    }
}

fn parse_query(f: &ImplItemFn, type_name: &Ident) -> syn::Result<Query> {
    let sig = &f.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "datalayer: write the query fn without `async`: #[query_group] generates the async method",
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "datalayer: a query fn cannot be generic",
        ));
    }
    for attr in &f.attrs {
        if !attr.path().is_ident("doc") {
            return Err(syn::Error::new_spanned(
                attr,
                "datalayer: a query fn takes doc comments only",
            ));
        }
    }
    let mut params = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(
                    r,
                    "datalayer: a query fn takes parameters, not `self`",
                ));
            }
            FnArg::Typed(t) => match &*t.pat {
                Pat::Ident(p) if p.subpat.is_none() && p.by_ref.is_none() => params.push(Param {
                    ident: p.ident.clone(),
                    ty: (*t.ty).clone(),
                }),
                p => {
                    return Err(syn::Error::new_spanned(
                        p,
                        "datalayer: a query parameter is a plain name (`id: i64`)",
                    ));
                }
            },
        }
    }
    let ret = match &sig.output {
        ReturnType::Type(_, t) => (**t).clone(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                sig,
                "datalayer: a query fn declares what it returns: `Self`, `Option<Self>`, `Vec<Self>`, a column type, or `u64`",
            ));
        }
    };
    let body = match f.block.stmts.as_slice() {
        [Stmt::Expr(e, None)] => e,
        _ => {
            return Err(syn::Error::new_spanned(
                &f.block,
                "datalayer: the body of a query fn is one query expression, like `Self::filter(|u| u.id == id)`",
            ));
        }
    };
    let param_idents: Vec<Ident> = params.iter().map(|p| p.ident.clone()).collect();

    // Unwind the method chain down to its root call.
    let mut calls = Vec::new();
    let mut cur = strip(body);
    let root = loop {
        match cur {
            Expr::MethodCall(m) => {
                calls.push(m);
                cur = strip(&m.receiver);
            }
            Expr::Call(c) => break c,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "datalayer: a query starts with `Self::filter(|u| ..)` or `Self::all()`",
                ));
            }
        }
    };
    calls.reverse();
    let root_method = match strip(&root.func) {
        Expr::Path(p)
            if p.qself.is_none()
                && p.path.segments.len() == 2
                && (p.path.segments[0].ident == "Self"
                    || p.path.segments[0].ident == *type_name) =>
        {
            p.path.segments[1].ident.clone()
        }
        other => {
            return Err(syn::Error::new_spanned(
                other,
                format!(
                    "datalayer: a query starts with `Self::filter(|u| ..)`, `Self::all()` or `{type_name}::filter(..)`"
                ),
            ));
        }
    };

    let mut q = Query {
        name: sig.ident.clone(),
        docs: docs(&f.attrs).into_iter().cloned().collect(),
        params,
        ret,
        filter: None,
        order_by: Vec::new(),
        limit: None,
        kind: Kind::Select(None),
        kind_tokens: None,
        terminal: None,
    };
    let mut steps: Vec<(Ident, Vec<&Expr>, TokenStream)> = Vec::new();
    match root_method.to_string().as_str() {
        "filter" => steps.push((
            root_method.clone(),
            root.args.iter().collect(),
            root.to_token_stream(),
        )),
        "all" if root.args.is_empty() => {}
        _ => {
            return Err(syn::Error::new_spanned(
                &root.func,
                "datalayer: a query starts with `Self::filter(|u| ..)` or `Self::all()`",
            ));
        }
    }
    for m in &calls {
        // The tokens of this call alone (`.limit(n)`), for error spans.
        let tokens = {
            let (dot, method, args) = (&m.dot_token, &m.method, &m.args);
            let mut t = dot.to_token_stream();
            method.to_tokens(&mut t);
            m.paren_token.surround(&mut t, |t| args.to_tokens(t));
            t
        };
        steps.push((m.method.clone(), m.args.iter().collect(), tokens));
    }

    let n_steps = steps.len();
    for (i, (method, args, tokens)) in steps.into_iter().enumerate() {
        let name = method.to_string();
        let arity = match name.as_str() {
            "filter" | "order_by" | "limit" | "select" | "update" => 1,
            "count" | "delete" | "one" | "first" | "all" => 0,
            _ => {
                return Err(syn::Error::new_spanned(
                    &method,
                    format!(
                        "datalayer: unknown query method `{name}`: use filter, order_by, limit, select, count, update, delete, one, first or all"
                    ),
                ));
            }
        };
        if args.len() != arity {
            return Err(syn::Error::new_spanned(
                &tokens,
                format!("datalayer: `{name}` takes {arity} argument(s)"),
            ));
        }
        if q.terminal.is_some() {
            return Err(syn::Error::new_spanned(
                &tokens,
                "datalayer: nothing may follow `.one()`, `.first()` or `.all()`",
            ));
        }
        let set_kind = |q: &mut Query, kind: Kind| -> syn::Result<()> {
            if q.kind_tokens.is_some() {
                return Err(syn::Error::new_spanned(
                    &tokens,
                    "datalayer: a query has at most one of select, count, update and delete",
                ));
            }
            q.kind = kind;
            q.kind_tokens = Some(tokens.clone());
            Ok(())
        };
        match name.as_str() {
            "filter" => {
                let (row, body) = closure(args[0])?;
                let scope = Scope {
                    row,
                    params: &param_idents,
                    allow_params: true,
                };
                let node = scope.predicate(body)?;
                q.filter = Some(match q.filter.take() {
                    None => node,
                    Some(Node::And(mut v)) => {
                        v.push(node);
                        Node::And(v)
                    }
                    Some(prev) => Node::And(vec![prev, node]),
                });
            }
            "order_by" => {
                let (row, body) = closure(args[0])?;
                let scope = Scope {
                    row,
                    params: &param_idents,
                    allow_params: true,
                };
                let body = strip(body);
                let term = match body {
                    Expr::MethodCall(m)
                        if m.args.is_empty() && (m.method == "desc" || m.method == "asc") =>
                    {
                        scope.column(&m.receiver).map(|c| (c, m.method == "desc"))
                    }
                    e => scope.column(e).map(|c| (c, false)),
                };
                let term = term.ok_or_else(|| {
                    syn::Error::new_spanned(
                        body,
                        "datalayer: order_by takes `|u| u.field` or `|u| u.field.desc()`",
                    )
                })?;
                q.order_by.push(term);
            }
            "limit" => {
                if q.limit.is_some() {
                    return Err(syn::Error::new_spanned(
                        &tokens,
                        "datalayer: `limit` is set twice",
                    ));
                }
                q.limit = Some(match strip(args[0]) {
                    Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Int(n),
                        ..
                    }) => LimitSpec::Const(n.base10_parse()?),
                    Expr::Path(p)
                        if p.path.get_ident().is_some_and(|i| param_idents.contains(i)) =>
                    {
                        let ident = p.path.get_ident().expect("checked").clone();
                        let i = param_idents
                            .iter()
                            .position(|x| *x == ident)
                            .expect("checked");
                        LimitSpec::Param(i, ident)
                    }
                    e => {
                        return Err(syn::Error::new_spanned(
                            e,
                            "datalayer: `limit` takes an integer literal or a parameter of the query fn",
                        ));
                    }
                });
            }
            "select" => {
                let (row, body) = closure(args[0])?;
                let scope = Scope {
                    row,
                    params: &param_idents,
                    allow_params: true,
                };
                let col = scope.column(body).ok_or_else(|| {
                    syn::Error::new_spanned(
                        body,
                        "datalayer: select takes one column: `|u| u.field`",
                    )
                })?;
                set_kind(&mut q, Kind::Select(Some(col)))?;
            }
            "count" => set_kind(&mut q, Kind::Count)?,
            "delete" => set_kind(&mut q, Kind::Delete)?,
            "update" => {
                let (row, body) = closure(args[0])?;
                let scope = Scope {
                    row,
                    params: &param_idents,
                    allow_params: true,
                };
                let assigns = parse_assignments(&scope, body)?;
                set_kind(&mut q, Kind::Update(assigns))?;
            }
            _ => {
                // one / first / all
                if i + 1 != n_steps {
                    return Err(syn::Error::new_spanned(
                        &tokens,
                        format!("datalayer: `.{name}()` ends the query"),
                    ));
                }
                q.terminal = Some((name, tokens));
            }
        }
    }
    if !matches!(q.kind, Kind::Select(_)) && (!q.order_by.is_empty() || q.limit.is_some()) {
        return Err(syn::Error::new_spanned(
            q.kind_tokens.as_ref().expect("kind set"),
            "datalayer: order_by and limit apply to reads only, not to count, update or delete",
        ));
    }
    if let (Some((t, tokens)), false) = (&q.terminal, matches!(q.kind, Kind::Select(_))) {
        return Err(syn::Error::new_spanned(
            tokens,
            format!("datalayer: `.{t}()` applies to reads only"),
        ));
    }
    Ok(q)
}

fn parse_assignments(scope: &Scope, body: &Expr) -> syn::Result<Vec<Assign>> {
    let mut exprs = Vec::new();
    match strip(body) {
        Expr::Block(b) => {
            for s in &b.block.stmts {
                match s {
                    Stmt::Expr(e, _) => exprs.push(e),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "datalayer: an update block holds assignments only: `|u| { u.a = x; u.b = u.b + 1; }`",
                        ));
                    }
                }
            }
        }
        e => exprs.push(e),
    }
    if exprs.is_empty() {
        return Err(syn::Error::new_spanned(
            body,
            "datalayer: an update needs at least one assignment",
        ));
    }
    let mut out: Vec<Assign> = Vec::new();
    for e in exprs {
        let (lhs, value) = match strip(e) {
            Expr::Assign(a) => (&*a.left, scope.value(&a.right)?),
            Expr::Binary(b) if matches!(b.op, BinOp::AddAssign(_) | BinOp::SubAssign(_)) => {
                let col = scope
                    .column_node(&b.left)
                    .ok_or_else(|| assign_target_error(&b.left))?;
                let rhs = scope.value(&b.right)?;
                if matches!(rhs, Node::Null(_)) {
                    return Err(syn::Error::new_spanned(&b.right, crate::expr::UNSUPPORTED));
                }
                let add = matches!(b.op, BinOp::AddAssign(_));
                (
                    &*b.left,
                    Node::Arith(add, Box::new(col), Box::new(rhs), b.op.to_token_stream()),
                )
            }
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "datalayer: an update takes assignments: `|u| u.age = u.age + 1` or `|u| { u.a = x; u.b = None; }`",
                ));
            }
        };
        let target = scope
            .column_node(lhs)
            .ok_or_else(|| assign_target_error(lhs))?;
        let column = target.first_column().expect("a column").clone();
        let op_tokens = match strip(e) {
            Expr::Assign(a) => a.eq_token.to_token_stream(),
            Expr::Binary(b) => b.op.to_token_stream(),
            other => other.to_token_stream(),
        };
        if out.iter().any(|a| a.column == column) {
            return Err(syn::Error::new_spanned(
                lhs,
                format!("datalayer: `{column}` is assigned twice"),
            ));
        }
        out.push(Assign {
            column,
            target,
            value,
            tokens: op_tokens,
        });
    }
    Ok(out)
}

fn assign_target_error(lhs: &Expr) -> syn::Error {
    syn::Error::new_spanned(
        lhs,
        "datalayer: the left side of an assignment is a column, like `u.age`",
    )
}

/// Decides the result shape from the declared return type.
fn shape(q: &Query, dl: &Root, self_ty: &Type, type_name: &Ident) -> syn::Result<Shape> {
    let ret = &q.ret;
    let is_self = |t: &Type| {
        is_ident_type(t, "Self") || is_ident_type(t, &type_name.to_string()) || t == self_ty
    };
    let count_like = |what: &str| -> syn::Result<Shape> {
        if is_ident_type(ret, "u64") {
            Ok(Shape {
                returns: quote!(),
                decode: quote!(#dl::decode::count),
                item: None,
            })
        } else {
            Err(syn::Error::new_spanned(
                ret,
                format!(
                    "datalayer: `{what}` returns the number of rows as `u64`: declare the fn as `-> u64`"
                ),
            ))
        }
    };
    let (returns, decode, item) = match &q.kind {
        Kind::Count => return count_like("count()"),
        Kind::Update(_) => return count_like("update(..)"),
        Kind::Delete => return count_like("delete()"),
        Kind::Select(None) => {
            if let Some(t) = generic_arg(ret, "Option").filter(|t| is_self(t)) {
                ("Optional", quote!(#dl::decode::optional::<#t>), None)
            } else if let Some(t) = generic_arg(ret, "Vec").filter(|t| is_self(t)) {
                ("Many", quote!(#dl::decode::many::<#t>), None)
            } else if is_self(ret) {
                ("One", quote!(#dl::decode::one::<#ret>), None)
            } else {
                return Err(syn::Error::new_spanned(
                    ret,
                    format!(
                        "datalayer: a query without `select` returns `Self`, `Option<Self>` or `Vec<Self>` (rows of `{type_name}`)"
                    ),
                ));
            }
        }
        Kind::Select(Some(_)) => {
            if let Some(t) = generic_arg(ret, "Option") {
                (
                    "Optional",
                    quote!(#dl::decode::scalar_optional::<#t>),
                    Some(ret.clone()),
                )
            } else if let Some(t) = generic_arg(ret, "Vec") {
                ("Many", quote!(#dl::decode::scalars::<#t>), Some(t.clone()))
            } else {
                (
                    "One",
                    quote!(#dl::decode::scalar::<#ret>),
                    Some(ret.clone()),
                )
            }
        }
    };
    if let Some((t, tokens)) = &q.terminal {
        let want = match t.as_str() {
            "one" => "One",
            "first" => "Optional",
            _ => "Many",
        };
        if want != returns {
            let declare = match t.as_str() {
                "one" => "a single value (`Self` or a column type)",
                "first" => "an `Option<..>`",
                _ => "a `Vec<..>`",
            };
            return Err(syn::Error::new_spanned(
                tokens,
                format!(
                    "datalayer: `.{t}()` returns {declare}, but the fn declares `{}`",
                    ret.to_token_stream()
                ),
            ));
        }
    }
    let returns = Ident::new(returns, Span::call_site());
    Ok(Shape {
        returns: quote!(#dl::Returns::#returns),
        decode,
        item,
    })
}

/// Columns resolved by field name when the query is built (`__b.col("age")`).
struct BuilderColumns;

impl Columns for BuilderColumns {
    fn expr(&self, field: &Ident) -> TokenStream {
        let name = field.to_string();
        quote!(__b.col(#name))
    }
    fn ty(&self, field: &Ident) -> TokenStream {
        let name = field.to_string();
        quote!(__ty(#name))
    }
}

/// SQL-like text of the query, for doc comments.
fn describe(q: &Query, type_name: &Ident) -> String {
    let mut s = match &q.kind {
        Kind::Select(None) => format!("SELECT * FROM {type_name}"),
        Kind::Select(Some(c)) => format!("SELECT {c} FROM {type_name}"),
        Kind::Count => format!("SELECT COUNT(*) FROM {type_name}"),
        Kind::Delete => format!("DELETE FROM {type_name}"),
        Kind::Update(a) => {
            let sets: Vec<String> = a
                .iter()
                .map(|a| format!("{} = {}", a.column, a.value.describe()))
                .collect();
            format!("UPDATE {type_name} SET {}", sets.join(", "))
        }
    };
    if let Some(f) = &q.filter {
        s += &format!(" WHERE {}", f.describe());
    }
    if !q.order_by.is_empty() {
        let terms: Vec<String> = q
            .order_by
            .iter()
            .map(|(c, d)| {
                if *d {
                    format!("{c} DESC")
                } else {
                    c.to_string()
                }
            })
            .collect();
        s += &format!(" ORDER BY {}", terms.join(", "));
    }
    match &q.limit {
        Some(LimitSpec::Const(n)) => s += &format!(" LIMIT {n}"),
        Some(LimitSpec::Param(_, p)) => s += &format!(" LIMIT :{p}"),
        None => {}
    }
    s
}

fn generate(q: &Query, dl: &Root, self_ty: &Type, type_name: &Ident) -> syn::Result<TokenStream> {
    let shape = shape(q, dl, self_ty, type_name)?;
    let name = &q.name;
    let query_fn = format_ident!("{}_query", name);
    let stmt_fn = format_ident!("{}_stmt", name);
    let check_fn = format_ident!("__dl_check_{}", name);
    let qualified = format!("{type_name}::{name}");
    let sql = describe(q, type_name);
    let ret = &q.ret;
    let row = Ident::new("__row", Span::call_site());

    // Building the QueryDef.
    let params_decl = q.params.iter().map(|p| {
        let (pname, ty) = (p.ident.to_string(), &p.ty);
        quote!(__b.param(#pname, <#ty as #dl::ToValue>::TYPE, <#ty as #dl::ToValue>::NULLABLE);)
    });
    let mut build = Vec::new();
    let mut checks = Vec::new();
    if let Some(f) = &q.filter {
        let e = f.lower(dl, &BuilderColumns, None)?;
        build.push(quote!(let __filter = #e; __b.filter(__filter);));
        f.checks(dl, &row, &mut checks);
    }
    for (c, desc) in &q.order_by {
        let cname = c.to_string();
        build.push(quote!(__b.order_by(#cname, #desc);));
        let span = c.span();
        let r = Ident::new("__row", span);
        checks.push(quote_spanned!(span=> let _ = &#r.#c;));
    }
    match &q.limit {
        Some(LimitSpec::Const(n)) => build.push(quote!(__b.limit(#dl::Limit::Const(#n));)),
        Some(LimitSpec::Param(i, p)) => {
            build.push(quote!(__b.limit(#dl::Limit::Param(#i));));
            let dl = dl.at(p.span());
            checks.push(quote_spanned!(p.span()=> #dl::check::limit(&#p);));
        }
        None => {}
    }
    let returns = &shape.returns;
    match &q.kind {
        Kind::Select(None) => build.push(quote! {
            __b.kind(#dl::QueryKind::Select { projection: ::std::option::Option::None, returns: #returns });
        }),
        Kind::Select(Some(c)) => {
            let cname = c.to_string();
            build.push(quote!(__b.select(#cname, #returns);));
            let item = shape.item.as_ref().expect("select has an item type");
            let span = c.span();
            let (r, dl) = (Ident::new("__row", span), dl.at(span));
            checks.push(quote_spanned!(span=> #dl::check::select::<#item, _>(&#r.#c);));
        }
        Kind::Count => build.push(quote!(__b.kind(#dl::QueryKind::Count);)),
        Kind::Delete => build.push(quote!(__b.kind(#dl::QueryKind::Delete);)),
        Kind::Update(assigns) => {
            let mut pairs = Vec::new();
            for a in assigns {
                let cname = a.column.to_string();
                let value = a.value.lower(dl, &BuilderColumns, Some(&a.column))?;
                pairs.push(quote! {
                    (
                        match __b.col(#cname) {
                            #dl::Expr::Column(i) => i,
                            _ => ::std::unreachable!(),
                        },
                        #value,
                    )
                });
                let span = first_span(&a.tokens);
                let target = a.target.operand(&row);
                let v = a.value.operand(&row);
                let (amp_t, amp_v) = (
                    quote_spanned!(first_span(&target)=> &),
                    quote_spanned!(first_span(&v)=> &),
                );
                let dl_at = dl.at(span);
                checks.push(quote_spanned!(span=> #dl_at::check::assign(#amp_t #target, #amp_v #v);));
                a.value.checks(dl, &row, &mut checks);
                let col_span = a.column.span();
                let dl_at = dl.at(col_span);
                checks.push(quote_spanned! {col_span=>
                    const _: () = #dl_at::check::not_primary_key(
                        <#self_ty as #dl_at::check::PrimaryKeyFields>::FIELDS,
                        #cname,
                    );
                });
            }
            build.push(quote! {
                let __assignments = ::std::vec![#(#pairs),*];
                __b.kind(#dl::QueryKind::Update { assignments: __assignments });
            });
        }
    }
    let expect_msg = format!("query {qualified} is well-formed (checked at compile time)");

    let param_sig: Vec<TokenStream> = q
        .params
        .iter()
        .map(|p| {
            let (i, t) = (&p.ident, &p.ty);
            quote!(#i: #t)
        })
        .collect();
    let param_names: Vec<&Ident> = q.params.iter().map(|p| &p.ident).collect();
    let ex = if param_names.iter().any(|p| *p == "ex") {
        format_ident!("__dl_ex")
    } else {
        format_ident!("ex")
    };
    let user_docs = &q.docs;
    let runs_doc = format!("Runs query `{name}`: `{sql}` (generated by #[query_group]).");
    let query_doc = format!(
        "The prepared definition of query `{name}`: `{sql}`. Built once, on first use (generated by #[query_group])."
    );
    let stmt_doc = format!(
        "A call of query `{name}` with its parameters, to run later or to stage in a `Batch` (generated by #[query_group])."
    );
    let sep = if user_docs.is_empty() {
        quote!()
    } else {
        quote!(#[doc = ""])
    };
    let decode = &shape.decode;

    Ok(quote! {
        #[doc = #query_doc]
        pub fn #query_fn() -> &'static #dl::QueryDef {
            static QUERY: #dl::__private::OnceLock<#dl::QueryDef> =
                #dl::__private::OnceLock::new();
            QUERY.get_or_init(|| {
                let __s: &'static #dl::TableSchema = <#self_ty as #dl::Table>::schema();
                #[allow(unused_variables)]
                let __ty = |f: &str| __s.column_index(f).map(|i| __s.columns[i].ty);
                let mut __b = #dl::QueryBuilder::new(#qualified, __s);
                #(#params_decl)*
                #(#build)*
                __b.build().expect(#expect_msg)
            })
        }

        #[doc = #stmt_doc]
        pub fn #stmt_fn(#(#param_sig),*) -> #dl::Stmt<#ret> {
            #dl::Stmt::new(
                Self::#query_fn(),
                ::std::vec![#(#dl::ToValue::param_value(&#param_names)),*],
                #decode,
            )
        }

        #(#user_docs)*
        #sep
        #[doc = #runs_doc]
        // One argument more than the user's fn (`ex`): the user's count is linted on `_stmt`.
        #[allow(clippy::too_many_arguments)]
        pub async fn #name<E: #dl::Executor + ?Sized>(#ex: &E, #(#param_sig),*) -> #dl::Result<#ret> {
            Self::#stmt_fn(#(#param_names),*).run(#ex).await
        }

        #[doc(hidden)]
        #[allow(dead_code, unused, clippy::all)]
        fn #check_fn(#row: &#self_ty, #(#param_sig),*) {
            #(#checks)*
        }
    })
}
