//! Compile-fail tests of the macros: each case must fail with an error at the user's code.
//! Regenerate the expected output with `TRYBUILD=overwrite`, then read the `.stderr` files.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
