//! `#[derive(DbEnum)]`: a fieldless enum stored as its variant name in a text column.

use crate::attrs::Root;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields};

/// Expands `#[derive(DbEnum)]`.
pub fn expand(input: DeriveInput) -> syn::Result<TokenStream> {
    let ident = &input.ident;
    let mut dl = Root::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("db_enum")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                dl = Root::parse(&meta)?;
                Ok(())
            } else {
                Err(meta.error("datalayer: the only argument of #[db_enum] is `crate = \"path\"`"))
            }
        })?;
    }
    let Data::Enum(e) = &input.data else {
        return Err(syn::Error::new_spanned(
            ident,
            "datalayer: `DbEnum` derives only for enums",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "datalayer: a `DbEnum` has no generic parameters",
        ));
    }
    if e.variants.is_empty() {
        return Err(syn::Error::new_spanned(
            ident,
            "datalayer: a `DbEnum` needs at least one variant",
        ));
    }
    let mut variants = Vec::new();
    for v in &e.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(
                v,
                "datalayer: a `DbEnum` variant has no fields (it is stored as its name)",
            ));
        }
        variants.push(&v.ident);
    }
    let names: Vec<String> = variants.iter().map(|v| v.to_string()).collect();
    let expected = names.join(", ");
    let type_name = ident.to_string();
    Ok(quote! {
        impl #dl::ColumnValue for #ident {
            const TYPE: #dl::ColumnType = #dl::ColumnType::String;
            fn to_value(&self) -> #dl::Value {
                #dl::Value::String(::std::string::String::from(match self {
                    #(#ident::#variants => #names,)*
                }))
            }
            fn from_value(v: #dl::Value) -> #dl::Result<Self> {
                match v {
                    #dl::Value::String(s) => match s.as_str() {
                        #(#names => ::std::result::Result::Ok(#ident::#variants),)*
                        other => ::std::result::Result::Err(#dl::Error::invalid_input(::std::format!(
                            "{:?} is not a variant of {} (expected one of {})", other, #type_name, #expected
                        ))),
                    },
                    other => ::std::result::Result::Err(#dl::Error::invalid_input(::std::format!(
                        "expected the text of a {} variant, got {:?}", #type_name, other
                    ))),
                }
            }
        }
        impl #dl::check::SelfComparable for #ident {}
    })
}
