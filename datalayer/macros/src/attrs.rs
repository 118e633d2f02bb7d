//! Small helpers for attributes and names.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::meta::ParseNestedMeta;
use syn::{Attribute, GenericArgument, LitStr, PathArguments, Type};

/// The path every item of the generated code is reached through: `::datalayer` (the
/// facade), or the path given by `crate = "..."` (`datalayer_core`, `crate`), as serde's
/// `#[serde(crate = "...")]`. Core and the facade expose the same paths under their root.
#[derive(Clone)]
pub struct Root(TokenStream);

impl Default for Root {
    fn default() -> Self {
        Root(quote!(::datalayer))
    }
}

impl Root {
    /// Parses the value of `crate = "path"` in a nested attribute.
    pub fn parse(meta: &ParseNestedMeta) -> syn::Result<Root> {
        let expected =
            "datalayer: `crate` takes a path in a string, like `crate = \"datalayer_core\"`";
        let value = meta.value()?;
        let lit: LitStr = value
            .parse()
            .map_err(|e| syn::Error::new(e.span(), expected))?;
        let path = lit
            .parse_with(syn::Path::parse_mod_style)
            .map_err(|_| syn::Error::new(lit.span(), expected))?;
        Ok(Root(path.to_token_stream()))
    }

    /// The path with every token at `span`: generated code placed at the user's tokens
    /// (type checks) reports errors there, whatever the root. A mod-style path has no
    /// groups, so respanning its top-level tokens is enough.
    pub fn at(&self, span: Span) -> TokenStream {
        self.0
            .clone()
            .into_iter()
            .map(|mut t| {
                t.set_span(span);
                t
            })
            .collect::<TokenStream>()
    }
}

impl ToTokens for Root {
    fn to_tokens(&self, tokens: &mut TokenStream) {
        tokens.extend(self.0.clone());
    }
}

/// `UserProfile` → `user_profile`, `HTTPLog` → `http_log`.
pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (prev_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The rule of `datalayer::validate_identifier`, checked at compile time: ASCII letter or
/// `_` first, then letters, digits or `_`, at most 63 bytes, not starting with `_dl_`.
pub fn check_identifier(what: &str, name: &str, span: proc_macro2::Span) -> syn::Result<()> {
    let mut chars = name.chars();
    let ok_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let ok_rest = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok_first || !ok_rest || name.len() > 63 {
        return Err(syn::Error::new(
            span,
            format!(
                "datalayer: invalid {what} name {name:?}: use 1 to 63 ASCII letters, digits or '_', not starting with a digit"
            ),
        ));
    }
    if name.starts_with("_dl_") {
        return Err(syn::Error::new(
            span,
            format!("datalayer: invalid {what} name {name:?}: the prefix _dl_ is reserved"),
        ));
    }
    Ok(())
}

/// The `T` of `Wrapper<T>` when `ty` is a path ending in `wrapper` with one type argument.
pub fn generic_arg<'a>(ty: &'a Type, wrapper: &str) -> Option<&'a Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let last = p.path.segments.last()?;
    if last.ident != wrapper {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    if args.args.len() != 1 {
        return None;
    }
    match &args.args[0] {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// Whether `ty` is the single-segment path `name` (`u64`, `Self`).
pub fn is_ident_type(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
}

/// The `#[doc = ..]` attributes of `attrs`.
pub fn docs(attrs: &[Attribute]) -> Vec<&Attribute> {
    attrs.iter().filter(|a| a.path().is_ident("doc")).collect()
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake() {
        assert_eq!(snake_case("User"), "user");
        assert_eq!(snake_case("UserProfile"), "user_profile");
        assert_eq!(snake_case("HTTPLog"), "http_log");
        assert_eq!(snake_case("Log2Entry"), "log2_entry");
    }
}
