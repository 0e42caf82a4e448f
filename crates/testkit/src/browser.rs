//! A headless Chromium for tests that look at a page as a person would: the DOM after the
//! page's scripts have run, and a screenshot.
//!
//! [`Browser::find`] looks for `chromium`, `chromium-browser` or `google-chrome` on `PATH`.
//! When none is there it returns `None` after saying so — unless `CI=true`, where it panics
//! naming the Debian package to install (`.ci/run` installs it), so CI cannot skip silently.
//!
//! Every run gets a fresh `--user-data-dir` (removed afterwards) and a time limit. A page
//! served inside a network namespace is reached by running the browser there:
//! [`Browser::in_netns`] for the anonymous namespaces of [`ustack::sys::NetNs`] (the lab's),
//! [`Browser::in_named_netns`] for one under `/run/netns` (`ip netns exec NAME ...`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ustack::sys::NetNs;

/// The Debian package that provides the browser; named in the messages.
pub const APT_PACKAGE: &str = "chromium";

/// The names the browser goes by, tried in this order.
const PROGRAMS: [&str; 3] = ["chromium", "chromium-browser", "google-chrome"];

/// How long one browser run may take before the test says it hangs. A cold start on a
/// loaded machine takes seconds; this bounds a hang, it is not a performance assertion.
const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Where the browser runs.
#[derive(Clone)]
enum Place {
    Host,
    Anonymous(NetNs),
    Named(String),
}

/// A headless Chromium found on this machine.
#[derive(Clone)]
pub struct Browser {
    program: PathBuf,
    place: Place,
    /// Virtual time the page's scripts get before the DOM is dumped or the screenshot taken.
    budget_ms: u64,
}

impl Browser {
    /// The first of `chromium`, `chromium-browser`, `google-chrome` found on `PATH`.
    ///
    /// Without one: under `CI=true` it panics (the test fails, naming the apt package);
    /// elsewhere it prints why the test is skipped and returns `None`.
    pub fn find() -> Option<Browser> {
        match Self::locate() {
            Some(program) => Some(Browser { program, place: Place::Host, budget_ms: 3_000 }),
            None => {
                let why = format!(
                    "no headless browser found (tried {}); install it with `apt-get install --no-install-recommends {APT_PACKAGE}`",
                    PROGRAMS.join(", ")
                );
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true but {why}");
                }
                eprintln!("skipped: {why}");
                None
            }
        }
    }

    fn locate() -> Option<PathBuf> {
        let path = std::env::var_os("PATH")?;
        PROGRAMS.iter().find_map(|name| {
            std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
        })
    }

    /// The same browser, run inside the anonymous namespace `ns` (spawned from a thread
    /// that entered it, so the browser's network is the namespace's).
    pub fn in_netns(&self, ns: &NetNs) -> Browser {
        Browser { place: Place::Anonymous(ns.clone()), ..self.clone() }
    }

    /// The same browser, run inside the named namespace `name` (`ip netns exec name ...`).
    pub fn in_named_netns(&self, name: &str) -> Browser {
        Browser { place: Place::Named(name.to_string()), ..self.clone() }
    }

    /// The same browser, giving pages `ms` milliseconds of virtual time for their scripts
    /// (timers fire early; 3 s by default) before the DOM is dumped or the picture taken.
    pub fn with_script_time(&self, ms: u64) -> Browser {
        Browser { budget_ms: ms, ..self.clone() }
    }

    /// The DOM of `url` (`http://...` or `file://...`) serialised after its scripts have run.
    pub fn dump_dom(&self, url: &str) -> Result<String, String> {
        let out = self.run(&["--dump-dom".to_string(), url.to_string()])?;
        let dom = String::from_utf8(out).map_err(|_| format!("the DOM of {url} is not UTF-8"))?;
        if dom.trim().is_empty() {
            return Err(format!("the browser dumped an empty DOM for {url}"));
        }
        Ok(dom)
    }

    /// Renders `url` in a `width`×`height` window and writes a PNG of it to `path`.
    pub fn screenshot(&self, url: &str, path: &Path, (width, height): (u32, u32)) -> Result<(), String> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        }
        let _ = std::fs::remove_file(path);
        self.run(&[
            "--hide-scrollbars".to_string(),
            format!("--window-size={width},{height}"),
            format!("--screenshot={}", path.display()),
            url.to_string(),
        ])?;
        match std::fs::metadata(path) {
            Ok(meta) if meta.len() > 0 => Ok(()),
            _ => Err(format!("the browser wrote no screenshot of {url} to {}", path.display())),
        }
    }

    /// Runs the browser once with `args` after the common ones; its stdout.
    fn run(&self, args: &[String]) -> Result<Vec<u8>, String> {
        let profile = TempDir::new()?;
        let mut command = match &self.place {
            Place::Named(ns) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", ns]).arg(&self.program);
                ip
            }
            Place::Host | Place::Anonymous(_) => Command::new(&self.program),
        };
        command
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
            .args(["--disable-background-networking", "--disable-sync", "--no-default-browser-check"])
            // Containers often give /dev/shm 64 MiB, too little for a renderer: use /tmp.
            .arg("--disable-dev-shm-usage")
            // Runs the page's timers and scripts before the dump or screenshot.
            .arg(format!("--virtual-time-budget={}", self.budget_ms))
            .arg("--run-all-compositor-stages-before-draw")
            .arg(format!("--user-data-dir={}", profile.0.display()))
            .args(args);
        let what = format!("{} {}", self.program.display(), args.join(" "));
        let output = match &self.place {
            Place::Anonymous(ns) => ns
                .run(|| crate::output_within(&mut command, RUN_LIMIT, &what))
                .map_err(|e| format!("entering the namespace to run the browser: {e}"))?,
            _ => crate::output_within(&mut command, RUN_LIMIT, &what),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            // Chromium's stderr is mostly D-Bus noise; the last lines say what went wrong.
            let tail: Vec<&str> = stderr.lines().rev().take(8).collect();
            return Err(format!(
                "{what} failed ({}): {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        Ok(output.stdout)
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// The browser's profile directory for one run, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ustack-browser-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `file://` URL for a local file (made absolute).
pub fn file_url(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    format!("file://{}", absolute.display())
}

/// Where tests keep what a person may want to look at afterwards (screenshots):
/// `target/test-artifacts/` of the workspace (or `$CARGO_TARGET_DIR/test-artifacts/`).
pub fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("test-artifacts")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page whose script changes the text: the dumped DOM is the one after the script ran.
    #[test]
    fn dumps_the_dom_after_scripts_ran_and_takes_a_screenshot() {
        let Some(browser) = Browser::find() else { return };
        let dir = TempDir::new().expect("a temporary directory");
        let page = dir.0.join("page.html");
        std::fs::write(
            &page,
            "<html><body><p id=say>before</p><script>\
             setTimeout(() => document.getElementById('say').textContent = 'after', 500);\
             </script></body></html>",
        )
        .expect("write the page");
        let dom = browser.dump_dom(&file_url(&page)).expect("dump the DOM");
        assert!(dom.contains(">after<"), "the script's change is not in the DOM:\n{dom}");
        let shot = dir.0.join("page.png");
        browser.screenshot(&file_url(&page), &shot, (320, 200)).expect("a screenshot");
        let png = std::fs::read(&shot).expect("read the screenshot");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG");
    }

    /// A page served on the loopback of a fresh namespace is out of the host's reach: the
    /// browser sees it only when it runs inside that namespace.
    #[test]
    fn reaches_a_page_served_inside_a_network_namespace() {
        use std::io::{Read, Write};
        ustack::require_tun!();
        let Some(browser) = Browser::find() else { return };
        let ns = NetNs::new().expect("a network namespace");
        let listener = ns.run(|| std::net::TcpListener::bind("127.0.0.1:0")).expect("enter").expect("bind");
        let port = listener.local_addr().expect("its address").port();
        let server = std::thread::spawn(move || {
            // One page per connection, until the test says stop.
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { break };
                let mut request = [0u8; 2048];
                let read = stream.read(&mut request).unwrap_or(0);
                if request[..read].starts_with(b"STOP") {
                    break;
                }
                let body = "<html><body><h1 id=where>inside the namespace</h1></body></html>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let dom = browser.in_netns(&ns).dump_dom(&format!("http://127.0.0.1:{port}/")).expect("dump the DOM");
        assert!(dom.contains("inside the namespace"), "the namespace's page is not in the DOM:\n{dom}");
        ns.run(|| std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut stop| stop.write_all(b"STOP")))
            .expect("enter")
            .expect("stop the server");
        server.join().expect("the server thread");
    }
}
