//! What a host name may be, and how other text from agents is made safe to
//! show.
//!
//! A host's name is its identity (a certificate or a per-host token is bound
//! to it), a store key, a file name in every sweep's reports, a Prometheus
//! label value and a word in logs. One small character set serves all of
//! those without escaping: ASCII letters, digits, `.`, `-` and `_`, starting
//! with a letter or a digit, at most [`MAX_HOST_NAME_LEN`] characters (a DNS
//! name's limit, so every host name of a real fleet fits). Nothing invisible,
//! nothing that reads as something else (bidi controls, homoglyphs from other
//! scripts), nothing a shell, a CSV reader or a file system treats specially.
//!
//! Other text an agent sends (GPU and CPU model names, driver versions, error
//! messages, notes) is free-form; [`clean_text`] replaces what could forge a
//! log line or hide itself in a terminal, and bounds its length.

use thiserror::Error;

/// Longest host name: the length limit of a DNS name (RFC 1035).
pub const MAX_HOST_NAME_LEN: usize = 253;

/// Longest short text from an agent (a GPU or CPU model, a driver version,
/// a device's progress line), in characters, after cleaning.
pub const SHORT_TEXT: usize = 128;
/// Longest long text from an agent (an error message, a note).
pub const LONG_TEXT: usize = 2000;
/// Most notes kept from one message.
pub const MAX_NOTES: usize = 32;
/// Most GPUs kept from one host's inventory (the largest nodes have 16).
pub const MAX_GPUS: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostNameError {
    #[error("the host name is empty: give a name such as gpu-07 (--name)")]
    Empty,
    #[error(
        "host name '{shown}' is {len} characters long: use at most {MAX_HOST_NAME_LEN} (--name)"
    )]
    TooLong { shown: String, len: usize },
    #[error(
        "host name '{shown}' has {what}: use ASCII letters, digits, '.', '-' and '_', starting with a letter or digit (--name)"
    )]
    BadCharacter { shown: String, what: String },
}

/// Checks a host name against the documented character set.
pub fn check_host_name(name: &str) -> Result<(), HostNameError> {
    let shown = || clean_text(name, 80);
    let Some(first) = name.chars().next() else {
        return Err(HostNameError::Empty);
    };
    if name.len() > MAX_HOST_NAME_LEN {
        return Err(HostNameError::TooLong {
            shown: shown(),
            len: name.chars().count(),
        });
    }
    if !first.is_ascii_alphanumeric() {
        return Err(HostNameError::BadCharacter {
            shown: shown(),
            what: format!("'{}' first", first.escape_default()),
        });
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(HostNameError::BadCharacter {
            shown: shown(),
            what: format!("the character {}", describe_char(bad)),
        });
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    if c.is_ascii_graphic() || c == ' ' {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// True for characters that must never reach a log line, a terminal or a
/// report as they are: control characters (newlines forge log lines, escape
/// sequences drive terminals), and the invisible formatting characters that
/// make text read differently from what it is (bidirectional overrides and
/// isolates, zero-width characters, the byte-order mark).
pub fn is_unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{200B}'..='\u{200F}' // zero-width space/joiners, LRM, RLM
            | '\u{202A}'..='\u{202E}' // bidi embeddings and overrides
            | '\u{2060}'..='\u{2064}' // word joiner, invisible operators
            | '\u{2066}'..='\u{2069}' // bidi isolates
            | '\u{FEFF}' // byte-order mark, zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
            | '\u{061C}' // Arabic letter mark
            | '\u{00AD}' // soft hyphen
        )
}

/// `text` with every unsafe character (see [`is_unsafe_char`]) written as a
/// visible `\u{...}` escape, cut to at most `max_chars` characters (an
/// ellipsis marks the cut). What an agent sends is shown this way wherever
/// it lands: store, logs, terminal, reports, metrics.
pub fn clean_text(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    for (count, c) in text.chars().enumerate() {
        if count >= max_chars {
            out.push('…');
            break;
        }
        if is_unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// True when `text` would come out of [`clean_text`] unchanged at this length.
pub fn is_clean_text(text: &str, max_chars: usize) -> bool {
    !text.chars().any(is_unsafe_char) && text.chars().count() <= max_chars
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_host_names_pass() {
        for name in [
            "gpu-07",
            "a",
            "node_3.rack-2.dc1.example.com",
            "H100x8",
            "10.0.0.7",
        ] {
            assert_eq!(check_host_name(name), Ok(()), "{name}");
        }
        assert_eq!(check_host_name(&"a".repeat(253)), Ok(()));
    }

    #[test]
    fn names_outside_the_set_are_refused_with_what_to_fix() {
        for (name, expected) in [
            ("", "empty"),
            ("gpu~01", "'~'"),
            ("gpu 01", "' '"),
            ("-gpu", "'-' first"),
            (".hidden", "'.' first"),
            ("gpu/../../etc", "'/'"),
            ("gpu\n2026-01-01 INFO forged", "U+000A"),
            ("gpu\u{202E}10", "U+202E"),
            ("gpu\u{200B}07", "U+200B"),
            // Cyrillic 'е' looks like Latin 'e'.
            ("gpu-nod\u{0435}", "U+0435"),
            ("fleet\"} 1\nevil", "'\"'"),
        ] {
            let e = check_host_name(name).expect_err(name).to_string();
            assert!(e.contains(expected), "{name:?}: {e}");
            assert!(!e.contains('\n') && !e.contains('\u{202E}'), "{e:?}");
        }
        let long = check_host_name(&"a".repeat(254))
            .expect_err("254")
            .to_string();
        assert!(
            long.contains("254 characters") && long.len() < 300,
            "{long}"
        );
    }

    #[test]
    fn clean_text_escapes_what_forges_lines_and_bounds_the_length() {
        assert_eq!(
            clean_text("NVIDIA H100 80GB HBM3", 64),
            "NVIDIA H100 80GB HBM3"
        );
        assert_eq!(
            clean_text("a\nINFO forged\u{1b}[2J", 64),
            "a\\u{a}INFO forged\\u{1b}[2J"
        );
        assert_eq!(clean_text("x\u{202E}y", 64), "x\\u{202e}y");
        assert_eq!(clean_text("abcdef", 3), "abc…");
        assert!(is_clean_text("H100", 4) && !is_clean_text("H100", 3));
        assert!(!is_clean_text("a\u{2066}b", 10));
    }
}
