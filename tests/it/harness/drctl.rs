//! A builder that runs the real `drctl` binary the way cron or an operator would, in a hermetic
//! environment: fake AWS credentials, no inherited DRCTL_*, PG* or AWS profile settings, and a
//! working directory of the test's choosing (a fresh one by default, so `./drctl.toml` and the
//! default `file://./.drctl` store never touch the repository).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A run that takes longer than this is a hang: it is killed and the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Drctl {
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    stdin: Option<Vec<u8>>,
    cwd: Option<PathBuf>,
}

#[derive(Debug)]
pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Drctl {
    pub fn new() -> Drctl {
        Drctl { args: Vec::new(), envs: Vec::new(), stdin: None, cwd: None }
    }

    /// `--config PATH`, placed before the command's own arguments.
    pub fn config(mut self, path: impl AsRef<Path>) -> Drctl {
        self.args.push("--config".into());
        self.args.push(path.as_ref().into());
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Drctl {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Drctl
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Drctl {
        self.envs.push((key.into(), Some(value.into())));
        self
    }

    pub fn env_remove(mut self, key: impl Into<OsString>) -> Drctl {
        self.envs.push((key.into(), None));
        self
    }

    /// Bytes on stdin (a pipe, so never a TTY); without this, stdin is empty.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Drctl {
        self.stdin = Some(bytes.into());
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Drctl {
        self.cwd = Some(dir.as_ref().to_path_buf());
        self
    }

    fn command(&self, default_cwd: &Path) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_drctl"));
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if k.starts_with("DRCTL_") || k.starts_with("PG") || k.starts_with("AWS_") {
                cmd.env_remove(&key);
            }
        }
        let cwd = self.cwd.as_deref().unwrap_or(default_cwd);
        cmd.env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            // No profile files and no instance metadata: nothing outside the test may answer.
            .env("AWS_CONFIG_FILE", cwd.join(".no-aws-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", cwd.join(".no-aws-credentials"))
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("XDG_CONFIG_HOME", cwd.join(".no-xdg-config"))
            .current_dir(cwd)
            .args(&self.args);
        for (k, v) in &self.envs {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        cmd
    }

    /// Run to completion, feeding stdin and collecting stdout and stderr concurrently.
    pub fn run(self) -> RunResult {
        let scratch = tempfile::Builder::new().prefix("drctl-it-cwd-").tempdir().expect("temp cwd");
        let mut child = self
            .command(scratch.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn drctl");
        let mut stdin = child.stdin.take().expect("stdin");
        let input = self.stdin.unwrap_or_default();
        // drctl may exit without reading its input: a broken pipe here is not a failure.
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = reader(child.stdout.take().expect("stdout"));
        let err = reader(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for drctl") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
                panic!("drctl {:?} ran longer than {RUN_TIMEOUT:?}\nstdout:\n{stdout}\nstderr:\n{stderr}", self.args);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let _ = feeder.join();
        let code = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        RunResult { code, stdout: out.join().unwrap(), stderr: err.join().unwrap() }
    }

    /// Start drctl and return at once (stdin null, stdout and stderr piped), for tests that
    /// signal or kill it mid-run. The caller waits for it.
    pub fn spawn(self) -> Child {
        // The default cwd must outlive the child: keep it for the rest of the process.
        let cwd = self
            .cwd
            .clone()
            .unwrap_or_else(|| tempfile::Builder::new().prefix("drctl-it-cwd-").tempdir().expect("temp cwd").keep());
        self.command(&cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn drctl")
    }
}

fn reader(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl RunResult {
    /// Panics, showing both streams, unless drctl exited with `code`.
    pub fn expect_code(self, code: i32) -> RunResult {
        assert_eq!(self.code, code, "drctl exited {} (wanted {code})\n{}", self.code, self.dump());
        self
    }

    /// Panics if `secret` appears on stdout or stderr.
    pub fn assert_no_secret(&self, secret: &str) -> &RunResult {
        assert!(!secret.is_empty(), "assert_no_secret with an empty secret checks nothing");
        for (name, text) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            assert!(!text.contains(secret), "the secret appears on {name}\n{}", self.dump());
        }
        self
    }

    /// stdout as JSON (for `--output json`); panics showing both streams if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e})\n{}", self.dump()))
    }

    /// The preflight check `id` of the run's JSON report; panics naming it when it is not there.
    pub fn check(&self, id: &str) -> serde_json::Value {
        let doc = self.json();
        doc["preflight"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["check"] == id))
            .unwrap_or_else(|| panic!("no check {id} in {doc}"))
            .clone()
    }

    fn dump(&self) -> String {
        format!("--- stdout ---\n{}\n--- stderr ---\n{}", self.stdout, self.stderr)
    }
}
