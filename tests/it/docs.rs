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
