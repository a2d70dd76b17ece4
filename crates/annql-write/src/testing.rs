//! Test helpers: `unwrap` that panics with the error's message.

/// `unwrap` for tests, panicking with the error's `Display` (what the crate's users see).
pub(crate) trait Must<T> {
    /// The value, or a panic naming what went wrong.
    fn must(self) -> T;
}

impl<T, E: std::fmt::Display> Must<T> for Result<T, E> {
    fn must(self) -> T {
        self.unwrap_or_else(|e| panic!("{e}"))
    }
}

impl<T> Must<T> for Option<T> {
    fn must(self) -> T {
        self.unwrap_or_else(|| panic!("expected a value, got None"))
    }
}
