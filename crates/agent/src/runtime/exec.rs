//! Plumbing both runtimes' exec sessions share: feeding the caller's input to the command and
//! carrying its output back, over the channels of an [`ExecSession`].
//!
//! Contract: the output channel carries stdout and stderr chunks in the order they were read,
//! then exactly one [`ExecEvent::Exit`], then closes. Input after the command has ended is
//! dropped. End of stdin is a half-close for a pipe and the terminal's end-of-file character
//! for a terminal (a shell reading a terminal never sees a pipe's end).

use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ExecEvent, ExecInput, ExecSession, TermSize};

/// The end-of-file character of a terminal in canonical mode (Ctrl-D).
const EOT: u8 = 0x04;
/// How long output still draining after the command's exit is waited for (a background child
/// may hold the pipes open for good).
pub const DRAIN: Duration = Duration::from_secs(1);

/// Channels of a new session: the session handed to the caller, and the runtime's ends.
pub fn channels() -> (
    ExecSession,
    mpsc::Receiver<ExecInput>,
    mpsc::Sender<ExecEvent>,
) {
    let (in_tx, in_rx) = mpsc::channel(32);
    let (out_tx, out_rx) = mpsc::channel(64);
    let session = ExecSession {
        input: in_tx,
        output: out_rx,
        stop: CancellationToken::new(),
    };
    (session, in_rx, out_tx)
}

/// A session for a command that could not be started: the reason on stderr and a shell's exit
/// code (127 not found, 126 not runnable).
pub fn not_started(message: String, code: i32) -> ExecSession {
    let (session, _input, out) = channels();
    let _ = out.try_send(ExecEvent::Stderr(format!("{message}\r\n").into_bytes()));
    let _ = out.try_send(ExecEvent::Exit(Some(code)));
    session
}

/// The exit code a shell gives a command it cannot start.
pub fn spawn_failure_code(e: &std::io::Error) -> i32 {
    if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    }
}

/// Writes the caller's input to `writer` (none: stdin is not attached, input is dropped) until
/// the caller's input ends; `resize` applies terminal resizes.
pub async fn feed<W, R>(
    mut writer: Option<W>,
    mut input: mpsc::Receiver<ExecInput>,
    tty: bool,
    mut resize: R,
) where
    W: AsyncWrite + Unpin + Send,
    R: FnMut(&mut Option<W>, TermSize) -> BoxFuture<'static, ()> + Send,
{
    while let Some(msg) = input.recv().await {
        match msg {
            ExecInput::Stdin(bytes) => {
                if let Some(w) = writer.as_mut()
                    && (w.write_all(&bytes).await.is_err() || w.flush().await.is_err())
                {
                    writer = None;
                }
            }
            ExecInput::Resize(size) => resize(&mut writer, size).await,
            ExecInput::CloseStdin => close(&mut writer, tty).await,
        }
    }
    // The caller has nothing more to send: as if its stdin had ended.
    close(&mut writer, tty).await;
}

async fn close<W: AsyncWrite + Unpin>(writer: &mut Option<W>, tty: bool) {
    if tty {
        if let Some(w) = writer.as_mut() {
            let _ = w.write_all(&[EOT]).await;
            let _ = w.flush().await;
        }
    } else if let Some(mut w) = writer.take() {
        let _ = w.shutdown().await;
    }
}

/// Copies `reader` into the output channel, each chunk wrapped by `wrap`, until it ends (a
/// terminal whose last writer closed reads as an error, which ends it too).
pub async fn pump<Rd: AsyncRead + Unpin>(
    reader: Option<Rd>,
    out: mpsc::Sender<ExecEvent>,
    wrap: fn(Vec<u8>) -> ExecEvent,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(wrap(buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Sends the exit code once `exited` resolves (or once `stop` is cancelled and `kill` has run)
/// and the output `drained` (bounded by [`DRAIN`]).
pub async fn finish<E, D, K>(
    exited: E,
    drained: D,
    stop: CancellationToken,
    kill: K,
    out: mpsc::Sender<ExecEvent>,
) where
    E: Future<Output = Option<i32>>,
    D: Future<Output = ()>,
    K: FnOnce(),
{
    tokio::pin!(exited);
    let code = tokio::select! {
        code = &mut exited => code,
        () = stop.cancelled() => {
            kill();
            exited.await
        }
    };
    let _ = tokio::time::timeout(DRAIN, drained).await;
    let _ = out.send(ExecEvent::Exit(code)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    #[tokio::test]
    async fn feed_writes_stdin_and_half_closes_a_pipe() {
        let (mut far, near) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(feed(Some(near), rx, false, |_, _| async {}.boxed()));
        tx.send(ExecInput::Stdin(b"hello".to_vec()))
            .await
            .expect("test");
        tx.send(ExecInput::CloseStdin).await.expect("test");
        let mut got = Vec::new();
        far.read_to_end(&mut got).await.expect("test");
        assert_eq!(got, b"hello");
        drop(tx);
        task.await.expect("test");
    }

    #[tokio::test]
    async fn feed_sends_a_terminal_its_end_of_file_character() {
        let (mut far, near) = tokio::io::duplex(64);
        let (tx, rx) = mpsc::channel(4);
        let resized = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = resized.clone();
        let task = tokio::spawn(feed(Some(near), rx, true, move |_, s| {
            seen.lock().expect("test").push(s);
            async {}.boxed()
        }));
        tx.send(ExecInput::Resize(TermSize {
            rows: 40,
            cols: 100,
        }))
        .await
        .expect("test");
        tx.send(ExecInput::Stdin(b"ls\n".to_vec()))
            .await
            .expect("test");
        tx.send(ExecInput::CloseStdin).await.expect("test");
        drop(tx);
        task.await.expect("test");
        let mut got = vec![0u8; 4];
        far.read_exact(&mut got).await.expect("test");
        assert_eq!(got, b"ls\n\x04");
        assert_eq!(
            *resized.lock().expect("test"),
            vec![TermSize {
                rows: 40,
                cols: 100
            }]
        );
    }

    #[tokio::test]
    async fn finish_kills_on_stop_and_still_reports_the_exit_last() {
        let (tx, mut rx) = mpsc::channel(4);
        let stop = CancellationToken::new();
        let (killed_tx, killed_rx) = tokio::sync::oneshot::channel::<()>();
        let exited = async move {
            // "Exits" only once killed.
            let _ = killed_rx.await;
            Some(137)
        };
        stop.cancel();
        finish(
            exited,
            async {},
            stop,
            move || {
                let _ = killed_tx.send(());
            },
            tx,
        )
        .await;
        assert_eq!(rx.recv().await, Some(ExecEvent::Exit(Some(137))));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn not_started_reports_why_then_the_code() {
        let mut s = not_started("no such file".into(), 127);
        assert_eq!(
            s.output.recv().await,
            Some(ExecEvent::Stderr(b"no such file\r\n".to_vec()))
        );
        assert_eq!(s.output.recv().await, Some(ExecEvent::Exit(Some(127))));
        assert_eq!(s.output.recv().await, None);
    }
}
