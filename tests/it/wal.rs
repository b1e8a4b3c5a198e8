//! wal-push (archive_command) and wal-fetch (restore_command) end to end.
//!
//! 1. A real cluster archives through drctl wal-push into moto: segments appear in the index with
//!    their sha256 and fetch back byte-identical; `check` proves the round trip; a wal-push
//!    SIGKILLed between its object and its index line is finished by PostgreSQL's own retry; a
//!    promoted replica archives its history and `.partial` files.
//! 2. On a file store, with segments made here (a page header is all wal-push reads): identical
//!    pushes succeed, different ones are exit 4 and change nothing, and every way wal-fetch can
//!    fail is 126 with one error line, except "not archived", which is a silent 1.
//! 3. With age_recipients on S3: the object is age over zstd, opens with the identity (and by
//!    hand with the age CLI), and without it wal-fetch is 126 naming age_identity_file.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ::age::secrecy::ExposeSecret;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::drctl::{Drctl, RunResult};
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::pg::Cluster;
use crate::harness::s3::{s3_get, s3_put};
use crate::harness::{TestDir, free_port, tail, wait_until};

const SEG: usize = 16 << 20;

fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A 16 MiB WAL segment as wal-push sees one: a long page header naming `name`'s address,
/// timeline `tli` and cluster `sysid` (PostgreSQL 15's layout), then filler seeded by `seed`.
fn segment_with_tli(name: &str, tli: u32, sysid: u64, seed: u32) -> Vec<u8> {
    let log = u64::from_str_radix(&name[8..16], 16).unwrap();
    let seg = u64::from_str_radix(&name[16..24], 16).unwrap();
    let mut b = vec![0u8; SEG];
    let mut x = seed.wrapping_mul(2654435761).max(1);
    for (i, chunk) in b.chunks_mut(4).enumerate().skip(16) {
        // Compressible, like real WAL: runs of one word.
        if i % 16 == 0 {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
        }
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
    b[2..4].copy_from_slice(&0x0002u16.to_le_bytes());
    b[4..8].copy_from_slice(&tli.to_le_bytes());
    b[8..16].copy_from_slice(&((log * 256 + seg) * SEG as u64).to_le_bytes());
    b[16..24].fill(0);
    b[24..32].copy_from_slice(&sysid.to_le_bytes());
    b[32..36].copy_from_slice(&(SEG as u32).to_le_bytes());
    b[36..40].copy_from_slice(&8192u32.to_le_bytes());
    b
}

fn segment(name: &str, sysid: u64, seed: u32) -> Vec<u8> {
    segment_with_tli(name, u32::from_str_radix(&name[..8], 16).unwrap(), sysid, seed)
}

/// A stand-in data directory: `global/pg_control` starting with `sysid`, and `pg_wal/`.
fn data_dir(dir: &TestDir, name: &str, sysid: u64) -> PathBuf {
    let d = dir.path().join(name);
    std::fs::create_dir_all(d.join("global")).unwrap();
    std::fs::create_dir_all(d.join("pg_wal")).unwrap();
    let mut control = vec![0u8; 8192];
    control[..8].copy_from_slice(&sysid.to_le_bytes());
    std::fs::write(d.join("global/pg_control"), control).unwrap();
    d
}

/// stderr is exactly one `error:` line naming `name`, and at most a `hint:` line after it.
fn one_error_naming(r: &RunResult, name: &str) {
    let lines: Vec<&str> = r.stderr.lines().collect();
    assert!(
        !lines.is_empty() && lines[0].starts_with("error: ") && lines[0].contains(name),
        "want one error line naming {name}:\n{}",
        r.stderr
    );
    assert!(lines.len() == 1 || (lines.len() == 2 && lines[1].starts_with("hint: ")), "{}", r.stderr);
    assert!(r.stdout.is_empty(), "stdout: {}", r.stdout);
}

/// The lines of an index chunk, by name.
fn index_lines(chunk: &[u8]) -> HashMap<String, Value> {
    let v: Value = serde_json::from_slice(chunk).unwrap_or_else(|e| panic!("index chunk: {e}"));
    v["files"].as_array().unwrap().iter().map(|l| (l["name"].as_str().unwrap().to_string(), l.clone())).collect()
}

/// `xattr` of `path`, as `getfattr -n` would show it.
fn xattr(path: &Path, name: &str) -> Option<String> {
    let p = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: NUL-terminated path and name, a buffer of the length given.
    let len = unsafe { libc::getxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| String::from_utf8_lossy(&buf[..len as usize]).into_owned())
}

/// `sh -c SCRIPT`'s stdout, panicking with its stderr unless it succeeds.
fn sh(script: &str) -> Vec<u8> {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// Runs `d` to its end; its exit code and its peak RSS (VmHWM of its post-exec address space,
/// polled, as verify_chain's streaming test does) in MiB.
fn peak_rss_mib(d: Drctl) -> (i32, u64) {
    let mut child = d.spawn();
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_file)
            && let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    assert!(peak_kib > 0, "drctl's VmHWM was never read");
    (status.code().unwrap_or(-1), peak_kib / 1024)
}

// ---------------------------------------------------------------------------------------------
// 1. A real cluster archiving through wal-push into moto.

struct Archive<'a> {
    bucket: &'a str,
    sysid: u64,
    pg_log: PathBuf,
}

impl Archive<'_> {
    fn chunk(&self, tli: u32, chunk: &str) -> HashMap<String, Value> {
        let key = format!("drctl/wal/prod/{}/{tli:08X}/index/{chunk}.json", self.sysid);
        s3_get(self.bucket, &key).map(|(b, _)| index_lines(&b)).unwrap_or_default()
    }

    /// The index line of `name` (timeline 1, log 0, unless a history file), once it is there.
    fn wait_listed(&self, tli: u32, chunk: &str, name: &str) -> Value {
        let mut line = None;
        let found = wait_until(Duration::from_secs(90), || {
            line = self.chunk(tli, chunk).remove(name);
            line.is_some()
        });
        assert!(found, "{name} not in the index after 90 s; server log:\n{}", tail(&self.pg_log, 40));
        line.unwrap()
    }
}

#[test]
fn a_cluster_archives_through_wal_push_and_fetches_back_even_after_a_kill_9() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("wal");
    moto.create_bucket(&bucket);
    let dir = TestDir::new();
    // The server runs wal-push as its own user: it must read the directory and the config. Its
    // config has no password (wal-push never connects), unlike the operator's below.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let aws = format!("[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n", moto.endpoint());
    let server_cfg = dir.write(
        "server.toml",
        &format!(
            "[store]\nurl = \"s3://{bucket}/drctl\"\n{aws}\n[environments.prod]\n\
             database_url = \"postgres://postgres@127.0.0.1:1/postgres\"\n"
        ),
    );
    std::fs::set_permissions(&server_cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    let push = format!(
        "AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_EC2_METADATA_DISABLED=true {} -c {} wal-push --env prod %p",
        env!("CARGO_BIN_EXE_drctl"),
        server_cfg.display()
    );
    let pg = Cluster::start_new_with(&format!("archive_mode = on\narchive_command = '{push}'\n"));
    let operator_cfg = dir.write(
        "drctl.toml",
        &format!(
            "[store]\nurl = \"s3://{bucket}/drctl\"\n{aws}\n[environments.prod]\n\
             database_url = \"postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/postgres?sslmode=disable\"\n",
            pg.port
        ),
    );
    let sysid: u64 = pg.psql("postgres", "SELECT system_identifier FROM pg_control_system()").parse().unwrap();
    let archive = Archive { bucket: &bucket, sysid, pg_log: pg.dir.join("postgres.log") };
    let fetch = |name: &str, dest: &Path, cwd: &Path| {
        Drctl::new().config(&server_cfg).args(["wal-fetch", "--env", "prod", name]).arg(dest).cwd(cwd).run()
    };

    // === Rows, a switch: the segment is archived with its sha256 and fetches back identical.
    pg.psql("postgres", "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 20000) g");
    let first = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let line = archive.wait_listed(1, "00000000", &first);
    let original = std::fs::read(pg.data_dir.join("pg_wal").join(&first)).unwrap();
    assert_eq!(line["sha256"], sha(&original), "{line}");
    assert_eq!(line["bytes"], SEG as u64, "{line}");
    let key = format!("wal/prod/{sysid}/00000001/{first}.zst");
    assert_eq!(line["key"], key.as_str(), "{line}");
    let (stored, meta) = s3_get(&bucket, &format!("drctl/{key}")).expect("the object");
    assert_eq!(meta.get("sha256"), Some(&sha(&original)), "x-amz-meta-sha256");
    assert_eq!(line["stored_bytes"], stored.len() as u64);
    assert!(stored.len() < SEG / 2, "compressed: {} bytes", stored.len());
    // By hand, as the README says.
    let object = dir.path().join(format!("{first}.zst"));
    std::fs::write(&object, &stored).unwrap();
    assert_eq!(sh(&format!("zstd -dc {}", object.display())), original, "zstd -dc");
    let (system, _) = s3_get(&bucket, "drctl/wal/prod/system.json").expect("system.json");
    let system: Value = serde_json::from_slice(&system).unwrap();
    assert_eq!(system["system_identifier"], sysid.to_string());

    let dest = dir.path().join("restored");
    let r = fetch(&first, &dest, &pg.data_dir).expect_code(0);
    assert!(r.stderr.is_empty() && r.stdout.is_empty(), "a restore prints nothing: {r:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), original, "wal-fetch is byte-identical");

    // === check proves the round trip on its own.
    let r = Drctl::new()
        .config(&operator_cfg)
        .env("TEST_PG_PASSWORD", pg.password())
        .args(["check", "--env", "prod", "-o", "json"])
        .run();
    r.assert_no_secret(pg.password());
    let doc = r.json();
    let row = doc["checks"].as_array().unwrap().iter().find(|c| c["check"] == "wal-archiving").cloned();
    let row = row.unwrap_or_else(|| panic!("no wal-archiving in {doc}"));
    assert_eq!(row["ok"], true, "{row}");
    assert!(row["detail"].as_str().unwrap().contains("archived in"), "{row}");

    // === kill -9 between the object and its index line, then PostgreSQL's own retry.
    pg.psql("postgres", &format!("ALTER SYSTEM SET archive_command = 'DRCTL_TEST_KILL_AFTER=wal-push-stored {push}'"));
    pg.psql("postgres", "SELECT pg_reload_conf()");
    // The archiver reads the reload on its next wake-up; the switch below is what wakes it.
    std::thread::sleep(Duration::from_secs(1));
    pg.psql("postgres", "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    let killed = pg.psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())");
    let killed_key = format!("drctl/wal/prod/{sysid}/00000001/{killed}.zst");
    // The archiver dies with its command (FATAL) and the postmaster restarts it, so
    // pg_stat_archiver never hears of the failure: the server log does.
    let died = wait_until(Duration::from_secs(60), || {
        let log = std::fs::read_to_string(&archive.pg_log).unwrap_or_default();
        let killed_line = log.lines().any(|l| l.contains("signal 9") || l.contains("exit code 137"));
        killed_line && log.contains(&format!("pg_wal/{killed}")) && s3_get(&bucket, &killed_key).is_some()
    });
    assert!(died, "no killed push of {killed}; server log:\n{}", tail(&archive.pg_log, 40));
    // Retried and killed again meanwhile: still stored, still not listed.
    std::thread::sleep(Duration::from_secs(2));
    assert!(!archive.chunk(1, "00000000").contains_key(&killed), "a killed push listed {killed}");
    pg.psql("postgres", "ALTER SYSTEM RESET archive_command");
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let line = archive.wait_listed(1, "00000000", &killed);
    assert_eq!(line["sha256"], sha(&std::fs::read(pg.data_dir.join("pg_wal").join(&killed)).unwrap()));
    // The archive is complete: every segment up to the killed one is listed and fetches back
    // with its sha256.
    let lines = archive.chunk(1, "00000000");
    let last = u32::from_str_radix(&killed[16..], 16).unwrap();
    for seg in 1..=last {
        let name = format!("{:08X}{:08X}{seg:08X}", 1, 0);
        let line = lines.get(&name).unwrap_or_else(|| panic!("{name} is not in the index: {lines:?}"));
        let out = dir.path().join(format!("fetched-{name}"));
        fetch(&name, &out, &pg.data_dir).expect_code(0);
        assert_eq!(line["sha256"], sha(&std::fs::read(&out).unwrap()), "{name}");
    }

    // === A promoted replica archives its timeline's history file and the old timeline's last,
    // partial segment; pg_basebackup's backup history file came through as well.
    let replica = Cluster::start_replica(&pg);
    // pg_basebackup's backup history file, archived by the primary before it goes.
    let backup =
        wait_until(Duration::from_secs(60), || archive.chunk(1, "00000000").keys().any(|n| n.ends_with(".backup")));
    assert!(backup, "no .backup file archived; server log:\n{}", tail(&archive.pg_log, 40));
    // WAL the replica has in a segment the primary has not finished: at promotion that segment
    // becomes the old timeline's `.partial`.
    pg.psql("postgres", "INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g");
    let lsn = pg.psql("postgres", "SELECT pg_current_wal_lsn()");
    let caught_up = wait_until(Duration::from_secs(60), || {
        replica.psql("postgres", &format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")) == "t"
    });
    assert!(caught_up, "the replica did not replay {lsn}");
    pg.stop();
    replica.psql("postgres", "SELECT pg_promote()");
    let history = archive.wait_listed(2, "history", "00000002.history");
    let local = std::fs::read(replica.data_dir.join("pg_wal/00000002.history")).unwrap();
    assert_eq!(history["sha256"], sha(&local), "{history}");
    let out = dir.path().join("00000002.history");
    fetch("00000002.history", &out, &replica.data_dir).expect_code(0);
    assert_eq!(std::fs::read(&out).unwrap(), local);
    let partial =
        wait_until(Duration::from_secs(60), || archive.chunk(1, "00000000").keys().any(|n| n.ends_with(".partial")));
    assert!(partial, "no .partial archived; server log:\n{}", tail(&replica.dir.join("postgres.log"), 40));
    // The next timeline's history file, which recovery asks for as a matter of course: not there.
    let r = fetch("00000003.history", &dir.path().join("none"), &replica.data_dir).expect_code(1);
    assert!(r.stderr.is_empty() && r.stdout.is_empty(), "{r:?}");
    assert!(!dir.path().join("none").exists());
}

// ---------------------------------------------------------------------------------------------
// 2. A file store, and every way wal-fetch can fail.

const A: u64 = 7_300_000_000_000_000_001;
const B: u64 = 7_300_000_000_000_000_002;

#[test]
fn wal_push_refuses_what_differs_and_wal_fetch_fails_loudly_but_for_not_archived() {
    let dir = TestDir::new();
    let cfg = dir.write_config(&format!(
        "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n",
        dir.path().display()
    ));
    let data = data_dir(&dir, "data", A);
    let s1 = "000000010000000000000001";
    let seg1 = segment(s1, A, 1);
    std::fs::write(data.join("pg_wal").join(s1), &seg1).unwrap();
    let push = |path: &str| Drctl::new().config(&cfg).cwd(&data).args(["wal-push", path]).run();
    let fetch = |name: &str, dest: &str| Drctl::new().config(&cfg).cwd(&data).args(["wal-fetch", name, dest]).run();

    // === Pushed once, twice: both 0, stored once with its sha256 as an extended attribute.
    let r = push(&format!("pg_wal/{s1}")).expect_code(0);
    assert!(r.stderr.is_empty() && r.stdout.is_empty(), "{r:?}");
    let object = dir.path().join(format!("store/wal/prod/{A}/00000001/{s1}.zst"));
    assert_eq!(xattr(&object, "user.drctl.sha256"), Some(sha(&seg1)));
    assert_eq!(sh(&format!("zstd -dc {}", object.display())), seg1);
    let index = dir.path().join(format!("store/wal/prod/{A}/00000001/index/00000000.json"));
    let lines = index_lines(&std::fs::read(&index).unwrap());
    assert_eq!(lines[s1]["sha256"], sha(&seg1));
    let stored = std::fs::read(&object).unwrap();
    push(&format!("pg_wal/{s1}")).expect_code(0);
    assert_eq!(std::fs::read(&object).unwrap(), stored);

    // === A different file under the same name: 4, nothing overwritten.
    let mut changed = seg1.clone();
    changed[SEG / 2] ^= 0xff;
    std::fs::write(data.join("pg_wal").join(s1), &changed).unwrap();
    let r = push(&format!("pg_wal/{s1}")).expect_code(4);
    assert!(r.stderr.contains(&sha(&seg1)) && r.stderr.contains(&sha(&changed)), "{}", r.stderr);
    assert!(r.stderr.contains("nothing was overwritten"), "{}", r.stderr);
    assert_eq!(std::fs::read(&object).unwrap(), stored);
    assert_eq!(index_lines(&std::fs::read(&index).unwrap())[s1]["sha256"], sha(&seg1));
    std::fs::write(data.join("pg_wal").join(s1), &seg1).unwrap();

    // === Another cluster's segment: 4 naming both system identifiers.
    let s2 = "000000010000000000000002";
    std::fs::write(data.join("pg_wal").join(s2), segment(s2, B, 2)).unwrap();
    let r = push(&format!("pg_wal/{s2}")).expect_code(4);
    assert!(r.stderr.contains(&A.to_string()) && r.stderr.contains(&B.to_string()), "{}", r.stderr);
    assert!(r.stderr.starts_with(&format!("error: wal-push {s2}: ")), "{}", r.stderr);
    // A header that does not match the name (another timeline's file renamed): 4.
    let renamed = "000000020000000000000002";
    std::fs::write(data.join("pg_wal").join(renamed), segment_with_tli(renamed, 1, A, 3)).unwrap();
    let r = push(&format!("pg_wal/{renamed}")).expect_code(4);
    assert!(r.stderr.contains("timeline"), "{}", r.stderr);
    assert!(!dir.path().join(format!("store/wal/prod/{A}/00000002")).exists());
    // Not a file PostgreSQL archives: a usage error.
    std::fs::write(data.join("pg_wal/xlogtemp.42"), b"x").unwrap();
    push("pg_wal/xlogtemp.42").expect_code(2);
    // A history file has no header: its cluster is the working directory's pg_control.
    let h = "00000002.history";
    std::fs::write(data.join("pg_wal").join(h), "1\t0/3000000\tno recovery target specified\n").unwrap();
    push(&format!("pg_wal/{h}")).expect_code(0);
    let other = data_dir(&dir, "other", B);
    std::fs::write(other.join("pg_wal").join("00000003.history"), "2\t0/4000000\tx\n").unwrap();
    let r = Drctl::new().config(&cfg).cwd(&other).args(["wal-push", "pg_wal/00000003.history"]).run().expect_code(4);
    assert!(r.stderr.contains("global/pg_control"), "{}", r.stderr);

    // === wal-fetch: restored, and silent.
    let r = fetch(s1, "pg_wal/RECOVERYXLOG").expect_code(0);
    assert!(r.stderr.is_empty() && r.stdout.is_empty(), "{r:?}");
    assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), seg1);
    let r = fetch(h, "pg_wal/RECOVERYHISTORY").expect_code(0);
    assert!(r.stderr.is_empty(), "{r:?}");
    // Not archived: 1, and nothing printed at all.
    for absent in ["000000010000000000000009", "00000005.history", "000000010000000000000002"] {
        let r = fetch(absent, "pg_wal/RECOVERYXLOG.absent").expect_code(1);
        assert!(r.stderr.is_empty() && r.stdout.is_empty(), "{absent}: {r:?}");
    }

    // === A damaged object (other content, same key, its sha256 attribute kept): 126, no DEST.
    let dest = "pg_wal/RECOVERYXLOG.bad";
    std::fs::write(&object, zstd::encode_all(&changed[..], 1).unwrap()).unwrap();
    assert_eq!(xattr(&object, "user.drctl.sha256"), Some(sha(&seg1)), "written in place");
    let r = fetch(s1, dest).expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("sha256"), "{}", r.stderr);
    assert!(!data.join(dest).exists() && !data.join(format!("{dest}.drctl-tmp")).exists());
    std::fs::write(&object, b"not zstd at all").unwrap();
    let r = fetch(s1, dest).expect_code(126);
    one_error_naming(&r, s1);
    assert!(!data.join(dest).exists());
    // Copied without its extended attributes: the index line vouches for it instead.
    std::fs::remove_file(&object).unwrap();
    std::fs::write(&object, &stored).unwrap();
    assert_eq!(xattr(&object, "user.drctl.sha256"), None);
    fetch(s1, dest).expect_code(0);
    assert_eq!(std::fs::read(data.join(dest)).unwrap(), seg1);

    // === The store does not answer: 126.
    let closed = free_port();
    let unreachable = dir.write(
        "unreachable.toml",
        &format!(
            "[store]\nurl = \"s3://nowhere/drctl\"\n[aws]\nendpoint_url = \"http://127.0.0.1:{closed}\"\n\
             [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n"
        ),
    );
    let r = Drctl::new()
        .config(&unreachable)
        .cwd(&data)
        .env("AWS_MAX_ATTEMPTS", "2")
        .args(["wal-fetch", s1, "pg_wal/RECOVERYXLOG.x"])
        .run()
        .expect_code(126);
    one_error_naming(&r, s1);
    // A config file that is not there, or none found at all: 126, never clap's or config's 2.
    let r = Drctl::new()
        .config(dir.path().join("missing.toml"))
        .cwd(&data)
        .args(["wal-fetch", s1, "pg_wal/RECOVERYXLOG.x"])
        .run()
        .expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("missing.toml"), "{}", r.stderr);
    if !Path::new("/etc/drctl/drctl.toml").exists() {
        let r = Drctl::new().cwd(&data).args(["wal-fetch", s1, "pg_wal/RECOVERYXLOG.x"]).run().expect_code(126);
        one_error_naming(&r, s1);
    }
    // Command lines that do not parse, or name no WAL file.
    for bad in [vec!["wal-fetch", s1], vec!["wal-fetch", "--bogus", s1, "x"], vec!["wal-fetch", s1, "x", "y"]] {
        let r = Drctl::new().config(&cfg).cwd(&data).args(bad).run().expect_code(126);
        one_error_naming(&r, s1);
    }
    // === check on a server that does not archive: not applicable for an env with no WAL in the
    // store, a failure for one whose WAL the store holds (its archiving stopped).
    let pg = Cluster::shared();
    let url = format!("postgres://postgres:${{TEST_PG_PASSWORD}}@127.0.0.1:{}/postgres?sslmode=disable", pg.port);
    let check_cfg = dir.write(
        "check.toml",
        &format!(
            "[store]\nurl = \"file://{}/store\"\n\n[environments.prod]\ndatabase_url = \"{url}\"\n\n\
             [environments.fresh]\ndatabase_url = \"{url}\"\n",
            dir.path().display()
        ),
    );
    let r = Drctl::new().config(&check_cfg).env("TEST_PG_PASSWORD", pg.password()).args(["check", "-o", "json"]).run();
    r.assert_no_secret(pg.password());
    let doc = r.json();
    let row = |target: &str| {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["target"] == target && c["check"] == "wal-archiving")
            .cloned()
    };
    let fresh = row("fresh").unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(fresh["ok"], true, "{fresh}");
    assert!(fresh["detail"].as_str().unwrap().contains("not archiving (archive_mode = off)"), "{fresh}");
    assert!(fresh["detail"].as_str().unwrap().contains("wal-push --env fresh %p"), "{fresh}");
    let prod = row("prod").unwrap_or_else(|| panic!("{doc}"));
    assert_eq!(prod["ok"], false, "{prod}");
    assert!(prod["detail"].as_str().unwrap().contains("holds WAL archived from this env"), "{prod}");
    assert_eq!(r.code, 3, "a failed check is exit 3");

    let r = Drctl::new().config(&cfg).cwd(&data).args(["wal-fetch", "RECOVERYXLOG", "x"]).run().expect_code(126);
    one_error_naming(&r, "RECOVERYXLOG");
    Drctl::new().args(["wal-fetch", "--help"]).run().expect_code(0);
    // A bug: one error line and 126, not Rust's panic message and 101.
    let r = Drctl::new()
        .config(&cfg)
        .cwd(&data)
        .env("DRCTL_TEST_PANIC_AT", "wal-fetch")
        .args(["wal-fetch", s1, "pg_wal/RECOVERYXLOG.p"])
        .run()
        .expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("panicked") && !r.stderr.contains("thread '"), "{}", r.stderr);
}

// ---------------------------------------------------------------------------------------------
// 3. age on S3.

#[test]
fn encrypted_wal_on_s3_is_age_over_zstd_and_fetches_only_with_the_identity() {
    let moto = Moto::shared();
    let bucket = Moto::unique_bucket("walage");
    moto.create_bucket(&bucket);
    let dir = TestDir::new();
    let id = ::age::x25519::Identity::generate();
    let secret = id.to_string().expose_secret().to_string();
    let key_file = dir.write("age.key", &format!("# public key: {}\n{secret}\n", id.to_public()));
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let wrong = ::age::x25519::Identity::generate();
    let wrong_file = dir.write("wrong.key", &format!("{}\n", wrong.to_string().expose_secret()));
    std::fs::set_permissions(&wrong_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = |name: &str, endpoint: &str, identity: Option<&Path>| {
        let identity = identity.map(|p| format!("age_identity_file = \"{}\"\n", p.display())).unwrap_or_default();
        dir.write(
            name,
            &format!(
                "[store]\nurl = \"s3://{bucket}/drctl\"\nage_recipients = [\"{}\"]\n{identity}\
                 [aws]\nregion = \"us-east-1\"\nendpoint_url = \"{endpoint}\"\n\n\
                 [environments.prod]\ndatabase_url = \"postgres://app@127.0.0.1:1/app\"\n",
                id.to_public()
            ),
        )
    };
    let pusher = config("push.toml", &moto.endpoint(), None);
    let reader = config("read.toml", &moto.endpoint(), Some(&key_file));
    let data = data_dir(&dir, "data", A);
    let s1 = "000000010000000000000001";
    let seg1 = segment(s1, A, 9);
    std::fs::write(data.join("pg_wal").join(s1), &seg1).unwrap();
    let run = |cfg: &Path, args: &[&str]| {
        let r = Drctl::new().config(cfg).cwd(&data).args(args).run();
        r.assert_no_secret(&secret);
        r.assert_no_secret(&secret.to_lowercase());
        r
    };

    run(&pusher, &["wal-push", "--env", "prod", &format!("pg_wal/{s1}")]).expect_code(0);
    let key = format!("drctl/wal/prod/{A}/00000001/{s1}.zst.age");
    let (stored, meta) = s3_get(&bucket, &key).expect("the encrypted object");
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "{:?}", &stored[..32]);
    assert_eq!(meta.get("sha256"), Some(&sha(&seg1)));
    assert!(s3_get(&bucket, &format!("drctl/wal/prod/{A}/00000001/{s1}.zst")).is_none());
    // By hand, as the README says.
    let object = dir.path().join(format!("{s1}.zst.age"));
    std::fs::write(&object, &stored).unwrap();
    assert_eq!(sh(&format!("age -d -i {} {} | zstd -dc", key_file.display(), object.display())), seg1);

    // With the identity (from the config, or $DRCTL_AGE_IDENTITY): restored.
    run(&reader, &["wal-fetch", s1, "pg_wal/RECOVERYXLOG"]).expect_code(0);
    assert_eq!(std::fs::read(data.join("pg_wal/RECOVERYXLOG")).unwrap(), seg1);
    let r = Drctl::new()
        .config(&pusher)
        .cwd(&data)
        .env("DRCTL_AGE_IDENTITY", &key_file)
        .args(["wal-fetch", s1, "pg_wal/RECOVERYXLOG.env"])
        .run()
        .expect_code(0);
    assert!(r.stderr.is_empty(), "{r:?}");
    // Without one, or with the wrong one: 126 naming age_identity_file.
    let r = run(&pusher, &["wal-fetch", s1, "pg_wal/RECOVERYXLOG.no"]).expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("age_identity_file"), "{}", r.stderr);
    let wrong_cfg = config("wrong.toml", &moto.endpoint(), Some(&wrong_file));
    let r = run(&wrong_cfg, &["wal-fetch", s1, "pg_wal/RECOVERYXLOG.no"]).expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("age_identity_file"), "{}", r.stderr);
    assert!(!data.join("pg_wal/RECOVERYXLOG.no").exists());
    // Not archived on S3 (NoSuchKey for both .zst.age and .zst): a silent 1.
    let r = run(&reader, &["wal-fetch", "000000010000000000000007", "pg_wal/RECOVERYXLOG.no"]).expect_code(1);
    assert!(r.stderr.is_empty(), "{r:?}");

    // Replaced by other content, its metadata kept: 126 naming the segment, no DEST.
    let mut other = seg1.clone();
    other[SEG - 1] ^= 1;
    let mut sealed = Vec::new();
    {
        use std::io::Write;
        let enc = ::age::Encryptor::with_recipients(std::iter::once(&id.to_public() as &dyn ::age::Recipient)).unwrap();
        let mut w = enc.wrap_output(&mut sealed).unwrap();
        w.write_all(&zstd::encode_all(&other[..], 1).unwrap()).unwrap();
        w.finish().unwrap();
    }
    s3_put(&bucket, &key, sealed, &[("sha256", &sha(&seg1))]);
    let r = run(&reader, &["wal-fetch", s1, "pg_wal/RECOVERYXLOG.bad"]).expect_code(126);
    one_error_naming(&r, s1);
    assert!(r.stderr.contains("sha256"), "{}", r.stderr);
    assert!(!data.join("pg_wal/RECOVERYXLOG.bad").exists());

    // Memory: a segment that does not compress at all, encrypted, stays within 64 MiB both ways.
    let s3 = "000000010000000000000003";
    let mut noise = segment(s3, A, 3);
    getrandom::fill(&mut noise[8192..]).unwrap();
    std::fs::write(data.join("pg_wal").join(s3), &noise).unwrap();
    let (code, push_mib) =
        peak_rss_mib(Drctl::new().config(&pusher).cwd(&data).args(["wal-push", &format!("pg_wal/{s3}")]));
    assert_eq!(code, 0);
    let (code, fetch_mib) = peak_rss_mib(Drctl::new().config(&reader).cwd(&data).args(["wal-fetch", s3, "pg_wal/R3"]));
    assert_eq!(code, 0);
    assert_eq!(std::fs::read(data.join("pg_wal/R3")).unwrap(), noise);
    eprintln!("peak RSS for an incompressible 16 MiB segment: wal-push {push_mib} MiB, wal-fetch {fetch_mib} MiB");
    assert!(push_mib <= 64 && fetch_mib <= 64, "wal-push {push_mib} MiB, wal-fetch {fetch_mib} MiB");

    // A store answering 500 / 503 / resets (not 404): 126, never "not archived".
    let proxy = FaultProxy::start(moto.port, 1);
    let flaky = config("flaky.toml", &proxy.endpoint(), Some(&key_file));
    let r = Drctl::new()
        .config(&flaky)
        .cwd(&data)
        .env("AWS_MAX_ATTEMPTS", "1")
        .args(["wal-fetch", "000000010000000000000007", "pg_wal/RECOVERYXLOG.no"])
        .run()
        .expect_code(126);
    one_error_naming(&r, "000000010000000000000007");
}
