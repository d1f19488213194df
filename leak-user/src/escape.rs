//! Strings the target controls (its comm, symbol and file names, kernel log text) on a
//! terminal or in a text file: a control character could rewrite the screen (escape
//! sequences), fake report lines (newlines) or reorder what is read (bidi overrides), so each
//! is shown as an escape instead. JSON output needs none of this: serde escapes it.
use std::borrow::Cow;

/// `text` with every control character as `\xNN` (ASCII) or `\u{NNNN}` (C1 controls, bidi
/// and other invisible format characters). Backslashes are left as they are.
pub fn control_chars(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !needs_escape(c) => out.push(c),
            c if c.is_ascii() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:04x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    c.is_control() || is_invisible_format(c)
}

/// Bidirectional overrides and isolates, zero-width characters and the BOM: text that looks
/// other than it is.
fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

#[cfg(test)]
mod tests {
    use super::control_chars;

    #[test]
    fn plain_text_is_borrowed() {
        let text = "operator new(unsigned long)  leak.cc:12 — ünïcode";
        assert!(matches!(control_chars(text), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            control_chars("evil\x1b[2J\nleaktrace: fake\ttab\x7f\r"),
            "evil\\x1b[2J\\x0aleaktrace: fake\\x09tab\\x7f\\x0d"
        );
        assert_eq!(control_chars("a\u{85}b\u{9b}c"), "a\\u{0085}b\\u{009b}c");
        assert_eq!(control_chars("x\u{202e}gpj.exe"), "x\\u{202e}gpj.exe");
        assert_eq!(control_chars("\0"), "\\x00");
    }
}
