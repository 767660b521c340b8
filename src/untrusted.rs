//! Text that came from outside (a replica's status line, headers or page,
//! a peer's answer) on its way into a log line, a gRPC message or
//! `--explain`: at most [`MAX_ECHO`] characters, with control characters
//! escaped, so that a hostile page can neither flood KEDA's events nor
//! forge lines in a log. Pure.

/// The most characters of one outside string shown.
pub const MAX_ECHO: usize = 200;

/// `text` with control characters escaped (`\n`, `\u{1b}`), cut after
/// [`MAX_ECHO`] characters with how much was left out.
pub fn plain(text: &str) -> String {
    let mut shown = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == MAX_ECHO {
            let left = text.chars().count() - MAX_ECHO;
            shown.push_str(&format!("… ({left} more characters)"));
            break;
        }
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    shown
}

/// As [`plain`], in double quotes, with `"` and `\` escaped: for a value
/// inside a message.
pub fn quoted(text: &str) -> String {
    let mut inner = String::new();
    for c in text.chars().take(MAX_ECHO) {
        match c {
            '"' | '\\' => {
                inner.push('\\');
                inner.push(c);
            }
            c if c.is_control() => inner.extend(c.escape_default()),
            c => inner.push(c),
        }
    }
    let count = text.chars().count();
    if count > MAX_ECHO {
        format!("\"{inner}\"… ({} more characters)", count - MAX_ECHO)
    } else {
        format!("\"{inner}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_length_capped() {
        assert_eq!(plain("a\nb\u{1b}[31m\u{7}"), "a\\nb\\u{1b}[31m\\u{7}");
        assert_eq!(quoted("say \"hi\"\r\n"), "\"say \\\"hi\\\"\\r\\n\"");
        let long = "x".repeat(MAX_ECHO + 50);
        let shown = plain(&long);
        assert!(shown.starts_with(&"x".repeat(MAX_ECHO)));
        assert!(shown.ends_with("… (50 more characters)"), "{shown}");
        assert_eq!(shown.chars().filter(|c| *c == 'x').count(), MAX_ECHO);
        let shown = quoted(&long);
        assert!(shown.ends_with("\"… (50 more characters)"), "{shown}");
        // Multi-byte characters count as one each; nothing is split.
        assert_eq!(plain(&"é".repeat(MAX_ECHO)), "é".repeat(MAX_ECHO));
        assert_eq!(plain(""), "");
    }
}
