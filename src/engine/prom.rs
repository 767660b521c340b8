//! The Prometheus text exposition format (0.0.4), read only as far as a
//! trigger needs: the families it names, with their `# TYPE`, labels and
//! values. Every other line is skipped after reading its metric name, so a
//! 200 KB page with histograms costs a scan, not a parse. Pure: text in,
//! samples out; no I/O. Input is untrusted (any pod's `/metrics`), so
//! every rejection says where and why, and the series kept are capped.

use std::fmt;

use crate::untrusted::{plain, quoted};

/// The series cap of [`families`] and [`families_and_names`] callers that
/// give none (tests, the scaler's own page): a page with more series in a
/// wanted family is refused rather than buffered. The engine scrape keeps
/// far fewer (`engine::scrape::budget::MAX_SERIES_KEPT`).
pub const DEFAULT_MAX_SERIES: usize = 10_000;
/// The most labels one series may have.
pub const MAX_LABELS: usize = 64;
/// The most declared family names kept (for "the page has … instead").
pub const MAX_DECLARED: usize = 1024;

/// A family's `# TYPE`. A family with no `# TYPE` line is `Untyped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl Kind {
    fn parse(text: &str) -> Kind {
        match text {
            "counter" => Kind::Counter,
            "gauge" => Kind::Gauge,
            "histogram" => Kind::Histogram,
            "summary" => Kind::Summary,
            _ => Kind::Untyped,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
            Kind::Summary => "summary",
            Kind::Untyped => "untyped",
        }
    }
}

/// One series of a family.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The sample's own name: the family's, or with `_bucket`, `_sum`,
    /// `_count` for histograms and summaries.
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A family to keep from a page, and which of its series: all, or only
/// those with one label value (a trigger's `engineModel`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Want {
    pub family: String,
    pub only: Option<(String, String)>,
}

impl Want {
    /// Every series of `family`.
    pub fn all(family: &str) -> Self {
        Self {
            family: family.to_string(),
            only: None,
        }
    }

    /// Whether `wants` keep a series of `family` with `labels`.
    fn keeps(wants: &[Want], family: &str, labels: &Labels) -> bool {
        wants
            .iter()
            .filter(|w| w.family == family)
            .any(|w| match &w.only {
                None => true,
                Some((name, value)) => labels.iter().any(|(n, v)| n == name && v == value),
            })
    }
}

/// A family that was asked for, as the page has it.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
    /// Series of its own name the wants did not keep (another model's),
    /// and the first few of them, for "it has … instead" messages.
    pub unkept: usize,
    pub unkept_examples: Vec<Sample>,
}

/// Unkept series remembered per family, for messages.
pub const MAX_UNKEPT_EXAMPLES: usize = 5;

impl Family {
    /// Whether the page has any series of the family's own name, kept or not.
    pub fn has_series(&self) -> bool {
        self.unkept > 0 || self.samples.iter().any(|s| s.name == self.name)
    }
}

/// Why a page could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// The families of `page` named in `wanted`, in the order asked; a family
/// the page does not have is absent from the result. Only wanted lines are
/// parsed.
pub fn families(page: &str, wanted: &[&str]) -> Result<Vec<Family>, ParseError> {
    families_and_names(page, wanted, DEFAULT_MAX_SERIES).map(|(found, _)| found)
}

/// As [`families`], with the name of every family the page declares a
/// `# TYPE` for (at most [`MAX_DECLARED`]), in page order, and at most
/// `max_series` series per family.
pub fn families_and_names(
    page: &str,
    wanted: &[&str],
    max_series: usize,
) -> Result<(Vec<Family>, Vec<String>), ParseError> {
    let wants: Vec<Want> = wanted.iter().map(|w| Want::all(w)).collect();
    families_wanted(page, &wants, max_series)
}

/// As [`families_and_names`], keeping of each family only the series its
/// wants name (a model's, or all); `max_series` caps the series kept, so
/// the series of other models never count against it.
pub fn families_wanted(
    page: &str,
    wants: &[Want],
    max_series: usize,
) -> Result<(Vec<Family>, Vec<String>), ParseError> {
    let mut wanted: Vec<&str> = wants.iter().map(|w| w.family.as_str()).collect();
    wanted.dedup();
    let wanted = &wanted[..];
    let mut found: Vec<Family> = Vec::new();
    let mut declared: Vec<String> = Vec::new();
    for (number, line) in page.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let error = |message: String| ParseError {
            line: number + 1,
            message,
        };
        if let Some(comment) = line.strip_prefix('#') {
            if let Some((name, kind)) = type_line(comment) {
                if declared.len() < MAX_DECLARED {
                    declared.push(name.to_string());
                }
                if wanted.contains(&name) {
                    family_entry(&mut found, name).kind = Kind::parse(kind);
                }
                // `x_count`, `x_sum`, `x_bucket` asked for by their own
                // name belong to a histogram or summary `x`, and
                // `x_total` to a counter `x`: they are typed as it, not
                // read as gauges.
                let kind = Kind::parse(kind);
                for suffix in sample_suffixes(kind) {
                    let series = format!("{name}{suffix}");
                    if wanted.contains(&series.as_str()) {
                        family_entry(&mut found, &series).kind = kind;
                    }
                }
            }
            continue;
        }
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() {
            continue;
        }
        let name_end = line.find(['{', ' ', '\t']).unwrap_or(line.len());
        let name = &line[..name_end];
        let Some(family) = family_of(name, wanted, &found) else {
            continue;
        };
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(error)?;
        let value = parse_value(rest).map_err(|m| error(format!("{}: {m}", plain(name))))?;
        // A counter's or histogram's `_created` timestamp says nothing a
        // trigger reads: checked, not kept (unless asked for by that name).
        if name != family && name.ends_with("_created") {
            continue;
        }
        if !Want::keeps(wants, family, &labels) {
            let entry = family_entry(&mut found, family);
            if name == entry.name {
                entry.unkept += 1;
                if entry.unkept_examples.len() < MAX_UNKEPT_EXAMPLES {
                    entry.unkept_examples.push(Sample {
                        name: name.to_string(),
                        labels,
                        value,
                    });
                }
            }
            continue;
        }
        let entry = family_entry(&mut found, family);
        if entry.samples.len() >= max_series {
            return Err(error(format!("{family} has more than {max_series} series")));
        }
        entry.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    found.sort_by_key(|f| wanted.iter().position(|w| *w == f.name));
    Ok((found, declared))
}

/// `TYPE name kind` after the `#`.
fn type_line(comment: &str) -> Option<(&str, &str)> {
    let mut words = comment.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("TYPE"), Some(name), Some(kind)) => Some((name, kind)),
        _ => None,
    }
}

/// The wanted family a sample name belongs to: its own name, or, for a
/// family typed histogram or summary, its name less `_bucket`, `_sum` or
/// `_count`. The `# TYPE` decides, not the suffix: a gauge may end in
/// `_count` (Triton's `nv_inference_pending_request_count`).
fn family_of<'a>(name: &str, wanted: &[&'a str], found: &[Family]) -> Option<&'a str> {
    if let Some(family) = wanted.iter().find(|w| **w == name) {
        return Some(family);
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
        let Some(base) = name.strip_suffix(suffix) else {
            continue;
        };
        let typed = found
            .iter()
            .any(|f| f.name == base && sample_suffixes(f.kind).contains(&suffix));
        if typed {
            return wanted.iter().find(|w| **w == base).copied();
        }
    }
    None
}

/// The suffixes a family of `kind` adds to its name for its samples.
fn sample_suffixes(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Counter => &["_total", "_created"],
        Kind::Histogram | Kind::Summary => &["_bucket", "_sum", "_count", "_created"],
        Kind::Gauge | Kind::Untyped => &[],
    }
}

fn family_entry<'f>(found: &'f mut Vec<Family>, name: &str) -> &'f mut Family {
    let index = match found.iter().position(|f| f.name == name) {
        Some(index) => index,
        None => {
            found.push(Family {
                name: name.to_string(),
                kind: Kind::Untyped,
                samples: Vec::new(),
                unkept: 0,
                unkept_examples: Vec::new(),
            });
            found.len() - 1
        }
    };
    &mut found[index]
}

/// A series' labels, `(name, value)`.
pub(crate) type Labels = Vec<(String, String)>;

/// `{a="x",b="y"}` (possibly absent or empty, a trailing comma allowed),
/// and what follows it.
pub(crate) fn parse_labels(text: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = text.strip_prefix('{') else {
        return Ok((Vec::new(), text));
    };
    let mut labels = Vec::new();
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = rest
            .find(['=', ' ', '\t'])
            .ok_or_else(|| String::from("a label without '='"))?;
        let name = &rest[..name_end];
        if name.is_empty() {
            return Err(String::from("an empty label name"));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("label {} has no '='", plain(name)))?
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("label {}'s value is not quoted", plain(name)))?;
        let (value, after) = unescape(rest).ok_or_else(|| {
            format!(
                "label {}'s value is not closed or has a bad escape",
                plain(name)
            )
        })?;
        if labels.len() >= MAX_LABELS {
            return Err(format!("more than {MAX_LABELS} labels"));
        }
        labels.push((name.to_string(), value));
        rest = after.trim_start_matches([' ', '\t']);
        rest = match rest.strip_prefix(',') {
            Some(after) => after,
            None if rest.starts_with('}') => rest,
            None => return Err(format!("expected ',' or '}}' after label {}", plain(name))),
        };
    }
}

/// A label value up to its closing quote, with `\\`, `\"` and `\n`
/// unescaped; `None` when it is not closed or an escape is unknown.
fn unescape(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &text[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                _ => return None,
            },
            c => value.push(c),
        }
    }
    None
}

/// The value, then an optional integer timestamp (ignored).
fn parse_value(text: &str) -> Result<f64, String> {
    let mut words = text.split([' ', '\t']).filter(|w| !w.is_empty());
    let value = words.next().ok_or_else(|| String::from("no value"))?;
    let value =
        parse_number(value).ok_or_else(|| format!("value {} is not a number", quoted(value)))?;
    match (words.next(), words.next()) {
        (None, _) => Ok(value),
        (Some(timestamp), None) if timestamp.parse::<i64>().is_ok() => Ok(value),
        (Some(extra), _) => Err(format!("unexpected {} after the value", quoted(extra))),
    }
}

/// A number as the text format writes one (a sample's value, a bucket's
/// `le`): decimal, or `NaN`, `+Inf`, `Inf`, `-Inf`.
pub(crate) fn parse_number(word: &str) -> Option<f64> {
    match word {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        number => number.parse::<f64>().ok().filter(|v| v.is_finite()),
    }
}

/// A family name's engine prefix, through its first `:` or `_`: `vllm:`
/// of `vllm:num_requests_waiting`, `nv_` of `nv_inference_…`.
pub fn prefix(name: &str) -> &str {
    match name.find([':', '_']) {
        Some(end) => &name[..=end],
        None => name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_timestamps_are_not_kept() {
        let page = "# TYPE x counter\nx_total 5\nx_created 1.7e9\n\
            # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 2\nh_created 1.7e9\n";
        let (found, _) = families_and_names(page, &["x", "h"], 100).unwrap();
        let names: Vec<&str> = found
            .iter()
            .flat_map(|f| f.samples.iter().map(|s| s.name.as_str()))
            .collect();
        assert_eq!(names, ["x_total", "h_bucket", "h_sum", "h_count"]);
        // Asked for by its own name, a _created gauge is read.
        let gauge = "# TYPE x_created gauge\nx_created 1.7e9\n";
        let (found, _) = families_and_names(gauge, &["x_created"], 100).unwrap();
        assert_eq!(found[0].samples.len(), 1);
    }

    #[test]
    fn only_wanted_families_are_read_with_their_type() {
        let page = "\
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine=\"0\",model_name=\"llama\"} 7.0
vllm:num_requests_waiting{engine=\"1\",model_name=\"llama\"} 3.0
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le=\"0.3\",model_name=\"llama\"} 4.0
this line is garbage but belongs to no wanted family
";
        let found = families(page, &["vllm:num_requests_waiting"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Gauge);
        let values: Vec<f64> = found[0].samples.iter().map(|s| s.value).collect();
        assert_eq!(values, [7.0, 3.0]);
        assert_eq!(found[0].samples[1].label("engine"), Some("1"));
        assert_eq!(found[0].samples[1].label("model_name"), Some("llama"));
    }

    #[test]
    fn the_type_line_decides_not_the_suffix() {
        // Triton's pending count is a gauge whose name ends in _count.
        let page = "\
# TYPE nv_inference_pending_request_count gauge
nv_inference_pending_request_count{model=\"ensemble\",version=\"1\"} 12
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_count{model_name=\"m\"} 40
vllm:time_to_first_token_seconds_sum{model_name=\"m\"} 2.5
";
        let found = families(
            page,
            &[
                "nv_inference_pending_request_count",
                "vllm:time_to_first_token_seconds",
            ],
        )
        .unwrap();
        assert_eq!(found[0].kind, Kind::Gauge);
        assert_eq!(found[0].samples[0].value, 12.0);
        assert_eq!(found[1].kind, Kind::Histogram);
        assert_eq!(found[1].samples.len(), 2);
        assert_eq!(
            found[1].samples[0].name,
            "vllm:time_to_first_token_seconds_count"
        );
    }

    #[test]
    fn escapes_special_values_timestamps_and_crlf() {
        let page = "# TYPE g gauge\r\n\
g{path=\"C:\\\\dir\",quote=\"say \\\"hi\\\"\",nl=\"a\\nb\",} NaN 1700000000000\r\n\
g{} +Inf\r\n\
g -Inf\r\n\
g{a=\"1\"} 1.5e3\r\n\
\r\n\
# a plain comment\r\n";
        let found = families(page, &["g"]).unwrap();
        let samples = &found[0].samples;
        assert_eq!(samples[0].label("path"), Some("C:\\dir"));
        assert_eq!(samples[0].label("quote"), Some("say \"hi\""));
        assert_eq!(samples[0].label("nl"), Some("a\nb"));
        assert!(samples[0].value.is_nan());
        assert_eq!(samples[1].value, f64::INFINITY);
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
        assert_eq!(samples[3].value, 1500.0);
    }

    #[test]
    fn an_untyped_family_and_an_absent_one() {
        let found = families("plain 4\n", &["plain", "missing"]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].kind, Kind::Untyped);
    }

    #[test]
    fn broken_wanted_lines_are_errors_naming_the_line() {
        for (line, needle) in [
            ("g{a=\"x} 1", "not closed"),
            ("g{a=x} 1", "not quoted"),
            ("g{a=\"\\q\"} 1", "bad escape"),
            ("g{a=\"x\" b=\"y\"} 1", "expected ','"),
            ("g", "no value"),
            ("g one", "is not a number"),
            ("g 1 2 3", "unexpected"),
            ("g 1 soon", "unexpected"),
        ] {
            let page = format!("# TYPE g gauge\n{line}\n");
            let error = families(&page, &["g"]).unwrap_err();
            assert_eq!(error.line, 2, "{line}");
            assert!(error.message.contains(needle), "{line}: {error}");
        }
    }

    #[test]
    fn series_and_labels_are_capped() {
        let mut page = String::from("# TYPE g gauge\n");
        for i in 0..DEFAULT_MAX_SERIES {
            page.push_str(&format!("g{{i=\"{i}\"}} 1\n"));
        }
        assert_eq!(
            families(&page, &["g"]).unwrap()[0].samples.len(),
            DEFAULT_MAX_SERIES
        );
        page.push_str("g{i=\"one too many\"} 1\n");
        let error = families(&page, &["g"]).unwrap_err();
        assert!(error.message.contains("more than 10000 series"), "{error}");

        let labels: Vec<String> = (0..=MAX_LABELS).map(|i| format!("l{i}=\"v\"")).collect();
        let page = format!("g{{{}}} 1\n", labels.join(","));
        let error = families(&page, &["g"]).unwrap_err();
        assert!(error.message.contains("more than 64 labels"), "{error}");
    }

    #[test]
    fn declared_names_are_kept_in_order_up_to_the_cap() {
        let page: String = (0..MAX_DECLARED + 5)
            .map(|i| format!("# TYPE family_{i} gauge\nfamily_{i} 1\n"))
            .collect();
        let (found, declared) =
            families_and_names(&page, &["family_3"], DEFAULT_MAX_SERIES).unwrap();
        assert_eq!(found[0].samples[0].value, 1.0);
        assert_eq!(declared.len(), MAX_DECLARED);
        assert_eq!(declared[0], "family_0");
        assert_eq!(
            declared[MAX_DECLARED - 1],
            format!("family_{}", MAX_DECLARED - 1)
        );
    }

    #[test]
    fn a_histogram_series_asked_for_by_name_is_typed_as_its_histogram() {
        let page = "# TYPE vllm:e2e_request_latency_seconds histogram\n\
            vllm:e2e_request_latency_seconds_bucket{le=\"+Inf\"} 5\n\
            vllm:e2e_request_latency_seconds_count 5\n";
        let found = families(page, &["vllm:e2e_request_latency_seconds_count"]).unwrap();
        assert_eq!(found[0].kind, Kind::Histogram);
        assert_eq!(found[0].samples[0].value, 5.0);
    }

    #[test]
    fn a_counter_sample_asked_for_by_its_own_name_is_typed_as_its_counter() {
        // A counter family x exposes x_total (and x_created): asked for by
        // that name, the sample is a counter's, not a gauge.
        let page = "# TYPE vllm:num_preemptions counter\n\
            vllm:num_preemptions_total{model_name=\"m\"} 1234\n\
            vllm:num_preemptions_created{model_name=\"m\"} 1.7e9\n\
            # TYPE lat histogram\n\
            lat_bucket{le=\"+Inf\"} 3\nlat_count 3\nlat_sum 1.5\nlat_created 1.7e9\n";
        for (name, kind) in [
            ("vllm:num_preemptions_total", Kind::Counter),
            ("vllm:num_preemptions_created", Kind::Counter),
            ("lat_created", Kind::Histogram),
        ] {
            let found = families(page, &[name]).unwrap();
            assert_eq!(found[0].kind, kind, "{name}");
        }
        // Asked for as the family, the counter keeps its samples (not
        // its _created timestamp).
        let found = families(page, &["vllm:num_preemptions"]).unwrap();
        assert_eq!(found[0].kind, Kind::Counter);
        assert_eq!(found[0].samples.len(), 1);
    }

    #[test]
    fn the_series_cap_counts_only_the_series_kept() {
        // 300 models on one family: over a cap of 256, unless only one
        // model's series are kept.
        let mut page = String::from("# TYPE nv_trt_llm_request_metrics gauge\n");
        for i in 0..300 {
            page.push_str(&format!(
                "nv_trt_llm_request_metrics{{model=\"m{i}\",request_type=\"waiting\"}} {i}\n"
            ));
        }
        let all = [Want::all("nv_trt_llm_request_metrics")];
        assert!(families_wanted(&page, &all, 256).is_err());
        let one = [Want {
            family: String::from("nv_trt_llm_request_metrics"),
            only: Some((String::from("model"), String::from("m299"))),
        }];
        let (found, _) = families_wanted(&page, &one, 256).unwrap();
        assert_eq!(found[0].samples.len(), 1);
        assert_eq!(found[0].samples[0].value, 299.0);
        // Two models asked for the same family: both kept, and at the cap
        // exactly it is still read.
        let two = [
            one[0].clone(),
            Want {
                only: Some((String::from("model"), String::from("m7"))),
                ..one[0].clone()
            },
        ];
        let (found, _) = families_wanted(&page, &two, 2).unwrap();
        assert_eq!(found[0].samples.len(), 2);
    }
}
