//! Progress from a running program: lines it writes to the FIFO named by `VIBEHQ_PROGRESS`.
//!
//! A line is `PERCENT [MESSAGE]` (`40`, `40% cloning`, `72.5 tests`), or a JSON object
//! `{"percent": 40, "message": "cloning"}`, or any other text, taken as a message alone. Each
//! becomes a `task.progress` event (the queue's [`Queue::progress`], which also extends the
//! lease), at most one per [`EVERY`]: in between, the latest line wins, so a chatty program
//! costs the stream nothing. What the program wrote before it exited is recorded before its
//! result is.
//!
//! A FIFO rather than an inherited file descriptor, because passing a descriptor to a child
//! needs code between fork and exec, which this workspace forbids (`unsafe_code`); shells
//! write to it as to any file (`echo "40 cloning" > "$VIBEHQ_PROGRESS"`).

#[cfg(test)]
use std::path::Path;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vibehq_queue::{Actor, Claim, Queue};

/// Least time between two recorded reports of one task.
pub const EVERY: Duration = Duration::from_millis(100);

/// Longest message kept from a line (the queue refuses longer).
const MAX_MESSAGE: usize = 1024;

/// One report: how much is done and what is happening.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Report {
    #[serde(default)]
    pub percent: Option<f64>,
    #[serde(default)]
    pub message: Option<String>,
}

impl Report {
    /// Reads one line; `None` for a blank one.
    pub fn parse(line: &str) -> Option<Self> {
        let line = line.trim();
        if line.is_empty() {
            return None;
        }
        if line.starts_with('{')
            && let Ok(report) = serde_json::from_str::<Report>(line)
        {
            return Some(report.bounded());
        }
        let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let percent = first
            .trim_end_matches('%')
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p));
        let report = match percent {
            Some(percent) => Report {
                percent: Some(percent),
                message: Some(rest.trim().to_owned()).filter(|m| !m.is_empty()),
            },
            None => Report {
                percent: None,
                message: Some(line.to_owned()),
            },
        };
        Some(report.bounded())
    }

    /// Drops a percent outside 0-100 and cuts a long message (at a character boundary).
    fn bounded(mut self) -> Self {
        self.percent = self.percent.filter(|p| (0.0..=100.0).contains(p));
        if let Some(message) = &mut self.message
            && message.len() > MAX_MESSAGE
        {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        self
    }
}

/// A running task's progress FIFO and the tasks that read and record it.
#[derive(Debug)]
pub struct Progress {
    dir: tempfile::TempDir,
    done: CancellationToken,
    reader: tokio::task::JoinHandle<()>,
    recorder: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Makes the FIFO (in a private temporary folder) and starts reading it for `claim`.
    pub fn open(queue: &Queue, me: &Actor, claim: &Claim) -> std::io::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("vibehq-progress-")
            .tempdir()?;
        let path = dir.path().join("progress");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .map_err(std::io::Error::from)?;
        // Opened for reading and writing, so it never reads as ended between two writers.
        let pipe = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&path)?;
        let (latest, reports) = watch::channel(None);
        let done = CancellationToken::new();
        let reader = tokio::spawn(read(pipe, latest, done.clone()));
        let recorder = tokio::spawn(record(
            queue.clone(),
            me.clone(),
            (claim.task_id.clone(), claim.attempt),
            reports,
            done.clone(),
        ));
        Ok(Self {
            dir,
            done,
            reader,
            recorder,
        })
    }

    /// The FIFO the program writes to (`VIBEHQ_PROGRESS`).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("progress")
    }

    /// Once the program has exited: reads what it left in the FIFO, records the latest report
    /// not yet recorded, and removes the FIFO.
    pub async fn finish(self) {
        self.done.cancel();
        let _ = self.reader.await;
        // The reader's end dropped the last sender: the recorder sends what is left and ends.
        let _ = self.recorder.await;
    }
}

async fn read(
    pipe: tokio::net::unix::pipe::Receiver,
    latest: watch::Sender<Option<Report>>,
    done: CancellationToken,
) {
    let mut pending = Vec::new();
    let mut buffer = [0u8; 4096];
    let mut finishing = false;
    loop {
        if !finishing {
            tokio::select! {
                ready = pipe.readable() => if ready.is_err() { break },
                _ = done.cancelled() => finishing = true,
            }
        }
        match pipe.try_read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => {
                pending.extend_from_slice(&buffer[..read]);
                while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    take(&line, &latest);
                }
            }
            // Once the program has exited, an empty pipe means everything it wrote was read.
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                if finishing {
                    break;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "cannot read the progress FIFO");
                break;
            }
        }
    }
    // A last line without its newline.
    take(&pending, &latest);
}

fn take(line: &[u8], latest: &watch::Sender<Option<Report>>) {
    if let Some(report) = Report::parse(&String::from_utf8_lossy(line)) {
        latest.send_replace(Some(report));
    }
}

/// Records the latest report at most once per [`EVERY`] (without the pause once the program
/// has exited), until the reader is gone and its last report is recorded.
async fn record(
    queue: Queue,
    me: Actor,
    claim: (String, u32),
    mut reports: watch::Receiver<Option<Report>>,
    done: CancellationToken,
) {
    let (task_id, attempt) = claim;
    while reports.changed().await.is_ok() {
        let Some(report) = reports.borrow_and_update().clone() else {
            continue;
        };
        let sent = queue
            .progress(&task_id, Some(attempt), &me, report.percent, report.message)
            .await;
        if let Err(error) = sent {
            tracing::debug!(%error, "progress not recorded");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = done.cancelled() => {}
        }
    }
}

/// Whether `path` is a FIFO this module made (for tests).
#[cfg(test)]
fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(percent: Option<f64>, message: Option<&str>) -> Option<Report> {
        Some(Report {
            percent,
            message: message.map(str::to_owned),
        })
    }

    #[test]
    fn a_line_is_a_percent_and_a_message_or_json_or_just_a_message() {
        assert_eq!(Report::parse("40"), report(Some(40.0), None));
        assert_eq!(
            Report::parse("40% cloning"),
            report(Some(40.0), Some("cloning"))
        );
        assert_eq!(
            Report::parse(" 72.5  tests \n"),
            report(Some(72.5), Some("tests"))
        );
        assert_eq!(
            Report::parse(r#"{"percent": 10, "message": "start"}"#),
            report(Some(10.0), Some("start"))
        );
        assert_eq!(
            Report::parse("cloning the repo"),
            report(None, Some("cloning the repo"))
        );
        assert_eq!(
            Report::parse("250 too far"),
            report(None, Some("250 too far"))
        );
        assert_eq!(Report::parse(r#"{"percent": 250}"#), report(None, None));
        assert_eq!(Report::parse("   "), None);
        let long = "é".repeat(600);
        let cut = Report::parse(&long)
            .and_then(|r| r.message)
            .unwrap_or_default();
        assert!(cut.len() <= MAX_MESSAGE && long.starts_with(&cut));
    }

    #[test]
    fn the_fifo_is_a_fifo() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("p");
        nix::unistd::mkfifo(
            &path,
            nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
        )
        .expect("mkfifo");
        assert!(is_fifo(&path));
    }
}
