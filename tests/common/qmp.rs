//! A QMP client for the QEMU tests: one JSON object per line; events are kept, not answered.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A QMP client: one JSON object per line; events are kept, not answered.
pub(crate) struct Qmp {
    pub(crate) reader: BufReader<UnixStream>,
    pub(crate) writer: UnixStream,
    pub(crate) events: Vec<String>,
    /// How long a command may take to answer.
    pub(crate) reply: Duration,
}

impl Qmp {
    pub(crate) fn read(&mut self, deadline: Instant) -> Result<Value, String> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("timed out waiting for QMP".into());
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(left))
            .map_err(|e| format!("QMP socket: {e}"))?;
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("QMP connection closed".into()),
            Ok(_) => serde_json::from_str(&line).map_err(|e| format!("QMP sent {line:?}: {e}")),
            Err(e) => Err(format!("reading QMP: {e}")),
        }
    }

    /// Runs `command` and returns its `return` value.
    pub(crate) fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, String> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        // One write: QEMU runs a command as soon as its JSON object is complete, and after
        // `quit` a separate write of the newline would meet a closed socket.
        self.writer
            .write_all(format!("{msg}\n").as_bytes())
            .map_err(|e| format!("QMP {command}: {e}"))?;
        let deadline = Instant::now() + self.reply;
        loop {
            let v = self
                .read(deadline)
                .map_err(|e| format!("QMP {command}: {e}"))?;
            if let Some(ev) = v["event"].as_str() {
                self.events.push(format!("{ev} {}", v["data"]));
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else {
                return Err(format!("QMP {command}: {v}"));
            }
        }
    }
}
