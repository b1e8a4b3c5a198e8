//! drctl: disaster-recovery runbooks for PostgreSQL on AWS, as idempotent, preflight-checked steps.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod catalog;
pub mod cli;
pub mod clients;
pub mod config;
pub mod ctx;
pub mod dburl;
pub mod engine;
pub mod error;
pub mod journal;
pub mod notify;
pub mod output;
pub mod runbooks;
pub mod store;
pub mod wal;

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::CommandFactory;
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command};
use config::{Config, Discovery};
use error::{Error, exit};
use output::Output;
use runbooks::Done;

/// A command line clap refused. For wal-fetch that is exit 126, not clap's 2: PostgreSQL reads
/// 1-125 from restore_command as "not archived" and would end recovery early. Everything else
/// is clap's own handling (help and version to stdout and exit 0, errors exit 2).
pub fn parse_failed(e: clap::Error) -> u8 {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        e.exit()
    }
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let Some(name) = runbooks::wal::fetch_command_line(&args) else { e.exit() };
    let rendered = e.render().to_string();
    // clap's first paragraph, on one line ("the following required arguments were not provided: <DEST>").
    let first: Vec<&str> = rendered.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
    let first = first.join(" ").trim_start_matches("error: ").to_string();
    let usage = rendered.lines().find(|l| l.starts_with("Usage:")).map(str::trim).unwrap_or("Usage: drctl wal-fetch");
    output::error_line(&Error::Wal {
        command: "wal-fetch",
        name,
        cause: Box::new(Error::usage(format!("the command line does not parse: {first}"))),
        hint: Some(format!(
            "restore_command = '/usr/bin/drctl -c /etc/drctl/drctl.toml wal-fetch --env ENV %f %p' ({usage})"
        )),
    });
    exit::WAL_FETCH_FAILED
}

/// Run one command line; returns the process exit code. Errors are rendered here, once.
pub fn run(cli: Cli) -> u8 {
    let out = Output::new(&cli.global);
    match &cli.command {
        Command::Completions { shell } => {
            out.bytes(&completions(*shell));
            return exit::OK;
        }
        Command::Man => {
            out.bytes(&man_page());
            return exit::OK;
        }
        // PostgreSQL's archive_command / restore_command: their own config discovery, start-up and
        // exit codes (wal-fetch's 126), so they never go through the runbook path below.
        Command::WalPush(a) => return runbooks::wal::push_main(&cli.global, a, &out),
        Command::WalFetch(a) => return runbooks::wal::fetch_main(&cli.global, a, &out),
        _ => {}
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&Error::io("tokio runtime", e));
            return exit::STEP_FAILED;
        }
    };
    rt.block_on(run_async(cli, out))
}

async fn run_async(cli: Cli, out: Output) -> u8 {
    let started = Instant::now();
    // Config errors are exit 2 with no JSON document and no store access.
    let config =
        match config::discover(cli.global.config.as_deref(), Discovery::Interactive).and_then(|p| Config::load(&p)) {
            Ok(c) => c,
            Err(e) => {
                out.error(&e);
                return e.exit_code();
            }
        };
    for w in &config.warnings {
        out.warn(w);
    }
    let aws = clients::aws::Aws::new(config.aws.clone());
    let store: Arc<dyn store::Store> = match store::open_with(&config.store_url, &aws, config.store_sse.clone()).await {
        Ok(s) => Arc::from(s),
        Err(e) => {
            out.error(&e);
            return e.exit_code();
        }
    };
    let run_id = ctx::new_run_id();
    out.set_run_id(&run_id);
    let cancel = CancellationToken::new();
    let signal = Arc::new(AtomicI32::new(0));
    watch_signals(cancel.clone(), signal.clone());
    let journal = Arc::new(journal::Journal::new(store.clone(), &run_id));
    let run = engine::runctx::RunCtx::default();
    let cx = ctx::Ctx { config, global: cli.global.clone(), aws, store, journal, run_id, run, out, cancel, signal };

    let done = runbooks::dispatch(&cx, &cli.command).await;
    // Decided before `render` consumes the outcome; posted after the report is out.
    let note = notify::message(&cli.command, &cx.run_id, &done, cx.global.dry_run);
    let (code, metrics) = render(&cx, done);
    if let (Some(url), Some(text)) = (&cx.config.notify_webhook, &note) {
        // The exit code is the run's, whatever the webhook does; the URL is never printed.
        match notify::post(url, text, notify::TIMEOUT).await {
            Ok(()) => cx.out.info("notify: posted the run's message to the [notify] webhook"),
            Err(why) => cx.out.warn(&format!(
                "notify: could not post to the [notify] webhook: {why}; the run's outcome is unchanged"
            )),
        }
    }
    for note in cx.journal.notes().await {
        cx.out.info(&note);
    }
    if cx.global.verbose > 0 {
        cx.out.info(&format!("store requests: {}", store::requests::summary()));
    }
    // A dry run changed nothing: it must not look like a successful run to the alerting.
    let metrics_file = cx.global.metrics_file.as_ref().filter(|_| !cx.global.dry_run);
    if let (Some(path), Some((runbook, env, bytes, extra))) = (metrics_file, metrics) {
        let m = output::metrics::RunMetrics {
            runbook: &runbook,
            env: &env,
            success: code == exit::OK,
            finished_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            duration_s: started.elapsed().as_secs_f64(),
            bytes,
            extra,
        };
        if let Err(e) = output::metrics::update(path, &m) {
            cx.out.warn(&format!("could not update the metrics file: {e}"));
        }
    }
    code
}

/// Print the report (table or JSON) and the error; the exit code, and what metrics need.
fn render(cx: &ctx::Ctx, done: Done) -> (u8, Option<runbooks::MetricsOf>) {
    match done {
        Done::Run(mut o) => {
            // Which store the run used, resolved (a relative file:// is beside drctl.toml): the header
            // of every report, so a run against a second, unintended store is seen at once.
            o.report.extra.insert("store".into(), cx.store.url().into());
            // `-q`: a successful run prints nothing at all, so cron mails only failures.
            let silent = cx.out.quiet() && o.error.is_none();
            if silent {
                // Nothing on stdout; stderr carries only errors under -q anyway.
            } else if cx.out.json_mode() {
                cx.out.json(&serde_json::to_value(&o.report).unwrap_or_default());
            } else {
                cx.out.text(&output::table::run_report(&o.report));
            }
            let bytes = o.report.extra.get("bytes").and_then(|v| v.as_u64());
            let m = (o.report.runbook.clone(), o.report.env.clone().unwrap_or_default(), bytes, Vec::new());
            match o.error {
                Some(e) => {
                    cx.out.error_hinted(&e, runbooks::rerun_hint(&o.report.runbook, &e).or_else(|| e.hint()));
                    (e.exit_code(), Some(m))
                }
                None => (exit::OK, Some(m)),
            }
        }
        Done::Doc { json, text, error, metrics } => {
            match (&error, cx.out.json_mode()) {
                // Errors before a document could be made (exit 2) leave stdout empty.
                (Some(e), _) if e.exit_code() == exit::USAGE && json.is_null() => {}
                (None, _) if cx.out.quiet() => {}
                (_, true) => cx.out.json(&json),
                (_, false) if !text.is_empty() => cx.out.text(&text),
                _ => {}
            }
            match error {
                Some(e) => {
                    cx.out.error(&e);
                    (e.exit_code(), metrics)
                }
                None => (exit::OK, metrics),
            }
        }
    }
}

fn watch_signals(cancel: CancellationToken, signal: Arc<AtomicI32>) {
    use tokio::signal::unix::{SignalKind, signal as listen};
    for (kind, num) in [(SignalKind::interrupt(), libc::SIGINT), (SignalKind::terminate(), libc::SIGTERM)] {
        let (cancel, signal) = (cancel.clone(), signal.clone());
        if let Ok(mut s) = listen(kind) {
            tokio::spawn(async move {
                if s.recv().await.is_some() {
                    let _ = signal.compare_exchange(0, num, Ordering::SeqCst, Ordering::SeqCst);
                    cancel.cancel();
                }
            });
        }
    }
}

pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "drctl", &mut buf);
    buf
}

pub fn man_page() -> Vec<u8> {
    let mut buf = Vec::new();
    let cmd = Cli::command();
    let man = clap_mangen::Man::new(cmd.clone());
    let _ = man.render_title(&mut buf);
    let _ = man.render_name_section(&mut buf);
    let _ = man.render_synopsis_section(&mut buf);
    let _ = man.render_description_section(&mut buf);
    let _ = man.render_options_section(&mut buf);
    // One page for the whole tool: the command list names the sections below, not drctl-CMD(1)
    // pages (clap_mangen's SUBCOMMANDS section would, and none is shipped).
    let subs: Vec<&clap::Command> = cmd.get_subcommands().filter(|s| s.get_name() != "help").collect();
    buf.extend_from_slice(b".SH COMMANDS\n");
    for sub in &subs {
        let about = sub.get_about().map(|a| roff_text(&a.to_string())).unwrap_or_default();
        buf.extend_from_slice(format!(".TP\n\\fBdrctl {}\\fR\n{about}\n", roff_text(sub.get_name())).as_bytes());
    }
    for sub in &subs {
        let mut sub_buf = Vec::new();
        let man = clap_mangen::Man::new((*sub).clone().name(format!("drctl {}", sub.get_name())));
        let _ = man.render_synopsis_section(&mut sub_buf);
        let _ = man.render_description_section(&mut sub_buf);
        let _ = man.render_options_section(&mut sub_buf);
        let text = String::from_utf8_lossy(&sub_buf)
            .replace(".SH SYNOPSIS", &format!(".SH \"DRCTL {}\"", sub.get_name().to_uppercase()))
            .replace(".SH DESCRIPTION\n", "")
            .replace(".SH OPTIONS", ".SS Options");
        buf.extend_from_slice(text.as_bytes());
    }
    buf.extend_from_slice(MAN_REFERENCE.as_bytes());
    let _ = man.render_version_section(&mut buf);
    buf
}

/// Plain text as roff: backslashes and hyphens escaped.
fn roff_text(s: &str) -> String {
    s.replace('\\', "\\e").replace('-', "\\-")
}

/// The man page's reference sections; the whole reference is docs/reference.md.
const MAN_REFERENCE: &str = r#".SH "EXIT STATUS"
.TP
0
success, already done, or a dry run whose preflight passed
.TP
1
a step failed after preflight passed; a rerun resumes
.TP
2
usage or configuration error
.TP
3
a preflight check failed, nothing was changed (status: an RPO breach or a live env unhealthy; status --audit: an item failed)
.TP
4
integrity failure: a broken chain link, a checksum mismatch, a missing object
.TP
5
another run holds the lock, or this run's lock was taken over
.TP
6
outcome unknown: a change was sent (a Route 53 batch, a promotion) and not seen to take within policy.dns_timeout or policy.promote_timeout; rerun the same command, it waits on what was sent and never sends it again
.TP
126
wal\-fetch only: the file was not restored for any reason but "not archived" (exit 1), so PostgreSQL stops recovery instead of ending it early
.TP
130, 143
interrupted by SIGINT, SIGTERM
.SH FILES
.TP
\fI./drctl.toml\fR, \fI$XDG_CONFIG_HOME/drctl/drctl.toml\fR, \fI/etc/drctl/drctl.toml\fR
The config file: the first that exists, unless \fB\-\-config\fR or \fB$DRCTL_CONFIG\fR names one.
Sections: [store], [aws], [policy], [retention], [environments.NAME], [environments.NAME.chains.TABLE],
[dns], [notify]. Unknown keys are an error; ${NAME} in a string is replaced by the environment variable NAME.
[notify] webhook_url is a Slack\-compatible incoming webhook (a secret, never printed: write it as ${NAME}):
after an executed failover or rollback, and after any failed run (verify\-chain's included), drctl POSTs
one line, {"text": "..."}; nothing under \-\-dry\-run or for an already_done rerun. A failed POST is a
warning and never changes the exit code.
.TP
\fISTORE\fR/journal/\fISEQ\fR.json
The hash\-chained journal, one entry an object (SEQ is 20 zero\-padded digits).
.TP
\fISTORE\fR/locks/\fITARGET\fR.json
One lock per target (env:NAME, dns), never deleted.
.TP
\fISTORE\fR/backups/\fIENV\fR/\fIID\fR/\fIDB\fR.dump.zst.000, manifest.json
A logical backup (pg_dump \-Fc \-Z0 through zstd; .001, ... past 64 GiB) and its manifest.
.TP
\fISTORE\fR/wal/\fIENV\fR/\fISYSID\fR/\fITLI\fR/\fINAME\fR.zst[.age], index/\fILOGID\fR.json
An archived WAL file (zstd, then age with age_recipients; its sha256 in the object's metadata) and the
timeline's index; wal/\fIENV\fR/system.json records the env's cluster.
.SH ENVIRONMENT
.TP
\fBDRCTL_CONFIG\fR
The config file, when \fB\-\-config\fR is not given.
.TP
\fBDRCTL_ENV\fR
The env, when \fB\-\-env\fR is not given.
.TP
\fBAWS_REGION\fR, \fBAWS_PROFILE\fR, \fBAWS_ENDPOINT_URL\fR, ...
The standard AWS configuration chain.
.SH "SEE ALSO"
\fBpg_dump\fR(1), \fBpg_restore\fR(1), \fBpsql\fR(1), \fBcreatedb\fR(1), \fBzstd\fR(1), \fBaws\fR(1)
.PP
The full reference (every config key with its default, JSON fields, locks, the store's layout) is
docs/reference.md in drctl's source tree; README.md has a quickstart.
"#;
