//! A guest's stdout and stderr: every line becomes a log record carrying the component and the
//! call's trace id (info for stdout, warn for stderr), instead of mixing into the host's own
//! output. Writes never fail the guest.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use trellis_lattice::trace::TraceContext;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line logged as one record; longer ones are logged in pieces.
const MAX_LINE: usize = 8192;

/// The span a store's calls run in: set again for each call a warm instance serves.
pub(crate) type CurrentTrace = Arc<std::sync::Mutex<TraceContext>>;

/// Where a guest's output goes.
#[derive(Debug, Clone)]
pub(crate) struct GuestOutput {
    component: Arc<str>,
    trace: CurrentTrace,
    stderr: bool,
}

impl GuestOutput {
    pub fn stdout(component: Arc<str>, trace: CurrentTrace) -> Self {
        Self { component, trace, stderr: false }
    }

    pub fn stderr(component: Arc<str>, trace: CurrentTrace) -> Self {
        Self { component, trace, stderr: true }
    }

    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_end_matches('\r');
        let trace = *self.trace.lock().unwrap_or_else(|p| p.into_inner());
        let (component, trace_id) = (&*self.component, trace.trace_id_hex());
        if self.stderr {
            tracing::warn!(component, trace_id, stream = "stderr", "{line}");
        } else {
            tracing::info!(component, trace_id, stream = "stdout", "{line}");
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(Lines { out: self.clone(), line: Vec::new() })
    }
}

/// Gathers bytes into lines and logs each.
struct Lines {
    out: GuestOutput,
    line: Vec<u8>,
}

impl Lines {
    fn take(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            self.line.extend_from_slice(&bytes[..end]);
            self.out.emit(&self.line);
            self.line.clear();
            bytes = &bytes[end + 1..];
        }
        self.line.extend_from_slice(bytes);
        while self.line.len() >= MAX_LINE {
            let rest = self.line.split_off(MAX_LINE);
            self.out.emit(&self.line);
            self.line = rest;
        }
    }

    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.out.emit(&self.line);
            self.line.clear();
        }
    }
}

impl AsyncWrite for Lines {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.finish();
        Poll::Ready(Ok(()))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_bounded() {
        let mut lines = Lines {
            out: GuestOutput::stdout("c".into(), Arc::new(TraceContext::root().into())),
            line: Vec::new(),
        };
        lines.take(b"one\ntw");
        assert_eq!(lines.line, b"tw");
        lines.take(b"o\n");
        assert!(lines.line.is_empty());
        lines.take(&vec![b'x'; MAX_LINE * 2 + 5]);
        assert_eq!(lines.line.len(), 5, "long lines go out in pieces");
    }
}
