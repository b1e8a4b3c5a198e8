//! Client-side encryption of stored data with age (https://age-encryption.org/v1).
//!
//! Writing needs only public keys: `[store] age_recipients` (parsed at config load) are handed to
//! the dump pipeline (`dump::compress_to_store`), which seals zstd's output as it streams. Reading
//! an encrypted dump back (sync's resume from its stored dump) needs a secret: the identity file
//! `$DRCTL_AGE_IDENTITY` names, else `[store] age_identity_file`. Its contents are read only here,
//! held only as parsed identities, and never appear in a message: errors name the file and the
//! line, and identify keys only by their public halves.

use std::path::{Path, PathBuf};

use age::secrecy::{ExposeSecret, SecretString};
use age::x25519;

use crate::catalog::{AGE, Manifest};
use crate::config::Config;
use crate::ctx::Ctx;
use crate::error::{Error, Result};
use crate::output::Output;

/// The environment variable naming the identity file; it wins over `[store] age_identity_file`,
/// so an operator can restore on a host whose drctl.toml names none (or another one).
pub const IDENTITY_ENV: &str = "DRCTL_AGE_IDENTITY";

/// Where the identity file is and who said so (for messages): `$DRCTL_AGE_IDENTITY` when set and
/// not empty, else `[store] age_identity_file`.
pub fn identity_path(configured: Option<&Path>, env: Option<String>) -> Option<(PathBuf, String)> {
    match env.filter(|v| !v.is_empty()) {
        Some(p) => Some((PathBuf::from(p), format!("${IDENTITY_ENV}"))),
        None => configured.map(|p| (p.to_path_buf(), "[store] age_identity_file".to_string())),
    }
}

/// The X25519 identities of an identity file's text, as `age-keygen` writes it: one
/// `AGE-SECRET-KEY-1...` a line, blank lines and `#` comments ignored. Err names the line only.
pub fn parse_identities(text: &SecretString) -> std::result::Result<Vec<x25519::Identity>, String> {
    let mut out = Vec::new();
    for (i, line) in text.expose_secret().lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.parse::<x25519::Identity>() {
            Ok(id) => out.push(id),
            Err(_) => {
                return Err(format!(
                    "line {} is not an age X25519 identity (AGE-SECRET-KEY-1..., as age-keygen writes; \
                     plugin, post-quantum and SSH identities are not supported)",
                    i + 1
                ));
            }
        }
    }
    if out.is_empty() {
        return Err("holds no identity (an AGE-SECRET-KEY-1... line)".into());
    }
    Ok(out)
}

/// The identities that open backup `m`, or `None` when it is not encrypted. Everything that keeps
/// them from being had (no file named, unreadable, not an identity file, none of the backup's
/// recipients) is a config error (exit 2) naming age_identity_file, checked before anything runs.
pub fn identities_for(cx: &Ctx, m: &Manifest) -> Result<Option<Vec<x25519::Identity>>> {
    match m.encryption.as_deref() {
        None => return Ok(None),
        Some(AGE) => {}
        Some(other) => {
            return Err(Error::step(
                "restore",
                format!("backup {} of {} is encrypted with `{other}`, which this drctl cannot read", m.id, m.env),
            ));
        }
    }
    let backup = format!("backup {} of {}", m.id, m.env);
    load_identities(&cx.config, &backup, &m.age_recipients, &cx.out).map(Some)
}

/// The identities of the identity file (`$DRCTL_AGE_IDENTITY`, else `[store] age_identity_file`)
/// for reading `what` back (`backup ID of ENV`, a WAL file). With `recipients` (the public keys
/// `what` was encrypted to, when known) one identity must be among them. Every failure is a
/// config error naming age_identity_file and never quoting the file's contents.
pub fn load_identities(
    config: &Config,
    what: &str,
    recipients: &[String],
    out: &Output,
) -> Result<Vec<x25519::Identity>> {
    let file = config.file.display().to_string();
    let whose = if recipients.is_empty() {
        "one of [store] age_recipients".to_string()
    } else {
        format!("one of its recipients ({})", recipients.join(", "))
    };
    let Some((path, named_by)) = identity_path(config.age_identity_file.as_deref(), std::env::var(IDENTITY_ENV).ok())
    else {
        return Err(Error::config(
            &file,
            format!(
                "[store] age_identity_file: {what} is encrypted with age and reading it back needs an identity, \
                 but neither [store] age_identity_file nor ${IDENTITY_ENV} names a file"
            ),
        )
        .with_hint(format!(
            "set [store] age_identity_file (or ${IDENTITY_ENV}) to the file holding the secret key of {whose}, \
             readable by this user only, and rerun"
        )));
    };
    let bad = |problem: String| {
        Error::config(&file, format!("[store] age_identity_file: {named_by} {}: {problem}", path.display())).with_hint(
            format!(
                "point {named_by} at an age identity file (age-keygen -o FILE) holding the secret key of one of \
                 {what}'s recipients"
            ),
        )
    };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(format!("cannot read it ({})", e.kind())))?;
    let text = SecretString::from(text);
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(&path)
            && meta.permissions().mode() & 0o077 != 0
        {
            out.warn(&format!("the age identity file {} can be read by group or others: chmod 600 it", path.display()));
        }
    }
    let identities = parse_identities(&text).map_err(bad)?;
    // Match by public key now: a wrong key is named here, not as a failure deep in the restore.
    if !recipients.is_empty() {
        let opens = |id: &x25519::Identity| recipients.contains(&id.to_public().to_string());
        if !identities.iter().any(opens) {
            let publics: Vec<String> = identities.iter().map(|i| i.to_public().to_string()).collect();
            return Err(bad(format!(
                "its identities ({}) are none of {what}'s recipients ({})",
                publics.join(", "),
                recipients.join(", ")
            )));
        }
    }
    Ok(identities)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_file_is_age_keygen_s_format_and_errors_never_quote_it() {
        let id = x25519::Identity::generate();
        let secret = id.to_string();
        let text = format!(
            "# created: 2026-01-01T00:00:00Z\n# public key: {}\n\n  {}  \n",
            id.to_public(),
            secret.expose_secret()
        );
        let got = parse_identities(&SecretString::from(text)).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].to_public().to_string(), id.to_public().to_string());

        let broken = format!("# a comment\n{}x\n", secret.expose_secret());
        let e = parse_identities(&SecretString::from(broken)).err().unwrap();
        assert!(e.starts_with("line 2 is not an age X25519 identity"), "{e}");
        assert!(!e.contains(&secret.expose_secret()[16..40]), "{e}");
        let e = parse_identities(&SecretString::from("# nothing here\n".to_string())).err().unwrap();
        assert!(e.contains("holds no identity"), "{e}");
    }

    #[test]
    fn the_environment_variable_wins_over_the_config_key() {
        let cfg = Path::new("/etc/drctl/age.txt");
        assert_eq!(identity_path(None, None), None);
        assert_eq!(identity_path(Some(cfg), None), Some((cfg.to_path_buf(), "[store] age_identity_file".to_string())));
        assert_eq!(
            identity_path(Some(cfg), Some("/root/k".into())),
            Some((PathBuf::from("/root/k"), "$DRCTL_AGE_IDENTITY".to_string()))
        );
        assert_eq!(identity_path(Some(cfg), Some(String::new())).unwrap().0, cfg);
    }
}
