//! A small QMP (QEMU Machine Protocol) client over a unix socket.
//!
//! QMP is newline-delimited JSON: a greeting, then `qmp_capabilities`, then
//! commands (`{"execute": ..., "id": n}`) answered by `{"return"|"error", "id": n}`,
//! with asynchronous events (`{"event": ...}`) interleaved. A reader task
//! parses lines (each bounded) into a bounded queue; `execute` waits for its
//! own reply and keeps the events it passes (bounded) for `next_event`.
//! This module knows nothing about instances; it never kills anything.

use std::collections::VecDeque;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::error::{ComputeError, Result};
use crate::limits::{
    QMP_COMMAND_TIMEOUT_MS, QMP_LINE_BYTES_MAX, QMP_PENDING_EVENTS_MAX, QMP_QUEUE_MESSAGES_MAX,
};

/// An asynchronous QMP event, e.g. `SHUTDOWN`, `RESET`, `POWERDOWN`, `STOP`.
#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

pub struct QmpClient {
    writer: OwnedWriteHalf,
    incoming: mpsc::Receiver<Value>,
    pending_events: VecDeque<QmpEvent>,
    next_id: u64,
    reader: JoinHandle<()>,
}

impl Drop for QmpClient {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl QmpClient {
    /// Connects, reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path) -> Result<Self> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|e| ComputeError::Qmp(format!("connect {}: {e}", path.display())))?;
        Self::from_stream(stream).await
    }

    /// Reads the greeting and negotiates capabilities on a connected socket.
    pub async fn from_stream(stream: UnixStream) -> Result<Self> {
        let (read_half, writer) = stream.into_split();
        let (tx, incoming) = mpsc::channel(QMP_QUEUE_MESSAGES_MAX);
        let reader = tokio::spawn(read_messages(BufReader::new(read_half), tx));
        let mut client = Self {
            writer,
            incoming,
            pending_events: VecDeque::new(),
            next_id: 1,
            reader,
        };
        let greeting = client.receive().await?;
        if greeting.get("QMP").is_none() {
            return Err(ComputeError::Qmp(format!("unexpected greeting {greeting}")));
        }
        client.execute("qmp_capabilities", None).await?;
        Ok(client)
    }

    async fn receive(&mut self) -> Result<Value> {
        let wait = Duration::from_millis(QMP_COMMAND_TIMEOUT_MS);
        match tokio::time::timeout(wait, self.incoming.recv()).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => Err(ComputeError::Qmp("connection closed".into())),
            Err(_) => Err(ComputeError::Qmp(format!(
                "no answer within {QMP_COMMAND_TIMEOUT_MS} ms"
            ))),
        }
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, arguments: Option<Value>) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            message["arguments"] = arguments;
        }
        let mut line = message.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| ComputeError::Qmp(format!("send {command}: {e}")))?;
        // Bounded: each receive waits at most the command timeout, and QEMU
        // sends a finite number of events before answering.
        loop {
            let message = self.receive().await?;
            if let Some(event) = as_event(&message) {
                if self.pending_events.len() >= QMP_PENDING_EVENTS_MAX {
                    self.pending_events.pop_front();
                }
                self.pending_events.push_back(event);
                continue;
            }
            if message.get("id").and_then(Value::as_u64) != Some(id) {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(ComputeError::Qmp(format!("{command}: {error}")));
            }
            return Ok(message.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// The next event; `None` once the connection is closed. Cancel safe.
    pub async fn next_event(&mut self) -> Option<QmpEvent> {
        if let Some(event) = self.pending_events.pop_front() {
            return Some(event);
        }
        loop {
            let message = self.incoming.recv().await?;
            if let Some(event) = as_event(&message) {
                return Some(event);
            }
        }
    }

    /// `query-status`: the VM's run state (`running`, `paused`, `shutdown`, ...).
    pub async fn query_status(&mut self) -> Result<String> {
        let status = self.execute("query-status", None).await?;
        Ok(status
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

fn as_event(message: &Value) -> Option<QmpEvent> {
    let name = message.get("event")?.as_str()?.to_string();
    Some(QmpEvent {
        name,
        data: message.get("data").cloned().unwrap_or(Value::Null),
    })
}

async fn read_messages(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    tx: mpsc::Sender<Value>,
) {
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader)
            .take(QMP_LINE_BYTES_MAX)
            .read_until(b'\n', &mut line)
            .await;
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) if !line.ends_with(b"\n") => {
                tracing::warn!("qmp: line over {QMP_LINE_BYTES_MAX} bytes or truncated; closing");
                return;
            }
            Ok(_) => {}
        }
        match serde_json::from_slice::<Value>(&line) {
            Ok(value) => {
                if tx.send(value).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!("qmp: unparsable message ignored: {e}"),
        }
    }
}
