//! pitr-restore into a data directory: a real cluster archiving through `drctl wal-push` into
//! moto S3, a base backup taken by drctl, rows written at three moments with segment switches
//! between, then restores to a time, an LSN and the latest point, each a real server started by
//! drctl, promoted and written to. And the failures that must never end in an early promote: a
//! corrupted archived segment and an archive that stops answering mid-recovery abort the recovery
//! and exit 4 naming the segment; targets outside the recoverable window are exit 3 stating it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::archiving::Archiving;
use crate::harness::fault_proxy::FaultProxy;
use crate::harness::moto::Moto;
use crate::harness::s3::s3_put;

/// A data directory a test restores into; the server drctl started in it is stopped on drop.
struct Restored {
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Restored {
    fn new(bin: &Path) -> Restored {
        let dir = tempfile::Builder::new().prefix("drctl-it-pitr-").tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        Restored { dir, bin: bin.to_path_buf() }
    }

    /// The data directory (absent until pitr-restore creates it).
    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn psql(&self, port: u16, password: &str, sql: &str) -> Result<String, String> {
        crate::harness::pg::psql_on(&self.bin, port, password, "app", sql)
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(self.data().join("drctl-pitr-restore.log")).unwrap_or_default()
    }
}

impl Drop for Restored {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            let _ = Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(self.data())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn port_of(r: &crate::harness::drctl::RunResult) -> u16 {
    r.json()["port"].as_u64().unwrap_or_else(|| panic!("no port in the report:\n{}", r.stdout)) as u16
}

#[test]
fn a_base_backup_and_the_archive_recover_to_a_time_an_lsn_and_the_latest_point() {
    let a = Archiving::start(|| Moto::shared().endpoint());
    a.insert("a", 1..=10);
    a.base_backup();
    a.insert("b", 11..=20);
    let lsn_b = a.cluster.psql("app", "SELECT pg_current_wal_lsn()");
    a.switch_and_archive();
    std::thread::sleep(Duration::from_millis(1200));
    let between = a
        .cluster
        .psql("app", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')");
    std::thread::sleep(Duration::from_millis(1200));
    a.insert("c", 21..=30);
    a.switch_and_archive();
    let pw = a.cluster.password().to_string();

    // A time between batch b and batch c: exactly the rows up to b.
    let at_time = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--target-time", &between], &at_time.data());
    assert_eq!(r.code, 0, "pitr-restore --target-time failed:\n{}\n{}\n{}", r.stdout, r.stderr, at_time.server_log());
    let port = port_of(&r);
    assert_eq!(at_time.psql(port, &pw, "SELECT count(*), max(id) FROM t").unwrap(), "20|20");
    assert!(r.json()["reached_time"].as_str().is_some_and(|t| t < between.as_str()), "{}", r.stdout);
    // Promoted: it takes writes, and a rerun of the same command changes nothing.
    at_time.psql(port, &pw, "INSERT INTO t VALUES (100, 'after')").unwrap();
    let again = a.restore(&["--target-time", &between], &at_time.data());
    assert_eq!(
        (again.code, again.json()["status"].as_str()),
        (0, Some("already_done")),
        "{}\n{}",
        again.stdout,
        again.stderr
    );
    drop(at_time);

    // An LSN just after batch b's commit: the same rows.
    let at_lsn = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--target-lsn", &lsn_b], &at_lsn.data());
    assert_eq!(r.code, 0, "pitr-restore --target-lsn failed:\n{}\n{}\n{}", r.stdout, r.stderr, at_lsn.server_log());
    assert_eq!(at_lsn.psql(port_of(&r), &pw, "SELECT count(*) FROM t").unwrap(), "20");
    drop(at_lsn);

    // The latest point: everything archived.
    let latest = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--latest"], &latest.data());
    assert_eq!(r.code, 0, "pitr-restore --latest failed:\n{}\n{}\n{}", r.stdout, r.stderr, latest.server_log());
    let port = port_of(&r);
    assert_eq!(latest.psql(port, &pw, "SELECT count(*) FROM t").unwrap(), "30");
    latest.psql(port, &pw, "INSERT INTO t VALUES (101, 'after')").unwrap();
    drop(latest);

    // Outside the window: exit 3 stating it, nothing created.
    let nowhere = Restored::new(a.cluster.bin_dir());
    let before = a.restore(&["--target-time", "2001-01-01T00:00:00Z"], &nowhere.data());
    assert_eq!(before.code, 3, "{}\n{}", before.stdout, before.stderr);
    let detail = before.check("target-window")["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("before the recoverable window") && detail.contains("end of base backup"), "{detail}");
    let after = a.restore(&["--target-time", "2999-01-01T00:00:00Z"], &nowhere.data());
    assert_eq!(after.code, 3, "{}\n{}", after.stdout, after.stderr);
    let detail = after.check("target-window")["detail"].as_str().unwrap_or_default().to_string();
    assert!(detail.contains("after the newest archived WAL"), "{detail}");
    assert!(!nowhere.data().exists(), "a refused restore created {}", nowhere.data().display());
}

#[test]
fn a_corrupted_archived_segment_aborts_recovery_and_is_exit_4_naming_it() {
    let a = Archiving::start(|| Moto::shared().endpoint());
    a.insert("a", 1..=10);
    a.base_backup();
    a.insert("b", 11..=20);
    let seg = a.switch_and_archive();
    a.insert("c", 21..=30);
    a.switch_and_archive();
    // Replace the stored segment with other bytes under the same key (no sha256 metadata, so
    // wal-fetch checks it against the index line).
    let key = format!("pitr/wal/prod/{}/00000001/{seg}.zst", a.sysid());
    let noise: Vec<u8> = (0..16u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    s3_put(&a.bucket, &key, zstd::encode_all(&noise[..], 1).unwrap(), &[]);

    let into = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--latest"], &into.data());
    assert_eq!(
        r.code,
        4,
        "a corrupted segment must abort recovery:\n{}\n{}\n{}",
        r.stdout,
        r.stderr,
        into.server_log()
    );
    assert!(r.stderr.contains(&seg), "the error names {seg}:\n{}", r.stderr);
    // Never promoted with fewer rows: the server stopped in recovery.
    assert!(!into.server_log().contains("database system is ready to accept connections"), "{}", into.server_log());
}

#[test]
fn an_archive_that_stops_answering_mid_recovery_aborts_it_and_is_exit_4() {
    let proxy = FaultProxy::start(Moto::shared().port, 0);
    let a = Archiving::start(|| proxy.endpoint());
    a.insert("a", 1..=10);
    a.base_backup();
    a.insert("b", 11..=20);
    let seg = a.switch_and_archive();
    // From here the WAL objects cannot be fetched; the journal, manifest and base backup can.
    proxy.unreachable_for(Some("/00000001/00000001"));
    let into = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--latest"], &into.data());
    assert_eq!(
        r.code,
        4,
        "an unreachable archive must abort recovery:\n{}\n{}\n{}",
        r.stdout,
        r.stderr,
        into.server_log()
    );
    assert!(r.stderr.contains("00000001"), "the error names the segment:\n{}", r.stderr);
    assert!(!into.server_log().contains("database system is ready to accept connections"), "{}", into.server_log());
    let _ = seg;
}

#[test]
fn a_restore_command_whose_config_file_is_gone_aborts_recovery_instead_of_promoting() {
    let a = Archiving::start(|| Moto::shared().endpoint());
    a.insert("a", 1..=10);
    a.base_backup();
    a.insert("b", 11..=20);
    a.switch_and_archive();
    // A ready-to-start directory, then the config restore_command names disappears.
    let into = Restored::new(a.cluster.bin_dir());
    let r = a.restore(&["--latest", "--no-start"], &into.data());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.json()["start_with"].as_str().is_some_and(|s| s.contains("pg_ctl")), "{}", r.stdout);
    let moved = a.dir.path().join("drctl.toml.moved");
    std::fs::rename(&a.cfg, &moved).unwrap();
    let log = into.data().join("drctl-pitr-restore.log");
    let started = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(a.cluster.bin_dir().join("pg_ctl"))
        .args(["start", "-w", "-t", "60", "-D"])
        .arg(into.data())
        .arg("-l")
        .arg(&log)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    std::fs::rename(&moved, &a.cfg).unwrap();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!started.success(), "the server started although restore_command cannot read its config:\n{text}");
    // 126 is what PostgreSQL reports as "command not executable": an abort, never "not archived".
    assert!(text.contains("FATAL:  could not restore file") && text.contains("command not executable"), "{text}");
    assert!(!text.contains("database system is ready to accept connections"), "{text}");
    assert!(!into.data().join("postmaster.pid").exists(), "a postmaster still runs:\n{text}");
}
