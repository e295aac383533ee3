//! Exec sessions against an agent, for tests.

use std::time::Duration;

use capstan_proto::agent::v1 as pb;
use pb::exec_input::Input;
use pb::exec_output::Output;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// An open session: what to send it, and what it has sent.
pub struct Session {
    pub input: mpsc::Sender<pb::ExecInput>,
    pub output: tonic::Streaming<pb::ExecOutput>,
}

/// Everything a session sent until it ended.
#[derive(Debug, Default)]
pub struct Ended {
    pub stdout: String,
    pub stderr: String,
    pub code: Option<i32>,
}

/// The start of a session in task `task`'s only container.
pub fn start(task: &str, command: &[&str], tty: bool, interactive: bool) -> pb::ExecInput {
    pb::ExecInput {
        input: Some(Input::Start(pb::ExecStart {
            task_id: task.into(),
            container: String::new(),
            command: command.iter().map(|s| s.to_string()).collect(),
            tty,
            interactive,
            size: tty.then_some(pb::TerminalSize { rows: 24, cols: 80 }),
        })),
    }
}

/// A message for a session.
pub fn send(input: Input) -> pb::ExecInput {
    pb::ExecInput { input: Some(input) }
}

/// Opens a session whose first message is `first`.
pub async fn open(
    c: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    first: pb::ExecInput,
) -> Result<Session, tonic::Status> {
    let (tx, rx) = mpsc::channel(16);
    tx.send(first).await.expect("queue start");
    let output = c.exec(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Session { input: tx, output })
}

impl Session {
    /// Sends `bytes` to the command's stdin.
    pub async fn write(&self, bytes: &str) {
        self.input
            .send(send(Input::Stdin(bytes.as_bytes().to_vec())))
            .await
            .expect("send stdin");
    }

    /// Reads until the exit code (or the stream's end), within `within`.
    pub async fn finish(mut self, within: Duration) -> Ended {
        let mut got = Ended::default();
        let read = async {
            while let Some(m) = self.output.message().await.expect("exec stream") {
                match m.output {
                    Some(Output::Stdout(b)) => got.stdout.push_str(&String::from_utf8_lossy(&b)),
                    Some(Output::Stderr(b)) => got.stderr.push_str(&String::from_utf8_lossy(&b)),
                    Some(Output::ExitCode(c)) => got.code = Some(c),
                    None => {}
                }
            }
        };
        tokio::time::timeout(within, read)
            .await
            .unwrap_or_else(|_| panic!("the session did not end within {within:?}"));
        got
    }

    /// Reads stdout until it holds `what`.
    pub async fn read_until(&mut self, what: &str, within: Duration) -> String {
        let mut seen = String::new();
        tokio::time::timeout(within, async {
            while !seen.contains(what) {
                match self.output.message().await.expect("exec stream") {
                    Some(pb::ExecOutput {
                        output: Some(Output::Stdout(b)),
                    }) => seen.push_str(&String::from_utf8_lossy(&b)),
                    Some(_) => {}
                    None => break,
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {what:?} within {within:?}; saw {seen:?}"));
        seen
    }
}
