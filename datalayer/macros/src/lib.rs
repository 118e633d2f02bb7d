//! Procedural macros of datalayer (placeholder; being written).
use proc_macro::TokenStream;

/// Derives `datalayer::Table`.
#[proc_macro_derive(Table, attributes(table, pk, index, column, belongs_to, relation))]
pub fn derive_table(_input: TokenStream) -> TokenStream {
    TokenStream::new()
}

/// Turns plain query functions into prepared queries.
#[proc_macro_attribute]
pub fn query_group(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
