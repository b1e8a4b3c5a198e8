//! What the README, `--help` and the man page tell a user works as written: the quickstart's
//! commands run literally (only the port, the password and `<id>` substituted), the man page names
//! only pages that exist, and nothing points at files a user does not have.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::TestDir;
use crate::harness::drctl::Drctl;
use crate::harness::pg::Cluster;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).expect("README.md")
}

/// The fenced blocks of `lang` after the heading line `heading`, up to the next `## ` heading.
fn blocks_under(text: &str, heading: &str, lang: &str) -> Vec<String> {
    let start = text.find(heading).unwrap_or_else(|| panic!("README has no `{heading}`"));
    let section = &text[start + heading.len()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut out = Vec::new();
    let mut rest = section;
    let fence = format!("```{lang}\n");
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let end = body.find("```").expect("a closed fence");
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

/// The command of each line of a shell block, without its trailing comment.
fn commands(block: &str) -> Vec<String> {
    block.lines().map(|l| l.split(" # ").next().unwrap().trim().to_string()).filter(|l| !l.is_empty()).collect()
}

/// Run `line` with bash as an operator's interactive shell would (no pipefail) in `cwd`, with only
/// the PG* variables given; the cluster's own client tools come first on PATH.
fn shell(line: &str, cwd: &Path, pg: &Cluster, password: &str) {
    let mut cmd = Command::new("bash");
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(key);
        }
    }
    let path = format!("{}:{}", pg.bin_dir().display(), std::env::var("PATH").unwrap_or_default());
    let out = cmd
        .arg("-c")
        .arg(line)
        .current_dir(cwd)
        .env("PATH", path)
        .env("PGPASSWORD", password)
        .env("PGPORT", pg.port.to_string())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "`{line}` failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn counts(pg: &Cluster, db: &str) -> String {
    pg.psql(db, "SELECT (SELECT count(*) FROM customers) || ',' || (SELECT count(*) FROM orders)")
}

/// A cluster of its own with the role and database `app` (the names README and --help use), owning
/// `customers` and `orders` with these row counts; and that role's password.
fn app_cluster(customers: u32, orders: u32) -> (Cluster, String) {
    let pg = Cluster::start_new();
    let password = crate::harness::random_hex(12);
    pg.psql("postgres", &format!("CREATE ROLE app LOGIN CREATEDB PASSWORD '{password}'"));
    pg.psql("postgres", "CREATE DATABASE app OWNER app");
    pg.psql(
        "app",
        &format!(
            "SET ROLE app;
             CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
             CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int REFERENCES customers(id), total numeric);
             INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, {customers}) g;
             INSERT INTO orders (customer_id, total) SELECT 1 + g % {customers}, g * 1.5 FROM generate_series(1, {orders}) g;"
        ),
    );
    (pg, password)
}

#[test]
fn the_quickstart_backs_up_and_restores_as_written() {
    let (pg, password) = app_cluster(120, 5000);
    let text = readme();
    let heading = "## Quickstart";
    let toml = blocks_under(&text, heading, "toml");
    let sh = blocks_under(&text, heading, "sh");
    assert_eq!(toml.len(), 1, "the quickstart has one drctl.toml");
    assert!(toml[0].contains("127.0.0.1:5432"), "{}", toml[0]);
    let dir = TestDir::new();
    dir.write_config(&toml[0].replace("127.0.0.1:5432", &format!("127.0.0.1:{}", pg.port)));

    // The drctl commands, in order, from the quickstart's directory.
    let drctl_lines: Vec<String> = commands(&sh[0]).into_iter().filter(|l| !l.starts_with("export ")).collect();
    assert!(drctl_lines.iter().any(|l| l == "drctl backup"), "{drctl_lines:?}");
    for line in &drctl_lines {
        let args: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(args[0], "drctl", "{line}");
        let r = Drctl::new().cwd(dir.path()).args(&args[1..]).env("PGPASSWORD", &password).run();
        assert_eq!(r.code, 0, "`{line}`:\n{}\n{}", r.stdout, r.stderr);
        r.assert_no_secret(&password);
    }
    let list = Drctl::new().cwd(dir.path()).args(["backup", "list", "-o", "json"]).env("PGPASSWORD", &password).run();
    let id = list.expect_code(0).json()["backups"][0]["id"].as_str().expect("a backup id").to_string();

    // The hand restore: every line of the blocks that restore, literally, `<id>` filled in.
    let restore: Vec<String> = sh[1..].iter().flat_map(|b| commands(b)).collect();
    let (create_c, into_new): (Vec<&String>, Vec<&String>) = restore.iter().partition(|l| l.contains("pg_restore -C"));
    assert!(into_new.iter().any(|l| l.starts_with("createdb")), "{restore:?}");
    assert_eq!(create_c.len(), 1, "{restore:?}");
    for line in &into_new {
        shell(&line.replace("<id>", &id), dir.path(), &pg, &password);
    }
    assert_eq!(counts(&pg, "app_restored"), counts(&pg, "app"));
    assert_eq!(counts(&pg, "app"), "120,5000");

    // `pg_restore -C` recreates the database under its own name on a server that lost it.
    pg.psql("postgres", "DROP DATABASE app WITH (FORCE)");
    shell(&create_c[0].replace("<id>", &id), dir.path(), &pg, &password);
    assert_eq!(counts(&pg, "app"), "120,5000");
    assert_eq!(pg.psql("postgres", "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'app'"), "app");
}

#[test]
fn the_restore_in_backup_help_works_as_written() {
    let (pg, password) = app_cluster(7, 300);
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[environments.dev]\ndatabase_url = \"postgres://app:${{PGPASSWORD}}@127.0.0.1:{}/app\"\n",
        pg.port
    ));
    let run =
        |args: &[&str]| Drctl::new().config(&config).cwd(dir.path()).args(args).env("PGPASSWORD", &password).run();
    run(&["backup"]).expect_code(0);
    let id = run(&["backup", "list", "-o", "json"]).expect_code(0).json()["backups"][0]["id"]
        .as_str()
        .expect("a backup id")
        .to_string();

    let help = run(&["backup", "--help"]).expect_code(0).stdout;
    let lines: Vec<String> = help
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| l.starts_with("createdb ") || l.contains("| pg_restore "))
        // The encrypted backup's line is run as written by tests/it/age.rs.
        .filter(|l| !l.contains("| age -d "))
        .collect();
    assert_eq!(lines.len(), 2, "the restore commands in `backup --help`:\n{help}");
    let backup_dir: PathBuf = dir.path().join(".drctl/backups/dev").join(&id);
    for line in &lines {
        let line = line.replace("NEWDB", "help_restored").replace("DB.dump", "app.dump");
        let line = line.replace("HOST", "127.0.0.1").replace("USER", "app");
        shell(&line, &backup_dir, &pg, &password);
    }
    assert_eq!(counts(&pg, "help_restored"), "7,300");
}

#[test]
fn the_man_page_names_only_pages_that_exist() {
    let man = std::fs::read_to_string(root().join("man/drctl.1")).expect("man/drctl.1");
    // Every drctl page it refers to, as `drctl\-NAME(N)` or `\fBdrctl\-NAME\fR(N)`, is shipped in man/.
    let plain = man.replace("\\fB", "").replace("\\fR", "").replace("\\-", "-");
    let mut refs = Vec::new();
    for (i, _) in plain.match_indices("drctl") {
        let word: String =
            plain[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_').collect();
        if let Some(section) = plain[i + word.len()..].strip_prefix('(').and_then(|r| r.chars().next())
            && section.is_ascii_digit()
        {
            refs.push(format!("{word}.{section}"));
        }
    }
    for page in &refs {
        assert!(root().join("man").join(page).is_file(), "man/drctl.1 refers to {page}, which man/ does not have");
    }
    assert!(man.contains(".SH \"SEE ALSO\""), "a SEE ALSO section");
    assert!(man.contains("docs/reference.md"), "the man page points at the full reference");
}

#[test]
fn nothing_points_at_files_outside_the_repository() {
    let mut files = vec![root().join("README.md")];
    for dir in ["docs", "man", "runbooks", "completions", "src", "scripts"] {
        walk(&root().join(dir), &mut files);
    }
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        assert!(!text.contains("../shared/"), "{} points at ../shared/, which users do not have", f.display());
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        if p.is_dir() { walk(&p, out) } else { out.push(p) }
    }
}

/// Every drctl command line the README and the runbooks show parses with the real CLI definition
/// (`drctl::cli::Cli`), so a renamed flag or command cannot leave the docs behind.
///
/// What counts as a command line, in `README.md` and `runbooks/*.md`:
/// - in a fenced code block (any info string: `sh`, `console`, none, …), a line that starts with
///   `drctl ` after its indentation, optionally after a `$ ` prompt and/or `sudo `; a line ending in
///   `\` continues on the next one;
/// - in prose (tables included), an inline code span whose text starts with `drctl ` (a span may
///   run over a line break, never over a blank line; `\|` in it is a table's escaped `|`).
///
/// Each is cut at its first unquoted `#` word (a comment) and at its first unquoted `|`, `&`, `;`,
/// `<` or `>` (`| jq`, `&& …`, `> file`, `2>&1`), then split into words as a shell would (single and
/// double quotes, backslash escapes). Synopsis brackets are dropped so every optional part is
/// checked too (`drctl check [--env ENV]` is checked as `drctl check --env ENV`). Placeholders in
/// CAPS stay as they are (ENV, RUN_ID, CHECK_ID, TABLE, URL, … are valid strings), except those
/// clap validates, which get a valid value: SHELL, N, DURATION.
///
/// An inline span that only names a command, with no option at all (`drctl sync` of 671 MB), may
/// leave out its required arguments; the command's name is still checked.
///
/// An angle-bracket placeholder that is the value of the option before it (`--run <run-id>`)
/// stands for a valid value. Skipped: a line whose command is itself a placeholder, i.e. such a
/// word (or `…`, `...`) anywhere else (`drctl <command> --help`). The cron and systemd files are
/// not read (their commands are full paths, not `drctl `).
#[test]
fn every_drctl_line_in_the_docs_parses() {
    let mut files = vec![root().join("README.md")];
    let mut runbooks: Vec<PathBuf> = std::fs::read_dir(root().join("runbooks"))
        .expect("runbooks/")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    runbooks.sort();
    files.extend(runbooks);
    let mut failures = Vec::new();
    let mut total = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        let name = f.strip_prefix(root()).unwrap_or(f).display().to_string();
        let found = drctl_commands(&name, &text);
        assert!(!found.is_empty(), "{name} shows no drctl command line: is the extractor blind?");
        total += found.len();
        failures.extend(found.iter().filter_map(parse_failure));
    }
    assert!(
        failures.is_empty(),
        "{} drctl lines in the docs do not parse:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    assert!(total >= 50, "only {total} drctl command lines found in {} files", files.len());
}

/// The checker sees drift where it hides: a misspelt flag in a fenced block, a missing value in a
/// table's inline span, a misspelt command named in prose; and it passes what is valid (a span over
/// a line break, a continued line, pipes, redirections, comments, synopses, placeholders).
#[test]
fn the_docs_checker_catches_a_drifted_line() {
    let doc = "# Failover\n\
               \n\
               Look first with `drctl status`, then `drctl failover --to staging\n\
               --dry-run`.\n\
               \n\
               ```sh\n\
               $ drctl failover --to staging --yes -o json | jq .readiness   # off a TTY\n\
               drctl failover --too staging\n\
               sudo drctl rollback --run RUN_ID \\\n\
               \x20     --accept writes-since-cutover > rollback.json\n\
               drctl <command> --help\n\
               drctl rollback --run <run-id> --dry-run\n\
               drctl log --since 24h --limit N && rm -f rollback.json\n\
               ```\n\
               \n\
               | command | what |\n\
               | --- | --- |\n\
               | `drctl verify-chain --table` | no value, and no --env |\n\
               | `drctl check [--env ENV]`, `drctl completions SHELL` | synopses |\n\
               \n\
               Not a command: `drctl`, `drctl_last_success_timestamp_seconds`, ``a `drctl x` quoted``.\n\
               Naming a command is fine (`drctl sync` of 671 MB); a wrong name is not: `drctl fail-over`.\n";
    let found = drctl_commands("doc.md", doc);
    let lines: Vec<usize> = found.iter().map(|c| c.line).collect();
    assert_eq!(lines, [3, 3, 7, 8, 9, 11, 12, 13, 18, 19, 19, 22, 22], "{found:#?}");
    let failures: Vec<String> = found.iter().filter_map(parse_failure).collect();
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert!(failures[0].starts_with("doc.md:8: `drctl failover --too staging`"), "{}", failures[0]);
    assert!(failures[0].contains("--too"), "clap's error names the flag: {}", failures[0]);
    assert!(failures[1].starts_with("doc.md:18: `drctl verify-chain --table`"), "{}", failures[1]);
    assert!(failures[2].starts_with("doc.md:22: `drctl fail-over`"), "{}", failures[2]);
}

/// A drctl command line found in a document: the line it starts on and its text as written.
#[derive(Debug)]
struct DocCommand {
    file: String,
    line: usize,
    text: String,
    /// Found in an inline code span (prose), not a code block.
    inline: bool,
}

/// The drctl command lines of a Markdown document (the rules: [`every_drctl_line_in_the_docs_parses`]).
fn drctl_commands(file: &str, text: &str) -> Vec<DocCommand> {
    let mut out = Vec::new();
    // Prose with every fenced line blanked, so spans keep their line numbers and never cross a fence.
    let mut prose = String::new();
    let mut fence: Option<(char, usize)> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let run = |c: char| line.chars().take_while(|&x| x == c).count();
        match fence {
            None => {
                if let Some(c) = ['`', '~'].into_iter().find(|&c| run(c) >= 3) {
                    fence = Some((c, run(c)));
                    prose.push('\n');
                } else {
                    prose.push_str(raw);
                    prose.push('\n');
                }
                continue;
            }
            Some((c, n)) if run(c) >= n && line[run(c)..].trim().is_empty() => {
                fence = None;
                prose.push('\n');
                continue;
            }
            Some(_) => prose.push('\n'),
        }
        let (start, joined) = match pending.take() {
            Some((start, before)) => (start, format!("{before} {line}")),
            None => (i + 1, line.to_string()),
        };
        if let Some(cont) = joined.strip_suffix('\\') {
            pending = Some((start, cont.to_string()));
            continue;
        }
        let mut cmd = joined.trim();
        cmd = cmd.strip_prefix("$ ").unwrap_or(cmd).trim_start();
        cmd = cmd.strip_prefix("sudo ").unwrap_or(cmd).trim_start();
        if cmd.starts_with("drctl ") {
            out.push(DocCommand { file: file.to_string(), line: start, text: cmd.to_string(), inline: false });
        }
    }
    for (offset, span) in code_spans(&prose) {
        let span = span.replace("\\|", "|");
        if span.starts_with("drctl ") {
            let line = prose[..offset].matches('\n').count() + 1;
            out.push(DocCommand { file: file.to_string(), line, text: span, inline: true });
        }
    }
    out.sort_by_key(|c| c.line);
    out
}

/// The inline code spans of Markdown prose, CommonMark-style: a run of N backticks up to the next
/// run of exactly N, never over a blank line; line breaks inside become spaces. (offset, text).
fn code_spans(prose: &str) -> Vec<(usize, String)> {
    let bytes = prose.as_bytes();
    let run_at = |i: usize| bytes[i..].iter().take_while(|&&b| b == b'`').count();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            i += 1;
            continue;
        }
        let n = run_at(i);
        let body = i + n;
        let mut j = body;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let m = run_at(j);
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) if !prose[body..j].split('\n').skip(1).any(|l| l.trim().is_empty()) => {
                out.push((i, prose[body..j].replace('\n', " ").trim().to_string()));
                i = j + n;
            }
            _ => i = body,
        }
    }
    out
}

/// clap's complaint about a documented command line, as `file:line: `text`: error`; None when it
/// parses (or asks for help or the version), or is a placeholder line.
fn parse_failure(c: &DocCommand) -> Option<String> {
    use clap::Parser;
    use clap::error::ErrorKind;
    // Before shell splitting, which would read `<command>` as a redirection.
    let raw: Vec<&str> = c.text.split_whitespace().collect();
    let placeholder = |w: &str| (w.len() > 2 && w.starts_with('<') && w.ends_with('>')) || w == "…" || w == "...";
    if raw.iter().enumerate().skip(1).any(|(i, w)| placeholder(w) && !raw[i - 1].starts_with('-')) {
        return None;
    }
    let text = raw.iter().filter(|w| placeholder(w)).fold(c.text.clone(), |t, w| t.replace(w, "VALUE"));
    let words = match shell_words(&text) {
        Ok(w) => w,
        Err(e) => return Some(format!("{}:{}: `{}`: {e}", c.file, c.line, c.text)),
    };
    let args = words.iter().map(|w| w.trim_start_matches('[').trim_end_matches(']')).filter(|w| !w.is_empty()).map(
        |w| match w {
            "SHELL" => "bash",
            "N" => "10",
            "DURATION" => "10m",
            other => other,
        },
    );
    // Prose that names a command (`drctl sync` of 671 MB) need not give its required arguments.
    let names_a_command = c.inline && words.iter().all(|w| !w.starts_with('-'));
    match drctl::cli::Cli::try_parse_from(args) {
        Ok(_) => None,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => None,
        Err(e) if names_a_command && e.kind() == ErrorKind::MissingRequiredArgument => None,
        Err(e) => {
            let msg = e.render().to_string();
            let msg: Vec<&str> = msg.lines().take_while(|l| !l.trim().is_empty()).collect();
            Some(format!("{}:{}: `{}`:\n    {}", c.file, c.line, c.text, msg.join("\n    ")))
        }
    }
}

/// A shell command line's words up to its first comment, pipe, list operator or redirection; quotes
/// and backslashes as sh reads them (no expansions).
fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '#' if !in_word => break,
            '|' | '&' | ';' | '<' | '>' => {
                // `2>&1`, `2> err`: the digits are the redirection's fd, not a word.
                if in_word && !(matches!(ch, '<' | '>') && word.chars().all(|d| d.is_ascii_digit())) {
                    words.push(std::mem::take(&mut word));
                }
                return Ok(words);
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated ' quote".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \" quote".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \" quote".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}
