//! Compile-time behaviour of the macros: what must compile, and every misuse with the error
//! the user sees, pointing at the offending tokens.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}
