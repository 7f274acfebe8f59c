//! Misuse of the attributes is a compile error with a helpful message (trybuild; regenerate the
//! `.stderr` files with `TRYBUILD=overwrite cargo test -p sluicebox-guest --test ui`).

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
