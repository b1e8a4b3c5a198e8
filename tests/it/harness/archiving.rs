//! An archiving cluster for base-backup, PITR and drill tests: a real PostgreSQL whose
//! archive_command is `drctl wal-push` into a moto bucket (directly or through a proxy), with the
//! drctl.toml both the server's archive_command and the tests' drctl read.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::drctl::Drctl;
use super::moto::Moto;
use super::pg::Cluster;
use super::{TestDir, wait_until};

/// An archiving cluster, its drctl.toml (S3 on moto, possibly through a proxy) and the store.
pub struct Archiving {
    pub dir: TestDir,
    pub cfg: PathBuf,
    pub cluster: Cluster,
    pub bucket: String,
}

/// The server runs archive_command as `postgres` with its own environment: the fake AWS
/// credentials and "no profile files" the harness gives drctl are spelled out here.
pub fn aws_env() -> &'static str {
    "AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true \
     AWS_CONFIG_FILE=/nonexistent/config AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials"
}

impl Archiving {
    /// `endpoint`: moto's, or a proxy's in front of it.
    pub fn start(endpoint: impl Fn() -> String) -> Archiving {
        Archiving::start_with(endpoint, "")
    }

    /// With `extra_toml` appended to drctl.toml (a `[retention]` section, say).
    pub fn start_with(endpoint: impl Fn() -> String, extra_toml: &str) -> Archiving {
        let dir = TestDir::new();
        // archive_command and restore_command run as postgres: they read this directory's config.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let cfg = dir.path().join("drctl.toml");
        let drctl = env!("CARGO_BIN_EXE_drctl");
        let cluster = Cluster::start_new_with(&format!(
            "archive_mode = on\narchive_command = 'env {} {drctl} -c {} wal-push --env prod %p'\n",
            aws_env(),
            cfg.display()
        ));
        cluster.create_db("app");
        let bucket = Moto::unique_bucket("pitr");
        Moto::shared().create_bucket(&bucket);
        std::fs::write(
            &cfg,
            format!(
                "[store]\nurl = \"s3://{bucket}/pitr\"\n\n[aws]\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\n\n\
                 [environments.prod]\ndatabase_url = \"{}\"\npg_bin = \"{}\"\n{extra_toml}",
                endpoint(),
                cluster.superuser_url("app"),
                cluster.bin_dir().display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        cluster.psql("app", "CREATE TABLE t (id int PRIMARY KEY, batch text NOT NULL)");
        Archiving { dir, cfg, cluster, bucket }
    }

    pub fn drctl(&self) -> Drctl {
        Drctl::new().config(&self.cfg).cwd(self.dir.path())
    }

    pub fn insert(&self, batch: &str, ids: std::ops::RangeInclusive<i32>) {
        self.cluster.psql(
            "app",
            &format!("INSERT INTO t SELECT g, '{batch}' FROM generate_series({}, {}) g", ids.start(), ids.end()),
        );
    }

    /// Close the current segment and wait until the archiver has stored it; its name.
    pub fn switch_and_archive(&self) -> String {
        let seg = self.cluster.psql("app", "SELECT pg_walfile_name(pg_switch_wal())");
        let archived = wait_until(Duration::from_secs(60), || {
            self.cluster.psql("app", "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver") >= seg
        });
        assert!(
            archived,
            "segment {seg} was not archived within 60 s: {}",
            self.cluster.psql("app", "SELECT last_failed_wal, last_failed_time FROM pg_stat_archiver")
        );
        seg
    }

    pub fn base_backup(&self) {
        let r = self.drctl().args(["backup", "--env", "prod", "--type", "base", "-o", "json"]).run();
        assert_eq!(r.code, 0, "backup --type base failed:\n{}\n{}", r.stdout, r.stderr);
    }

    pub fn sysid(&self) -> String {
        self.cluster.psql("app", "SELECT system_identifier FROM pg_control_system()")
    }

    pub fn restore(&self, target: &[&str], into: &Path) -> crate::harness::drctl::RunResult {
        self.drctl()
            .args(["pitr-restore", "--env", "prod", "--data-dir"])
            .arg(into.as_os_str())
            .args(target.iter().copied())
            .args(["-o", "json"])
            .run()
    }
}
