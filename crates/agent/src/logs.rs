//! Container logs, kept on the node as ECS's awslogs driver would send them: per task, per
//! container, per stream, every line with its time.
//!
//! - **Process runtime**: a container's stdout and stderr each go through a pipe to a log shim,
//!   this same binary run as `capstan-agent __log-shim FILE MAX_BYTES [BUFFER_BYTES]`. The
//!   shim stamps each line (`<epoch seconds> <line>`) into `<task dir>/<container>.<stream>.log`
//!   and rotates it at `MAX_BYTES` (one older file, `….1`, kept). With `BUFFER_BYTES` it is
//!   non-blocking: it keeps reading the pipe into a buffer of that size while the file is
//!   written, so a slow or failed disk never stalls the container (see [`LogMode`]). It runs in
//!   a process group of its own and exits when the container's end of the pipe closes, so it
//!   outlives an agent restart (like conmon) and the container never writes into a closed pipe.
//! - **Docker runtime**: Docker keeps the logs (json-file rotated at 10 MiB, or the json-file or
//!   local driver the task definition names) with the same mode; they are read back through
//!   the engine with their timestamps.
//!
//! Either way they stay until the task is cleaned up (`--task-retention`) and are served by
//! `TaskLogs`, which follows them (polling every 200 ms) while asked to.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

pub use capstan_core::logging::LogMode;

/// The argument that turns `capstan-agent` into a log shim.
pub const SHIM_ARG: &str = "__log-shim";

/// Size at which a stream's log file is rotated (10 MiB, one older file kept).
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;

/// Longest line kept whole; longer ones are split (ECS's awslogs splits at 256 KiB).
const MAX_LINE: usize = 16 << 10;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a container's output.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    /// When it was written, epoch seconds.
    pub timestamp: f64,
    /// The container.
    pub container: String,
    /// Its stream.
    pub stream: Stream,
    /// The line, without its newline.
    pub message: String,
}

/// The log file of `container`'s `stream` under `task_dir`.
pub fn log_file(task_dir: &Path, container: &str, stream: Stream) -> PathBuf {
    task_dir.join(format!("{container}.{}.log", stream.as_str()))
}

fn rotated(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".1");
    PathBuf::from(p)
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A stream's log file, rotated at `max_bytes` (one older file kept).
struct LogFile {
    path: PathBuf,
    out: std::fs::File,
    size: u64,
    max_bytes: u64,
}

impl LogFile {
    fn open(path: &Path, max_bytes: u64) -> std::io::Result<Self> {
        let out = Self::append(path)?;
        let size = out.metadata().map_or(0, |m| m.len());
        Ok(Self {
            path: path.to_path_buf(),
            out,
            size,
            max_bytes,
        })
    }

    fn append(path: &Path) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    }

    fn write(&mut self, record: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.max_bytes {
            let _ = std::fs::rename(&self.path, rotated(&self.path));
            self.out = Self::append(&self.path)?;
            self.size = 0;
        }
        self.out.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }
}

/// The shim's loop: `input` to `path`, one stamped line per line, rotated at `max_bytes`,
/// delivered as `mode` says. Returns at end of input.
pub fn run_shim(
    input: impl std::io::Read + Send,
    path: &Path,
    max_bytes: u64,
    mode: LogMode,
) -> std::io::Result<()> {
    let mut file = LogFile::open(path, max_bytes)?;
    deliver(input, mode, |record| file.write(record))
}

/// The shim's arguments after `FILE`: `MAX_BYTES`, and the buffer's size when non-blocking.
pub fn shim_args(max_bytes: u64, mode: LogMode) -> Vec<String> {
    let mut args = vec![max_bytes.to_string()];
    if let LogMode::NonBlocking { max_buffer_size } = mode {
        args.push(max_buffer_size.to_string());
    }
    args
}

/// The mode [`shim_args`] wrote: non-blocking with a buffer size, else blocking.
pub fn shim_mode(buffer: Option<&str>) -> Result<LogMode, std::num::ParseIntError> {
    Ok(match buffer {
        Some(b) => LogMode::NonBlocking {
            max_buffer_size: b.parse()?,
        },
        None => LogMode::Blocking,
    })
}

/// Reads `input` line by line (long lines split at [`MAX_LINE`]) into stamped records
/// (`<epoch seconds> <line>\n`): one line, or [`None`] at end of input.
struct Lines<R> {
    input: std::io::BufReader<R>,
    line: Vec<u8>,
}

impl<R: Read> Lines<R> {
    fn next(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        self.line.clear();
        let n = (&mut self.input)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        if self.line.last() == Some(&b'\n') {
            self.line.pop();
        }
        Ok(Some(stamped(&String::from_utf8_lossy(&self.line))))
    }
}

fn stamped(line: &str) -> Vec<u8> {
    format!("{:.6} {}\n", now(), line.replace('\r', "")).into_bytes()
}

/// What waits in a non-blocking shim's buffer.
enum Entry {
    /// A stamped record.
    Record(Vec<u8>),
    /// This many lines were dropped here, the buffer being full.
    Dropped(u64),
}

#[derive(Default)]
struct Buffer {
    entries: std::collections::VecDeque<Entry>,
    bytes: u64,
    /// The input has ended.
    done: bool,
    /// The log cannot be written: lines are read and dropped so the container never waits.
    failed: bool,
}

/// Delivers `input`'s lines to `write` as `mode` says: blocking, each written before the next
/// is read; non-blocking, through a buffer of `max_buffer_size` bytes that the container's
/// writes never wait on. As Docker's ring buffer, a full buffer drops new lines (a line is
/// always taken into an empty one); unlike it, the log then says how many: a record
/// `capstan: N log lines dropped: the buffer (max-buffer-size B bytes) was full`.
fn deliver(
    input: impl Read + Send,
    mode: LogMode,
    mut write: impl FnMut(&[u8]) -> std::io::Result<()> + Send,
) -> std::io::Result<()> {
    let mut lines = Lines {
        input: std::io::BufReader::new(input),
        line: Vec::new(),
    };
    let LogMode::NonBlocking { max_buffer_size } = mode else {
        while let Some(record) = lines.next()? {
            write(&record)?;
        }
        return Ok(());
    };
    let buffer = std::sync::Mutex::new(Buffer::default());
    let ready = std::sync::Condvar::new();
    let lock = || {
        buffer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| -> std::io::Result<()> {
            loop {
                // One entry at a time, so the buffer counts what is not yet written: it holds at
                // most max-buffer-size bytes plus the line being written.
                let entry = {
                    let mut b = lock();
                    loop {
                        if let Some(entry) = b.entries.pop_front() {
                            if let Entry::Record(r) = &entry {
                                b.bytes -= r.len() as u64;
                            }
                            break entry;
                        }
                        if b.done {
                            return Ok(());
                        }
                        b = ready.wait(b).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                };
                let result = match entry {
                    Entry::Record(r) => write(&r),
                    Entry::Dropped(n) => write(&stamped(&format!(
                        "capstan: {n} log lines dropped: the buffer (max-buffer-size {max_buffer_size} bytes) was full"
                    ))),
                };
                if let Err(e) = result {
                    lock().failed = true;
                    return Err(e);
                }
            }
        });
        let read = (|| -> std::io::Result<()> {
            while let Some(record) = lines.next()? {
                let mut b = lock();
                let size = record.len() as u64;
                if b.failed || (!b.entries.is_empty() && b.bytes + size > max_buffer_size) {
                    match b.entries.back_mut() {
                        Some(Entry::Dropped(n)) => *n += 1,
                        _ => b.entries.push_back(Entry::Dropped(1)),
                    }
                    continue;
                }
                b.bytes += size;
                b.entries.push_back(Entry::Record(record));
                ready.notify_one();
            }
            Ok(())
        })();
        lock().done = true;
        ready.notify_one();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the log writer panicked")));
        read.and(written)
    })
}

/// Parses one stored line (`<epoch seconds> <line>`); `None` for what is not one.
fn parse(line: &str, container: &str, stream: Stream) -> Option<LogLine> {
    let (ts, message) = line.split_once(' ')?;
    Some(LogLine {
        timestamp: ts.parse().ok()?,
        container: container.to_string(),
        stream,
        message: message.to_string(),
    })
}

/// Where a follower is in one log file.
#[derive(Debug, Clone)]
pub struct Cursor {
    path: PathBuf,
    container: String,
    stream: Stream,
    offset: u64,
}

/// Every stored line of `containers` under `task_dir` (rotated files first), in time order,
/// with the cursors to follow from.
pub fn read_all(task_dir: &Path, containers: &[String]) -> (Vec<LogLine>, Vec<Cursor>) {
    let mut lines = Vec::new();
    let mut cursors = Vec::new();
    for c in containers {
        for stream in [Stream::Stdout, Stream::Stderr] {
            let path = log_file(task_dir, c, stream);
            if let Ok(text) = std::fs::read_to_string(rotated(&path)) {
                lines.extend(text.lines().filter_map(|l| parse(l, c, stream)));
            }
            let text = std::fs::read(&path).unwrap_or_default();
            // Only whole lines: a partial last one is read when it is finished.
            let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            lines.extend(
                String::from_utf8_lossy(&text[..whole])
                    .lines()
                    .filter_map(|l| parse(l, c, stream)),
            );
            cursors.push(Cursor {
                path,
                container: c.clone(),
                stream,
                offset: whole as u64,
            });
        }
    }
    lines.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    (lines, cursors)
}

/// The lines written since the cursors were taken, in time order; the cursors move on. A file
/// that shrank was rotated: it is read again from its start.
pub fn read_new(cursors: &mut [Cursor]) -> Vec<LogLine> {
    use std::io::{Seek, SeekFrom};
    let mut lines = Vec::new();
    for cur in cursors.iter_mut() {
        let Ok(mut f) = std::fs::File::open(&cur.path) else {
            continue;
        };
        let len = f.metadata().map_or(0, |m| m.len());
        if len < cur.offset {
            cur.offset = 0;
        }
        if len == cur.offset || f.seek(SeekFrom::Start(cur.offset)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_err() {
            continue;
        }
        let whole = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        cur.offset += whole as u64;
        lines.extend(
            String::from_utf8_lossy(&buf[..whole])
                .lines()
                .filter_map(|l| parse(l, &cur.container, cur.stream)),
        );
    }
    lines.sort_by(|a, b| a.timestamp.total_cmp(&b.timestamp));
    lines
}

/// `lines` from `since` (epoch seconds) on, the last `tail` of them when given.
pub fn select(lines: Vec<LogLine>, since: Option<f64>, tail: Option<usize>) -> Vec<LogLine> {
    let mut out: Vec<LogLine> = lines
        .into_iter()
        .filter(|l| since.is_none_or(|s| l.timestamp >= s))
        .collect();
    if let Some(n) = tail {
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
    }
    out
}

/// How often a follower looks for new lines in the files.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// A `TaskLogs` call: which task, which container (all when `None`), from when, how many.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// The task.
    pub task_id: String,
    /// One container, or all.
    pub container: Option<String>,
    /// Lines from this time on (epoch seconds).
    pub since: Option<f64>,
    /// Only the last this many lines (per container when Docker keeps them).
    pub tail: Option<usize>,
    /// Keep streaming new lines until the task has stopped.
    pub follow: bool,
}

/// Serves a `TaskLogs` call: the lines asked for, then, following, new ones until the task has
/// stopped and its logs are quiet, or the receiver is dropped.
pub fn serve(
    agent: &std::sync::Arc<crate::agent::Agent>,
    req: Request,
) -> Result<tokio::sync::mpsc::Receiver<LogLine>, crate::agent::AgentError> {
    use crate::agent::AgentError;
    let record = agent
        .record(&req.task_id)
        .ok_or_else(|| AgentError::NotFound(req.task_id.clone()))?;
    let containers: Vec<&crate::model::ContainerRecord> = record
        .containers
        .iter()
        .filter(|c| req.container.as_deref().is_none_or(|n| n == c.name))
        .collect();
    if containers.is_empty() {
        return Err(AgentError::Invalid(format!(
            "task {} has no container {:?}",
            req.task_id,
            req.container.as_deref().unwrap_or_default()
        )));
    }
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    // The runtime's own logs (Docker), one stream per container.
    let kept: Vec<_> = containers
        .iter()
        .filter_map(|c| {
            let q = crate::runtime::LogQuery {
                container: c.name.clone(),
                since: req.since,
                tail: req.tail,
                follow: req.follow,
            };
            agent.runtime().logs(c.handle.as_ref()?, &q)
        })
        .collect();
    if !kept.is_empty() {
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut all = futures::stream::select_all(kept);
            while let Some(line) = all.next().await {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        return Ok(rx);
    }
    let names: Vec<String> = containers.iter().map(|c| c.name.clone()).collect();
    let dir = agent.task_dir(&req.task_id);
    let agent = agent.clone();
    tokio::spawn(async move {
        let (lines, mut cursors) = read_all(&dir, &names);
        for line in select(lines, req.since, req.tail) {
            if tx.send(line).await.is_err() {
                return;
            }
        }
        if !req.follow {
            return;
        }
        let mut quiet_since_stop = 0;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
            }
            let new = read_new(&mut cursors);
            let stopped = agent.record(&req.task_id).is_none_or(|r| r.is_stopped());
            quiet_since_stop = if stopped && new.is_empty() {
                quiet_since_stop + 1
            } else {
                0
            };
            for line in new {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            // Stopped, and nothing more for a second: the shims have written their last.
            if quiet_since_stop >= 5 {
                return;
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_stamps_lines_rotates_and_the_reader_merges_and_follows() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = log_file(dir.path(), "app", Stream::Stdout);
        let err = log_file(dir.path(), "app", Stream::Stderr);
        run_shim(&b"one\ntwo\r\n"[..], &out, 1 << 20, LogMode::Blocking).expect("shim");
        run_shim(&b"oops\n"[..], &err, 1 << 20, LogMode::Blocking).expect("shim");
        let (lines, mut cursors) = read_all(dir.path(), &["app".to_string()]);
        let text: Vec<(&str, Stream)> = lines
            .iter()
            .map(|l| (l.message.as_str(), l.stream))
            .collect();
        assert_eq!(
            text,
            [
                ("one", Stream::Stdout),
                ("two", Stream::Stdout),
                ("oops", Stream::Stderr)
            ]
        );
        assert!(lines.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
        // A new line (and a partial one, not yet shown).
        std::fs::OpenOptions::new()
            .append(true)
            .open(&out)
            .and_then(|mut f| f.write_all(b"1.5 three\n2.0 part"))
            .expect("append");
        let new = read_new(&mut cursors);
        assert_eq!(new.len(), 1);
        assert_eq!(new[0].message, "three");
        assert!(read_new(&mut cursors).is_empty());

        // Rotation keeps one older file, and both are read.
        let small = dir.path().join("small.stdout.log");
        let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
        run_shim(input.as_bytes(), &small, 300, LogMode::default()).expect("shim");
        let kept = std::fs::metadata(&small).expect("log").len();
        assert!(kept <= 300, "{kept}");
        assert!(rotated(&small).exists());
        let (lines, _) = read_all(dir.path(), &["small".to_string()]);
        assert_eq!(lines.last().map(|l| l.message.as_str()), Some("line 99"));
        assert!(lines.len() < 100 && lines.len() > 5, "{}", lines.len());
    }

    /// An input that says when it has been read to its end.
    struct Signalling<R> {
        inner: R,
        eof: std::sync::mpsc::Sender<()>,
    }

    impl<R: Read> Read for Signalling<R> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.inner.read(buf)?;
            if n == 0 {
                let _ = self.eof.send(());
            }
            Ok(n)
        }
    }

    fn messages(records: &[Vec<u8>]) -> Vec<String> {
        records
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(r);
                let (_, message) = text.trim_end().split_once(' ').expect("stamped");
                message.to_string()
            })
            .collect()
    }

    #[test]
    fn non_blocking_reads_everything_while_the_log_is_stuck_and_says_what_it_dropped() {
        let input: String = (0..1000)
            .map(|i| format!("line {i:04} {}\n", "x".repeat(80)))
            .collect();
        let (eof, at_eof) = std::sync::mpsc::channel();
        // A Receiver is not Sync; the writer thread borrows it.
        let at_eof = std::sync::Mutex::new(at_eof);
        let mut written = Vec::new();
        let mut stuck = true;
        deliver(
            Signalling {
                inner: input.as_bytes(),
                eof,
            },
            LogMode::NonBlocking {
                max_buffer_size: 4096,
            },
            |record| {
                // The log is stuck until the container has written all its output: a blocking
                // delivery would never get there.
                if std::mem::take(&mut stuck) {
                    let at_eof = at_eof
                        .lock()
                        .map_err(|e| std::io::Error::other(e.to_string()))?;
                    at_eof.recv().map_err(std::io::Error::other)?;
                }
                written.push(record.to_vec());
                Ok(())
            },
        )
        .expect("deliver");
        // Every gap is marked where it was; the lines kept are the oldest of each stretch, in
        // order, and with the markers they account for every line.
        let (mut kept, mut dropped) = (Vec::new(), 0);
        for m in messages(&written) {
            match m.strip_prefix("capstan: ") {
                Some(marker) => {
                    assert!(
                        marker
                            .ends_with("dropped: the buffer (max-buffer-size 4096 bytes) was full"),
                        "{marker}"
                    );
                    let (n, _) = marker.split_once(' ').expect("a count");
                    dropped += n.parse::<usize>().expect("a count");
                }
                None => kept.push(m[5..9].parse::<usize>().expect("a line number")),
            }
        }
        assert_eq!(kept.len() + dropped, 1000);
        assert_eq!(kept.first(), Some(&0));
        assert!(kept.windows(2).all(|w| w[0] < w[1]), "{kept:?}");
        // The stuck log kept the buffer full: about 4096 bytes of ~100-byte records (and the
        // one taken out before the log stuck, and those the writer took as the log freed).
        assert!((30..=100).contains(&kept.len()), "{}", kept.len());
        assert!(dropped >= 900, "{dropped}");
    }

    #[test]
    fn blocking_loses_nothing_and_non_blocking_nothing_when_the_log_keeps_up() {
        let input: String = (0..500).map(|i| format!("line {i}\n")).collect();
        for mode in [LogMode::Blocking, LogMode::default()] {
            let mut written = Vec::new();
            deliver(input.as_bytes(), mode, |r| {
                written.push(r.to_vec());
                Ok(())
            })
            .expect("deliver");
            let want: Vec<String> = (0..500).map(|i| format!("line {i}")).collect();
            assert_eq!(messages(&written), want, "{mode:?}");
        }
    }

    #[test]
    fn a_failed_log_still_drains_the_pipe_non_blocking() {
        let input: String = (0..300).map(|i| format!("line {i}\n")).collect();
        let (eof, at_eof) = std::sync::mpsc::channel();
        let result = deliver(
            Signalling {
                inner: input.as_bytes(),
                eof,
            },
            LogMode::default(),
            |_| Err(std::io::Error::other("disk full")),
        );
        assert_eq!(result.expect_err("fails").to_string(), "disk full");
        // Read to its end: the container was never left writing into a full pipe.
        assert!(at_eof.try_recv().is_ok());
    }

    #[test]
    fn shim_arguments_carry_the_mode() {
        for mode in [
            LogMode::Blocking,
            LogMode::NonBlocking {
                max_buffer_size: 4096,
            },
        ] {
            let args = shim_args(300, mode);
            assert_eq!(args[0], "300");
            assert_eq!(shim_mode(args.get(1).map(String::as_str)), Ok(mode));
        }
        assert!(shim_mode(Some("lots")).is_err());
    }

    #[test]
    fn long_lines_are_split_and_tail_and_since_select() {
        let dir = tempfile::tempdir().expect("tmp");
        let out = log_file(dir.path(), "app", Stream::Stdout);
        let long = "x".repeat(MAX_LINE + 10) + "\n";
        run_shim(long.as_bytes(), &out, 1 << 20, LogMode::Blocking).expect("shim");
        let (lines, _) = read_all(dir.path(), &["app".to_string()]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].message.len(), MAX_LINE);
        let picked = select(lines.clone(), None, Some(1));
        assert_eq!(picked.len(), 1);
        assert_eq!(picked[0].message, "x".repeat(10));
        assert!(select(lines, Some(f64::MAX), None).is_empty());
    }
}
