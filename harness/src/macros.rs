//! `per_variant!`: one test per build variant.

/// Runs each named check `fn(Variant)` once per build variant, as three tests in a module of
/// the check's name (`o0`, `o2_nofp`, `static_o2`).
#[macro_export]
macro_rules! per_variant {
    ($($check:ident),* $(,)?) => {$(
        mod $check {
            use $crate::Variant;
            #[test]
            fn o0() {
                super::$check(Variant::O0)
            }
            #[test]
            fn o2_nofp() {
                super::$check(Variant::O2NoFramePointer)
            }
            #[test]
            fn static_o2() {
                super::$check(Variant::Static)
            }
        }
    )*};
}
