//! ECS's cluster query language, for `memberOf` placement constraints.
//!
//! `subject operator [argument]`, combined with `and`/`&&`, `or`/`||`, `not`/`!` and
//! parentheses. ECS does not document the precedence of `and` over `or`; like most languages,
//! Capstan binds `and` tighter. Subjects: `attribute:<name>`, `agentConnected`, `agentVersion`,
//! `ec2InstanceId`, `ec2InstanceType`, `registeredAt`, `runningTasksCount`, `task:group`.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use regex::Regex;

/// A parse error, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at position {position}: {message}")]
pub struct QueryError {
    /// Byte offset in the expression.
    pub position: usize,
    /// What is wrong.
    pub message: String,
}

/// What an expression talks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:<name>`.
    Attribute(String),
    /// `agentConnected`.
    AgentConnected,
    /// `agentVersion`.
    AgentVersion,
    /// `ec2InstanceId`.
    InstanceId,
    /// `ec2InstanceType` (the `ecs.instance-type` attribute).
    InstanceType,
    /// `registeredAt`.
    RegisteredAt,
    /// `runningTasksCount`.
    RunningTasksCount,
    /// `task:group`.
    TaskGroup,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`, `equals`.
    Eq,
    /// `!=`, `not_equals`.
    Ne,
    /// `>`, `greater_than`.
    Gt,
    /// `>=`, `greater_than_equal`.
    Ge,
    /// `<`, `less_than`.
    Lt,
    /// `<=`, `less_than_equal`.
    Le,
    /// `exists`.
    Exists,
    /// `!exists`, `not_exists`.
    NotExists,
    /// `in`.
    In,
    /// `!in`, `not_in`.
    NotIn,
    /// `=~`, `matches`.
    Matches,
    /// `!~`, `not_matches`.
    NotMatches,
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// One condition.
    Cond {
        /// Subject.
        subject: Subject,
        /// Operator.
        op: Op,
        /// Arguments (one, or a list for `in`; none for `exists`).
        args: Vec<String>,
        /// Compiled pattern for `matches`.
        regex: Option<Regex>,
    },
    /// Both hold.
    And(Box<Expr>, Box<Expr>),
    /// Either holds.
    Or(Box<Expr>, Box<Expr>),
    /// Does not hold.
    Not(Box<Expr>),
}

/// What an expression is evaluated against: one container instance.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    /// Instance id.
    pub instance_id: &'a str,
    /// Attributes.
    pub attributes: &'a BTreeMap<String, String>,
    /// Whether its agent is connected.
    pub agent_connected: bool,
    /// Agent version.
    pub agent_version: &'a str,
    /// Registration time, epoch seconds.
    pub registered_at: Option<f64>,
    /// Tasks it runs.
    pub running_tasks_count: u32,
    /// Task groups of the tasks it runs.
    pub task_groups: &'a [String],
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Open,
    Close,
    LBracket,
    RBracket,
    Comma,
    Word(String),
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, QueryError> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            '[' => {
                out.push((i, Tok::LBracket));
                i += 1;
            }
            ']' => {
                out.push((i, Tok::RBracket));
                i += 1;
            }
            ',' => {
                out.push((i, Tok::Comma));
                i += 1;
            }
            '\'' | '"' => {
                let start = i;
                let end = s[i + 1..].find(c).ok_or(QueryError {
                    position: start,
                    message: "unterminated quoted string".into(),
                })?;
                out.push((start, Tok::Word(s[i + 1..i + 1 + end].to_string())));
                i += end + 2;
            }
            _ => {
                let start = i;
                while i < b.len() && !b" \t\n\r()[],".contains(&b[i]) {
                    i += 1;
                }
                out.push((start, Tok::Word(s[start..i].to_string())));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
}

fn op_of(w: &str) -> Option<Op> {
    Some(match w {
        "==" | "equals" => Op::Eq,
        "!=" | "not_equals" => Op::Ne,
        ">" | "greater_than" => Op::Gt,
        ">=" | "greater_than_equal" => Op::Ge,
        "<" | "less_than" => Op::Lt,
        "<=" | "less_than_equal" => Op::Le,
        "exists" => Op::Exists,
        "!exists" | "not_exists" => Op::NotExists,
        "in" => Op::In,
        "!in" | "not_in" => Op::NotIn,
        "=~" | "matches" => Op::Matches,
        "!~" | "not_matches" => Op::NotMatches,
        _ => return None,
    })
}

fn subject_of(w: &str) -> Option<Subject> {
    if let Some(name) = w.strip_prefix("attribute:") {
        return (!name.is_empty()).then(|| Subject::Attribute(name.to_string()));
    }
    Some(match w {
        "agentConnected" => Subject::AgentConnected,
        "agentVersion" => Subject::AgentVersion,
        "ec2InstanceId" => Subject::InstanceId,
        "ec2InstanceType" => Subject::InstanceType,
        "registeredAt" => Subject::RegisteredAt,
        "runningTasksCount" => Subject::RunningTasksCount,
        "task:group" => Subject::TaskGroup,
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |(p, _)| *p)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, QueryError> {
        Err(QueryError {
            position: self.at(),
            message: message.into(),
        })
    }

    fn word_is(&self, options: &[&str]) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if options.contains(&w.as_str()))
    }

    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.and()?;
        while self.word_is(&["or", "||"]) {
            self.pos += 1;
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut left = self.unary()?;
        while self.word_is(&["and", "&&"]) {
            self.pos += 1;
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) if w == "not" || w == "!" => {
                self.pos += 1;
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Tok::Word(w)) if w.len() > 1 && w.starts_with('!') && op_of(&w).is_none() => {
                // `!attribute:x exists`: a negation glued to its operand.
                let at = self.at();
                self.toks[self.pos] = (at + 1, Tok::Word(w[1..].to_string()));
                Ok(Expr::Not(Box::new(self.unary()?)))
            }
            Some(Tok::Open) => {
                self.pos += 1;
                let e = self.or()?;
                if self.peek() != Some(&Tok::Close) {
                    return self.err("expected ')'");
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Tok::Word(_)) => self.cond(),
            Some(_) => self.err("expected a condition"),
            None => self.err("expected a condition, found the end of the expression"),
        }
    }

    fn value(&mut self) -> Result<String, QueryError> {
        match self.peek().cloned() {
            Some(Tok::Word(w)) if !["and", "or", "&&", "||"].contains(&w.as_str()) => {
                self.pos += 1;
                Ok(w)
            }
            _ => self.err("expected a value"),
        }
    }

    fn cond(&mut self) -> Result<Expr, QueryError> {
        let Some(Tok::Word(w)) = self.peek().cloned() else {
            return self.err("expected a subject");
        };
        let Some(subject) = subject_of(&w) else {
            return self.err(format!(
                "unknown subject {w:?}; use attribute:<name>, agentConnected, agentVersion, ec2InstanceId, ec2InstanceType, registeredAt, runningTasksCount or task:group"
            ));
        };
        self.pos += 1;
        let op_at = self.at();
        let Some(op) = (match self.peek() {
            Some(Tok::Word(o)) => op_of(o),
            _ => None,
        }) else {
            return self.err("expected an operator (==, !=, >, >=, <, <=, exists, !exists, in, not_in, matches, not_matches)");
        };
        self.pos += 1;
        let args = match op {
            Op::Exists | Op::NotExists => Vec::new(),
            Op::In | Op::NotIn => {
                if self.peek() != Some(&Tok::LBracket) {
                    return self.err("expected '[' to start a list");
                }
                self.pos += 1;
                let mut v = vec![self.value()?];
                while self.peek() == Some(&Tok::Comma) {
                    self.pos += 1;
                    v.push(self.value()?);
                }
                if self.peek() != Some(&Tok::RBracket) {
                    return self.err("expected ']' to end the list");
                }
                self.pos += 1;
                v
            }
            _ => vec![self.value()?],
        };
        let regex = match op {
            Op::Matches | Op::NotMatches => Some(
                Regex::new(&format!("^(?:{})$", args[0])).map_err(|e| QueryError {
                    position: op_at,
                    message: format!("invalid pattern: {e}"),
                })?,
            ),
            _ => None,
        };
        if matches!(op, Op::Gt | Op::Ge | Op::Lt | Op::Le)
            && !matches!(
                subject,
                Subject::AgentVersion | Subject::RegisteredAt | Subject::RunningTasksCount
            )
        {
            return Err(QueryError {
                position: op_at,
                message:
                    "ordering operators apply to agentVersion, registeredAt and runningTasksCount"
                        .into(),
            });
        }
        Ok(Expr::Cond {
            subject,
            op,
            args,
            regex,
        })
    }
}

/// Parses an expression (at most 2000 characters).
pub fn parse(expression: &str) -> Result<Expr, QueryError> {
    if expression.len() > 2000 {
        return Err(QueryError {
            position: 2000,
            message: "expressions are limited to 2000 characters".into(),
        });
    }
    let toks = tokenize(expression)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: expression.len(),
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return p.err("unexpected text after the expression");
    }
    Ok(e)
}

/// Compares dotted versions numerically (`1.14.5` < `1.9` is false).
fn cmp_version(a: &str, b: &str) -> Ordering {
    let parts = |s: &str| -> Vec<u64> { s.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a).cmp(&parts(b))
}

/// Epoch seconds of ECS's registeredAt argument forms (`2018-06-18T22:28:28+00:00`, `…Z`,
/// `2018-06-18T22:28:28`, `2018-06-18`), read as UTC.
pub fn parse_date(s: &str) -> Option<f64> {
    let s = s.trim_end_matches('Z').trim_end_matches("+00:00");
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    let (&[y, m, dd], &[hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
        return None;
    };
    // Out of range is not a date (and would overflow the arithmetic below).
    if !((0..=9999).contains(&y)
        && (1..=12).contains(&m)
        && (1..=31).contains(&dd)
        && (0..=23).contains(&hh)
        && (0..=59).contains(&mm)
        && (0..=60).contains(&ss))
    {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64)
}

impl Expr {
    /// Whether the instance described by `f` satisfies the expression.
    pub fn eval(&self, f: &Facts<'_>) -> bool {
        match self {
            Expr::And(a, b) => a.eval(f) && b.eval(f),
            Expr::Or(a, b) => a.eval(f) || b.eval(f),
            Expr::Not(e) => !e.eval(f),
            Expr::Cond {
                subject,
                op,
                args,
                regex,
            } => {
                if *subject == Subject::TaskGroup {
                    return eval_groups(*op, args, regex.as_ref(), f.task_groups);
                }
                let value: Option<String> = match subject {
                    Subject::Attribute(n) => f.attributes.get(n).cloned(),
                    Subject::AgentConnected => Some(f.agent_connected.to_string()),
                    Subject::AgentVersion => Some(f.agent_version.to_string()),
                    Subject::InstanceId => Some(f.instance_id.to_string()),
                    Subject::InstanceType => f.attributes.get("ecs.instance-type").cloned(),
                    Subject::RegisteredAt => f.registered_at.map(|t| t.to_string()),
                    Subject::RunningTasksCount => Some(f.running_tasks_count.to_string()),
                    Subject::TaskGroup => None,
                };
                eval_one(subject, *op, args, regex.as_ref(), value.as_deref())
            }
        }
    }
}

fn ordering(subject: &Subject, value: &str, arg: &str) -> Option<Ordering> {
    match subject {
        Subject::AgentVersion => Some(cmp_version(value, arg)),
        Subject::RegisteredAt => value.parse::<f64>().ok()?.partial_cmp(&parse_date(arg)?),
        _ => value
            .parse::<f64>()
            .ok()?
            .partial_cmp(&arg.parse::<f64>().ok()?),
    }
}

fn eval_one(
    subject: &Subject,
    op: Op,
    args: &[String],
    regex: Option<&Regex>,
    value: Option<&str>,
) -> bool {
    let first = args.first().map(String::as_str).unwrap_or("");
    match (op, value) {
        (Op::Exists, v) => v.is_some(),
        (Op::NotExists, v) => v.is_none(),
        (Op::Eq, Some(v)) => v == first,
        (Op::Ne, v) => v != Some(first),
        (Op::In, Some(v)) => args.iter().any(|a| a == v),
        (Op::NotIn, v) => v.is_none_or(|v| !args.iter().any(|a| a == v)),
        (Op::Matches, Some(v)) => regex.is_some_and(|r| r.is_match(v)),
        (Op::NotMatches, v) => v.is_none_or(|v| !regex.is_some_and(|r| r.is_match(v))),
        (Op::Gt, Some(v)) => ordering(subject, v, first) == Some(Ordering::Greater),
        (Op::Ge, Some(v)) => matches!(
            ordering(subject, v, first),
            Some(Ordering::Greater | Ordering::Equal)
        ),
        (Op::Lt, Some(v)) => ordering(subject, v, first) == Some(Ordering::Less),
        (Op::Le, Some(v)) => matches!(
            ordering(subject, v, first),
            Some(Ordering::Less | Ordering::Equal)
        ),
        (_, None) => false,
    }
}

/// `task:group` holds when any task on the instance is in the group(s).
fn eval_groups(op: Op, args: &[String], regex: Option<&Regex>, groups: &[String]) -> bool {
    let first = args.first().map(String::as_str).unwrap_or("");
    match op {
        Op::Eq => groups.iter().any(|g| g == first),
        Op::Ne => !groups.iter().any(|g| g == first),
        Op::In => groups.iter().any(|g| args.contains(g)),
        Op::NotIn => !groups.iter().any(|g| args.contains(g)),
        Op::Exists => !groups.is_empty(),
        Op::NotExists => groups.is_empty(),
        Op::Matches => groups.iter().any(|g| regex.is_some_and(|r| r.is_match(g))),
        Op::NotMatches => !groups.iter().any(|g| regex.is_some_and(|r| r.is_match(g))),
        Op::Gt | Op::Ge | Op::Lt | Op::Le => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(attrs: &'a BTreeMap<String, String>, groups: &'a [String]) -> Facts<'a> {
        Facts {
            instance_id: "i-abcd1234",
            attributes: attrs,
            agent_connected: true,
            agent_version: "1.14.5",
            registered_at: parse_date("2018-06-18T22:28:28Z"),
            running_tasks_count: 1,
            task_groups: groups,
        }
    }

    fn attrs() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("ecs.instance-type".to_string(), "t2.small".to_string()),
            (
                "ecs.availability-zone".to_string(),
                "us-east-1a".to_string(),
            ),
        ])
    }

    #[test]
    fn ecs_documented_examples_evaluate() {
        let a = attrs();
        let g = vec!["service:production".to_string()];
        let f = facts(&a, &g);
        let cases = [
            ("attribute:ecs.instance-type == t2.small", true),
            (
                "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]",
                true,
            ),
            (
                "attribute:ecs.instance-type =~ t2.* and attribute:ecs.availability-zone != us-east-1d",
                true,
            ),
            ("task:group == service:production", true),
            ("not(task:group == database)", true),
            ("runningTasksCount == 1", true),
            ("agentVersion < 1.14.6", true),
            ("agentVersion >= 1.9", true),
            ("registeredAt < 2018-06-19", true),
            ("registeredAt > 2018-06-18T22:28:28+00:00", false),
            ("ec2InstanceId in ['i-abcd1234', 'i-wxyx7890']", true),
            ("attribute:ecs.gpu exists", false),
            ("attribute:ecs.gpu !exists", true),
            ("!attribute:ecs.gpu exists", true),
            ("agentConnected == true", true),
            (
                "ec2InstanceType == t2.small && runningTasksCount <= 0",
                false,
            ),
            (
                "attribute:ecs.instance-type == t2.large or attribute:ecs.availability-zone == us-east-1a",
                true,
            ),
            // `and` binds tighter than `or`.
            (
                "runningTasksCount == 1 or runningTasksCount == 5 and agentConnected == false",
                true,
            ),
            (
                "(runningTasksCount == 1 or runningTasksCount == 5) and agentConnected == false",
                false,
            ),
            ("attribute:ecs.availability-zone not_in [us-east-1a]", false),
            ("attribute:ecs.instance-type !~ t2\\..*", false),
        ];
        for (e, want) in cases {
            let parsed = parse(e).unwrap_or_else(|err| panic!("{e}: {err}"));
            assert_eq!(parsed.eval(&f), want, "{e}");
        }
    }

    #[test]
    fn parse_errors_carry_their_position() {
        let cases = [
            ("attribute:x ==", 14, "expected a value"),
            ("flavour == vanilla", 0, "unknown subject"),
            ("attribute:x is y", 12, "expected an operator"),
            ("(attribute:x exists", 19, "expected ')'"),
            ("attribute:x in [a, b", 20, "expected ']'"),
            ("attribute:x exists junk", 19, "unexpected text"),
            ("attribute:x > 3", 12, "ordering operators"),
            ("attribute:x == 'open", 15, "unterminated"),
            ("attribute:x =~ *abc", 12, "invalid pattern"),
        ];
        for (e, pos, msg) in cases {
            let err = parse(e).expect_err(e);
            assert_eq!(err.position, pos, "{e}: {err}");
            assert!(err.message.contains(msg), "{e}: {err}");
        }
    }

    #[test]
    fn dates_parse_to_epoch_seconds() {
        assert_eq!(parse_date("1970-01-01"), Some(0.0));
        assert_eq!(parse_date("2018-02-13"), Some(1_518_480_000.0));
        assert_eq!(
            parse_date("2018-06-18T22:28:28Z"),
            parse_date("2018-06-18T22:28:28+00:00")
        );
        assert_eq!(parse_date("June"), None);
        // Found by the fuzz harness (crates/fuzz/tests/query.rs): a year this large overflowed.
        assert_eq!(parse_date("42949672962026-12-01T10:00:00Z"), None);
        for bad in [
            "2026-13-01",
            "2026-00-10",
            "2026-01-32",
            "2026-01-01T24:00:00",
            "2026-01-01T10:60:00",
        ] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
