//! The AWS Query XML responses: a small writer that escapes every text node,
//! the response and error envelopes, and the value formats (ISO 8601 times,
//! percent-encoded policy documents).
//!
//! Element names are always literals from this crate; only text comes from
//! users, and it always goes through [`escape_into`].

use crate::Api;
use crate::error::ApiError;
use nuage_sigv4::RFC3986_RESERVED;
use percent_encoding::utf8_percent_encode;
use std::fmt::Write as _;

/// Builds an XML document.
#[derive(Debug, Default)]
pub(crate) struct Xml {
    out: String,
}

/// Escapes text for an XML text node. Characters XML 1.0 cannot carry at all
/// (control characters other than tab and line breaks) become U+FFFD, so the
/// document stays well-formed whatever went into it.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' => out.push(c),
            // A raw CR would be normalized away by the parser.
            '\r' => out.push_str("&#13;"),
            c if c < ' ' || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

impl Xml {
    pub(crate) fn open(&mut self, name: &'static str) {
        self.out.push('<');
        self.out.push_str(name);
        self.out.push('>');
    }

    pub(crate) fn close(&mut self, name: &'static str) {
        self.out.push_str("</");
        self.out.push_str(name);
        self.out.push('>');
    }

    /// Escaped text inside the element being written.
    pub(crate) fn text(&mut self, text: &str) {
        escape_into(&mut self.out, text);
    }

    /// `<name>text</name>`.
    pub(crate) fn leaf(&mut self, name: &'static str, text: &str) {
        self.open(name);
        escape_into(&mut self.out, text);
        self.close(name);
    }

    pub(crate) fn leaf_opt(&mut self, name: &'static str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    /// `<name>...</name>` around what `body` writes.
    pub(crate) fn nest(&mut self, name: &'static str, body: impl FnOnce(&mut Self)) {
        self.open(name);
        body(self);
        self.close(name);
    }

    /// `<name><member>..</member>...</name>`, one member per item.
    pub(crate) fn members<T>(
        &mut self,
        name: &'static str,
        items: &[T],
        mut member: impl FnMut(&mut Self, &T),
    ) {
        self.open(name);
        for item in items {
            self.nest("member", |w| member(w, item));
        }
        self.close(name);
    }

    pub(crate) fn into_string(self) -> String {
        self.out
    }
}

const DECLARATION: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

/// `<{Action}Response xmlns=..><{Action}Result>{result}</..><ResponseMetadata>..`;
/// actions that return nothing have no `Result` element, as in AWS.
pub(crate) fn response(api: Api, action: &str, result: Option<&str>, request_id: &str) -> String {
    let mut out = String::with_capacity(256 + result.map_or(0, str::len));
    out.push_str(DECLARATION);
    // Writing to a String cannot fail.
    let _ = write!(out, "<{action}Response xmlns=\"{}\">", api.namespace());
    if let Some(result) = result {
        let _ = write!(out, "<{action}Result>{result}</{action}Result>");
    }
    out.push_str("<ResponseMetadata><RequestId>");
    escape_into(&mut out, request_id);
    let _ = write!(out, "</RequestId></ResponseMetadata></{action}Response>");
    out
}

/// `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`.
pub(crate) fn error(api: Api, error: &ApiError, request_id: &str) -> String {
    let mut w = Xml::default();
    w.out.push_str(DECLARATION);
    let _ = write!(w.out, "<ErrorResponse xmlns=\"{}\">", api.namespace());
    w.nest("Error", |w| {
        w.leaf("Type", error.kind());
        w.leaf("Code", error.code);
        w.leaf("Message", &error.message);
    });
    w.leaf("RequestId", request_id);
    w.close("ErrorResponse");
    w.into_string()
}

/// `2024-05-01T12:00:00Z`: the ISO 8601 form AWS uses for every timestamp.
pub(crate) fn iso8601(unix_ns: i64) -> String {
    let seconds = unix_ns.div_euclid(1_000_000_000);
    match time::OffsetDateTime::from_unix_timestamp(seconds) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Out of the representable range: only a corrupt record gets here.
        Err(_) => "1970-01-01T00:00:00Z".to_owned(),
    }
}

/// A policy document as IAM returns it: percent-encoded JSON, which the CLI
/// and SDKs unquote. Spaces become `%20`, never `+` (Python's `unquote`
/// leaves `+` alone), so the text the user wrote comes back unchanged.
pub(crate) fn encode_policy(document: &str) -> String {
    utf8_percent_encode(document, RFC3986_RESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_stays_well_formed() {
        let mut w = Xml::default();
        w.nest("User", |w| {
            w.leaf("UserName", "a<b>&\"c'");
            w.leaf("Description", "bell\u{7}tab\tcr\r");
        });
        assert_eq!(
            w.into_string(),
            "<User><UserName>a&lt;b&gt;&amp;&quot;c&apos;</UserName>\
             <Description>bell\u{FFFD}tab\tcr&#13;</Description></User>"
        );
    }

    #[test]
    fn envelopes() {
        let body = response(Api::Iam, "CreateUser", Some("<User/>"), "R1");
        assert_eq!(
            body,
            format!(
                "{DECLARATION}<CreateUserResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
                 <CreateUserResult><User/></CreateUserResult>\
                 <ResponseMetadata><RequestId>R1</RequestId></ResponseMetadata></CreateUserResponse>"
            )
        );
        let none = response(Api::Sts, "DeleteUser", None, "R2");
        assert!(!none.contains("Result"));
        assert!(none.contains("https://sts.amazonaws.com/doc/2011-06-15/"));
        let e = error(
            Api::Iam,
            &ApiError::no_such_entity("user <x> not found"),
            "R3",
        );
        assert_eq!(
            e,
            format!(
                "{DECLARATION}<ErrorResponse xmlns=\"https://iam.amazonaws.com/doc/2010-05-08/\">\
                 <Error><Type>Sender</Type><Code>NoSuchEntity</Code>\
                 <Message>user &lt;x&gt; not found</Message></Error>\
                 <RequestId>R3</RequestId></ErrorResponse>"
            )
        );
    }

    #[test]
    fn formats() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_714_564_800_123_456_789), "2024-05-01T12:00:00Z");
        let doc = "{\"Version\": \"2012-10-17\",\n \"a+b\": \"é~\"}";
        let encoded = encode_policy(doc);
        assert!(!encoded.contains('+') && !encoded.contains(' '));
        assert_eq!(
            percent_encoding::percent_decode_str(&encoded)
                .decode_utf8()
                .unwrap(),
            doc
        );
    }
}
