//! `DbUrl`: a libpq-style `postgres://` URL, parsed and validated by drctl itself.
//!
//! tokio-postgres knows only `sslmode` disable/prefer/require and no `sslrootcert`, so drctl reads
//! the URL, maps the mode to its own rustls verification (clients/pg.rs) and hands child tools the
//! same settings through `PG*` environment variables. The password is kept out of `Display` and
//! `Debug`: every message that names a database goes through `redacted()`.

use std::fmt;
use std::path::PathBuf;

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

#[derive(Clone, PartialEq, Eq)]
pub struct DbUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout_s: u64,
}

impl DbUrl {
    /// Parse a `postgres://` or `postgresql://` URL. Errors never echo the URL (it may hold a password).
    pub fn parse(s: &str) -> Result<DbUrl, String> {
        let url = url::Url::parse(s).map_err(|e| format!("not a URL ({e})"))?;
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

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
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
        if let Some(pw) = &self.password {
            env.push(("PGPASSWORD", pw.clone()));
        }
        if matches!(self.sslmode, SslMode::VerifyCa | SslMode::VerifyFull) || self.sslrootcert.is_some() {
            // Child tools verify exactly as drctl does: the configured CA file, else the system bundle.
            let root = self.sslrootcert.clone().unwrap_or_else(|| PathBuf::from(SYSTEM_CA_BUNDLE));
            env.push(("PGSSLROOTCERT", root.display().to_string()));
        }
        env
    }
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

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        for bad in ["mysql://a:pw1@h/d", "postgres://a:pw1@h", "postgres://a:pw1@h/d?sslmode=maybe", "not a url pw1"] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(!e.contains("pw1"), "{e}");
        }
    }
}
