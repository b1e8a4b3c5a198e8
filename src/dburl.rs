//! `DbUrl`: a libpq-style `postgres://` URL, parsed and validated by drctl itself.
//!
//! tokio-postgres knows only `sslmode` disable/prefer/require and no `sslrootcert`, so drctl reads
//! the URL, maps the mode to its own rustls verification (clients/pg.rs) and hands child tools the
//! same settings through `PG*` environment variables. The password is kept out of `Display` and
//! `Debug`: every message that names a database goes through `redacted()`.
//!
//! Passwords come from where libpq looks, in its order: the URL, `$PGPASSWORD`, then the first
//! matching line of `$PGPASSFILE` (default `~/.pgpass`). The passfile is read once, at config load
//! (`with_libpq_password_sources`), and matched per connection, because its lines name a database
//! and `with_dbname` (the maintenance database) may match another line. Child tools always get the
//! resolved password as `PGPASSWORD`, so they authenticate exactly as drctl did.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// A password that is not in the URL, found where libpq would look.
#[derive(Clone, PartialEq, Eq)]
enum Fallback {
    None,
    /// `$PGPASSWORD`.
    Env(String),
    /// The lines of a passfile, matched against host, port, database and user on use.
    PassFile(Arc<Vec<PassLine>>),
}

/// One `hostname:port:database:username:password` line, unescaped; `None` is `*`.
#[derive(Clone, PartialEq, Eq)]
struct PassLine {
    fields: [Option<String>; 4],
    password: String,
}

#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    fallback: Fallback,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout_s: u64,
}

impl DbUrl {
    /// Parse a `postgres://` or `postgresql://` URL. Errors never echo the URL (it may hold a password).
    pub fn parse(s: &str) -> Result<DbUrl, String> {
        if !s.contains("://") && s.contains('=') {
            // libpq's keyword/value form; url::Url would call it "relative URL without a base".
            return Err("is a keyword/value connection string (host=… dbname=…); drctl takes a URL: \
                        postgres://USER@HOST:PORT/DB?sslmode=…, the password in it, in $PGPASSWORD or in ~/.pgpass"
                .into());
        }
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e}): write postgres://USER@HOST:PORT/DB"))?;
        if url.scheme() != "postgres" && url.scheme() != "postgresql" {
            return Err(format!("scheme `{}` is not postgres:// or postgresql://", url.scheme()));
        }
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err("the URL names no host".into()),
        };
        let user = percent_decode(url.username());
        if user.is_empty() {
            return Err("the URL names no user (postgres://USER:PASSWORD@HOST:PORT/DB)".into());
        }
        let dbname = percent_decode(url.path().trim_start_matches('/'));
        if dbname.is_empty() || dbname.contains('/') {
            return Err("the URL names no database (postgres://USER@HOST:PORT/DB)".into());
        }
        let mut out = DbUrl {
            host,
            port: url.port().unwrap_or(5432),
            user,
            password: url.password().map(percent_decode),
            fallback: Fallback::None,
            dbname,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout_s: 10,
        };
        for (k, v) in url.query_pairs() {
            match &*k {
                "sslmode" => {
                    out.sslmode = match &*v {
                        "disable" => SslMode::Disable,
                        "prefer" | "allow" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => {
                            return Err(format!(
                                "sslmode `{other}` is not one of disable, prefer, require, verify-ca, verify-full"
                            ));
                        }
                    }
                }
                "sslrootcert" => out.sslrootcert = Some(PathBuf::from(&*v)),
                "connect_timeout" => {
                    out.connect_timeout_s =
                        v.parse().map_err(|_| format!("connect_timeout `{v}` is not a number of seconds"))?
                }
                "application_name" => {}
                other => {
                    return Err(format!(
                        "URL parameter `{other}` is not supported (sslmode, sslrootcert, connect_timeout)"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// The password libpq would send: the URL's, else `$PGPASSWORD`, else the first passfile line
    /// matching this host, port, database and user (`*` matches anything).
    pub fn password(&self) -> Option<&str> {
        if let Some(pw) = &self.password {
            return Some(pw);
        }
        match &self.fallback {
            Fallback::None => None,
            Fallback::Env(pw) => Some(pw),
            Fallback::PassFile(lines) => {
                let port = self.port.to_string();
                let want = [self.host.as_str(), port.as_str(), self.dbname.as_str(), self.user.as_str()];
                lines
                    .iter()
                    .find(|l| l.fields.iter().zip(want).all(|(f, w)| f.as_deref().is_none_or(|f| f == w)))
                    .map(|l| l.password.as_str())
            }
        }
    }

    /// Where a missing password could have come from, for the error when the server asks for one.
    pub fn password_sources(&self) -> &'static str {
        "put it in database_url (as ${VAR}), export PGPASSWORD, or add a line \
         host:port:database:user:password to ~/.pgpass (or $PGPASSFILE), mode 0600"
    }

    /// With no password in the URL, take libpq's other sources: `$PGPASSWORD`, else the passfile
    /// (`$PGPASSFILE`, else `$HOME/.pgpass`). A passfile that group or others may read is ignored,
    /// as libpq ignores it, and the returned warning says so; a missing one is not an error.
    pub fn with_libpq_password_sources(mut self, var: &dyn Fn(&str) -> Option<String>) -> (DbUrl, Option<String>) {
        if self.password.is_some() {
            return (self, None);
        }
        if let Some(pw) = var("PGPASSWORD").filter(|p| !p.is_empty()) {
            self.fallback = Fallback::Env(pw);
            return (self, None);
        }
        let path = match var("PGPASSFILE").filter(|p| !p.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => match var("HOME").filter(|h| !h.is_empty()) {
                Some(home) => Path::new(&home).join(".pgpass"),
                None => return (self, None),
            },
        };
        match read_passfile(&path) {
            Ok(Some(lines)) => self.fallback = Fallback::PassFile(Arc::new(lines)),
            Ok(None) => {}
            Err(warning) => return (self, Some(warning)),
        }
        (self, None)
    }

    /// `host:port`, the way errors name a server.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The same server and credentials, another database (e.g. `maintenance_db`).
    pub fn with_dbname(&self, db: &str) -> DbUrl {
        DbUrl { dbname: db.to_string(), ..self.clone() }
    }

    /// `postgres://user:***@host:port/db?sslmode=…`, safe for any output.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        format!("postgres://{}{}@{}/{}?sslmode={}", self.user, pw, self.addr(), self.dbname, self.sslmode.as_str())
    }

    /// The connection settings as libpq environment variables, for child processes: the password
    /// travels in `PGPASSWORD`, never in argv.
    pub fn libpq_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGHOST", self.host.clone()),
            ("PGPORT", self.port.to_string()),
            ("PGUSER", self.user.clone()),
            ("PGDATABASE", self.dbname.clone()),
            ("PGSSLMODE", self.sslmode.as_str().to_string()),
            ("PGCONNECT_TIMEOUT", self.connect_timeout_s.to_string()),
            ("PGAPPNAME", "drctl".to_string()),
        ];
        if let Some(pw) = self.password() {
            env.push(("PGPASSWORD", pw.to_string()));
        }
        if matches!(self.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) || self.sslrootcert.is_some() {
            // Child tools verify exactly as drctl does: the configured CA file, else the system bundle.
            let root = self.sslrootcert.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            env.push(("PGSSLROOTCERT", root.display().to_string()));
        }
        env
    }
}

/// The lines of a passfile; `Ok(None)` when there is none; `Err(warning)` when it is there but
/// ignored (libpq's rules: not a plain file, or any group/other permission bit set).
fn read_passfile(path: &Path) -> Result<Option<Vec<PassLine>>, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(_) => return Ok(None),
    };
    if !meta.is_file() {
        return Err(format!("password file {} is not a plain file; ignored", path.display()));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "password file {} has group or world access and is ignored, as libpq ignores it; \
             permissions should be u=rw (0600) or less: chmod 0600 {}",
            path.display(),
            path.display()
        ));
    }
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(parse_passfile(&text))),
        Err(e) => Err(format!("password file {} cannot be read ({e}); ignored", path.display())),
    }
}

/// libpq's format: `hostname:port:database:username:password`, `#` comments, `*` for any value,
/// `\:` and `\\` escapes; like libpq, the password ends at the next unescaped `:` and lines with
/// fewer than five fields are skipped.
fn parse_passfile(text: &str) -> Vec<PassLine> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        // (unescaped text, whether it was a bare `*`)
        let mut fields: Vec<(String, bool)> = Vec::new();
        let (mut cur, mut raw) = (String::new(), String::new());
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            match c {
                ':' => {
                    fields.push((std::mem::take(&mut cur), raw == "*"));
                    raw.clear();
                }
                '\\' => {
                    raw.push(c);
                    if let Some(n) = chars.next() {
                        cur.push(n);
                        raw.push(n);
                    }
                }
                c => {
                    cur.push(c);
                    raw.push(c);
                }
            }
        }
        fields.push((cur, raw == "*"));
        if fields.len() < 5 {
            continue;
        }
        let field = |(v, star): &(String, bool)| (!star).then(|| v.clone());
        out.push(PassLine {
            fields: [field(&fields[0]), field(&fields[1]), field(&fields[2]), field(&fields[3])],
            password: fields[4].0.clone(),
        });
    }
    out
}

/// Debian's system CA bundle, the file libpq is pointed at for verify-* without `sslrootcert`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl fmt::Display for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbUrl({})", self.redacted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_libpq_url_and_hides_the_password() {
        let u = DbUrl::parse("postgres://app:s%40cret@db-prod:6432/app?sslmode=verify-full&sslrootcert=/etc/rds.pem")
            .unwrap();
        assert_eq!((u.host.as_str(), u.port, u.user.as_str(), u.dbname.as_str()), ("db-prod", 6432, "app", "app"));
        assert_eq!(u.password(), Some("s@cret"));
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert!(!format!("{u} {u:?}").contains("cret"));
        assert!(u.libpq_env().contains(&("PGSSLROOTCERT", "/etc/rds.pem".into())));
    }

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn without_a_password_in_the_url_pgpassword_is_used_and_passed_to_children() {
        let u = DbUrl::parse("postgres://app@db:5432/app").unwrap();
        assert_eq!(u.password(), None);
        let (u, warning) = u.with_libpq_password_sources(&env_of(&[("PGPASSWORD", "from-env")]));
        assert_eq!((u.password(), warning), (Some("from-env"), None));
        assert!(u.libpq_env().contains(&("PGPASSWORD", "from-env".into())));
        assert!(!format!("{u} {u:?}").contains("from-env"));
        // The URL's own password wins, as in libpq.
        let (u, _) = DbUrl::parse("postgres://app:in-url@db/app")
            .unwrap()
            .with_libpq_password_sources(&env_of(&[("PGPASSWORD", "from-env")]));
        assert_eq!(u.password(), Some("in-url"));
    }

    #[test]
    fn pgpass_lines_match_like_libpq() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(
            &file,
            "# comment\n\
             db:5432:other:app:wrong-db\n\
             db:6432:*:app:wrong-port\n\
             db:5432:app:app:p\\:w\\\\d:with:colons\n\
             *:*:postgres:*:maint\n\
             \\:\\:1:5432:*:app:v6\n\
             short:line\n",
        )
        .unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
        let env = env_of(&[("PGPASSFILE", file.to_str().unwrap()), ("HOME", "/nonexistent")]);
        let (u, warning) = DbUrl::parse("postgres://app@db:5432/app").unwrap().with_libpq_password_sources(&env);
        assert_eq!(warning, None);
        // The first matching line; `\:` and `\\` unescaped; the password ends at an unescaped `:`.
        assert_eq!(u.password(), Some("p:w\\d"));
        // Another database of the same server matches another line.
        assert_eq!(u.with_dbname("postgres").password(), Some("maint"));
        let (v6, _) = DbUrl::parse("postgres://app@[::1]:5432/x").unwrap().with_libpq_password_sources(&env);
        assert_eq!(v6.password(), Some("v6"));
        let (none, _) = DbUrl::parse("postgres://bob@elsewhere/x").unwrap().with_libpq_password_sources(&env);
        assert_eq!(none.password(), None);
        assert!(!none.libpq_env().iter().any(|(k, _)| *k == "PGPASSWORD"));
        // ~/.pgpass when PGPASSFILE is not set.
        std::fs::write(dir.path().join(".pgpass"), "*:*:*:*:home-pw\n").unwrap();
        std::fs::set_permissions(dir.path().join(".pgpass"), std::os::unix::fs::PermissionsExt::from_mode(0o400))
            .unwrap();
        let (h, _) = DbUrl::parse("postgres://app@db/app")
            .unwrap()
            .with_libpq_password_sources(&env_of(&[("HOME", dir.path().to_str().unwrap())]));
        assert_eq!(h.password(), Some("home-pw"));
    }

    #[test]
    fn a_group_readable_pgpass_is_ignored_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:leaky\n").unwrap();
        std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
        let (u, warning) = DbUrl::parse("postgres://app@db/app")
            .unwrap()
            .with_libpq_password_sources(&env_of(&[("PGPASSFILE", file.to_str().unwrap())]));
        assert_eq!(u.password(), None);
        let warning = warning.unwrap();
        assert!(warning.contains("group or world access") && warning.contains("0600"), "{warning}");
        assert!(!warning.contains("leaky"));
    }

    #[test]
    fn keyword_value_strings_are_refused_with_the_url_form() {
        let e = DbUrl::parse("host=db dbname=app user=app password=kv-secret").unwrap_err();
        assert!(e.contains("keyword/value") && e.contains("postgres://USER@HOST"), "{e}");
        assert!(!e.contains("relative URL") && !e.contains("kv-secret"), "{e}");
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in ["mysql://a:pw1@h/d", "postgres://a:pw1@h", "postgres://a:pw1@h/d?sslmode=maybe", "not a url pw1"] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(!e.contains("pw1"), "{e}");
        }
    }
}
