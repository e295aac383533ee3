//! Output: tables that read like ECS's CLI, or the API's JSON documents as they are.

use std::time::{Duration, UNIX_EPOCH};

use capstan_proto::api::v1 as pb;
use comfy_table::{Table, presets};
use serde_json::Value;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// The API's JSON documents.
    Json,
}

/// A column: its header and how to read it from a document.
pub type Column = (&'static str, fn(&Value) -> String);

/// Parses the API's JSON strings.
pub fn parse_all(items: &[String]) -> Vec<Value> {
    items
        .iter()
        .map(|s| serde_json::from_str(s).unwrap_or(Value::String(s.clone())))
        .collect()
}

/// A field as text (`-` when absent).
pub fn field(v: &Value, path: &str) -> String {
    let mut cur = v;
    for p in path.split('.') {
        cur = match cur.get(p) {
            Some(c) => c,
            None => return "-".into(),
        };
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// The part of an ARN after its last `/`.
pub fn short(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

/// Epoch seconds as a UTC time (`2026-11-21T10:00:00Z`).
pub fn time(v: &Value, path: &str) -> String {
    let secs = path
        .split('.')
        .try_fold(v, |cur, p| cur.get(p))
        .and_then(Value::as_f64);
    match secs {
        Some(s) if s > 0.0 => {
            humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(s)).to_string()
        }
        _ => "-".into(),
    }
}

/// Prints documents as a table with `columns`, or as JSON.
pub fn docs(format: Format, docs: &[Value], columns: &[Column]) {
    match format {
        Format::Json => {
            let v = if docs.len() == 1 {
                docs[0].clone()
            } else {
                Value::Array(docs.to_vec())
            };
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
        }
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(presets::NOTHING);
            t.set_header(columns.iter().map(|(h, _)| *h));
            for d in docs {
                t.add_row(columns.iter().map(|(_, f)| f(d)));
            }
            println!("{t}");
        }
    }
}

/// Prints a List call's identifiers.
pub fn list(format: Format, header: &'static str, arns: &[String]) {
    match format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(arns).unwrap_or_else(|_| "[]".into())
        ),
        Format::Table => {
            let mut t = Table::new();
            t.load_preset(presets::NOTHING);
            t.set_header([header, "ARN"]);
            for a in arns {
                t.add_row([short(a), a.clone()]);
            }
            println!("{t}");
        }
    }
}

/// Prints a Describe call's items with `columns` and its failures; the exit code (1 when
/// anything failed).
pub fn described(format: Format, r: &pb::DescribeResponse, columns: &[Column]) -> i32 {
    docs(format, &parse_all(&r.items_json), columns);
    i32::from(failures(&r.failures))
}

/// Prints a Describe call's failures to stderr; returns whether there were any.
pub fn failures(failures: &[pb::Failure]) -> bool {
    for f in failures {
        let what = if f.arn.is_empty() { "-" } else { &f.arn };
        if f.detail.is_empty() {
            eprintln!("failure: {what}: {}", f.reason);
        } else {
            eprintln!("failure: {what}: {} ({})", f.reason, f.detail);
        }
    }
    !failures.is_empty()
}

/// Prints the API's warnings (fields kept but not acted on) to stderr.
pub fn warnings(warnings: &[pb::Warning]) {
    for w in warnings {
        eprintln!("warning: {}: {}", w.path, w.message);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fields_and_times_read_nested_documents() {
        let v = json!({"a": {"b": "x", "n": 3}, "t": 0.0, "at": 1_795_000_000.0});
        assert_eq!(field(&v, "a.b"), "x");
        assert_eq!(field(&v, "a.n"), "3");
        assert_eq!(field(&v, "a.zz"), "-");
        assert_eq!(time(&v, "t"), "-");
        assert_eq!(time(&v, "at"), "2026-11-18T11:06:40Z");
        assert_eq!(short("arn:x:task/default/abc"), "abc");
    }
}
