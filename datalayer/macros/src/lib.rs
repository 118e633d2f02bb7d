//! Procedural macros of datalayer: `#[derive(Table)]` and `#[query_group]`.
//!
//! The crate is thin: it parses with syn, generates code against the `datalayer` facade
//! (`::datalayer::*`), and reports misuse as a compile error at the user's tokens. The
//! generated code leaves type checking to the compiler: every comparison, assignment and
//! selected column in a query becomes a call into `datalayer::check`, placed at the
//! user's expression.
//!
//! `crate = "path"` (`#[table(crate = "datalayer_core")]`, `#[query_group(crate =
//! "datalayer_core")]`) roots every generated path at `path` instead of `::datalayer`,
//! as serde's `#[serde(crate = "...")]`: crates below the facade (the outbox) derive
//! their own tables. `datalayer_core` exposes the same paths as the facade.
//!
//! - `table`: the derive (schema, row codec, relationships).
//! - `db_enum`: `#[derive(DbEnum)]` (an enum stored as its variant name).
//! - `query`: `#[query_group]` (one `QueryDef`, `Stmt` builder and async
//!   method per query fn).
//! - `expr`: the closure-expression parser shared by both.

use proc_macro::TokenStream;

mod attrs;
mod db_enum;
mod expr;
mod query;
mod table;

/// Derives `datalayer::Table`: the table's schema, the row codec and the primary key, plus
/// `BelongsTo<P>` for `#[belongs_to(P)]` fields and `IdList<R>` for `#[relation]` fields.
///
/// ```ignore
/// #[derive(Table)]
/// #[table(name = "users")]                                   // default: snake_case type name
///                                                            // (or a `&str` const: `name = USERS`)
/// #[index(name = "by_email", fields(email), unique)]
/// #[index(name = "adults", fields(age), when = |u| u.age >= 18)] // conditional index
/// struct User {
///     #[pk] id: i64,                                         // one or more #[pk] fields
///     #[column(name = "user_name")] name: String,
///     email: Option<String>,                                 // nullable
///     age: i32,
///     #[belongs_to(Team)] team_id: Option<i64>,
///     song_ids: Vec<i64>,
///     #[relation(ids = song_ids)] songs: Vec<Song>,          // not a column
///     #[version] version: i64,                               // optimistic locking
/// }
/// ```
///
/// `#[version]` (at most one, an `i64` outside the key) makes every update check and
/// increment it: `Repo::update` of a row whose version is not the stored one fails
/// with `Error::is_stale_version()`, a query-group update adds 1, `Repo::insert`
/// stores 1.
///
/// `#[table(crate = "datalayer_core")]` makes the generated code use `datalayer_core::..`
/// instead of `::datalayer::..` (default), for crates that do not depend on the facade.
#[proc_macro_derive(
    Table,
    attributes(table, pk, version, index, column, belongs_to, relation)
)]
pub fn derive_table(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    table::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Derives `datalayer::ColumnValue` for a fieldless enum: stored as its variant name in
/// a text column (`ColumnType::String`), so it reads the same on every engine and in
/// SQL (`WHERE status = 'Shipped'`). A stored name that is no variant reads as an
/// `InvalidInput` error naming it, never a panic. Comparisons (`o.status == s`) are
/// type-checked like any column; ordering is by name, as text.
///
/// ```ignore
/// #[derive(DbEnum, Clone, Copy, Debug, PartialEq)]
/// enum Status { Pending, Shipped, Delivered }
/// ```
///
/// `#[db_enum(crate = "datalayer_core")]` roots the generated paths at that crate.
#[proc_macro_derive(DbEnum, attributes(db_enum))]
pub fn derive_db_enum(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    db_enum::expand(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Turns the plain query fns of an `impl` block into prepared queries.
///
/// For each `fn name(params..) -> Ret { Self::filter(..)... }` it generates
/// `name_query()` (the static `QueryDef`), `name_stmt(params..)` (a `Stmt<Ret>`) and
/// `async fn name(ex, params..)`, and implements `QueryGroup` for the type.
///
/// ```ignore
/// #[query_group]
/// impl User {
///     fn by_id(id: i64) -> User { Self::filter(|u| u.id == id) }
///     fn adults(n: i64) -> Vec<User> { Self::filter(|u| u.age >= 18).order_by(|u| u.age.desc()).limit(n) }
///     fn bump(id: i64) -> u64 { Self::filter(|u| u.id == id).update(|u| u.age = u.age + 1) }
/// }
/// ```
///
/// `#[query_group(crate = "datalayer_core")]` makes the generated code use
/// `datalayer_core::..` instead of `::datalayer::..` (default).
#[proc_macro_attribute]
pub fn query_group(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut dl = attrs::Root::default();
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            dl = attrs::Root::parse(&meta)?;
            Ok(())
        } else {
            Err(meta.error("datalayer: the only argument of #[query_group] is `crate = \"path\"`"))
        }
    });
    syn::parse_macro_input!(attr with parser);
    let item = syn::parse_macro_input!(item as syn::ItemImpl);
    query::expand(item, &dl)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
