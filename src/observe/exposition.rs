//! The Prometheus text exposition format 0.0.4, written: `# HELP` and
//! `# TYPE` once per family, label values escaped, and non-finite values
//! spelled as Prometheus reads them. Pure: values in, text out.

use std::fmt::Write;

/// The exact media type Prometheus 3 requires of a text scrape.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A page being written, one family at a time.
#[derive(Default)]
pub struct Page {
    text: String,
}

/// A family's kind, as `# TYPE` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
            Kind::Histogram => "histogram",
        }
    }
}

impl Page {
    /// Starts a family. Every sample written until the next `family` must
    /// belong to it (its name, or for histograms `_bucket`, `_sum`, `_count`).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {}", kind.name());
    }

    /// One sample: `name{labels} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `\`, `"` and newline escaped, as the format requires in label values.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn number(value: f64) -> String {
    if value.is_nan() {
        String::from("NaN")
    } else if value == f64::INFINITY {
        String::from("+Inf")
    } else if value == f64::NEG_INFINITY {
        String::from("-Inf")
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::prom;

    #[test]
    fn a_page_reads_back_through_the_parser() {
        let mut page = Page::default();
        page.family("x_gpu_ratio", Kind::Gauge, "A ratio.\nSecond line.");
        page.sample("x_gpu_ratio", &[("gpu", "0"), ("pod", "a\"b\\c\nd")], 0.5);
        page.sample("x_gpu_ratio", &[], f64::NAN);
        page.family("x_requests_total", Kind::Counter, "Requests.");
        page.sample("x_requests_total", &[("code", "OK")], 3.0);
        let text = page.finish();
        assert!(
            text.contains("# HELP x_gpu_ratio A ratio.\\nSecond line.\n"),
            "{text}"
        );
        let families = prom::families(&text, &["x_gpu_ratio", "x_requests_total"]).unwrap();
        assert_eq!(families[0].samples[0].label("pod"), Some("a\"b\\c\nd"));
        assert!(families[0].samples[1].value.is_nan());
        assert_eq!(families[1].kind, prom::Kind::Counter);
        assert_eq!(families[1].samples[0].value, 3.0);
    }
}
