//! Keys, the types `TYPE` reports, and bytes shown as text.

use std::fmt;

use serde::{Serialize, Serializer};

/// The type of a key, as `TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    String,
    List,
    Set,
    Zset,
    Hash,
    Stream,
    /// A module type (its value is compared only by existence, type and TTL).
    Other,
}

impl KeyType {
    pub const ALL: [KeyType; 7] = [
        KeyType::String,
        KeyType::List,
        KeyType::Set,
        KeyType::Zset,
        KeyType::Hash,
        KeyType::Stream,
        KeyType::Other,
    ];

    /// Parses a `TYPE` reply; `none` (no such key) is `None`.
    pub fn from_reply(reply: &str) -> Option<KeyType> {
        Some(match reply {
            "none" => return None,
            "string" => KeyType::String,
            "list" => KeyType::List,
            "set" => KeyType::Set,
            "zset" => KeyType::Zset,
            "hash" => KeyType::Hash,
            "stream" => KeyType::Stream,
            _ => KeyType::Other,
        })
    }

    /// Parses a type name as a filter takes it (`string`, `zset`, ...).
    pub fn parse(name: &str) -> Option<KeyType> {
        KeyType::ALL
            .into_iter()
            .find(|t| t.as_str().eq_ignore_ascii_case(name))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::String => "string",
            KeyType::List => "list",
            KeyType::Set => "set",
            KeyType::Zset => "zset",
            KeyType::Hash => "hash",
            KeyType::Stream => "stream",
            KeyType::Other => "other",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key name: any bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub Vec<u8>);

impl Key {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the name is not valid UTF-8, so that reports show it escaped.
    pub fn is_escaped(&self) -> bool {
        std::str::from_utf8(&self.0).is_err()
    }
}

impl fmt::Display for Key {
    /// The name as text: UTF-8 names as they are (control characters escaped), other names
    /// with every non-printable byte escaped (`\x00`, `\xff`, `\n`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&text(&self.0))
    }
}

impl Serialize for Key {
    /// The name as a string: itself when it is valid UTF-8, escaped otherwise.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(name) => serializer.serialize_str(name),
            Err(_) => serializer.serialize_str(&self.0.escape_ascii().to_string()),
        }
    }
}

/// Bytes as one line of text: valid UTF-8 as it is with control characters escaped,
/// anything else with every non-printable byte escaped.
pub fn text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        Ok(s) => s
            .chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// A value (or a piece of one) shown in a report: text as [`text`] makes it, cut after
/// [`Excerpt::MAX_BYTES`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Excerpt(pub String);

impl Excerpt {
    pub const MAX_BYTES: usize = 200;

    pub fn new(bytes: &[u8]) -> Self {
        if bytes.len() <= Self::MAX_BYTES {
            return Excerpt(text(bytes));
        }
        let mut shown = text(&bytes[..Self::MAX_BYTES]);
        shown.push_str(&format!("…(+{} bytes)", bytes.len() - Self::MAX_BYTES));
        Excerpt(shown)
    }
}

impl fmt::Display for Excerpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_names_stay_binary_names_are_escaped() {
        let plain = Key(b"user:42".to_vec());
        assert!(!plain.is_escaped());
        assert_eq!(serde_json::to_string(&plain).unwrap(), "\"user:42\"");
        let binary = Key(b"k\x00\xff\n".to_vec());
        assert!(binary.is_escaped());
        assert_eq!(binary.to_string(), "k\\x00\\xff\\n");
        assert_eq!(
            serde_json::to_string(&binary).unwrap(),
            "\"k\\\\x00\\\\xff\\\\n\""
        );
        assert_eq!(Key("é\n".as_bytes().to_vec()).to_string(), "é\\n");
    }

    #[test]
    fn excerpts_are_cut_and_say_how_much_is_left() {
        let long = vec![b'a'; 250];
        let excerpt = Excerpt::new(&long);
        assert!(excerpt.0.starts_with("aaaa"));
        assert!(excerpt.0.ends_with("…(+50 bytes)"));
        assert_eq!(Excerpt::new(b"\xff").0, "\\xff");
    }

    #[test]
    fn type_replies_parse() {
        assert_eq!(KeyType::from_reply("none"), None);
        assert_eq!(KeyType::from_reply("zset"), Some(KeyType::Zset));
        assert_eq!(KeyType::from_reply("ReJSON-RL"), Some(KeyType::Other));
        assert_eq!(KeyType::parse("Hash"), Some(KeyType::Hash));
    }
}
