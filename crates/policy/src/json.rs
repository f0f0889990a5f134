//! A JSON tree that keeps members in order and refuses repeated member names.
//!
//! `serde_json::Value` keeps the last of two members with the same name; other parsers keep the
//! first. A policy that reads differently to a reviewer's tool and to the evaluator is a
//! security hole, so the parser refuses such documents outright. This module owns only the
//! syntax; what the members mean is `document`'s business.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    /// The number as JSON would print it; policies only ever compare numbers as text or
    /// re-parse them, never do arithmetic on them.
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|error| error.to_string())
    }

    /// What a value is, for error messages ("expected a string, found an array").
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool(_) => "a boolean",
            Self::Number(_) => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Json, E> {
        Ok(Json::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Json, E> {
        Ok(Json::Number(value.to_string()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Json, E> {
        Ok(Json::Number(value.to_string()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Json, E> {
        Ok(Json::Number(value.to_string()))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Json, E> {
        Ok(Json::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Json, E> {
        Ok(Json::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members: Vec<(String, Json)> = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            // Objects in policies have a handful of members, so a linear scan is cheaper than
            // a set; the document size limit bounds the worst case.
            if members.iter().any(|(existing, _)| *existing == name) {
                return Err(de::Error::custom(format_args!(
                    "member \"{name}\" appears twice in one object"
                )));
            }
            let value = map.next_value()?;
            members.push((name, value));
        }
        Ok(Json::Object(members))
    }
}

/// Bytes of `text` not counting JSON white space outside strings: the size AWS checks limits on.
pub(crate) fn size_without_white_space_bytes(text: &str) -> usize {
    let mut size_bytes = 0;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            size_bytes += 1;
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if !matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            size_bytes += 1;
            in_string = byte == b'"';
        }
    }
    size_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_member_order_and_types() {
        let json = Json::parse(r#"{"b": [1, 2.5, true, null], "a": "x"}"#).unwrap();
        assert_eq!(
            json,
            Json::Object(vec![
                (
                    "b".into(),
                    Json::Array(vec![
                        Json::Number("1".into()),
                        Json::Number("2.5".into()),
                        Json::Bool(true),
                        Json::Null,
                    ])
                ),
                ("a".into(), Json::String("x".into())),
            ])
        );
    }

    #[test]
    fn refuses_repeated_member_names_at_any_depth() {
        let error =
            Json::parse(r#"{"Statement": {"Effect": "Allow", "Effect": "Deny"}}"#).unwrap_err();
        assert!(error.contains("\"Effect\" appears twice"), "{error}");
    }

    #[test]
    fn refuses_trailing_garbage() {
        assert!(Json::parse(r#"{"a": 1} {"b": 2}"#).is_err());
    }

    #[test]
    fn size_ignores_white_space_outside_strings_only() {
        assert_eq!(size_without_white_space_bytes("{ \"a b\" :\n\t1 }"), 9);
        assert_eq!(size_without_white_space_bytes(r#"{"a\" b": 1}"#), 11);
    }
}
