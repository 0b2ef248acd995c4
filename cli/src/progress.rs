//! Progress for people: a spinner on stderr while something takes a while, when stderr is a
//! terminal and the output is text. Nothing of it reaches scripts, `--output json` or logs.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::args::{Global, Output};

/// A spinner, or nothing when nobody watches.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// Starts a spinner saying `message`.
    pub fn start(g: &Global, message: impl Into<Cow<'static, str>>) -> Self {
        if g.output != Output::Text || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
            bar.set_style(style);
        }
        // Shown at once, however short the wait.
        bar.tick();
        bar.enable_steady_tick(Duration::from_millis(100));
        Self(Some(bar))
    }

    /// Says `message` instead.
    pub fn say(&self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.0 {
            bar.set_message(message);
        }
    }

    /// Stops, leaving `message` on the terminal.
    pub fn done(self, message: impl Into<Cow<'static, str>>) {
        if let Some(bar) = &self.0 {
            bar.finish_with_message(message);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.0
            && !bar.is_finished()
        {
            bar.finish_and_clear();
        }
    }
}
