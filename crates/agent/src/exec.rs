//! ECS Exec on the agent: a caller's `Exec` stream relayed to and from a runtime's session.
//!
//! The command is killed when the caller goes away (its stream fails or its answer stream is
//! dropped) or when its container stops; a caller that merely finishes sending (half-close)
//! has closed the command's stdin, nothing more. The exit code is always the last message.

use std::sync::Arc;

use capstan_core::task::TaskStatus;
use capstan_proto::agent::v1 as pb;
use pb::exec_input::Input;
use pb::exec_output::Output;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tonic::Status;

use crate::agent::Agent;
use crate::runtime::{ExecEvent, ExecInput, ExecSession, TermSize};

/// The first message of an `Exec` stream, which must be its start.
pub async fn start(inbound: &mut tonic::Streaming<pb::ExecInput>) -> Result<pb::ExecStart, Status> {
    match inbound.message().await? {
        Some(pb::ExecInput {
            input: Some(Input::Start(s)),
        }) => Ok(s),
        _ => Err(Status::invalid_argument(
            "an Exec stream must begin with its start (task, container, command)",
        )),
    }
}

/// The caller's message for the command, if it is one (a second start is ignored).
fn input(m: pb::ExecInput) -> Option<ExecInput> {
    Some(match m.input? {
        Input::Stdin(b) => ExecInput::Stdin(b),
        Input::Resize(s) => ExecInput::Resize(TermSize {
            rows: u16::try_from(s.rows).unwrap_or(u16::MAX),
            cols: u16::try_from(s.cols).unwrap_or(u16::MAX),
        }),
        Input::CloseStdin(_) => ExecInput::CloseStdin,
        Input::Start(_) => return None,
    })
}

/// The wire form of a command's output.
fn output(e: ExecEvent) -> pb::ExecOutput {
    pb::ExecOutput {
        output: Some(match e {
            ExecEvent::Stdout(b) => Output::Stdout(b),
            ExecEvent::Stderr(b) => Output::Stderr(b),
            ExecEvent::Exit(code) => Output::ExitCode(code.unwrap_or(-1)),
        }),
    }
}

/// Relays `session` (in `container` of task `task_id`) to the caller of `inbound`; the
/// returned receiver is the answer stream.
pub fn relay(
    agent: &Arc<Agent>,
    task_id: String,
    container: String,
    session: ExecSession,
    mut inbound: tonic::Streaming<pb::ExecInput>,
) -> mpsc::Receiver<Result<pb::ExecOutput, Status>> {
    let ExecSession {
        input: to_command,
        output: mut from_command,
        stop,
    } = session;
    // Caller → command. Dropping `to_command` closes the command's stdin.
    let caller_gone = stop.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = caller_gone.cancelled() => return,
                m = inbound.message() => match m {
                    Ok(Some(m)) => {
                        if let Some(i) = input(m)
                            && to_command.send(i).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(_) => {
                        caller_gone.cancel();
                        return;
                    }
                },
            }
        }
    });
    // The container stopping ends the session.
    let mut updates = agent.subscribe();
    let (agent, task_stopped) = (agent.clone(), stop.clone());
    tokio::spawn(async move {
        let ended = |a: &Agent| {
            a.record(&task_id).is_none_or(|r| {
                r.is_stopped()
                    || r.containers
                        .iter()
                        .any(|c| c.name == container && c.last_status == TaskStatus::Stopped)
            })
        };
        loop {
            if ended(&agent) {
                task_stopped.cancel();
                return;
            }
            tokio::select! {
                () = task_stopped.cancelled() => return,
                u = updates.recv() => if let Err(RecvError::Closed) = u {
                    return;
                },
            }
        }
    });
    // Command → caller.
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                e = from_command.recv() => {
                    let Some(e) = e else { break };
                    if tx.send(Ok(output(e))).await.is_err() {
                        break;
                    }
                }
                // The caller reset the call: a silent command must not outlive it.
                () = tx.closed() => break,
            }
        }
        // Over, or the caller is gone: kill what still runs; the watchers above end with it.
        stop.cancel();
    });
    rx
}
