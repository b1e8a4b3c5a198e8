//! `[store] age_recipients` / `age_identity_file` end to end: an encrypted backup is age over zstd,
//! restores by hand with the real `age` CLI, deep-verifies without any key; a sync resumed from an
//! encrypted stored dump decrypts with the identity and refuses (exit 2) without the right one; the
//! identity never shows on stdout, stderr or in the store.

use std::path::{Path, PathBuf};
use std::process::Command;

use ::age::secrecy::ExposeSecret;
use serde_json::Value;

use super::backup::{seeded_db, sh_env, table_counts};
use super::sync::{
    Pair, databases_like, dump_objects, fingerprint, journal_events, kill_9_after_the_commit, pair, sync,
};
use crate::harness::TestDir;
use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::pg::Cluster;

const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// An age key pair, its identity file written 0600 as `age-keygen -o` would.
struct Key {
    path: PathBuf,
    public: String,
    secret: String,
}

impl Key {
    fn new(dir: &TestDir, name: &str) -> Key {
        use std::os::unix::fs::PermissionsExt;
        let id = ::age::x25519::Identity::generate();
        let public = id.to_public().to_string();
        let secret = id.to_string().expose_secret().to_string();
        let path = dir.write(name, &format!("# created by the drctl tests\n# public key: {public}\n{secret}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Key { path, public, secret }
    }

    /// Panics if the secret key shows on the run's stdout or stderr.
    fn not_in(&self, r: &RunResult) {
        r.assert_no_secret(&self.secret);
        // Bech32 is case-insensitive: the lowercase spelling is the same secret.
        r.assert_no_secret(&self.secret.to_lowercase());
    }
}

/// The real `age` CLI, which an operator restoring by hand uses: missing is a failure, not a skip.
fn require_age_cli() {
    let ok = Command::new("age").arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the `age` command-line tool is not on PATH: install the Debian package `age` (scripts/test does); \
         the by-hand restore of an encrypted backup is tested with the real CLI"
    );
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
    }
    out
}

/// No file of the store (journal, locks, manifests, data objects) holds a secret key.
fn store_has_none_of(store: &Path, keys: &[&Key]) {
    for f in files_under(store) {
        let bytes = std::fs::read(&f).unwrap();
        let text = String::from_utf8_lossy(&bytes).to_ascii_uppercase();
        for k in keys {
            assert!(!text.contains(&k.secret), "{} holds an age secret key", f.display());
        }
    }
}

fn pg_url(db: &str) -> String {
    format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/{db}?sslmode=disable", Cluster::shared().port)
}

fn drctl(config: &Path) -> Drctl {
    Drctl::new().config(config).env("TEST_PG_PASSWORD", Cluster::shared().password())
}

fn run(d: Drctl, code: i32, keys: &[&Key]) -> RunResult {
    let r = d.run().expect_code(code);
    r.assert_no_secret(Cluster::shared().password());
    for k in keys {
        k.not_in(&r);
    }
    r
}

#[test]
fn an_encrypted_backup_is_age_over_zstd_restores_with_the_age_cli_and_deep_verifies_without_the_key() {
    require_age_cli();
    let pg = Cluster::shared();
    let dir = TestDir::new();
    let key = Key::new(&dir, "keys/backup-key.txt");
    let db = seeded_db("age_backup");
    // The backup host has the public key only: no identity anywhere in its config.
    let config = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\nage_recipients = [\"{}\"]\n\n[environments.prod]\ndatabase_url = \"{}\"\n",
        dir.path().display(),
        key.public,
        pg_url(&db)
    ));
    let store = dir.path().join("store");

    let r = run(drctl(&config).args(["backup", "--env", "prod", "-o", "json"]), 0, &[&key]);
    let doc = r.json();
    assert_eq!(doc["encryption"], "age", "{doc}");
    let id = doc["id"].as_str().unwrap().to_string();

    let backup_dir = store.join("backups/prod").join(&id);
    let mut objects: Vec<PathBuf> =
        files_under(&backup_dir).into_iter().filter(|p| !p.ends_with("manifest.json")).collect();
    objects.sort();
    let names: Vec<String> = objects.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [format!("{db}.dump.zst.age.000")]);
    let stored = std::fs::read(&objects[0]).unwrap();
    assert!(stored.starts_with(AGE_HEADER), "the object starts with {:?}", &stored[..32.min(stored.len())]);
    assert!(stored.windows(key.public.len()).all(|w| w != key.public.as_bytes()), "recipients are not in the data");
    let zstd = Command::new("zstd").args(["-t", "-q"]).arg(&objects[0]).output().unwrap();
    assert!(!zstd.status.success(), "the stored object is not readable as zstd");

    let manifest: Value = serde_json::from_slice(&std::fs::read(backup_dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["encryption"], "age");
    assert_eq!(manifest["age_recipients"], serde_json::json!([key.public]));
    assert_eq!(manifest["format"], "pg_dump -Fc, zstd, age");
    assert_eq!(manifest["objects"][0]["key"], format!("backups/prod/{id}/{db}.dump.zst.age.000"));
    assert_eq!(manifest["objects"][0]["size"], stored.len() as u64);
    assert_eq!(manifest["objects"][0]["sha256"], sha256_hex(&stored), "the sha256 is of the stored bytes");
    assert_eq!(manifest["sha256"], sha256_hex(&stored));

    // Restored by hand, as README and `backup --help` say: cat | age -d -i KEY | zstd -dc | pg_restore.
    let restored = crate::harness::unique_name("age_restored");
    pg.create_db(&restored);
    let cat = objects.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" ");
    sh_env(
        &format!(
            "cat {cat} | age -d -i {} | zstd -dc | pg_restore --no-owner -d 'postgres://postgres@127.0.0.1:{}/{restored}'",
            key.path.display(),
            pg.port
        ),
        &[("PGPASSWORD", pg.password())],
    );
    assert_eq!(table_counts(&restored), table_counts(&db));
    assert_eq!(table_counts(&db), "300,20000,0,77");

    // And the line `backup --help` shows, as written, run in the backup's directory.
    let help = run(drctl(&config).args(["backup", "--help"]), 0, &[]).stdout;
    let line = help
        .lines()
        .map(str::trim)
        .find(|l| l.contains("| age -d -i KEY |"))
        .unwrap_or_else(|| panic!("no age restore line in `backup --help`:\n{help}"));
    let from_help = crate::harness::unique_name("age_help_restored");
    pg.create_db(&from_help);
    let line = line
        .replace("DB.dump", &format!("{db}.dump"))
        .replace("KEY", &key.path.display().to_string())
        .replace("USER@HOST", &format!("postgres@127.0.0.1:{}", pg.port))
        .replace("NEWDB", &from_help);
    sh_env(&format!("cd {} && {line} --no-owner", backup_dir.display()), &[("PGPASSWORD", pg.password())]);
    assert_eq!(table_counts(&from_help), table_counts(&db));

    // verify-chain re-hashes the stored bytes: no key needed, none configured.
    let v = run(drctl(&config).args(["verify-chain", "--backups", "--deep", "-o", "json"]), 0, &[&key]);
    assert_eq!(v.json()["ok"], true, "{}", v.stdout);
    let list = run(drctl(&config).args(["backup", "list", "-o", "json"]), 0, &[&key]).json();
    assert_eq!(list["backups"][0]["verified"], true, "{list}");

    // One flipped byte of the ciphertext: --deep sees it, still without a key.
    let mut bad = stored.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x01;
    std::fs::write(&objects[0], &bad).unwrap();
    let v = run(drctl(&config).args(["verify-chain", "--backups", "--deep", "-o", "json"]), 4, &[&key]);
    assert!(v.json()["chains"][0]["reason"].as_str().unwrap().contains("sha256"), "{}", v.stdout);
    std::fs::write(&objects[0], &stored).unwrap();
    store_has_none_of(&store, &[&key]);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The config of `p` with its `age_identity_file` line removed or put back.
fn set_identity_line(p: &Pair, key: &Key, present: bool) {
    let line = format!("age_identity_file = \"{}\"\n", key.path.display());
    let text = std::fs::read_to_string(&p.config).unwrap().replace(&line, "");
    let text = if present { text.replacen("age_recipients", &format!("{line}age_recipients"), 1) } else { text };
    std::fs::write(&p.config, text).unwrap();
}

#[test]
fn a_sync_resumed_from_an_encrypted_stored_dump_decrypts_with_the_identity_and_refuses_without_it() {
    let keys = TestDir::new();
    let key = Key::new(&keys, "staging-restore.key");
    let wrong = Key::new(&keys, "someone-else.key");
    let store_keys = format!("age_recipients = [\"{}\"]\nage_identity_file = \"{}\"\n", key.public, key.path.display());
    let p = pair("age_resume", "sync_from = \"prod\"", &store_keys);
    let before = fingerprint(&p.to);
    let dumped = fingerprint(&p.from);
    // The first run's tee restores from the plaintext stream; only the stored copy is encrypted.
    let old = kill_9_after_the_commit(&p);
    let objects = dump_objects(&p, &old);
    assert!(objects.iter().all(|o| o.file_name().unwrap().to_string_lossy().contains(".dump.zst.age.")), "{objects:?}");
    assert!(std::fs::read(&objects[0]).unwrap().starts_with(AGE_HEADER));
    assert_eq!(fingerprint(&p.to), before, "the killed swap changed nothing");
    // prod changes after the dump: a rerun restoring the stored dump does not see this.
    Cluster::shared().psql(&p.from, "UPDATE marker SET v = 'after the dump'");

    // No identity named: exit 2 naming age_identity_file, before anything is restored.
    set_identity_line(&p, &key, false);
    let r = run(sync(&p), 2, &[&key, &wrong]);
    assert!(r.stderr.contains("age_identity_file") && r.stderr.contains(&old), "{}", r.stderr);
    assert_eq!(r.json()["status"], "refused", "{}", r.stdout);
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to, "no scratch copy is left");

    // Another key, named by $DRCTL_AGE_IDENTITY: exit 2, naming the keys by their public halves.
    let r = run(sync(&p).env("DRCTL_AGE_IDENTITY", &wrong.path), 2, &[&key, &wrong]);
    assert!(r.stderr.contains("age_identity_file") && r.stderr.contains("$DRCTL_AGE_IDENTITY"), "{}", r.stderr);
    assert!(r.stderr.contains(&wrong.public) && r.stderr.contains(&key.public), "{}", r.stderr);
    assert_eq!(fingerprint(&p.to), before);
    assert_eq!(databases_like(&p.to), p.to);

    // The right key, from [store] age_identity_file: the rerun restores the stored dump.
    set_identity_line(&p, &key, true);
    let r = run(sync(&p), 0, &[&key, &wrong]);
    let doc = r.json();
    assert_eq!(doc["source"], "stored", "{doc}");
    assert_eq!(doc["backup_id"], old.as_str());
    assert_eq!(fingerprint(&p.to), dumped, "the target holds the dump's data, prod as it was");
    let events = journal_events(&p.dir.path().join("store"));
    let restore = events
        .iter()
        .find(|e| e["event"] == "step-done" && e["run_id"] == doc["run_id"] && e["details"]["step"] == "restore")
        .unwrap();
    assert_eq!(restore["details"]["source"], "stored", "{restore}");
    let failed: Vec<&Value> = events.iter().filter(|e| e["event"] == "step-failed").collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().all(|e| e["details"]["error"].as_str().unwrap().contains("age_identity_file")));

    // The identity was needed only for that: a new sync dumps afresh (encrypted again).
    set_identity_line(&p, &key, false);
    let doc = run(sync(&p), 0, &[&key, &wrong]).json();
    assert_eq!(doc["source"], "dump");
    assert_eq!(fingerprint(&p.to), fingerprint(&p.from));
    let new = dump_objects(&p, doc["backup_id"].as_str().unwrap());
    assert!(std::fs::read(&new[0]).unwrap().starts_with(AGE_HEADER));
    store_has_none_of(&p.dir.path().join("store"), &[&key, &wrong]);
}

#[test]
fn bad_recipients_are_refused_at_load_by_index_and_a_pasted_secret_is_never_echoed() {
    let dir = TestDir::new();
    let key = Key::new(&dir, "k.txt");
    let write = |recipients: &str| {
        dir.write_config(&format!(
            "[store]\nurl = \"file://{}/store\"\nage_recipients = [{recipients}]\n\n[environments.prod]\n\
             database_url = \"postgres://postgres@127.0.0.1:1/x\"\n",
            dir.path().display()
        ))
    };
    let config = write(&format!("\"{}\", \"age1notakey\"", key.public));
    let r = run(Drctl::new().config(&config).args(["backup", "list"]), 2, &[]);
    assert!(r.stderr.contains("[store] age_recipients[1]") && r.stderr.contains("age1notakey"), "{}", r.stderr);
    let config = write(&format!("\"{}\"", key.secret));
    let r = run(Drctl::new().config(&config).args(["backup", "--env", "prod"]), 2, &[&key]);
    assert!(r.stderr.contains("[store] age_recipients[0]") && r.stderr.contains("secret key"), "{}", r.stderr);
}
