//! `#[derive(Table)]`.

use crate::attrs::{Root, check_identifier, generic_arg, snake_case};
use crate::expr::{Columns, Scope};
use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use std::collections::HashMap;
use syn::parse::Parse;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, LitStr, Path, Type};

/// One struct field: a column, or a `#[relation]` field.
struct Field {
    ident: Ident,
    ty: Type,
    /// Column name (`#[column(name = ..)]`, else the field name) and where it came from.
    column: String,
    column_span: Span,
    pk: bool,
    /// `#[version]`: the optimistic-locking version column.
    version: bool,
    /// `#[column(json)]`: stored as its `serde_json` document in a `Json` column.
    json: bool,
    /// `#[column(default = lit)]`: the value of rows stored before the column existed.
    default: Option<(crate::expr::LitValue, Span)>,
    /// `#[column(renamed_from = "old")]`.
    renamed_from: Option<LitStr>,
    /// `#[relation(ids = other_field)]`: not a column.
    relation: Option<Ident>,
}

struct Index {
    name: LitStr,
    fields: Vec<Ident>,
    unique: bool,
    when: Option<syn::Expr>,
}

struct BelongsTo {
    parent: Path,
    fields: Vec<Ident>,
}

impl Field {
    /// Whether the type is written `Option<..>` (how a `#[column(json)]` field is
    /// nullable: its type is not a `ColumnValue`).
    fn is_option(&self) -> bool {
        matches!(&self.ty, Type::Path(p) if p.qself.is_none()
            && p.path.segments.last().is_some_and(|s| s.ident == "Option"))
    }
    /// Tokens of the column's `ColumnType`.
    fn column_type(&self, dl: &Root) -> TokenStream {
        let ty = &self.ty;
        if self.json {
            quote!(#dl::ColumnType::Json)
        } else {
            quote!(<#ty as #dl::ColumnValue>::TYPE)
        }
    }
    /// Tokens of the column's nullability.
    fn nullable(&self, dl: &Root) -> TokenStream {
        let ty = &self.ty;
        if self.json {
            let opt = self.is_option();
            quote!(#opt)
        } else {
            quote!(<#ty as #dl::ColumnValue>::NULLABLE)
        }
    }
    /// Tokens of `self.<field>` as a `Value`.
    fn encoder(&self, dl: &Root) -> TokenStream {
        let fi = &self.ident;
        match (self.json, self.is_option()) {
            (false, _) => quote!(#dl::ColumnValue::to_value(&self.#fi)),
            (true, false) => quote!(#dl::value::json::to_value(&self.#fi)),
            (true, true) => quote!(#dl::value::json::to_value_opt(&self.#fi)),
        }
    }
    /// Tokens of a fn from `Value` to `Result<field type>`.
    fn decoder(&self, dl: &Root) -> TokenStream {
        let ty = &self.ty;
        match (self.json, self.is_option()) {
            (false, _) => quote!(<#ty as #dl::ColumnValue>::from_value),
            (true, false) => quote!(#dl::value::json::from_value::<#ty>),
            (true, true) => quote!(#dl::value::json::from_value_opt),
        }
    }
}

/// Expands `#[derive(Table)]`.
pub fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            ident.span(),
            "datalayer: #[derive(Table)] works on structs with named fields only",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new_spanned(
            &data.fields,
            "datalayer: #[derive(Table)] needs named fields (`struct User { id: i64, .. }`)",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "datalayer: a table type cannot be generic",
        ));
    }

    // Struct attributes.
    let mut table_name = LitStr::new(&snake_case(&ident.to_string()), ident.span());
    // `name = SOME_CONST`: checked when the schema is validated, not here.
    let mut name_const: Option<Path> = None;
    let mut table_renamed_from: Option<LitStr> = None;
    let mut dl = Root::default();
    let mut indexes = Vec::new();
    let mut belongs = Vec::new();
    for attr in &input.attrs {
        if attr.path().is_ident("table") {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("name") {
                    let value = meta.value()?;
                    if value.peek(LitStr) {
                        table_name = value.parse()?;
                        name_const = None;
                    } else {
                        name_const = Some(value.parse().map_err(|e| {
                            syn::Error::new(
                                e.span(),
                                "datalayer: `name` takes a string (`name = \"users\"`) or a `&str` constant (`name = USERS`)",
                            )
                        })?);
                    }
                    Ok(())
                } else if meta.path.is_ident("crate") {
                    dl = Root::parse(&meta)?;
                    Ok(())
                } else if meta.path.is_ident("renamed_from") {
                    let s: LitStr = meta.value()?.parse()?;
                    check_identifier("table", &s.value(), s.span())?;
                    table_renamed_from = Some(s);
                    Ok(())
                } else {
                    Err(meta.error(
                        "datalayer: expected `#[table(name = \"...\")]`, `#[table(crate = \"path\")]` or `#[table(renamed_from = \"...\")]`",
                    ))
                }
            })?;
        } else if attr.path().is_ident("index") {
            indexes.push(parse_index(attr)?);
        } else if attr.path().is_ident("belongs_to") {
            let b = parse_belongs_to(attr)?;
            if b.fields.is_empty() {
                return Err(syn::Error::new_spanned(
                    attr,
                    "datalayer: on the struct, write `#[belongs_to(Parent, fields(a, b))]`; or put `#[belongs_to(Parent)]` on the foreign-key field",
                ));
            }
            belongs.push(b);
        }
    }
    if name_const.is_none() {
        check_identifier("table", &table_name.value(), table_name.span())?;
    }

    // Fields.
    let mut fields = Vec::new();
    for f in &named.named {
        let fident = f.ident.clone().expect("named field");
        let mut field = Field {
            column: fident.to_string(),
            column_span: fident.span(),
            ident: fident.clone(),
            ty: f.ty.clone(),
            pk: false,
            version: false,
            json: false,
            default: None,
            renamed_from: None,
            relation: None,
        };
        for attr in &f.attrs {
            if attr.path().is_ident("pk") {
                attr.meta.require_path_only()?;
                field.pk = true;
            } else if attr.path().is_ident("version") {
                attr.meta.require_path_only()?;
                field.version = true;
            } else if attr.path().is_ident("column") {
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("name") {
                        let s: LitStr = meta.value()?.parse()?;
                        field.column = s.value();
                        field.column_span = s.span();
                        Ok(())
                    } else if meta.path.is_ident("json") {
                        field.json = true;
                        Ok(())
                    } else if meta.path.is_ident("default") {
                        let e: syn::Expr = meta.value()?.parse()?;
                        let (lit, neg) = match &e {
                            syn::Expr::Lit(l) => (&l.lit, false),
                            syn::Expr::Unary(u) if matches!(u.op, syn::UnOp::Neg(_)) => match &*u.expr {
                                syn::Expr::Lit(l) => (&l.lit, true),
                                _ => return Err(syn::Error::new_spanned(&e, "datalayer: `default` takes a literal")),
                            },
                            _ => return Err(syn::Error::new_spanned(&e, "datalayer: `default` takes a literal")),
                        };
                        field.default = Some((crate::expr::lit_value(lit, neg)?, e.span()));
                        Ok(())
                    } else if meta.path.is_ident("renamed_from") {
                        let s: LitStr = meta.value()?.parse()?;
                        check_identifier("column", &s.value(), s.span())?;
                        field.renamed_from = Some(s);
                        Ok(())
                    } else {
                        Err(meta.error(
                            "datalayer: expected `#[column(name = \"...\")]`, `#[column(json)]`, `#[column(default = lit)]` or `#[column(renamed_from = \"...\")]`",
                        ))
                    }
                })?;
            } else if attr.path().is_ident("belongs_to") {
                let mut b = parse_belongs_to(attr)?;
                if !b.fields.is_empty() {
                    return Err(syn::Error::new_spanned(
                        attr,
                        "datalayer: on a field, `#[belongs_to(Parent)]` takes no `fields(..)`: the field is the foreign key",
                    ));
                }
                b.fields.push(fident.clone());
                belongs.push(b);
            } else if attr.path().is_ident("relation") {
                let mut ids = None;
                let no_ids = || {
                    syn::Error::new_spanned(
                        attr,
                        "datalayer: `#[relation]` needs the field holding the ids: `#[relation(ids = song_ids)]`",
                    )
                };
                if let syn::Meta::Path(_) = attr.meta {
                    return Err(no_ids());
                }
                attr.parse_nested_meta(|meta| {
                    if meta.path.is_ident("ids") {
                        ids = Some(meta.value()?.parse::<Ident>()?);
                        Ok(())
                    } else {
                        Err(meta.error("datalayer: expected `#[relation(ids = field)]`"))
                    }
                })?;
                let Some(ids) = ids else {
                    return Err(no_ids());
                };
                if generic_arg(&f.ty, "Vec").is_none() {
                    return Err(syn::Error::new_spanned(
                        &f.ty,
                        "datalayer: a `#[relation]` field has type `Vec<Related>`",
                    ));
                }
                field.relation = Some(ids);
            }
        }
        if field.json && (field.pk || field.version || field.relation.is_some()) {
            return Err(syn::Error::new_spanned(
                f,
                "datalayer: a `#[column(json)]` field cannot be a key, a version or a relation (JSON has no order)",
            ));
        }
        if field.relation.is_some() && field.pk {
            return Err(syn::Error::new_spanned(
                f,
                "datalayer: a `#[relation]` field cannot be a key",
            ));
        }
        if field.version && (field.pk || field.relation.is_some()) {
            return Err(syn::Error::new_spanned(
                f,
                "datalayer: a `#[version]` column cannot be a key or a relation",
            ));
        }
        if field.pk && generic_arg(&field.ty, "Option").is_some() {
            return Err(syn::Error::new_spanned(
                &f.ty,
                "datalayer: a primary-key column cannot be nullable (`Option<_>`)",
            ));
        }
        if field.relation.is_none() {
            check_identifier("column", &field.column, field.column_span)?;
        }
        fields.push(field);
    }

    // Columns, and name checks.
    let columns: Vec<&Field> = fields.iter().filter(|f| f.relation.is_none()).collect();
    if columns.is_empty() {
        return Err(syn::Error::new(
            ident.span(),
            "datalayer: a table needs at least one column",
        ));
    }
    let position: HashMap<String, usize> = columns
        .iter()
        .enumerate()
        .map(|(i, f)| (f.ident.to_string(), i))
        .collect();
    let mut seen = HashMap::new();
    for f in &columns {
        if seen.insert(f.column.clone(), ()).is_some() {
            return Err(syn::Error::new(
                f.column_span,
                format!("datalayer: duplicate column name `{}`", f.column),
            ));
        }
    }
    let pk: Vec<&Field> = columns.iter().copied().filter(|f| f.pk).collect();
    if pk.is_empty() {
        return Err(syn::Error::new(
            ident.span(),
            "datalayer: a table needs a primary key: mark one or more fields with #[pk]",
        ));
    }
    let resolve = |f: &Ident| -> syn::Result<usize> {
        position.get(&f.to_string()).copied().ok_or_else(|| {
            let relation = fields.iter().any(|x| x.ident == *f);
            let msg = if relation {
                format!("datalayer: `{f}` is a #[relation] field, not a column")
            } else {
                format!("datalayer: no field `{f}` on `{ident}`")
            };
            syn::Error::new(f.span(), msg)
        })
    };

    // Schema.
    let name_expr = match &name_const {
        Some(path) => quote!(#path),
        None => quote!(#table_name),
    };
    let column_defs = columns.iter().map(|f| {
        let (name, field) = (&f.column, f.ident.to_string());
        let (col_ty, nullable) = (f.column_type(&dl), f.nullable(&dl));
        quote! {
            #dl::ColumnDef {
                name: ::std::string::String::from(#name),
                field: ::std::string::String::from(#field),
                ty: #col_ty,
                nullable: #nullable,
            }
        }
    });
    let pk_positions: Vec<usize> = pk.iter().map(|f| position[&f.ident.to_string()]).collect();
    let versions: Vec<&Field> = columns.iter().copied().filter(|f| f.version).collect();
    if let [_, second, ..] = versions.as_slice() {
        return Err(syn::Error::new(
            second.ident.span(),
            "datalayer: a table has at most one `#[version]` column",
        ));
    }
    let version = match versions.first() {
        Some(f) => {
            let (p, ty) = (position[&f.ident.to_string()], &f.ty);
            // An i64 (not `Option`): checked where the type is known.
            quote_spanned! {ty.span()=>
                ::std::option::Option::Some({
                    const _: () = ::std::assert!(
                        ::std::matches!(<#ty as #dl::ColumnValue>::TYPE, #dl::ColumnType::I64)
                            && !<#ty as #dl::ColumnValue>::NULLABLE,
                        "datalayer: a `#[version]` column is an `i64`"
                    );
                    #p
                })
            }
        }
        None => quote!(::std::option::Option::None),
    };
    let cols = PositionColumns {
        dl: &dl,
        position: &position,
        columns: &columns,
    };
    let mut index_defs = Vec::new();
    let mut when_checks = Vec::new();
    let mut index_names = HashMap::new();
    for ix in &indexes {
        let name = ix.name.value();
        check_identifier("index", &name, ix.name.span())?;
        if index_names.insert(name.clone(), ()).is_some() {
            return Err(syn::Error::new(
                ix.name.span(),
                format!("datalayer: duplicate index name `{name}`"),
            ));
        }
        let mut positions = Vec::new();
        for f in &ix.fields {
            let p = resolve(f)?;
            if positions.contains(&p) {
                return Err(syn::Error::new(
                    f.span(),
                    format!("datalayer: `{f}` appears twice in index `{name}`"),
                ));
            }
            positions.push(p);
        }
        let unique = ix.unique;
        let when = match &ix.when {
            None => quote!(::std::option::Option::None),
            Some(w) => {
                let (row, body) = crate::expr::closure(w)?;
                let scope = Scope {
                    row: row.clone(),
                    params: &[],
                    allow_params: false,
                };
                let node = scope.predicate(body)?;
                check_node_columns(&node, &resolve)?;
                let row_param = Ident::new("__row", Span::call_site());
                node.checks(&dl, &row_param, &mut when_checks);
                let e = node.lower(&dl, &cols, None)?;
                quote!(::std::option::Option::Some(#e))
            }
        };
        index_defs.push(quote! {
            #dl::IndexDef {
                name: ::std::string::String::from(#name),
                columns: ::std::vec![#(#positions),*],
                unique: #unique,
                when: #when,
            }
        });
    }

    // Row codec.
    let n = columns.len();
    let to_values = columns.iter().map(|f| f.encoder(&dl));
    let key_values = pk.iter().map(|f| {
        let fi = &f.ident;
        quote!(#dl::ColumnValue::to_value(&self.#fi))
    });
    let decoders = columns.iter().map(|f| {
        let fi = &f.ident;
        let column = &f.column;
        let from_value = f.decoder(&dl);
        quote! {
            let #fi = #from_value(__values.next().unwrap_or_default())
                .map_err(|e| #dl::Error::invalid_input(::std::format!("column {}.{}: {}", #name_expr, #column, e.message())))?;
        }
    });
    let inits = fields.iter().map(|f| {
        let fi = &f.ident;
        if f.relation.is_some() {
            quote!(#fi: ::std::default::Default::default())
        } else {
            quote!(#fi)
        }
    });
    let pk_fields = pk.iter().map(|f| f.ident.to_string());

    // Relationships.
    let mut rel_impls = Vec::new();
    for b in &belongs {
        for f in &b.fields {
            resolve(f)?;
        }
        let parent = &b.parent;
        let names = b.fields.iter().map(|f| f.to_string());
        let values = b
            .fields
            .iter()
            .map(|f| quote!(#dl::ColumnValue::to_value(&self.#f)));
        let dl = dl.at(parent.span());
        rel_impls.push(quote_spanned! {parent.span()=>
            impl #dl::BelongsTo<#parent> for #ident {
                const FOREIGN_KEY: &'static [&'static str] = &[#(#names),*];
                fn parent_key(&self) -> ::std::option::Option<#dl::Row> {
                    let key: #dl::Row = ::std::vec![#(#values),*];
                    if key.iter().any(#dl::Value::is_null) {
                        ::std::option::Option::None
                    } else {
                        ::std::option::Option::Some(key)
                    }
                }
            }
        });
    }
    for f in fields.iter().filter(|f| f.relation.is_some()) {
        let ids = f.relation.as_ref().expect("relation");
        resolve(ids)?;
        let related = generic_arg(&f.ty, "Vec").expect("checked above");
        let fi = &f.ident;
        let dl = dl.at(fi.span());
        rel_impls.push(quote_spanned! {fi.span()=>
            impl #dl::IdList<#related> for #ident {
                fn related_keys(&self) -> ::std::vec::Vec<#dl::Row> {
                    self.#ids
                        .iter()
                        .map(|k| #dl::Key::into_key(::std::clone::Clone::clone(k)))
                        .collect()
                }
                fn fill_related(&mut self, rows: ::std::vec::Vec<#related>) {
                    self.#fi = rows;
                }
            }
        });
    }

    let check_fn = if when_checks.is_empty() {
        quote!()
    } else {
        quote! {
            const _: () = {
                #[allow(dead_code, unused, clippy::all)]
                fn __dl_check_index_when(__row: &#ident) {
                    #(#when_checks)*
                }
            };
        }
    };

    // Schema-evolution hints.
    let mut defaults = Vec::new();
    let mut renames = Vec::new();
    for (i, f) in columns.iter().enumerate() {
        if let Some((lit, span)) = &f.default {
            let value = lit.value_tokens(&dl, *span)?;
            let ty = f.column_type(&dl);
            defaults.push(quote!((#i, {
                let v: #dl::Value = #value;
                v.clone().coerce(#ty).unwrap_or(v)
            })));
        }
        if let Some(r) = &f.renamed_from {
            renames.push(quote!((#i, ::std::string::String::from(#r))));
        }
    }
    let table_renamed = match &table_renamed_from {
        Some(r) => quote!(::std::option::Option::Some(::std::string::String::from(#r))),
        None => quote!(::std::option::Option::None),
    };
    let evolution = if defaults.is_empty() && renames.is_empty() && table_renamed_from.is_none() {
        quote!()
    } else {
        quote! {
            fn evolution() -> #dl::evolve::Evolution {
                #dl::evolve::Evolution {
                    renamed_from: #table_renamed,
                    defaults: ::std::vec![#(#defaults),*],
                    column_renames: ::std::vec![#(#renames),*],
                }
            }
        }
    };

    Ok(quote! {
        impl #dl::Table for #ident {
            #evolution
            fn schema() -> &'static #dl::TableSchema {
                static SCHEMA: #dl::__private::OnceLock<#dl::TableSchema> =
                    #dl::__private::OnceLock::new();
                SCHEMA.get_or_init(|| #dl::TableSchema {
                    name: ::std::string::String::from(#name_expr),
                    columns: ::std::vec![#(#column_defs),*],
                    primary_key: ::std::vec![#(#pk_positions),*],
                    indexes: ::std::vec![#(#index_defs),*],
                    version: #version,
                })
            }
            fn to_row(&self) -> #dl::Row {
                ::std::vec![#(#to_values),*]
            }
            fn from_row(row: #dl::Row) -> #dl::Result<Self> {
                if row.len() != #n {
                    return ::std::result::Result::Err(#dl::Error::invalid_input(
                        ::std::format!("table {} has {} columns, the row has {}", #name_expr, #n, row.len()),
                    ));
                }
                let mut __values = row.into_iter();
                #(#decoders)*
                ::std::result::Result::Ok(#ident { #(#inits),* })
            }
            fn key(&self) -> #dl::Row {
                ::std::vec![#(#key_values),*]
            }
        }

        impl #dl::check::PrimaryKeyFields for #ident {
            const FIELDS: &'static [&'static str] = &[#(#pk_fields),*];
        }

        #(#rel_impls)*

        #check_fn
    })
}

/// Checks that every column of a `when` expression is a column of the table.
fn check_node_columns(
    node: &crate::expr::Node,
    resolve: &dyn Fn(&Ident) -> syn::Result<usize>,
) -> syn::Result<()> {
    use crate::expr::Node;
    match node {
        Node::Column(f, _) => resolve(f).map(drop),
        Node::Param(..) | Node::Lit(..) | Node::Null(_) => Ok(()),
        Node::Cmp(_, a, b, _) | Node::StartsWith(a, b, _) | Node::Arith(_, a, b, _) => {
            check_node_columns(a, resolve)?;
            check_node_columns(b, resolve)
        }
        Node::And(v) | Node::Or(v) => v.iter().try_for_each(|n| check_node_columns(n, resolve)),
        Node::Not(a) | Node::IsNull(a, _) => check_node_columns(a, resolve),
    }
}

/// Columns resolved to positions at macro time (`Expr::Column(i)`), typed by the field.
struct PositionColumns<'a> {
    dl: &'a Root,
    position: &'a HashMap<String, usize>,
    columns: &'a [&'a Field],
}

impl Columns for PositionColumns<'_> {
    fn expr(&self, field: &Ident) -> TokenStream {
        let (i, dl) = (self.position[&field.to_string()], self.dl);
        quote!(#dl::Expr::Column(#i))
    }
    fn ty(&self, field: &Ident) -> TokenStream {
        let ty = self.columns[self.position[&field.to_string()]].column_type(self.dl);
        quote!(::std::option::Option::Some(#ty))
    }
}

fn parse_index(attr: &syn::Attribute) -> syn::Result<Index> {
    let mut name = None;
    let mut fields = Vec::new();
    let mut unique = false;
    let mut when = None;
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("name") {
            name = Some(meta.value()?.parse::<LitStr>()?);
        } else if meta.path.is_ident("fields") {
            meta.parse_nested_meta(|f| {
                fields.push(f.path.require_ident()?.clone());
                Ok(())
            })?;
        } else if meta.path.is_ident("unique") {
            unique = true;
        } else if meta.path.is_ident("when") {
            when = Some(meta.value()?.parse::<syn::Expr>()?);
        } else {
            return Err(meta.error(
                "datalayer: expected `#[index(name = \"...\", fields(a, b), unique, when = |x| ...)]`",
            ));
        }
        Ok(())
    })?;
    let Some(name) = name else {
        return Err(syn::Error::new_spanned(
            attr,
            "datalayer: an index needs `name = \"...\"`",
        ));
    };
    if fields.is_empty() {
        return Err(syn::Error::new_spanned(
            attr,
            "datalayer: an index needs `fields(a, ..)`",
        ));
    }
    Ok(Index {
        name,
        fields,
        unique,
        when,
    })
}

fn parse_belongs_to(attr: &syn::Attribute) -> syn::Result<BelongsTo> {
    attr.parse_args_with(|input: syn::parse::ParseStream| {
        let parent: Path = input.parse()?;
        let mut fields = Vec::new();
        if input.peek(syn::Token![,]) {
            input.parse::<syn::Token![,]>()?;
            if !input.is_empty() {
                let kw: Ident = input.parse()?;
                if kw != "fields" {
                    return Err(syn::Error::new(
                        kw.span(),
                        "datalayer: expected `fields(a, b)`",
                    ));
                }
                let content;
                syn::parenthesized!(content in input);
                let list = content.parse_terminated(Ident::parse, syn::Token![,])?;
                fields.extend(list);
                if input.peek(syn::Token![,]) {
                    input.parse::<syn::Token![,]>()?;
                }
            }
        }
        Ok(BelongsTo { parent, fields })
    })
}
