//! A child process a test drives while it runs: its output collected as it comes (so it
//! never blocks on a full pipe, and a test can wait for a line), its standard input open
//! for writing, and every wait bounded; killed if the test ends early.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A running child (see the module docs).
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Output>,
    stderr: Arc<Output>,
    drains: Vec<JoinHandle<()>>,
}

/// One output stream of a child, as collected so far.
#[derive(Default)]
pub struct Output {
    bytes: Mutex<Vec<u8>>,
    /// Signalled whenever bytes arrive, and at end of stream.
    grew: Condvar,
}

impl Output {
    /// What arrived so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes.lock().unwrap()).into_owned()
    }

    /// Waits until the output so far satisfies `check`, up to `timeout`; gives the output
    /// (as `Err` on timeout).
    pub fn wait_until(&self, timeout: Duration, check: impl Fn(&str) -> bool) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        let mut bytes = self.bytes.lock().unwrap();
        loop {
            let text = String::from_utf8_lossy(&bytes).into_owned();
            if check(&text) {
                return Ok(text);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(text);
            }
            bytes = self.grew.wait_timeout(bytes, left).unwrap().0;
        }
    }
}

/// What a finished process left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// The exit code; None if a signal ended it.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

fn drain(mut from: impl Read + Send + 'static, to: Arc<Output>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buf = [0; 8192];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            to.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
            to.grew.notify_all();
        }
        to.grew.notify_all();
    })
}

impl Proc {
    /// Starts `command` with its standard streams piped to the test.
    #[track_caller]
    pub fn spawn(mut command: Command) -> Proc {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().unwrap_or_else(|e| panic!("running {:?}: {e}", command.get_program()));
        let stdin = child.stdin.take();
        let (stdout, stderr) = (Arc::new(Output::default()), Arc::new(Output::default()));
        let drains = vec![
            drain(child.stdout.take().expect("piped"), stdout.clone()),
            drain(child.stderr.take().expect("piped"), stderr.clone()),
        ];
        Proc { child, stdin, stdout, stderr, drains }
    }

    /// Standard output as collected so far.
    pub fn stdout(&self) -> &Output {
        &self.stdout
    }

    /// Standard error as collected so far.
    pub fn stderr(&self) -> &Output {
        &self.stderr
    }

    /// Waits until standard output contains `needle` (panics after `timeout`).
    #[track_caller]
    pub fn expect_stdout(&self, needle: &str, timeout: Duration) -> String {
        self.expect_stdout_with(&format!("{needle:?}"), timeout, |text| text.contains(needle))
    }

    /// Waits until standard output satisfies `check`, `what` saying what is awaited
    /// (panics after `timeout`).
    #[track_caller]
    pub fn expect_stdout_with(&self, what: &str, timeout: Duration, check: impl Fn(&str) -> bool) -> String {
        self.stdout.wait_until(timeout, check).unwrap_or_else(|text| {
            panic!("no {what} on stdout within {timeout:?}:\n{text}\nstderr:\n{}", self.stderr.text())
        })
    }

    /// Waits until standard error contains `needle` (panics after `timeout`).
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str, timeout: Duration) -> String {
        self.stderr.wait_until(timeout, |text| text.contains(needle)).unwrap_or_else(|text| {
            panic!("no {needle:?} on stderr within {timeout:?}:\n{text}\nstdout:\n{}", self.stdout.text())
        })
    }

    /// Closes standard input (end of file for the child).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Writes `data` to standard input, which must still be open.
    pub fn write_stdin(&mut self, data: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(data).unwrap();
        stdin.flush().unwrap();
    }

    /// Whether it has not exited yet.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends it `signal` (SIGTERM, say).
    pub fn signal(&self, signal: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) takes plain integers; the child is ours and not yet reaped.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill({pid}, {signal})");
    }

    /// Closes standard input and waits for the child to exit, up to `timeout` (then kills
    /// it and fails the test).
    #[track_caller]
    pub fn finish(mut self, timeout: Duration) -> Finished {
        self.close_stdin();
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {timeout:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout.text(),
                    self.stderr.text()
                );
            }
            // No event to wait on for a child's exit short of SIGCHLD, which belongs to the
            // whole test process; 10 ms steps bound the wait without spinning.
            thread::sleep(Duration::from_millis(10));
        };
        for drain in self.drains.drain(..) {
            drain.join().unwrap();
        }
        Finished { status, stdout: self.stdout.text(), stderr: self.stderr.text() }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
