//! Just enough JSON writing for `devices --json`: objects, arrays, strings
//! with escaping, numbers and null.

/// Builds one JSON object, keys in insertion order.
pub struct JsonObject {
    body: String,
}

impl JsonObject {
    pub fn new() -> Self {
        Self {
            body: String::from("{"),
        }
    }

    pub fn string(&mut self, key: &str, value: Option<&str>) {
        let value = value.map_or_else(|| "null".to_string(), quote);
        self.raw(key, &value);
    }

    /// Integers print without a fraction; `None` and non-finite values print null.
    pub fn number(&mut self, key: &str, value: Option<f64>) {
        let value = match value {
            Some(v) if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 => {
                format!("{}", v as i64)
            }
            Some(v) if v.is_finite() => format!("{v}"),
            _ => "null".to_string(),
        };
        self.raw(key, &value);
    }

    pub fn boolean(&mut self, key: &str, value: Option<bool>) {
        let value = value.map_or("null", |b| if b { "true" } else { "false" });
        self.raw(key, value);
    }

    /// Adds an already-encoded value.
    pub fn raw(&mut self, key: &str, value: &str) {
        if self.body.len() > 1 {
            self.body.push(',');
        }
        self.body.push_str(&quote(key));
        self.body.push(':');
        self.body.push_str(value);
    }

    pub fn finish(mut self) -> String {
        self.body.push('}');
        self.body
    }
}

impl Default for JsonObject {
    fn default() -> Self {
        Self::new()
    }
}

/// Joins already-encoded values into an array.
pub fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

/// A JSON string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(quote("a\"b\\c\nd\u{1}"), r#""a\"b\\c\nd\u0001""#);
    }

    #[test]
    fn objects_and_arrays() {
        let mut object = JsonObject::new();
        object.number("a", Some(1.0));
        object.number("b", Some(2.5));
        object.number("c", None);
        object.boolean("d", Some(true));
        object.raw("e", &array(&["1".into(), "2".into()]));
        assert_eq!(
            object.finish(),
            r#"{"a":1,"b":2.5,"c":null,"d":true,"e":[1,2]}"#
        );
    }
}
