//! `capstan task exec`: an ECS Exec session over the API's ExecuteCommand stream.
//!
//! With `-t` the local terminal is put in raw mode for the session (keys go to the remote
//! terminal as typed, Ctrl-C included) and restored afterwards, whatever ends the session; its
//! size goes with the start and every SIGWINCH. With `-i` stdin is forwarded, and its end is
//! passed on. The command's exit code becomes this command's.

use std::io::Write;
use std::os::fd::AsFd;

use capstan_proto::api::v1 as pb;
use pb::execute_command_input::Input;
use pb::execute_command_output::Output;
use rustix::termios;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

use crate::{Conn, api_error};

/// What `capstan task exec` was asked.
#[derive(Debug, Clone)]
pub struct ExecArgs {
    /// Cluster.
    pub cluster: String,
    /// Task id or ARN.
    pub task: String,
    /// Container; the task's only one when empty.
    pub container: String,
    /// Forward stdin.
    pub interactive: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// argv.
    pub command: Vec<String>,
}

/// The local terminal in raw mode until dropped.
struct RawMode {
    saved: termios::Termios,
}

impl RawMode {
    fn enter() -> anyhow::Result<Self> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| anyhow::anyhow!("cannot read the terminal's settings: {e}"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(stdin.as_fd(), termios::OptionalActions::Flush, &raw)
            .map_err(|e| anyhow::anyhow!("cannot put the terminal in raw mode: {e}"))?;
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(
            std::io::stdin().as_fd(),
            termios::OptionalActions::Flush,
            &self.saved,
        );
    }
}

/// The local terminal's size, if stdout is one.
fn size() -> Option<pb::TerminalSize> {
    let ws = termios::tcgetwinsize(std::io::stdout().as_fd()).ok()?;
    (ws.ws_row > 0 && ws.ws_col > 0).then(|| pb::TerminalSize {
        rows: u32::from(ws.ws_row),
        cols: u32::from(ws.ws_col),
    })
}

fn message(input: Input) -> pb::ExecuteCommandInput {
    pb::ExecuteCommandInput { input: Some(input) }
}

/// Runs the session; returns the remote command's exit code.
pub async fn exec(conn: &Conn, a: ExecArgs) -> anyhow::Result<i32> {
    if a.command.is_empty() {
        anyhow::bail!("give the command to run after --, e.g. capstan task exec TASK -- sh");
    }
    let on_terminal = termios::isatty(std::io::stdin().as_fd());
    if a.tty && a.interactive && !on_terminal {
        anyhow::bail!("the input device is not a TTY: drop -t, or run from a terminal");
    }
    let mut c = conn.client().await?;
    let (tx, rx) = mpsc::channel::<pb::ExecuteCommandInput>(32);
    let start = pb::ExecuteCommandStart {
        cluster: a.cluster,
        task: a.task,
        container: a.container,
        command: a.command,
        tty: a.tty,
        interactive: a.interactive,
        size: if a.tty { size() } else { None },
    };
    tx.send(message(Input::Start(start))).await?;
    if a.interactive {
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 8192];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx
                            .send(message(Input::Stdin(buf[..n].to_vec())))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = tx.send(message(Input::CloseStdin(true))).await;
        });
    }
    if a.tty {
        let tx = tx.clone();
        if let Ok(mut winch) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        {
            tokio::spawn(async move {
                while winch.recv().await.is_some() {
                    if let Some(s) = size()
                        && tx.send(message(Input::Resize(s))).await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    }
    // The session's input stays open as long as a sender does (stdin, resizes).
    drop(tx);
    let mut output = c
        .execute_command(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(api_error)?
        .into_inner();
    // Raw mode only once the session is open, so an error above prints normally.
    let raw = if a.tty && on_terminal {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let mut code = None;
    let result = loop {
        match output.message().await {
            Ok(Some(m)) => match m.output {
                Some(Output::Stdout(b)) => {
                    let mut out = std::io::stdout().lock();
                    if out.write_all(&b).and_then(|()| out.flush()).is_err() {
                        break Ok(());
                    }
                }
                Some(Output::Stderr(b)) => {
                    let mut err = std::io::stderr().lock();
                    let _ = err.write_all(&b).and_then(|()| err.flush());
                }
                Some(Output::ExitCode(c)) => code = Some(c),
                None => {}
            },
            Ok(None) => break Ok(()),
            Err(s) => break Err(api_error(s)),
        }
    };
    drop(raw);
    result?;
    match code {
        Some(c) if c >= 0 => Ok(c),
        Some(_) => anyhow::bail!("the command ended, but its exit code is unknown"),
        None => anyhow::bail!("the session ended before the command did"),
    }
}
