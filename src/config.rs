//! drctl.toml -> `Config`. Every failure here is exit 2 and names the file and the key.
//!
//! Loading is two passes over the same text: first the raw file is deserialized as written, so an
//! unknown key or a wrong type is reported with its line; then every string gets its `${NAME}`
//! references replaced from the environment and the result is validated (URLs, durations, env
//! cross-references). Messages never echo a value that may hold a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::clients::aws::AwsSettings;
use crate::dburl::DbUrl;
use crate::error::{Error, Result};

pub const DEFAULT_STORE_URL: &str = "file://./.drctl";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    store: Option<RawStore>,
    aws: Option<RawAws>,
    policy: Option<RawPolicy>,
    #[serde(default)]
    environments: BTreeMap<String, RawEnv>,
    dns: Option<RawDns>,
    retention: Option<Retention>,
    notify: Option<RawNotify>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    url: Option<String>,
    /// `AES256` or `aws:kms`: S3 server-side encryption asked for on every write (`store::Sse`).
    sse: Option<String>,
    /// The KMS key for `sse = "aws:kms"` (id, ARN or alias); without it, the account's aws/s3 key.
    kms_key_id: Option<String>,
    age_recipients: Option<Vec<String>>,
    age_identity_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: Option<String>,
    endpoint_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rpo: Option<String>,
    max_replica_lag_bytes: Option<u64>,
    health_timeout: Option<String>,
    promote_timeout: Option<String>,
    dns_timeout: Option<String>,
    cors_origin: Option<String>,
    lock_ttl: Option<String>,
    verify_max_age: Option<String>,
    drill_max_age: Option<String>,
    restore_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnv {
    database_url: String,
    health_url: Option<String>,
    dns_target: Option<String>,
    dns_alias_zone_id: Option<String>,
    rds_instance: Option<String>,
    pg_bin: Option<PathBuf>,
    maintenance_db: Option<String>,
    sync_from: Option<String>,
    replica_of: Option<String>,
    data_dir: Option<PathBuf>,
    #[serde(default)]
    chains: BTreeMap<String, ChainConfig>,
}

/// One hash-chained application table (`[environments.ENV.chains.TABLE]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    pub order_by: Option<String>,
    pub hash_column: Option<String>,
    pub prev_column: Option<String>,
    pub content: Option<String>,
    pub genesis: Option<String>,
    pub bytea_hash: Option<String>,
    /// An empty table verifies (exit 0) instead of exit 3 (`--allow-empty` for this table).
    pub allow_empty: Option<bool>,
}

impl ChainConfig {
    /// The key and the problem of the first bad value; verify-chain relies on these being valid.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        let columns = [
            ("order_by", &self.order_by),
            ("hash_column", &self.hash_column),
            ("prev_column", &self.prev_column),
            ("content", &self.content),
        ];
        for (key, v) in columns {
            if v.as_deref().is_some_and(|v| v.trim().is_empty()) {
                return Err((key, "must not be empty".into()));
            }
        }
        if let Some(g) = self.genesis.as_deref().filter(|g| !["zeros", "null", "empty"].contains(g)) {
            return Err(("genesis", format!("`{g}` is not zeros, null or empty")));
        }
        if let Some(b) = self.bytea_hash.as_deref().filter(|b| !["hex", "raw"].contains(b)) {
            return Err(("bytea_hash", format!("`{b}` is not hex or raw")));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    zone_id: String,
    record: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    ttl: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    webhook_url: String,
}

#[derive(Debug)]
pub struct Config {
    /// The file this was read from, as the operator named it.
    pub file: PathBuf,
    /// `[store] url` with a relative `file://` path made absolute against the config file's
    /// directory, so cron and a shell in another directory open the same store.
    pub store_url: String,
    /// `[store] sse` and `kms_key_id`: only ever set for an s3:// store.
    pub store_sse: Option<crate::store::Sse>,
    /// `[store] age_recipients`, parsed: data objects are age-encrypted to these (empty: not).
    pub age_recipients: Vec<age::x25519::Recipient>,
    /// `[store] age_identity_file`, relative paths resolved against the config file's directory:
    /// only reading encrypted data back needs it. Never read at load (a backup host has none).
    pub age_identity_file: Option<PathBuf>,
    pub aws: AwsSettings,
    pub policy: Policy,
    pub environments: BTreeMap<String, EnvConfig>,
    pub dns: Option<DnsConfig>,
    pub retention: Retention,
    /// Never printed: it may carry a token.
    pub notify_webhook: Option<String>,
    /// What loading noticed but tolerated (an ignored ~/.pgpass); printed once as warnings.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub rpo: Duration,
    pub max_replica_lag_bytes: u64,
    pub health_timeout: Duration,
    /// promote-replica's waits (replay of the fenced primary's last WAL, RDS promotion); past it exit 6.
    pub promote_timeout: Duration,
    /// dns-cutover's wait for Route 53 to report the change INSYNC; past it exit 6.
    pub dns_timeout: Duration,
    pub cors_origin: Option<String>,
    pub lock_ttl: Duration,
    /// `status --audit`'s `backup-deep-verified`: the newest backup's last `verify-chain --backups
    /// --deep` must be at most this old.
    pub verify_max_age: Duration,
    /// `status --audit`'s `backup-drilled`: the newest backup's last successful `drill` must be at
    /// most this old.
    pub drill_max_age: Duration,
    /// pitr-restore's and drill's waits (recovery to the target, an RDS restore until available);
    /// past it exit 6.
    pub restore_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EnvConfig {
    pub name: String,
    pub database_url: DbUrl,
    pub health_url: Option<url::Url>,
    pub dns_target: Option<String>,
    pub dns_alias_zone_id: Option<String>,
    pub rds_instance: Option<String>,
    pub pg_bin: Option<PathBuf>,
    pub maintenance_db: String,
    pub sync_from: Option<String>,
    pub replica_of: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub chains: BTreeMap<String, ChainConfig>,
}

#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub zone_id: String,
    pub record: String,
    pub kind: String,
    pub ttl: i64,
}

/// Which places a command may find its config in (contract "Global").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discovery {
    /// `-c`, `$DRCTL_CONFIG`, `./drctl.toml`, `$XDG_CONFIG_HOME/drctl/drctl.toml`, `/etc/drctl/drctl.toml`.
    Interactive,
    /// wal-push / wal-fetch run from the data directory with the server's environment:
    /// `-c`, `$DRCTL_CONFIG`, `/etc/drctl/drctl.toml` only.
    Server,
}

/// Find the config file per the contract's discovery order.
pub fn discover(explicit: Option<&Path>, how: Discovery) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("DRCTL_CONFIG").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if how == Discovery::Interactive {
        candidates.push(PathBuf::from("drctl.toml"));
        if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
            candidates.push(PathBuf::from(xdg).join("drctl/drctl.toml"));
        } else if let Some(home) = std::env::var_os("HOME") {
            candidates.push(PathBuf::from(home).join(".config/drctl/drctl.toml"));
        }
    }
    candidates.push(PathBuf::from("/etc/drctl/drctl.toml"));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        let looked: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
        Error::config("drctl.toml", format!("no config file found (looked in {})", looked.join(", "))).with_hint(
            "write a drctl.toml (see README, \"Config reference\"), or pass --config PATH or set $DRCTL_CONFIG",
        )
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::config(&file, format!("cannot read: {e}"))
                .with_hint("pass --config PATH naming a readable drctl.toml")
        })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let file = path.display().to_string();
        // Every unknown key at once, in file order: one run per typo is one cron mail per typo.
        let unknown = unknown_keys(text);
        if !unknown.is_empty() {
            let lines: Vec<String> = unknown.iter().map(UnknownKey::describe).collect();
            let problem = match lines.as_slice() {
                [one] => one.clone(),
                many => format!("{} unknown keys:\n  {}", many.len(), many.join("\n  ")),
            };
            return Err(Error::config(&file, problem).with_hint(
                "fix the spelling or remove the keys; every key is listed in README, \"Config reference\"",
            ));
        }
        // Pass 1: structure, as written, so errors carry a line number.
        toml::from_str::<RawConfig>(text).map_err(|e| Error::config(&file, toml_problem(text, &e)))?;
        // Pass 2: the same tree with ${NAME} replaced.
        let mut value: toml::Value = toml::from_str(text).map_err(|e| Error::config(&file, toml_problem(text, &e)))?;
        interpolate(&mut value, &mut Vec::new(), &|name| std::env::var(name).ok()).map_err(|(key, name)| {
            Error::config(&file, format!("{key}: environment variable {name} is not set"))
                .with_hint(format!("export {name}, or remove ${{{name}}} from {key}"))
        })?;
        let raw: RawConfig =
            value.try_into().map_err(|e: toml::de::Error| Error::config(&file, e.message().to_string()))?;
        Self::validate(raw, path)
    }

    fn validate(raw: RawConfig, path: &Path) -> Result<Config> {
        let file = path.display().to_string();
        let bad = |key: &str, problem: String| Error::config(&file, format!("{key}: {problem}"));

        let (age_recipients, age_identity_file) = store_age(raw.store.as_ref(), path).map_err(|(k, p)| bad(&k, p))?;
        let (store_url, sse, kms_key_id) = match raw.store {
            Some(s) => (s.url, s.sse, s.kms_key_id),
            None => (None, None, None),
        };
        let store_url = store_url.unwrap_or_else(|| DEFAULT_STORE_URL.to_string());
        validate_store_url(&store_url).map_err(|p| bad("[store] url", p))?;
        let store_sse = store_sse(&store_url, sse.as_deref(), kms_key_id).map_err(|(k, p)| bad(k, p))?;
        let store_url = resolve_store_url(&store_url, path);

        let aws = raw.aws.map(|a| AwsSettings { region: a.region, endpoint_url: a.endpoint_url }).unwrap_or_default();
        if let Some(r) = &aws.region
            && (r.is_empty() || !r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'))
        {
            return Err(bad("[aws] region", format!("`{r}` is not an AWS region name like us-west-1")));
        }
        if let Some(ep) = &aws.endpoint_url {
            let u = url::Url::parse(ep).map_err(|e| bad("[aws] endpoint_url", format!("`{ep}` is not a URL ({e})")))?;
            if u.scheme() != "http" && u.scheme() != "https" {
                return Err(bad("[aws] endpoint_url", format!("`{ep}` is not http:// or https://")));
            }
        }

        let p = raw.policy;
        let dur = |key: &str, v: Option<&String>, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => humantime::parse_duration(s).map_err(|_| {
                    bad(&format!("[policy] {key}"), format!("`{s}` is not a duration like 90s, 15m or 6h"))
                }),
            }
        };
        let policy = Policy {
            rpo: dur("rpo", p.as_ref().and_then(|p| p.rpo.as_ref()), Duration::from_secs(6 * 3600))?,
            max_replica_lag_bytes: p.as_ref().and_then(|p| p.max_replica_lag_bytes).unwrap_or(1 << 20),
            health_timeout: dur(
                "health_timeout",
                p.as_ref().and_then(|p| p.health_timeout.as_ref()),
                Duration::from_secs(5),
            )?,
            promote_timeout: dur(
                "promote_timeout",
                p.as_ref().and_then(|p| p.promote_timeout.as_ref()),
                Duration::from_secs(15 * 60),
            )?,
            dns_timeout: dur(
                "dns_timeout",
                p.as_ref().and_then(|p| p.dns_timeout.as_ref()),
                Duration::from_secs(5 * 60),
            )?,
            cors_origin: p.as_ref().and_then(|p| p.cors_origin.clone()),
            lock_ttl: dur("lock_ttl", p.as_ref().and_then(|p| p.lock_ttl.as_ref()), Duration::from_secs(15 * 60))?,
            verify_max_age: dur(
                "verify_max_age",
                p.as_ref().and_then(|p| p.verify_max_age.as_ref()),
                Duration::from_secs(7 * 24 * 3600),
            )?,
            drill_max_age: dur(
                "drill_max_age",
                p.as_ref().and_then(|p| p.drill_max_age.as_ref()),
                Duration::from_secs(7 * 24 * 3600),
            )?,
            restore_timeout: dur(
                "restore_timeout",
                p.as_ref().and_then(|p| p.restore_timeout.as_ref()),
                Duration::from_secs(60 * 60),
            )?,
        };
        if policy.lock_ttl < Duration::from_secs(3) {
            return Err(bad("[policy] lock_ttl", "must be at least 3s (locks are renewed every lock_ttl/3)".into()));
        }

        let mut environments = BTreeMap::new();
        let mut warnings = Vec::new();
        for (name, e) in raw.environments.iter() {
            let key = |k: &str| format!("[environments.{name}] {k}");
            if !valid_env_name(name) {
                return Err(bad(
                    &format!("[environments.{name}]"),
                    "env names are letters, digits, `-` and `_`".into(),
                ));
            }
            let (database_url, warning) = DbUrl::parse(&e.database_url)
                .map_err(|p| bad(&key("database_url"), p))?
                .with_libpq_password_sources(&|name| std::env::var(name).ok());
            if let Some(w) = warning.filter(|w| !warnings.contains(w)) {
                warnings.push(w);
            }
            let health_url = match &e.health_url {
                None => None,
                Some(s) => {
                    let u = url::Url::parse(s)
                        .map_err(|err| bad(&key("health_url"), format!("`{s}` is not a URL ({err})")))?;
                    if u.scheme() != "http" && u.scheme() != "https" {
                        return Err(bad(&key("health_url"), format!("`{s}` is not http:// or https://")));
                    }
                    Some(u)
                }
            };
            if e.sync_from.is_some() && e.replica_of.is_some() {
                return Err(bad(&key("sync_from"), "an env declares at most one of replica_of and sync_from".into()));
            }
            for (k, other) in [("sync_from", &e.sync_from), ("replica_of", &e.replica_of)] {
                if let Some(o) = other
                    && (!raw.environments.contains_key(o) || o == name)
                {
                    return Err(bad(&key(k), format!("`{o}` is not another env in this file")));
                }
            }
            if let Some(t) = &e.dns_target {
                dns_name(t).map_err(|p| bad(&key("dns_target"), p))?;
            }
            if let Some(z) = &e.dns_alias_zone_id {
                hosted_zone_id(z).map_err(|p| bad(&key("dns_alias_zone_id"), p))?;
            }
            if let Some(id) = &e.rds_instance {
                rds_instance_id(id).map_err(|p| bad(&key("rds_instance"), p))?;
            }
            for (table, c) in &e.chains {
                c.validate().map_err(|(k, p)| bad(&format!("[environments.{name}.chains.{table}] {k}"), p))?;
            }
            environments.insert(
                name.clone(),
                EnvConfig {
                    name: name.clone(),
                    database_url,
                    health_url,
                    dns_target: e.dns_target.clone(),
                    dns_alias_zone_id: e.dns_alias_zone_id.clone(),
                    rds_instance: e.rds_instance.clone(),
                    pg_bin: e.pg_bin.clone(),
                    maintenance_db: e.maintenance_db.clone().unwrap_or_else(|| "postgres".into()),
                    sync_from: e.sync_from.clone(),
                    replica_of: e.replica_of.clone(),
                    data_dir: e.data_dir.clone(),
                    chains: e.chains.clone(),
                },
            );
        }

        let dns = match raw.dns {
            None => None,
            Some(d) => {
                let kind = d.kind.unwrap_or_else(|| "CNAME".into()).to_ascii_uppercase();
                if kind != "CNAME" && kind != "A" {
                    return Err(bad("[dns] type", format!("`{kind}` is not CNAME or A")));
                }
                hosted_zone_id(&d.zone_id).map_err(|p| bad("[dns] zone_id", p))?;
                dns_name(&d.record).map_err(|p| bad("[dns] record", p))?;
                let ttl = d.ttl.unwrap_or(60);
                if !(0..=i64::from(i32::MAX)).contains(&ttl) {
                    return Err(bad("[dns] ttl", format!("{ttl} is not between 0 and {} seconds", i32::MAX)));
                }
                Some(DnsConfig { zone_id: d.zone_id, record: d.record, kind, ttl })
            }
        };

        let notify_webhook = match raw.notify {
            None => None,
            Some(n) => {
                // The URL is a secret (Slack tokens live in the path): never echo it, nor url's
                // parse error (which does not quote it today, but need not stay so).
                let key = "[notify] webhook_url";
                if n.webhook_url.trim().is_empty() {
                    return Err(bad(key, "is empty".into()));
                }
                let u = url::Url::parse(&n.webhook_url).map_err(|_| bad(key, "is not a URL".into()))?;
                if u.scheme() != "http" && u.scheme() != "https" {
                    return Err(bad(key, "is not an http:// or https:// URL".into()));
                }
                Some(n.webhook_url)
            }
        };

        Ok(Config {
            file: path.to_path_buf(),
            store_url,
            store_sse,
            age_recipients,
            age_identity_file,
            aws,
            policy,
            environments,
            dns,
            retention: raw.retention.unwrap_or(Retention { keep_last: None, keep_daily: None, keep_weekly: None }),
            notify_webhook,
            warnings,
        })
    }

    /// The env a command names: `--env`, else `$DRCTL_ENV`, else the only env in the file.
    pub fn resolve_env(&self, name: Option<&str>) -> Result<&EnvConfig> {
        let from_var = std::env::var("DRCTL_ENV").ok().filter(|v| !v.is_empty());
        let name = match name.map(str::to_string).or(from_var) {
            Some(n) => n,
            None if self.environments.len() == 1 => return Ok(self.environments.values().next().expect("one env")),
            None => {
                return Err(Error::usage("no env given and drctl.toml has more than one")
                    .with_hint(format!("pass --env ENV (one of {}) or set $DRCTL_ENV", self.env_names())));
            }
        };
        self.env(&name)
    }

    pub fn env(&self, name: &str) -> Result<&EnvConfig> {
        self.environments.get(name).ok_or_else(|| {
            Error::config(self.file.display(), format!("env `{name}` is not in [environments]")).with_hint(
                if self.environments.is_empty() {
                    "add an [environments.NAME] table with a database_url".to_string()
                } else {
                    format!("known envs are {}", self.env_names())
                },
            )
        })
    }

    pub fn env_names(&self) -> String {
        self.environments.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn valid_env_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A Route 53 hosted zone id: `Z0123456789ABCDEFGHIJ` (uppercase letters and digits), optionally
/// written `/hostedzone/Z…` as the API returns it. Checked at load, because the SDK reports an
/// empty one only as a request it could not construct.
fn hosted_zone_id(id: &str) -> std::result::Result<(), String> {
    let bare = id.strip_prefix("/hostedzone/").unwrap_or(id);
    if bare.is_empty() {
        return Err("must not be empty: the id of the hosted zone (`aws route53 list-hosted-zones`)".into());
    }
    if bare.len() > 32 || !bare.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()) {
        return Err(format!(
            "`{id}` is not a Route 53 hosted zone id (uppercase letters and digits, like Z0123456789ABCDEFGHIJ)"
        ));
    }
    Ok(())
}

/// A DNS name as Route 53 takes it: dot-separated labels of 1-63 letters, digits, `-`, `_` or `*`,
/// at most 253 characters, an optional trailing dot.
fn dns_name(name: &str) -> std::result::Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("must not be empty: a DNS name like app.example.com".into());
    }
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len()) && l.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '*'))
    };
    if bare.len() > 253 || !bare.split('.').all(label_ok) {
        return Err(format!("`{name}` is not a DNS name like app.example.com"));
    }
    Ok(())
}

/// An RDS DB instance identifier: 1-63 letters, digits and hyphens, starting with a letter, no
/// trailing hyphen and no two hyphens in a row.
pub(crate) fn rds_instance_id(id: &str) -> std::result::Result<(), String> {
    let ok = (1..=63).contains(&id.len())
        && id.starts_with(|c: char| c.is_ascii_alphabetic())
        && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !id.ends_with('-')
        && !id.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{id}` is not an RDS instance identifier (letters, digits and single hyphens, starting with a letter)"
        ))
    }
}

/// `[store] age_recipients` and `age_identity_file`: every recipient an age X25519 public key
/// (public: quoting one is fine, but an identity pasted by mistake is never echoed), the identity
/// file's path made absolute against the config file's directory. Err((key, problem)).
fn store_age(
    store: Option<&RawStore>,
    config_file: &Path,
) -> std::result::Result<(Vec<age::x25519::Recipient>, Option<PathBuf>), (String, String)> {
    let mut recipients = Vec::new();
    if let Some(list) = store.and_then(|s| s.age_recipients.as_ref()) {
        if list.is_empty() {
            return Err((
                "[store] age_recipients".into(),
                "is empty: list at least one age public key (age1...), or remove the key to store data unencrypted"
                    .into(),
            ));
        }
        for (i, r) in list.iter().enumerate() {
            let key = format!("[store] age_recipients[{i}]");
            let r = r.trim();
            if r.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
                return Err((
                    key,
                    "is an age identity (a secret key), not a recipient: list its public key instead                      (`age-keygen -y KEYFILE`) and keep the secret off this host"
                        .into(),
                ));
            }
            let parsed = r.parse::<age::x25519::Recipient>().map_err(|_| {
                (
                    key,
                    format!(
                        "`{r}` is not an age X25519 recipient (`age1` and 58 more characters, as `age-keygen -y`                          prints; plugin, post-quantum and SSH recipients are not supported)"
                    ),
                )
            })?;
            recipients.push(parsed);
        }
    }
    let identity = match store.and_then(|s| s.age_identity_file.as_ref()) {
        None => None,
        Some(p) if p.as_os_str().is_empty() => {
            return Err(("[store] age_identity_file".into(), "must not be empty".into()));
        }
        Some(p) if p.is_absolute() => Some(p.clone()),
        Some(p) => {
            let dir = config_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
            Some(dir.join(p))
        }
    };
    Ok((recipients, identity))
}

/// `file://./x` and `file://x` name `x` beside the config file (not in the working directory, which
/// differs between a shell, cron and PostgreSQL's archive_command). Other URLs are returned as is.
fn resolve_store_url(url: &str, config_file: &Path) -> String {
    let Some(rel) = url.strip_prefix("file://").filter(|p| !p.starts_with('/')) else {
        return url.to_string();
    };
    let dir = config_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let dir = std::fs::canonicalize(dir).or_else(|_| std::path::absolute(dir)).unwrap_or_else(|_| dir.to_path_buf());
    let mut full = dir;
    for c in Path::new(rel).components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                full.pop();
            }
            other => full.push(other),
        }
    }
    format!("file://{}", full.display())
}

/// `[store] sse` / `kms_key_id` -> what the S3 store asks for; Err((key, problem)). An encryption
/// setting that would be silently ignored is refused: an operator who wrote `sse` believes the
/// backups are encrypted.
fn store_sse(
    url: &str,
    sse: Option<&str>,
    kms_key_id: Option<String>,
) -> std::result::Result<Option<crate::store::Sse>, (&'static str, String)> {
    use crate::store::Sse;
    let allowed = Sse::VALUES.map(|v| format!("\"{v}\"")).join(" or ");
    let parsed = match sse {
        None => None,
        Some("AES256") => Some(Sse::Aes256),
        Some("aws:kms") => Some(Sse::Kms { key_id: None }),
        Some(other) => return Err(("[store] sse", format!("`{other}` is not {allowed}"))),
    };
    if parsed.is_some() && !url.starts_with("s3://") {
        return Err((
            "[store] sse",
            "applies only to an s3:// store (a file store's objects are private files, 0600, instead)".into(),
        ));
    }
    match (parsed, kms_key_id) {
        (Some(Sse::Kms { .. }), Some(k)) if k.trim().is_empty() => {
            Err(("[store] kms_key_id", "must not be empty (omit it for the account's aws/s3 key)".into()))
        }
        (Some(Sse::Kms { .. }), Some(k)) => Ok(Some(Sse::Kms { key_id: Some(k) })),
        (_, Some(_)) => {
            Err(("[store] kms_key_id", "is only used with sse = \"aws:kms\"; set that, or remove kms_key_id".into()))
        }
        (parsed, None) => Ok(parsed),
    }
}

fn validate_store_url(s: &str) -> std::result::Result<(), String> {
    if let Some(rest) = s.strip_prefix("s3://") {
        let bucket = rest.split('/').next().unwrap_or("");
        let ok = (3..=63).contains(&bucket.len())
            && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !ok {
            return Err(format!("`{s}`: `{bucket}` is not a valid S3 bucket name"));
        }
        Ok(())
    } else if let Some(path) = s.strip_prefix("file://") {
        if path.is_empty() { Err(format!("`{s}` names no directory")) } else { Ok(()) }
    } else {
        Err(format!("`{s}` is neither s3://BUCKET/PREFIX nor file://PATH"))
    }
}

/// A key the parser does not know, where the file has it.
#[derive(Debug, PartialEq, Eq)]
struct UnknownKey {
    line: usize,
    /// `[environments.prod]`, or empty at the top level.
    table: String,
    key: String,
    known: &'static [&'static str],
}

impl UnknownKey {
    fn describe(&self) -> String {
        let place = if self.table.is_empty() { "at the top level".to_string() } else { format!("in {}", self.table) };
        format!("line {}: unknown key `{}` {place} (known keys: {})", self.line, self.key, self.known.join(", "))
    }
}

/// Every key of `text` that no config struct declares, in file order. The known keys come from
/// the serde structs themselves (`fields_of`), so this list cannot drift from what pass 1 accepts;
/// a file that does not parse yields none here and gets pass 1's error.
fn unknown_keys(text: &str) -> Vec<UnknownKey> {
    use toml::de::{DeTable, DeValue};

    /// Which struct describes the table at this path (`None`: keys are names, e.g. env names).
    fn fields_at(path: &[&str]) -> Option<&'static [&'static str]> {
        Some(match path {
            [] => fields_of::<RawConfig>(),
            ["store"] => fields_of::<RawStore>(),
            ["aws"] => fields_of::<RawAws>(),
            ["policy"] => fields_of::<RawPolicy>(),
            ["dns"] => fields_of::<RawDns>(),
            ["retention"] => fields_of::<Retention>(),
            ["notify"] => fields_of::<RawNotify>(),
            ["environments", _] => fields_of::<RawEnv>(),
            ["environments", _, "chains", _] => fields_of::<ChainConfig>(),
            _ => return None,
        })
    }

    fn walk<'a>(table: &'a DeTable<'a>, path: &mut Vec<&'a str>, text: &str, out: &mut Vec<(usize, UnknownKey)>) {
        let known = fields_at(path);
        for (k, v) in table.iter() {
            let key: &str = k.get_ref();
            if let Some(known) = known
                && !known.contains(&key)
            {
                let at = k.span().start.min(text.len());
                out.push((
                    at,
                    UnknownKey {
                        line: text[..at].matches('\n').count() + 1,
                        table: if path.is_empty() { String::new() } else { format!("[{}]", path.join(".")) },
                        key: key.to_string(),
                        known,
                    },
                ));
                continue;
            }
            if let DeValue::Table(child) = v.get_ref() {
                path.push(key);
                walk(child, path, text, out);
                path.pop();
            }
        }
    }

    let Ok(doc) = DeTable::parse(text) else { return Vec::new() };
    let mut found = Vec::new();
    walk(doc.get_ref(), &mut Vec::new(), text, &mut found);
    found.sort_by_key(|(at, _)| *at);
    found.into_iter().map(|(_, k)| k).collect()
}

/// The field names serde's derive gives struct `T` (renames applied): it hands them to
/// `deserialize_struct`, and this deserializer only records them.
fn fields_of<T: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::value::Error as DeError;
    use serde::de::{Deserializer, Error as _, Visitor};

    struct Grab<'a>(&'a std::cell::Cell<&'static [&'static str]>);
    impl<'de> Deserializer<'de> for Grab<'_> {
        type Error = DeError;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> std::result::Result<V::Value, DeError> {
            Err(DeError::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, DeError> {
            self.0.set(fields);
            Err(DeError::custom("fields recorded"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option unit
            unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let cell = std::cell::Cell::new(&[][..]);
    let _ = T::deserialize(Grab(&cell));
    cell.get()
}

/// "line N: message", without toml's source snippet (the line may hold a literal password).
fn toml_problem(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}: {}", e.message().trim())
        }
        None => e.message().trim().to_string(),
    }
}

/// Replace `${NAME}` in every string, depth first. Err((key path, NAME)) for the first unset one.
fn interpolate(
    v: &mut toml::Value,
    path: &mut Vec<String>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> std::result::Result<(), (String, String)> {
    match v {
        toml::Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    out.push_str(&rest[start..]);
                    rest = "";
                    break;
                };
                let name = &after[..end];
                match lookup(name) {
                    Some(val) => out.push_str(&val),
                    None => return Err((key_path(path), name.to_string())),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => {
            for (k, child) in t.iter_mut() {
                path.push(k.clone());
                interpolate(child, path, lookup)?;
                path.pop();
            }
        }
        toml::Value::Array(a) => {
            for child in a.iter_mut() {
                interpolate(child, path, lookup)?;
            }
        }
        _ => {}
    }
    Ok(())
}

fn key_path(path: &[String]) -> String {
    match path.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, table)) => format!("[{}] {last}", table.join(".")),
        None => String::new(),
    }
}

#[cfg(test)]
mod reference_keys;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/tmp/drctl.toml"))
    }

    #[test]
    fn defaults_to_the_local_file_store_beside_the_config_file() {
        let c = parse("[environments.dev]\ndatabase_url = \"postgres://me@localhost/app\"\n").unwrap();
        let tmp = std::fs::canonicalize("/tmp").unwrap();
        assert_eq!(c.store_url, format!("file://{}/.drctl", tmp.display()));
        assert_eq!(c.resolve_env(None).unwrap().name, "dev");
    }

    #[test]
    fn relative_file_stores_resolve_against_the_config_directory_not_the_cwd() {
        let dir = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(real.join("etc")).unwrap();
        let cfg = real.join("etc/drctl.toml");
        let at = |url: &str| resolve_store_url(url, &cfg);
        assert_eq!(at("file://./.drctl"), format!("file://{}/etc/.drctl", real.display()));
        assert_eq!(at("file://backups/x"), format!("file://{}/etc/backups/x", real.display()));
        assert_eq!(at("file://../store"), format!("file://{}/store", real.display()));
        assert_eq!(at("file:///var/lib/drctl"), "file:///var/lib/drctl");
        assert_eq!(at("s3://bucket/p"), "s3://bucket/p");
        // A config named relative to the cwd (`./drctl.toml`) resolves to an absolute path too.
        let c = Config::parse("[environments.dev]\ndatabase_url = \"postgres://me@h/app\"\n", Path::new("drctl.toml"))
            .unwrap();
        let cwd = std::fs::canonicalize(".").unwrap();
        assert_eq!(c.store_url, format!("file://{}/.drctl", cwd.display()));
    }

    #[test]
    fn unknown_key_names_key_file_and_line() {
        let e = parse("[store]\nurl = \"file:///x\"\nbukcet = 1\n").unwrap_err().to_string();
        assert!(e.contains("/tmp/drctl.toml") && e.contains("bukcet") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn every_unknown_key_is_reported_at_once_in_file_order() {
        let text = "[store]\nurl = \"file:///x\"\nbukcet = 1\n\n[environments.prod]\n\
                    database_url = \"postgres://a@h/d\"\nhealth = \"x\"\n\n\
                    [environments.prod.chains.events]\norderby = \"id\"\n\n[dsn]\nzone_id = \"Z1\"\n";
        let e = parse(text).unwrap_err();
        let msg = e.to_string();
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines[0], "/tmp/drctl.toml: 4 unknown keys:", "{msg}");
        assert!(
            lines[1].contains("line 3: unknown key `bukcet` in [store] (known keys: url, sse, kms_key_id, age_recipients, age_identity_file)"),
            "{msg}"
        );
        assert!(lines[2].contains("line 7: unknown key `health` in [environments.prod]"), "{msg}");
        assert!(lines[2].contains("health_url"), "{msg}");
        assert!(lines[3].contains("line 10: unknown key `orderby` in [environments.prod.chains.events]"), "{msg}");
        assert!(lines[4].contains("line 12: unknown key `dsn` at the top level"), "{msg}");
        assert_eq!(lines.len(), 5, "{msg}");
        assert!(e.hint().unwrap().contains("Config reference"));
    }

    #[test]
    fn known_keys_come_from_the_structs_renames_included() {
        assert_eq!(fields_of::<RawStore>(), &["url", "sse", "kms_key_id", "age_recipients", "age_identity_file"]);
        assert!(fields_of::<RawDns>().contains(&"type"));
        assert!(fields_of::<RawConfig>().contains(&"environments"));
        // A valid file has none, whatever its nesting.
        let ok = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n[environments.p.chains.t]\ngenesis = \"null\"\n\
                  [dns]\nzone_id = \"Z1\"\nrecord = \"a.example.com\"\ntype = \"A\"\n";
        assert_eq!(unknown_keys(ok), Vec::new());
    }

    #[test]
    fn unset_variable_is_named_with_its_key() {
        let e = parse("[environments.p]\ndatabase_url = \"postgres://a:${DRCTL_TEST_SURELY_UNSET}@h/d\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("DRCTL_TEST_SURELY_UNSET") && e.contains("[environments.p] database_url"), "{e}");
    }

    #[test]
    fn bad_chain_settings_name_the_key() {
        let base = "[environments.prod]\ndatabase_url = \"postgres://me@h/d\"\n[environments.prod.chains.events]\n";
        let e = parse(&format!("{base}genesis = \"ones\"\n")).unwrap_err().to_string();
        assert!(e.contains("[environments.prod.chains.events] genesis") && e.contains("ones"), "{e}");
        let e = parse(&format!("{base}bytea_hash = \"b64\"\n")).unwrap_err().to_string();
        assert!(e.contains("[environments.prod.chains.events] bytea_hash"), "{e}");
        let e = parse(&format!("{base}order_by = \" \"\n")).unwrap_err().to_string();
        assert!(e.contains("[environments.prod.chains.events] order_by"), "{e}");
        let ok = parse(&format!("{base}genesis = \"null\"\nbytea_hash = \"raw\"\n")).unwrap();
        assert_eq!(ok.environments["prod"].chains["events"].genesis.as_deref(), Some("null"));
    }

    #[test]
    fn bad_urls_are_named() {
        let e = parse("[store]\nurl = \"ftp://x\"\n").unwrap_err().to_string();
        assert!(e.contains("[store] url"), "{e}");
        let e = parse("[environments.p]\ndatabase_url = \"mysql://a:hunter2@h/d\"\n").unwrap_err().to_string();
        assert!(e.contains("database_url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn store_encryption_is_validated_at_load_naming_the_key() {
        use crate::store::Sse;
        let env = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n";
        let store = |extra: &str| format!("{env}[store]\nurl = \"s3://bkt/p\"\n{extra}");
        assert_eq!(parse(&store("")).unwrap().store_sse, None);
        assert_eq!(parse(&store("sse = \"AES256\"\n")).unwrap().store_sse, Some(Sse::Aes256));
        assert_eq!(parse(&store("sse = \"aws:kms\"\n")).unwrap().store_sse, Some(Sse::Kms { key_id: None }));
        let kms = parse(&store("sse = \"aws:kms\"\nkms_key_id = \"alias/drctl\"\n")).unwrap();
        assert_eq!(kms.store_sse, Some(Sse::Kms { key_id: Some("alias/drctl".into()) }));
        let cases = [
            (store("sse = \"aes256\"\n"), "[store] sse: `aes256` is not \"AES256\" or \"aws:kms\""),
            (store("sse = \"\"\n"), "[store] sse: `` is not"),
            (store("kms_key_id = \"k\"\n"), "[store] kms_key_id: is only used with sse = \"aws:kms\""),
            (store("sse = \"AES256\"\nkms_key_id = \"k\"\n"), "[store] kms_key_id: is only used"),
            (store("sse = \"aws:kms\"\nkms_key_id = \" \"\n"), "[store] kms_key_id: must not be empty"),
            (format!("{env}[store]\nurl = \"file:///x\"\nsse = \"AES256\"\n"), "[store] sse: applies only to an s3://"),
            (format!("{env}[store]\nsse = \"AES256\"\n"), "[store] sse: applies only to an s3://"),
        ];
        for (text, want) in &cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE, "{text}");
            assert!(e.to_string().contains(want), "{text}: {e}");
        }
    }

    #[test]
    fn aws_names_are_validated_at_load_naming_the_key() {
        let env = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n";
        let cases = [
            ("[dns]\nzone_id = \"\"\nrecord = \"app.example.com\"\n", "[dns] zone_id: must not be empty"),
            (
                "[dns]\nzone_id = \"z-lower\"\nrecord = \"app.example.com\"\n",
                "[dns] zone_id: `z-lower` is not a Route 53",
            ),
            ("[dns]\nzone_id = \"Z1\"\nrecord = \"\"\n", "[dns] record: must not be empty"),
            ("[dns]\nzone_id = \"Z1\"\nrecord = \"app example.com\"\n", "[dns] record: `app example.com`"),
            ("[dns]\nzone_id = \"Z1\"\nrecord = \"a.example.com\"\nttl = -1\n", "[dns] ttl"),
            ("[aws]\nregion = \"\"\n", "[aws] region"),
        ];
        for (extra, want) in cases {
            let e = parse(&format!("{env}{extra}")).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE);
            assert!(e.to_string().contains(want), "{extra}: {e}");
        }
        for (k, v) in [("dns_target", "\"\""), ("dns_alias_zone_id", "\"\""), ("rds_instance", "\"1app\"")] {
            let e = parse(&format!("{env}{k} = {v}\n")).unwrap_err().to_string();
            assert!(e.contains(&format!("[environments.p] {k}")), "{e}");
        }
        let ok = parse(&format!(
            "{env}dns_target = \"lb-1.us-west-1.elb.amazonaws.com.\"\ndns_alias_zone_id = \"Z368ELLRRE2KJ0\"\n\
             rds_instance = \"app-prod\"\n[dns]\nzone_id = \"/hostedzone/Z0123456789ABCDEFGHIJ\"\nrecord = \"app.example.com\"\n"
        ));
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn notify_webhook_errors_name_the_key_never_the_value() {
        let env = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n";
        let secret = "T000/B000/SECRETTOKEN123";
        let cases = [
            (format!("[notify]\nwebhook_url = \"hooks.example.com/{secret}\"\n"), "is not a URL"),
            (format!("[notify]\nwebhook_url = \"ftp://hooks.example.com/{secret}\"\n"), "is not an http://"),
            ("[notify]\nwebhook_url = \"\"\n".to_string(), "is empty"),
            (
                "[notify]\nwebhook_url = \"${DRCTL_TEST_SURELY_UNSET_WEBHOOK}\"\n".to_string(),
                "environment variable DRCTL_TEST_SURELY_UNSET_WEBHOOK is not set",
            ),
        ];
        for (extra, want) in &cases {
            let e = parse(&format!("{env}{extra}")).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE);
            let msg = format!("{e} {}", e.hint().unwrap_or_default());
            assert!(msg.contains("[notify] webhook_url") && msg.contains(want), "{extra}: {msg}");
            assert!(!msg.contains("SECRETTOKEN123") && !msg.contains("hooks.example.com"), "{msg}");
        }
        let ok =
            parse(&format!("{env}[notify]\nwebhook_url = \"https://hooks.example.com/services/{secret}\"\n")).unwrap();
        assert_eq!(ok.notify_webhook.as_deref(), Some("https://hooks.example.com/services/T000/B000/SECRETTOKEN123"));
        assert!(parse(env).unwrap().notify_webhook.is_none());
    }

    #[test]
    fn age_recipients_are_parsed_at_load_and_a_bad_one_is_named_by_index() {
        use age::secrecy::ExposeSecret;
        let env = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n";
        let (a, b) = (age::x25519::Identity::generate(), age::x25519::Identity::generate());
        let (pa, pb) = (a.to_public().to_string(), b.to_public().to_string());
        let ok = parse(&format!("[store]\nage_recipients = [\"{pa}\", \" {pb} \"]\n{env}")).unwrap();
        assert_eq!(ok.age_recipients.iter().map(|r| r.to_string()).collect::<Vec<_>>(), [pa.clone(), pb.clone()]);
        assert!(ok.age_identity_file.is_none());
        assert!(parse(env).unwrap().age_recipients.is_empty());

        let e = parse(&format!("[store]\nage_recipients = [\"{pa}\", \"age1nope\"]\n{env}")).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        let msg = e.to_string();
        assert!(msg.contains("[store] age_recipients[1]") && msg.contains("age1nope"), "{msg}");
        let e = parse(&format!("[store]\nage_recipients = []\n{env}")).unwrap_err().to_string();
        assert!(e.contains("[store] age_recipients: is empty"), "{e}");
        // An identity pasted where its public key belongs is refused without being echoed.
        let secret = a.to_string();
        let e = parse(&format!("[store]\nage_recipients = [\"{}\"]\n{env}", secret.expose_secret())).unwrap_err();
        let msg = format!("{e} {}", e.hint().unwrap_or_default());
        assert!(msg.contains("[store] age_recipients[0]") && msg.contains("secret key"), "{msg}");
        assert!(!msg.contains(&secret.expose_secret()[15..]), "{msg}");
    }

    #[test]
    fn age_identity_file_resolves_against_the_config_directory() {
        let env = "[environments.p]\ndatabase_url = \"postgres://a@h/d\"\n";
        let c = Config::parse(
            &format!("[store]\nage_identity_file = \"keys/age.txt\"\n{env}"),
            Path::new("/etc/drctl/drctl.toml"),
        )
        .unwrap();
        assert_eq!(c.age_identity_file.as_deref(), Some(Path::new("/etc/drctl/keys/age.txt")));
        let c = parse(&format!("[store]\nage_identity_file = \"/root/age.txt\"\n{env}")).unwrap();
        assert_eq!(c.age_identity_file.as_deref(), Some(Path::new("/root/age.txt")));
        let e = parse(&format!("[store]\nage_identity_file = \"\"\n{env}")).unwrap_err().to_string();
        assert!(e.contains("[store] age_identity_file: must not be empty"), "{e}");
    }

    #[test]
    fn unknown_env_lists_the_known_ones() {
        let c = parse("[environments.prod]\ndatabase_url = \"postgres://a@h/d\"\n[environments.staging]\ndatabase_url = \"postgres://a@h/d\"\n").unwrap();
        let e = c.env("stagin").unwrap_err();
        assert!(e.to_string().contains("stagin"));
        assert!(e.hint().unwrap().contains("prod, staging"));
    }
}
