//! How a container's output reaches its log: `logConfiguration.options.mode` and
//! `max-buffer-size`, with Docker's meaning and ECS's default.
//!
//! - `blocking`: each line is written to the log before the next is read, so a log that cannot
//!   keep up makes the container's writes to stdout and stderr wait.
//! - `non-blocking`: lines go through an in-memory buffer of `max-buffer-size` bytes; when it
//!   is full, new lines are dropped (Docker drops lines too) and the container never
//!   waits. ECS made this its default on 2025-06-25 ("to prioritize task availability over
//!   logging"), so it is Capstan's default for every driver too.
//!
//! Sizes are Docker's (`go-units`): a number, optionally with a decimal part, and an optional
//! unit `b`, `k`, `m`, `g`, `t` or `p` (case-insensitive, `b`/`ib` suffixes allowed), in binary
//! multiples: `4k` is 4096 bytes.

use serde_json::Value;

use crate::validate::{Report, join};

/// The buffer size when `non-blocking` gives none: 10 MiB (`10m`).
pub const DEFAULT_MAX_BUFFER_SIZE: u64 = 10 << 20;

/// How a container's lines are delivered to its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogMode {
    /// Every line is written before the next is read; the container waits for the log.
    Blocking,
    /// Lines are buffered up to `max_buffer_size` bytes; beyond it they are dropped.
    NonBlocking {
        /// The buffer's size, bytes.
        max_buffer_size: u64,
    },
}

impl Default for LogMode {
    fn default() -> Self {
        LogMode::NonBlocking {
            max_buffer_size: DEFAULT_MAX_BUFFER_SIZE,
        }
    }
}

impl LogMode {
    /// The mode `logConfiguration` asks for (any driver): its `mode` and `max-buffer-size`
    /// options, ECS's default for what it leaves out. `Err` is the option and what is wrong.
    pub fn of(log_configuration: Option<&Value>) -> Result<LogMode, (&'static str, String)> {
        let option = |name: &str| {
            log_configuration
                .and_then(|l| l.get("options"))
                .and_then(|o| o.get(name))
        };
        let text = |name: &'static str| match option(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err((name, "must be a string".to_string())),
        };
        let buffer = match text("max-buffer-size")? {
            None => None,
            Some(s) => Some(parse_size(&s).ok_or((
                "max-buffer-size",
                format!("{s:?} is not a size (a number of bytes, or with k, m or g: 25m)"),
            ))?),
        };
        match text("mode")?.as_deref() {
            Some("blocking") if buffer.is_some() => Err((
                "max-buffer-size",
                "applies only with mode non-blocking".to_string(),
            )),
            Some("blocking") => Ok(LogMode::Blocking),
            None | Some("non-blocking") => Ok(LogMode::NonBlocking {
                max_buffer_size: buffer.unwrap_or(DEFAULT_MAX_BUFFER_SIZE),
            }),
            Some(other) => Err((
                "mode",
                format!("{other:?} is not a mode: blocking or non-blocking"),
            )),
        }
    }

    /// The options that tell Docker the same: `mode` and, non-blocking, `max-buffer-size`.
    pub fn docker_options(self) -> Vec<(String, String)> {
        match self {
            LogMode::Blocking => vec![("mode".into(), "blocking".into())],
            LogMode::NonBlocking { max_buffer_size } => vec![
                ("mode".into(), "non-blocking".into()),
                ("max-buffer-size".into(), format!("{max_buffer_size}b")),
            ],
        }
    }
}

/// Checks `logConfiguration`'s `mode` and `max-buffer-size` of the container at `path`.
pub fn validate_log_mode(r: &mut Report, path: &str, log_configuration: Option<&Value>) {
    if let Err((option, message)) = LogMode::of(log_configuration) {
        let p = join(&join(&join(path, "logConfiguration"), "options"), option);
        r.error(p, message);
    }
}

/// A Docker size (`25m`, `4k`, `1.5g`, `512`) in bytes; `None` for what is not one.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: f64 = number.parse().ok().filter(|n: &f64| n.is_finite())?;
    let unit = unit.trim();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    let bytes = number * 2f64.powi(shift);
    // Whole bytes, within u64.
    (bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sizes_are_dockers() {
        let cases = [
            ("25m", Some(25 << 20)),
            ("4k", Some(4096)),
            ("4K", Some(4096)),
            ("4kb", Some(4096)),
            ("4KiB", Some(4096)),
            ("1.5g", Some(3 << 29)),
            ("512", Some(512)),
            ("512b", Some(512)),
            ("2t", Some(2 << 40)),
            (" 1m ", Some(1 << 20)),
            ("", None),
            ("m", None),
            ("10x", None),
            ("-1m", None),
            ("1..5m", None),
            ("nan", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_size(s), want, "{s:?}");
        }
    }

    #[test]
    fn mode_follows_the_options_with_ecs_default() {
        let nb = |max_buffer_size| Ok(LogMode::NonBlocking { max_buffer_size });
        let cases = [
            (None, nb(DEFAULT_MAX_BUFFER_SIZE)),
            (Some(json!({"logDriver": "awslogs"})), nb(10 << 20)),
            (
                Some(json!({"logDriver": "awslogs", "options": {"mode": "blocking"}})),
                Ok(LogMode::Blocking),
            ),
            (
                Some(json!({"options": {"mode": "non-blocking", "max-buffer-size": "25m"}})),
                nb(25 << 20),
            ),
            (
                Some(json!({"options": {"max-buffer-size": "4k"}})),
                nb(4096),
            ),
            (
                Some(json!({"options": {"mode": "blocking", "max-buffer-size": "4k"}})),
                Err((
                    "max-buffer-size",
                    "applies only with mode non-blocking".into(),
                )),
            ),
            (
                Some(json!({"options": {"mode": "lossy"}})),
                Err((
                    "mode",
                    "\"lossy\" is not a mode: blocking or non-blocking".into(),
                )),
            ),
            (
                Some(json!({"options": {"mode": true}})),
                Err(("mode", "must be a string".into())),
            ),
        ];
        for (config, want) in cases {
            assert_eq!(LogMode::of(config.as_ref()), want, "{config:?}");
        }
        let bad = json!({"options": {"max-buffer-size": "lots"}});
        assert_eq!(
            LogMode::of(Some(&bad))
                .expect_err("blocking with a buffer")
                .0,
            "max-buffer-size"
        );
    }

    #[test]
    fn docker_gets_the_same_mode() {
        assert_eq!(
            LogMode::NonBlocking {
                max_buffer_size: 4096
            }
            .docker_options(),
            vec![
                ("mode".to_string(), "non-blocking".to_string()),
                ("max-buffer-size".to_string(), "4096b".to_string())
            ]
        );
        assert_eq!(
            LogMode::Blocking.docker_options(),
            vec![("mode".to_string(), "blocking".to_string())]
        );
    }

    #[test]
    fn a_bad_option_is_reported_at_its_path() {
        let mut r = Report::default();
        let config = json!({"options": {"mode": "sometimes"}});
        validate_log_mode(&mut r, "containerDefinitions[0]", Some(&config));
        let issues = r.finish().expect_err("a bad mode").issues;
        assert_eq!(
            issues[0].path,
            "containerDefinitions[0].logConfiguration.options.mode"
        );
    }
}
