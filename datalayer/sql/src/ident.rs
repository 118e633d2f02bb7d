//! Identifiers that datalayer generates (index names, change-capture trigger and
//! function names), derived within the length limit of the database.
//!
//! PostgreSQL keeps at most `NAMEDATALEN - 1` = 63 bytes of an identifier and silently
//! truncates longer ones (PostgreSQL documentation, "Lexical Structure → Identifiers
//! and Key Words": "The system uses no more than NAMEDATALEN-1 bytes of an identifier;
//! longer names can be written in commands, but they will be truncated"). Two
//! generated names that share their first 63 bytes then name the *same* object:
//! `CREATE UNIQUE INDEX IF NOT EXISTS` skips the second index, `CREATE OR REPLACE
//! FUNCTION` replaces the first table's trigger function. [`fit_identifier`] derives a
//! name that fits and stays distinct; every generated identifier goes through it
//! (via [`Dialect::generated_ident`](crate::Dialect::generated_ident)).

use sha2::{Digest, Sha256};

/// Bytes of the suffix [`fit_identifier`] appends to a shortened name: `_` and 16
/// lowercase hex digits (the first 64 bits of the SHA-256 of the full name).
pub const HASH_SUFFIX_BYTES: usize = 17;

/// The identifier for the generated name `full` in a database that keeps at most
/// `max_bytes` bytes of an identifier (`None`: no limit).
///
/// - `full` fits (`full.len() <= max_bytes`, or no limit): `full` unchanged, so that
///   databases created before this rule keep their names.
/// - Otherwise: the longest prefix of `full` that ends on a char boundary and leaves
///   room for the suffix, then `_` and 16 lowercase hex digits of the SHA-256 of the
///   whole of `full` (UTF-8 bytes) — [`HASH_SUFFIX_BYTES`] bytes in all. The result is
///   at most `max_bytes` bytes, stable across runs, versions and platforms (it is part
///   of the stored format: never change the hash), readable by its prefix, and two
///   different names that share the same prefix get different suffixes (a collision
///   needs a 64-bit SHA-256 prefix collision). With `max_bytes` ≤
///   [`HASH_SUFFIX_BYTES`] there is no room for a prefix: the result is the first
///   `max_bytes` hex digits of the hash.
///
/// A shortened name is distinct from every name that fits *unless* someone chooses a
/// fitting name equal to it; [`SqlEngine`](crate::SqlEngine) checks after its DDL that
/// each declared index exists on its own table, which catches that case as well.
///
/// ```
/// use datalayer_sql::fit_identifier;
/// assert_eq!(fit_identifier("users__by_email", Some(63)), "users__by_email");
/// let long = format!("{}__by_email", "t".repeat(60));
/// let short = fit_identifier(&long, Some(63));
/// assert_eq!(short.len(), 63);
/// assert!(short.starts_with("tttt"));
/// assert_eq!(fit_identifier(&long, None), long);
/// ```
pub fn fit_identifier(full: &str, max_bytes: Option<usize>) -> String {
    let Some(max) = max_bytes else {
        return full.to_owned();
    };
    if full.len() <= max {
        return full.to_owned();
    }
    let digest = Sha256::digest(full.as_bytes());
    let mut hex = String::with_capacity(HASH_SUFFIX_BYTES - 1);
    for b in &digest[..(HASH_SUFFIX_BYTES - 1) / 2] {
        hex.push_str(&format!("{b:02x}"));
    }
    if max <= HASH_SUFFIX_BYTES {
        hex.truncate(max);
        return hex;
    }
    let mut cut = max - HASH_SUFFIX_BYTES;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{hex}", &full[..cut])
}

/// The name PostgreSQL gave `full` before [`fit_identifier`] existed: its first
/// `max_bytes` bytes, cut on a char boundary (what the server does to a long
/// identifier). Used to find and drop objects created under such a truncated name.
pub fn truncated_identifier(full: &str, max_bytes: usize) -> &str {
    if full.len() <= max_bytes {
        return full;
    }
    let mut cut = max_bytes;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    &full[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_unchanged() {
        assert_eq!(
            fit_identifier("users__by_email", Some(63)),
            "users__by_email"
        );
        let exactly = "x".repeat(63);
        assert_eq!(fit_identifier(&exactly, Some(63)), exactly);
        let long = "y".repeat(200);
        assert_eq!(fit_identifier(&long, None), long);
    }

    #[test]
    fn long_names_fit_and_stay_distinct() {
        let t = "identifier_limit_table_with_a_rather_long_name_sixty_bytes_a";
        let a = format!("{t}__unique_email");
        let b = format!("{t}__unique_phone");
        assert_eq!(a[..63], b[..63]);
        let (fa, fb) = (fit_identifier(&a, Some(63)), fit_identifier(&b, Some(63)));
        assert_eq!(fa.len(), 63);
        assert_eq!(fb.len(), 63);
        assert_ne!(fa, fb);
        assert_eq!(fa[..46], a[..46]);
        assert_eq!(fa.as_bytes()[46], b'_');
        // Stable across runs and versions: part of the stored format. The suffix is
        // the first 16 hex digits of `printf '%s' "$a" | sha256sum`.
        assert_eq!(
            fa,
            "identifier_limit_table_with_a_rather_long_name_d290ea558cea70fb"
        );
        assert_eq!(fit_identifier(&a, Some(63)), fa);
        // Names that differ only after the first 63 bytes, many of them.
        let names: std::collections::HashSet<String> = (0..1000)
            .map(|i| fit_identifier(&format!("{}{i}", "p".repeat(70)), Some(63)))
            .collect();
        assert_eq!(names.len(), 1000);
    }

    #[test]
    fn cuts_on_char_boundaries() {
        // 'é' is 2 bytes: a prefix of 46 bytes would split one.
        let s = format!("a{}", "é".repeat(40));
        let f = fit_identifier(&s, Some(63));
        assert!(f.len() <= 63);
        assert!(f.starts_with("aé"));
        assert_eq!(f.len(), 45 + HASH_SUFFIX_BYTES);
        assert_eq!(fit_identifier(&s, Some(10)).len(), 10);
        assert_eq!(truncated_identifier(&s, 4), "aé");
        assert_eq!(truncated_identifier("abc", 63), "abc");
    }
}
