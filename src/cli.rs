//! The command line: clap derive types only, no I/O. Doc comments here are the `--help` text.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Disaster-recovery runbooks for PostgreSQL on AWS, as idempotent, preflight-checked steps.
///
/// Every state-changing run goes: load config (exit 2) -> take the locks (exit 5) -> preflight
/// (exit 3) -> confirm -> steps, and writes hash-chained entries to the journal in the store.
///
/// Exit codes: 0 ok or already done, 1 a step failed (rerun resumes), 2 usage or config error,
/// 3 preflight failed (nothing changed), 4 integrity failure, 5 locked by another run,
/// 6 outcome unknown, 126 wal-fetch did not restore (for any reason but "not archived", which
/// is 1), 130/143 interrupted by SIGINT/SIGTERM.
#[derive(Debug, Parser)]
#[command(name = "drctl", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Args)]
pub struct Global {
    /// Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml,
    /// /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the
    /// default file://./.drctl too) is relative to this file's directory, not the working directory
    #[arg(short = 'c', long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Report format on stdout: human tables, or exactly one JSON document
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Take no lock, run every preflight check and print each step as done or pending; change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,

    /// Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Waive one named preflight check (repeatable); the waiver is journaled
    #[arg(long, global = true, value_name = "CHECK_ID")]
    pub accept: Vec<String>,

    /// Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once
    #[arg(long, global = true, value_name = "DURATION", value_parser = parse_duration)]
    pub lock_wait: Option<Duration>,

    /// More log lines on stderr (repeat for more)
    #[arg(short = 'v', long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails
    /// only failures; a failed run prints its report and the error whatever -q says
    #[arg(short = 'q', long, global = true)]
    pub quiet: bool,

    /// No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA
    /// when the tables' size is known; the report's expected_bytes holds that total)
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// Log line format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// After the run, update this Prometheus textfile-collector file (flock + atomic rename; not
    /// under --dry-run)
    #[arg(long, global = true, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the config and reach every endpoint it names with the privileges the runbooks need
    ///
    /// The first command to run after writing drctl.toml. Takes no lock and writes nothing but a
    /// probe object in the store, deleted again. Exit 0 (all ok), 2 (config) or 3 (a check failed).
    /// Shows the store as resolved (a relative file:// path made absolute against drctl.toml's
    /// directory). Every unknown key of the file is reported at once with its line. A database_url
    /// without a password uses $PGPASSWORD, else the matching line of $PGPASSFILE or ~/.pgpass
    /// (ignored, with a warning, when group or others may read it), as libpq does.
    ///
    /// wal-archiving: for a primary whose archive_command runs drctl wal-push, a round trip: a
    /// commit record (txid_current()) and pg_switch_wal() (granted to the env's user, or a
    /// superuser), then a wait of up to 60 s until that segment is in the store's WAL index.
    /// An env with archive_mode off passes as not archiving (with the settings to add), unless
    /// the store holds WAL archived from it; archive_mode on with an empty archive_command fails.
    Check(CheckArgs),

    /// Take a backup of an env into the store, or list / prune the stored backups
    ///
    /// A logical backup is `pg_dump -Fc -Z0` streamed through zstd (multi-threaded) into the store
    /// as `backups/ENV/ID/DB.dump.zst.000` (further `.001`, ... objects past 64 GiB), with its sha256
    /// and size in the backup's manifest. Nothing is written to a temp file. Restore one by hand, in
    /// that directory, into a new database NEWDB (pg_restore -d needs one that exists):
    ///
    ///     createdb -h HOST -U USER NEWDB
    ///
    ///     cat DB.dump.zst.* | zstd -dc | pg_restore -d postgres://USER@HOST/NEWDB
    ///
    /// With [store] age_recipients (age public keys) the zstd stream is encrypted with age as it
    /// streams, to every recipient, and stored as `DB.dump.zst.age.000`, ...; the host taking
    /// backups needs no secret, and verify-chain --deep checks the stored bytes without a key.
    /// Restore one with the identity file KEY of any recipient (`age-keygen -o KEY` made it):
    ///
    ///     cat DB.dump.zst.age.* | age -d -i KEY | zstd -dc | pg_restore -d postgres://USER@HOST/NEWDB
    ///
    /// Within drctl a resumed sync and a drill read a stored dump back: they need [store]
    /// age_identity_file (or $DRCTL_AGE_IDENTITY naming the file), else exit 2.
    ///
    /// --type base: a physical base backup for point-in-time recovery, `pg_basebackup -D - -Ft -X
    /// none -c fast` streamed through zstd (and age) into `backups/ENV/ID/base.tar.zst.000`, ...
    /// It needs the server to archive its WAL with drctl wal-push (preflight wal-archiving: an
    /// archive_command running wal-push, the archiver not failing), a user with REPLICATION (and a
    /// `replication` line in pg_hba.conf), no tablespaces besides pg_default, pg_basebackup at
    /// least the server's version, and the server to be the cluster the env's WAL archive holds
    /// (system-identifier). The manifest records the system identifier, timeline, start and stop
    /// LSN and time, and the first and last WAL segment the backup needs (read from the stream's
    /// backup_label and backup_manifest); `await-wal` waits (up to policy.restore_timeout) until
    /// that last segment is in drctl's archive before the backup is committed. Restore one by
    /// hand into an empty directory DATA, then give it recovery settings:
    ///
    ///     cat base.tar.zst.* | zstd -dc | tar -x -C DATA     (encrypted: ... | age -d -i KEY | zstd -dc | ...)
    ///
    /// or let pitr-restore do all of it. RDS envs are refused (RDS keeps its own backups).
    ///
    /// Objects are written first, then the manifest, then the journal entry `backup-done`: a backup
    /// whose run died is never listed, and its partial objects are removed by the next backup or
    /// prune of that env. A backup never resumes: a rerun starts a new one.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Backup(BackupArgs),

    /// Verify hash chains: the journal and backups, application tables, content-addressed artifacts
    ///
    /// With no selection, checks the journal and the backups. --journal walks the journal (seq with
    /// no gaps, each prev_hash link, each hash recomputed), refolds it and compares every index
    /// checkpoint under journal-index/ on the way (a disagreeing one is exit 4, chain
    /// `journal-checkpoints`; it is a cache, so deleting it is the repair), then records a verified
    /// checkpoint; --since-checkpoint walks only the entries after that one (hourly cron; keep a
    /// daily full walk). --backups checks every listed backup's manifest against its journal entry
    /// and every object's presence and size; --deep also re-reads every object, checks its sha256
    /// and journals the result per backup (`backup list` shows when each was last re-hashed).
    /// For a base backup --backups also checks that the WAL archive is continuous from its first
    /// segment to the newest archived one on its timeline (a gap names the first missing segment);
    /// --deep re-reads those segments too, decompressed and re-hashed against the sha256 wal-push
    /// recorded (age-encrypted segments: their stored size only, the hash needing the key).
    ///
    /// --env ENV --table T verifies a hash-chained table: rows in --order-by order, each prev_hash
    /// equal to the previous row's hash, each hash equal to lowercase hex sha256(prev_hash ||
    /// content), the first row's prev_hash the --genesis value. --env ENV alone checks every chain
    /// configured under [environments.ENV.chains.TABLE]. Rows are streamed (binary COPY, several id
    /// ranges in parallel in one snapshot); memory stays flat. Each success records the chain's head
    /// in the journal as an anchor (event `chain-anchor`); every later run checks that each anchored
    /// row still exists with the same hash, which catches a truncated tail or a history rewritten
    /// consistently.
    ///
    /// --artifacts URL re-reads every object under URL (stored as PREFIX/ab/abcdef..., the sha256 of
    /// its content, sharded by the first two hex digits) and checks content and shard.
    ///
    /// Nothing to verify is exit 3, not success: a prefix with no objects (a typo lists nothing),
    /// or a table with no rows and no anchor unless --allow-empty (or allow_empty = true for it).
    ///
    /// Takes no lock. Exit 4 names the first bad entry and why; exit 2 for a missing table or column.
    VerifyChain(VerifyChainArgs),

    /// Refresh a warm standby: FROM's database dumped, restored into a scratch copy on TO,
    /// validated, then swapped in
    ///
    /// One `pg_dump -Fc -Z0` stream, FROM's only read, is stored (zstd, listed by `backup list` as
    /// a backup of FROM; by hand: `cat ….dump.zst.* | zstd -dc | pg_restore -d URL`) and loaded
    /// into `DB__drctl_new` on TO in the same pass, on --jobs connections: pre-data by pg_restore,
    /// each table's rows in batches across the connections, then indexes and constraints by
    /// `pg_restore --jobs`; no copy of the database on local disk. Every table is ANALYZEd. Only a
    /// copy whose row counts (those of the dump stream), materialized views and sequences match the
    /// dump is swapped in, from TO's maintenance_db, by two renames in one transaction (`DB` ->
    /// `DB__drctl_prev`, `DB__drctl_new` -> `DB`): clients see the old data or the new, never a
    /// mix, and a failure (any COPY or pg_restore error stops every connection) leaves TO as it
    /// was. The previous copy is kept until the next sync starts loading. Refuses (exit 3) when
    /// DNS points at TO or TO is a replica, and (check target-is-source) when another env declares TO as its sync_from or replica_of or
    /// TO has streaming replicas attached (pg_stat_replication): `--from staging --to prod` is
    /// refused even without [dns]; only `--accept target-is-source` waives it.
    /// An env declaring `sync_from = "FROM"` is synced without confirmation (cron); any other TO
    /// needs --yes off a TTY. Locks env:TO only. A rerun after an unfinished sync resumes it: when
    /// that run's dump was already committed, it restores from the stored dump (sha256 checked as
    /// it streams; exit 4 on a mismatch) instead of dumping FROM again.
    Sync(SyncArgs),

    /// Promote a streaming replica (an env declaring replica_of) to a primary, fencing the old one
    ///
    /// Preflight: declared-role (ENV is in recovery, or drctl promoted it already: then "already
    /// done"), replica-lag (when the old primary answers: its current LSN minus ENV's replay LSN
    /// must be within policy.max_replica_lag_bytes; waivable with --accept replica-lag).
    /// Steps: fence-primary (when the old primary answers: ALLOW_CONNECTIONS false on its app
    /// database and its sessions ended, journaled with its final LSN before anything waits on it;
    /// an old primary that does not answer is reported "not fenced" and never refuses the run),
    /// wait-replay (ENV, asked through its maintenance_db, replays up to that LSN; past
    /// policy.promote_timeout exit 6), promote (pg_promote), unfence-target (the fence replicated
    /// to ENV: its app database allows connections again, and ENV must accept a write).
    ///
    /// With data_dir set for the old primary (drctl runs on its host), the fence is its server
    /// stopped instead (pg_ctl stop -m fast, as the data directory's owner when drctl runs as root).
    ///
    /// An RDS read replica (rds_instance set) is promoted by PromoteReadReplica instead of
    /// pg_promote, journaled as sent before the wait; drctl then polls every 2 s until RDS shows it
    /// available with no source instance (policy.promote_timeout; past it exit 6, and a rerun waits
    /// on the same promotion without sending another). declared-role asks RDS whether it is a replica.
    ///
    /// Locks env:ENV. Asks for the env's name on a TTY; off a TTY it needs --yes.
    PromoteReplica(EnvArg),

    /// Point [dns].record at ENV's dns_target: checked, one atomic change, INSYNC, read back
    ///
    /// Preflight (each waivable with --accept ID, the waiver journaled with what it found):
    /// record-exists (the record is read now; the change DELETEs exactly what was read),
    /// target-healthy (ENV's health_url answers 2xx twice in a row), cors (with policy.cors_origin:
    /// ENV's health_url allows that Origin), tls (with an https health_url: ENV's server presents a
    /// certificate valid for the record's name), standby-fresh (an env declared sync_from synced
    /// within policy.rpo; a replica_of env promoted, or within policy.max_replica_lag_bytes).
    ///
    /// Then one Route 53 batch: DELETE the record as read, CREATE it pointing at ENV (a CNAME with
    /// [dns].ttl, or for type A an alias into dns_alias_zone_id). Anyone changing the record in
    /// between makes the whole batch fail and nothing changes (exit 1 says so). The change id and
    /// the exact previous record set are journaled before the wait, so `rollback` can restore it
    /// and a rerun after a crash or exit 6 waits on the same change, never sending another. Waits,
    /// polling every 2 s, until Route 53 reports INSYNC (policy.dns_timeout, default 5m; past it
    /// exit 6), then reads the record back. Reports the previous TTL and the time by which
    /// resolvers' cached answers have expired. Already pointing at ENV: exit 0, already done.
    ///
    /// Locks dns and env:ENV. Asks for the env's name on a TTY; off a TTY it needs --yes.
    DnsCutover(DnsCutoverArgs),

    /// The incident command: promote (when ENV is a replica), point the record at ENV, report readiness
    ///
    /// One run, one confirmation (the typed env name on a TTY; --yes off one), locks dns and
    /// env:ENV. A sync into ENV holding env:ENV is taken over (journaled `lock-taken-over`): that
    /// sync stops at its next lock check and never swaps. Preflight: ENV's checks (declared-role and
    /// replica-lag for a replica_of env; record-exists, target-healthy, cors, tls, standby-fresh as
    /// dns-cutover), and old-primary, which only reports whether the old primary (ENV's replica_of
    /// or sync_from, else the env the record points at) answers: one that does not is the normal
    /// case in an incident, never a refusal.
    ///
    /// Steps: for a replica_of env promote-replica's (fence-primary, wait-replay, promote,
    /// unfence-target); then mark-cutover (ENV's WAL LSN and per-table row counters journaled, what
    /// rollback compares against, and the data age: a warm standby's last sync snapshot, a
    /// replica's last replayed transaction); then dns-cutover's point-record; then readiness (role,
    /// writable, health, the record now, data age, and the RTO: the time from the first attempt's
    /// start to now), journaled and shown as a table.
    ///
    /// A crashed or exit-6 run is resumed by the same command: done steps are skipped, a change it
    /// sent (the Route 53 batch, an RDS promotion) is waited on, never sent again. A completed
    /// failover rerun is exit 0, already done. With [notify] the webhook gets one line after the run.
    Failover(FailoverArgs),

    /// Undo the newest dns-cutover or failover: the record back to its exact previous value
    ///
    /// Without --run: the newest cutover in the journal (already rolled back: exit 0, already
    /// done; an older one is never undone by a plain rerun). --run RUN_ID picks a cutover by the
    /// run that made it (any attempt's id).
    ///
    /// Preflight: writes-since-cutover (after a failover: ENV's WAL LSN then and now and the rows
    /// inserted, updated and deleted per table since mark-cutover; any row written there would be
    /// abandoned by moving traffic back, so it refuses with exit 3 naming the figures unless
    /// --accept writes-since-cutover), record-unchanged (the record still holds what the cutover
    /// set), and target-healthy, cors, tls for the env returned to, as dns-cutover checks them.
    ///
    /// Steps: unfence-primary (an old primary the failover fenced allows connections to its app
    /// database again, or its server is started again when drctl had stopped it), then
    /// restore-record (one batch: DELETE the record as read, CREATE the journaled previous record
    /// set exactly, INSYNC, read back). An env that was promoted stays a primary: rebuild it as a
    /// replica before relying on it again.
    ///
    /// Locks dns and env:PREVIOUS (the env returned to). Asks for its name on a TTY; off a TTY --yes.
    Rollback(RollbackArgs),

    /// Readiness of every env: reachable, role, replication lag, live, healthy, data age vs RPO
    ///
    /// role is `replica` for a server in recovery, `promoted` for a replica_of env drctl promoted
    /// (journaled), `standby` for an env declared sync_from (a warm standby: a primary server, but
    /// not the one to write to), and `primary` otherwise.
    ///
    /// last drill: how long ago the env's last `drill` finished and whether its copy verified (-o
    /// json: last_drill_age_s, last_drill_ok, last_drill_backup_id, last_drill_rto_ms,
    /// last_drill_rpo_s; null when never drilled); a failed one adds a note, and is never judged
    /// against the RPO.
    ///
    /// Read-only: takes no lock and writes nothing. Exit 3 when an env's last sync or last backup
    /// is older than policy.rpo, or a live env is unhealthy.
    ///
    /// --audit checks the prerequisites of a recoverable setup instead, one item per id and target
    /// (an item appears only where it applies): store-private (a file store's directory and
    /// everything in it grant group and others nothing; an S3 bucket's public access block is on in
    /// all four settings), store-encrypted (the bucket has default encryption; a file store fails,
    /// as drctl writes it unencrypted and cannot see a disk's encryption), bucket-versioning
    /// (S3 only: versioning Enabled), rds-backup-retention (at least 1 day) and rds-multi-az for each
    /// env with rds_instance, chain-append-only for each [environments.ENV.chains.TABLE] (an enabled
    /// trigger without a WHEN condition fires BEFORE UPDATE and BEFORE DELETE on it; the detail
    /// gives the SQL to add one), backup-deep-verified (each env's newest backup re-hashed by
    /// `verify-chain --backups --deep`, and matched, within policy.verify_max_age) and
    /// backup-drilled (each env's newest backup restored by `drill` into a copy that verified,
    /// within policy.drill_max_age; a failed last drill fails). With no backup of any env, the two
    /// backup items appear once, target `-`, failed. -o json: {"ok", "audit": [{"id", "target",
    /// "ok", "detail"}]}. Same rules: no lock, no journal entry. Exit 3 when any item fails; the
    /// hint names the failed ids.
    Status(StatusArgs),

    /// Archive one WAL file into the store: PostgreSQL's archive_command
    ///
    /// In postgresql.conf (archive_mode needs a restart):
    ///
    ///     archive_mode = on
    ///
    ///     archive_command = '/usr/bin/drctl -c /etc/drctl/drctl.toml wal-push --env ENV %p'
    ///
    /// The server runs it from its data directory with its own environment and user: the config
    /// file (and a file store) must be readable (writable) by that user, and every ${NAME} in
    /// the config set in the server's environment. The config is found only through -c,
    /// $DRCTL_CONFIG or /etc/drctl/drctl.toml, never ./drctl.toml. No lock, no journal entry.
    ///
    /// A segment or .partial file must start with a WAL page header for its name (its timeline
    /// and address) whose system identifier is the env's cluster: the first push records it in
    /// wal/ENV/system.json, and another cluster's segment is exit 4 naming both ids. A history
    /// or .backup file has no header: its cluster is that of global/pg_control in the working
    /// directory. The file is compressed with zstd, encrypted with age when [store]
    /// age_recipients is set, and created (never replaced) at wal/ENV/SYSID/TLI/NAME.zst[.age]
    /// with the sha256 of the original bytes in the object's metadata (S3 x-amz-meta-sha256; a
    /// file store's extended attribute user.drctl.sha256), then listed with it in the timeline's
    /// index, wal/ENV/SYSID/TLI/index/LOGID.json (history files in history.json).
    ///
    /// Exit 0 once the object and its index line are stored, also when an identical copy was
    /// there already (the index line a killed push left out is added then). Exit 4, nothing
    /// overwritten: a different file under the same name, another cluster's segment, a segment
    /// whose header does not match its name. Exit 2 for a config error, 1 when the store failed.
    /// PostgreSQL keeps the file in pg_wal and retries after any non-zero exit.
    WalPush(WalPushArgs),

    /// Restore one archived WAL file from the store: PostgreSQL's restore_command
    ///
    /// In postgresql.conf, or written by pitr-restore:
    ///
    ///     restore_command = '/usr/bin/drctl -c /etc/drctl/drctl.toml wal-fetch --env ENV %f %p'
    ///
    /// The cluster is that of global/pg_control in the working directory (the data directory),
    /// else the env's recorded one. Reads wal/ENV/SYSID/TLI/NAME.zst, or NAME.zst.age decrypted
    /// with the identity file $DRCTL_AGE_IDENTITY or [store] age_identity_file names,
    /// decompresses it, checks the result against the sha256 stored with it, and writes DEST
    /// atomically (DEST.drctl-tmp beside it, fsync, rename, fsync of the directory).
    ///
    /// Exit 0: DEST holds the file. Exit 1, printing nothing, only when the store answered that
    /// neither NAME.zst nor NAME.zst.age exists (S3 404 NoSuchKey, no such file), as for the
    /// segment after the last archived one, or the history file of a timeline that does not
    /// exist. Exit 126 for everything else, after one error line naming NAME: a sha256 mismatch
    /// (DEST is not written), an unreadable object, an unreachable store, S3 403, a config or
    /// command-line error, a bad age identity, a bug. PostgreSQL reads 1-125 as "not archived"
    /// and would end recovery and promote early, losing what follows; above 125 it stops
    /// instead, and starting the server again resumes recovery.
    WalFetch(WalFetchArgs),

    /// Point-in-time recovery: a base backup plus archived WAL into a new data directory, or an
    /// RDS instance restored to a point in time
    ///
    /// Self-managed (--data-dir DIR): the env's newest base backup that ends before the target is
    /// streamed from the store (sha256 checked as it streams, exit 4 on a mismatch) and unpacked
    /// into DIR, which must be absent or empty. postgresql.auto.conf gets restore_command (this
    /// drctl's absolute path, `-c` with this config's absolute path, `wal-fetch --env ENV %f %p`),
    /// the target, recovery_target_action = promote, the port, and archive_mode = off (a restored
    /// copy never archives into the env's WAL), then recovery.signal. The server is started
    /// (pg_ctl, its log in DIR/drctl-pitr-restore.log; as root, as the owner of the unpacked
    /// files) and drctl waits, up to policy.restore_timeout (exit 6), until it is promoted and
    /// takes a write, then reports the point reached (the last replayed transaction's time and
    /// LSN) and the port. --no-start stops before starting it and prints the pg_ctl command.
    ///
    /// Preflight (exit 3, nothing created): target-window (the target lies between the end of the
    /// oldest base backup and the newest archived WAL; the window is stated when it does not),
    /// data-dir-empty, port-free, postgres-version (the backup's major version). A recovery that
    /// wal-fetch aborts (a corrupted or unreadable segment: its exit 126) is exit 4 naming the
    /// segment; the server stops in recovery and is never promoted with fewer rows.
    ///
    /// A rerun of the same command resumes: DIR/drctl-pitr-restore.json says what this command
    /// unpacked, so a half-unpacked directory is unpacked again and a promoted one is done. The
    /// restored server keeps running when drctl exits; stop it with pg_ctl stop -D DIR. Locks
    /// pitr:ENV (one restore of an env at a time); the env itself is only read.
    ///
    /// RDS (an env with rds_instance, --target-instance NEW_ID instead of --data-dir):
    /// RestoreDBInstanceToPointInTime of the env's instance into a new instance NEW_ID (lowercased,
    /// as RDS stores it), to --target-time or --latest; --target-lsn is refused (RDS restores to a
    /// time). The request copies from the source, explicitly, its DB subnet group, VPC security
    /// groups, parameter group, Multi-AZ setting, instance class, PubliclyAccessible and tags:
    /// left out, RDS would pick the account's defaults (the default VPC and its security group, the
    /// engine's default parameter group, single-AZ). It adds the tags drctl:pitr-restore-of (the
    /// source), drctl:pitr-restore-to (the target time, or latest) and drctl:pitr-restore-run.
    /// drctl then polls DescribeDBInstances until the instance is available and reports its
    /// endpoint (address:port) and the point restored to.
    ///
    /// Preflight (exit 3, nothing created): target-instance-free (no NEW_ID, or the one this
    /// command created; not waivable), source-instance (available or backing-up, automated backups
    /// kept at least 1 day), target-window (the time lies between the earliest restorable time and
    /// LatestRestorableTime; the window is stated when it does not). Past policy.restore_timeout
    /// exit 6: the restore was sent and journaled; rerun the same command and it finds the instance
    /// by its tags and waits on it, never sending the restore again. Locks pitr:ENV and
    /// rds:NEW_ID; the source instance is only read.
    PitrRestore(PitrRestoreArgs),

    /// A recovery rehearsal: restore a backup into a scratch database, verify it, measure the
    /// RTO and RPO achieved, drop the copy
    ///
    /// Restores the env's newest committed backup (or --from-backup ID) into a scratch database
    /// drctl_drill_<store>_<run> on the env's server, created through its maintenance_db with the
    /// owner, encoding and locale of the env's database (<store>: the first 8 hex digits of the
    /// sha256 of [store] url; <run>: the run id in lower case). The stored objects stream into
    /// pg_restore with each object's size and sha256 checked against the manifest as it streams
    /// (a mismatch or a missing object is exit 4), age-decrypted with [store] age_identity_file
    /// (or the file $DRCTL_AGE_IDENTITY names; an encrypted backup without it is exit 2 naming
    /// age_identity_file, before anything is created) and zstd-decompressed.
    ///
    /// Then verifies the copy: the exact row count of every table equals the manifest's (a
    /// missing or extra table fails too), and every chain configured for the env
    /// ([environments.ENV.chains.TABLE]) verifies on the copy as verify-chain checks it, held to
    /// the anchors journaled before the backup's snapshot. Any difference is exit 4.
    ///
    /// RTO (rto_ms): the wall time from creating the scratch database to the end of the
    /// verification, what a recovery from this backup into a new database takes. RPO (rpo_s): the
    /// drill's start minus the backup's snapshot time (the manifest's `started`), the age of the
    /// data this backup brings back, i.e. what a recovery from it would lose had the env been lost
    /// when the drill began.
    ///
    /// The result is journaled as `drill-done` (backup_id, ok, rto_ms, rpo_s, tables, rows,
    /// chains, problems), also when the verification failed (then exit 4) or the restore did
    /// (exit 1); `status` shows each env's last drill, and `status --audit`'s backup-drilled passes
    /// while the newest backup's last drill verified within policy.drill_max_age. A restore and
    /// verification that outlast policy.restore_timeout are stopped: exit 6.
    ///
    /// The scratch database is dropped whatever happens: success, a failed verification, an
    /// error, SIGINT or SIGTERM (step drop-scratch). A drill killed by SIGKILL leaves it behind:
    /// the next drill of this store's envs on that server first drops every such database whose
    /// run holds no live lock (step drop-leftovers). A drill never resumes: a rerun restores afresh.
    ///
    /// Preflight: backup-exists (the env has a committed backup), db-reachable (the maintenance_db),
    /// scratch-privileges (CREATEDB and membership in the owner of the env's database, or a
    /// superuser), pg-restore-version (at least the backup's pg_dump and the server). Locks
    /// drill:ENV; the env's database is only read.
    ///
    /// A base backup (backup --type base) is drilled with pitr-restore's own steps instead: it is
    /// unpacked into the scratch data directory $TMPDIR/drctl-drill-<store>-<run> (the whole
    /// cluster: point TMPDIR at a disk with room), recovered with wal-fetch to the backup's
    /// consistent end (recovery_target = 'immediate'), started on a free loopback port, promoted
    /// and written to (preflight target-window, data-dir-empty, port-free, postgres-version; a
    /// segment wal-fetch cannot deliver is exit 4). Verification: every leaf table of the env's
    /// database is counted on the copy (rows_counted: a base backup's manifest holds no counts to
    /// compare with) and the configured chains verify on it. RTO: from the drill's start until the
    /// copy verified; RPO: the drill's start minus the backup's stop_time. The finally step
    /// (remove-scratch) stops the scratch server and removes the directory; after a SIGKILL the
    /// next drill does it for directories whose run holds no live lock (remove-leftovers).
    Drill(DrillArgs),

    /// Show the journal, newest first
    ///
    /// On a TTY, a table. Otherwise (a pipe, a file, cron) one entry a line with no padding: seq,
    /// time, runbook, env (- for none), event, run_id and the details as compact JSON, separated by
    /// single spaces. -o json prints the entries as one document.
    Log(LogArgs),

    /// Print shell completions for SHELL
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },

    /// Print the man page (roff)
    Man,
}

#[derive(Debug, Args)]
pub struct EnvArg {
    /// The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or
    /// the only env when there is one
    #[arg(short = 'e', long, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Check the prerequisites of a recoverable setup (store, bucket, RDS, chain tables, backups)
    /// instead of each env's readiness
    #[arg(long)]
    pub audit: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Check only this env (and the store); default: every env
    #[arg(short = 'e', long, value_name = "ENV")]
    pub env: Option<String>,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub action: Option<BackupAction>,
    #[command(flatten)]
    pub env: EnvArg,
    /// logical: pg_dump custom format compressed with zstd; base: a physical base backup
    /// (pg_basebackup) for pitr-restore, needing WAL archived by wal-push
    #[arg(long = "type", value_enum, default_value_t = BackupType::Logical)]
    pub kind: BackupType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackupType {
    Logical,
    Base,
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// The complete backups in the store, newest first
    ///
    /// The table shows the first 12 hex digits of each backup's sha256; -o json has the full hash.
    /// For base backups the wal column (JSON wal_start, wal_end) is the first and last WAL segment
    /// a restore needs; recovery past the backup's end reads the archive from there on.
    List {
        /// Only this env's backups
        #[arg(short = 'e', long, value_name = "ENV")]
        env: Option<String>,
    },
    /// Apply [retention] (keep_last, keep_daily, keep_weekly); never deletes the newest good backup
    ///
    /// Retention counts logical and base backups apart (keep_last = 2 keeps two of each), so a
    /// newer dump never expires the base backup point-in-time recovery starts from. Journals
    /// `backup-pruned` for each expired backup, then deletes its objects, then the archived WAL
    /// that no kept base backup needs (everything before the oldest kept one's first segment, on
    /// its timeline and earlier ones; history files stay; with no base backup kept, WAL is left
    /// alone). Also removes the partial objects and unfinished uploads of backups whose run died.
    /// --dry-run lists what would go.
    Prune {
        #[command(flatten)]
        env: EnvArg,
    },
}

// `Default`: no flag given, as drill verifies a configured chain table (a `//` comment: a doc
// comment here would become the subcommand's about text).
#[derive(Debug, Default, Args)]
pub struct VerifyChainArgs {
    /// Verify the journal's hash chain, every entry from the first (and every index checkpoint
    /// against the state refolded from the chain)
    #[arg(long)]
    pub journal: bool,
    /// With --journal: verify only the entries after the newest checkpoint that a full
    /// verification wrote (for an hourly cron; keep a daily full walk)
    #[arg(long, requires = "journal")]
    pub since_checkpoint: bool,
    /// Verify every listed backup's manifest and objects
    #[arg(long)]
    pub backups: bool,
    /// Re-read every stored object of every listed backup and check its sha256 (implies --backups)
    #[arg(long)]
    pub deep: bool,
    /// Verify the hash-chained tables of this env: --table, or every [environments.ENV.chains.*]
    #[arg(short = 'e', long, value_name = "ENV")]
    pub env: Option<String>,
    /// With --env: the table to verify (schema-qualified if needed); its [environments.ENV.chains.T]
    /// settings apply, flags override them
    #[arg(long, value_name = "TABLE", requires = "env")]
    pub table: Option<String>,
    /// The column that orders the chain [default: id]
    #[arg(long, value_name = "COL", requires = "table")]
    pub order_by: Option<String>,
    /// The column holding each row's hash (text hex or bytea) [default: hash]
    #[arg(long, value_name = "COL", requires = "table")]
    pub hash_column: Option<String>,
    /// The column holding the previous row's hash (text hex or bytea) [default: prev_hash]
    #[arg(long, value_name = "COL", requires = "table")]
    pub prev_column: Option<String>,
    /// SQL expression of the hashed content, read as text [default: payload::text]
    #[arg(long, value_name = "SQL", requires = "table")]
    pub content: Option<String>,
    /// What the first row's prev_hash holds: 64 zeros, NULL, or the empty string [default: zeros]
    #[arg(long, value_enum, requires = "table")]
    pub genesis: Option<Genesis>,
    /// For bytea hash columns: the application hashed the hex text of prev_hash (hex) or its raw
    /// bytes (raw) [default: hex]
    #[arg(long, value_enum, requires = "table")]
    pub bytea_hash: Option<ByteaHash>,
    /// Also report a gap in the order column (ids expected to be consecutive integers)
    #[arg(long)]
    pub dense: bool,
    /// List every bad entry instead of stopping at the first
    #[arg(long)]
    pub all_errors: bool,
    /// Verify only the rows after the newest anchor (after checking every anchor): cheap for cron
    #[arg(long)]
    pub since_anchor: bool,
    /// An empty --table (or configured chain) verifies; without this it is exit 3, since a wrong
    /// table or an emptied one proves nothing (per table in drctl.toml: allow_empty = true)
    #[arg(long)]
    pub allow_empty: bool,
    /// Parallel connections per table, each verifying one range of an integer order column [default: 4]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
    /// Re-read every object under URL (s3://BUCKET/PREFIX or file:///PATH) and check that its key is
    /// PREFIX/ab/<sha256 of its content>, sharded by the hash's first two hex digits
    #[arg(long, value_name = "URL")]
    pub artifacts: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Genesis {
    Zeros,
    Null,
    Empty,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ByteaHash {
    Hex,
    Raw,
}

#[derive(Debug, Args)]
pub struct WalPushArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// The WAL file to archive (%p: relative to the data directory, e.g.
    /// pg_wal/000000010000000000000003); its name says what it is
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
}

#[derive(Debug, Args)]
pub struct WalFetchArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// The WAL file's name (%f), e.g. 000000010000000000000003 or 00000002.history
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Where PostgreSQL wants it (%p, e.g. pg_wal/RECOVERYXLOG); written atomically, and only
    /// with the archived sha256
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["target_time", "target_lsn", "latest"])))]
#[command(group(clap::ArgGroup::new("into").required(true).args(["data_dir", "target_instance"])))]
pub struct PitrRestoreArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// Recover up to this moment (RFC 3339 in UTC, e.g. 2026-12-01T13:59:00Z)
    #[arg(long, value_name = "RFC3339")]
    pub target_time: Option<String>,
    /// Recover up to this WAL location (e.g. 0/3000060); self-managed only
    #[arg(long, value_name = "LSN")]
    pub target_lsn: Option<String>,
    /// Recover everything archived (RDS: to the latest restorable time)
    #[arg(long)]
    pub latest: bool,
    /// Self-managed: the new data directory (absent or empty)
    #[arg(long, value_name = "DIR", conflicts_with = "target_instance")]
    pub data_dir: Option<PathBuf>,
    /// RDS (an env with rds_instance): the identifier of the new instance to create; it must not
    /// exist, unless this same command created it (then the rerun continues with it)
    #[arg(long, value_name = "ID")]
    pub target_instance: Option<String>,
    /// Self-managed: the port the restored server listens on [default: a free one]
    #[arg(long, value_name = "N", requires = "data_dir")]
    pub port: Option<u16>,
    /// Self-managed: leave a ready-to-start data directory instead of starting the server
    #[arg(long, requires = "data_dir")]
    pub no_start: bool,
}

#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub env: EnvArg,
    /// The backup to restore (an id from `backup list` of this env) [default: the env's newest]
    #[arg(long, value_name = "ID")]
    pub from_backup: Option<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The env whose database is copied (only read)
    #[arg(long, value_name = "ENV")]
    pub from: String,
    /// The standby env whose database is replaced
    #[arg(long, value_name = "ENV")]
    pub to: String,
    /// Connections loading TO at once: table rows on all of them, then pg_restore --jobs for
    /// indexes and constraints [default: the number of cores, 2 to 8]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    pub jobs: Option<u16>,
}

#[derive(Debug, Args)]
pub struct DnsCutoverArgs {
    /// The env that will serve [dns].record
    #[arg(long, value_name = "ENV")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    /// The env that takes over: a replica_of env (promoted), or any env with a dns_target
    #[arg(long, value_name = "ENV")]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The run of the dns-cutover or failover to undo (default: the newest cutover)
    #[arg(long = "run", value_name = "RUN_ID")]
    pub run: Option<String>,
}

#[derive(Debug, Args)]
pub struct LogArgs {
    /// Only entries of this runbook (e.g. backup)
    #[arg(long, value_name = "NAME")]
    pub runbook: Option<String>,
    /// Only entries at or after T (RFC 3339, or a duration back from now such as 24h)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// At most N entries
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 90s, 15m or 6h ({e})"))
}
