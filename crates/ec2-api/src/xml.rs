//! EC2 XML: responses in the `2016-11-15` namespace (the action's
//! `<ActionResponse>` with `requestId` first, members directly inside, lists
//! as `<xSet><item>`), and EC2's error document.

use crate::error::Ec2Error;

pub const NAMESPACE: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Escapes text for an element's content.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry are dropped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// Builds the inside of a response element by element.
#[derive(Debug, Default)]
pub struct Xml(String);

impl Xml {
    pub fn new() -> Self {
        Self::default()
    }

    /// `<name>text</name>`, escaped.
    pub fn text(&mut self, name: &str, value: &str) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        self.0.push_str(&escape(value));
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name>` with the value, when there is one.
    pub fn optional(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.text(name, value);
        }
        self
    }

    /// `<name>...</name>` around what `inner` writes.
    pub fn element(&mut self, name: &str, inner: impl FnOnce(&mut Self)) -> &mut Self {
        self.0.push('<');
        self.0.push_str(name);
        self.0.push('>');
        inner(self);
        self.0.push_str("</");
        self.0.push_str(name);
        self.0.push('>');
        self
    }

    /// `<name><item>..</item>...</name>`.
    pub fn set<T>(&mut self, name: &str, items: &[T], each: impl Fn(&mut Self, &T)) -> &mut Self {
        self.element(name, |x| {
            for item in items {
                x.element("item", |x| each(x, item));
            }
        })
    }

    pub fn into_string(self) -> String {
        self.0
    }

    /// The text so far, from a builder borrowed in a chain.
    pub fn take_string(&mut self) -> String {
        std::mem::take(&mut self.0)
    }
}

pub fn response(action: &str, request_id: &str, inner: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"{NAMESPACE}\"><requestId>{}</requestId>{inner}</{action}Response>",
        escape(request_id)
    )
}

pub fn error(error: &Ec2Error, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{}</Code><Message>{}</Message></Error></Errors><RequestID>{}</RequestID></Response>",
        escape(error.code),
        escape(&error.message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_nests() {
        let mut x = Xml::new();
        x.text("keyName", "a<b&c").set("s", &["1", "2"], |x, v| {
            x.text("v", v);
        });
        assert_eq!(
            x.into_string(),
            "<keyName>a&lt;b&amp;c</keyName><s><item><v>1</v></item><item><v>2</v></item></s>"
        );
        let e = Ec2Error::instance_not_found("i-1");
        assert!(error(&e, "R").contains("<Code>InvalidInstanceID.NotFound</Code>"));
    }
}
