//! A value that must not be shown: the edge's bearer token. Its `Debug` output is redacted, so
//! that it never reaches a log line, a `{:?}` of the settings or a panic message; the element's
//! `token` property is write-only for the same reason (no `gst-inspect` dump, DOT graph or
//! property notification carries it).

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(s.expose(), "hunter2");
        let shown = format!("{s:?} {:?} {:#?}", Some(&s), vec![s.clone()]);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"), "{shown}");
    }
}
