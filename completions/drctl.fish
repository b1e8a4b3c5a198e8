# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_drctl_global_optspecs
    string join \n c/config= o/output= dry-run y/yes accept= lock-wait= v/verbose q/quiet no-progress log-format= metrics-file= h/help V/version
end

function __fish_drctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_drctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_drctl_using_subcommand
    set -l cmd (__fish_drctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c drctl -n "__fish_drctl_needs_command" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_needs_command" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_needs_command" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_needs_command" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_needs_command" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_needs_command" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_needs_command" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_needs_command" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_needs_command" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_needs_command" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_needs_command" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_needs_command" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "check" -d 'Validate the config and reach every endpoint it names with the privileges the runbooks need'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "backup" -d 'Take a backup of an env into the store, or list / prune the stored backups'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "verify-chain" -d 'Verify hash chains: the journal and backups, application tables, content-addressed artifacts'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "sync" -d 'Refresh a warm standby: FROM\'s database dumped, restored into a scratch copy on TO, validated, then swapped in'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "promote-replica" -d 'Promote a streaming replica (an env declaring replica_of) to a primary, fencing the old one'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "dns-cutover" -d 'Point [dns].record at ENV\'s dns_target: checked, one atomic change, INSYNC, read back'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "failover" -d 'The incident command: promote (when ENV is a replica), point the record at ENV, report readiness'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "rollback" -d 'Undo the newest dns-cutover or failover: the record back to its exact previous value'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "status" -d 'Readiness of every env: reachable, role, replication lag, live, healthy, data age vs RPO'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "wal-push" -d 'Archive one WAL file into the store: PostgreSQL\'s archive_command'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "wal-fetch" -d 'Restore one archived WAL file from the store: PostgreSQL\'s restore_command'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "pitr-restore" -d 'Point-in-time recovery: a base backup plus archived WAL into a new data directory, or an RDS instance restored to a point in time'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "drill" -d 'A recovery rehearsal: restore a backup into a scratch database, verify it, measure the RTO and RPO achieved, drop the copy'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "log" -d 'Show the journal, newest first'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "completions" -d 'Print shell completions for SHELL'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "man" -d 'Print the man page (roff)'
complete -c drctl -n "__fish_drctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s e -l env -d 'Check only this env (and the store); default: every env' -r
complete -c drctl -n "__fish_drctl_using_subcommand check" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand check" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand check" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand check" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand check" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand check" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand check" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand check" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand check" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l type -d 'logical: pg_dump custom format compressed with zstd; base: a physical base backup (pg_basebackup) for pitr-restore, needing WAL archived by wal-push' -r -f -a "logical\t''
base\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -f -a "list" -d 'The complete backups in the store, newest first'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -f -a "prune" -d 'Apply [retention] (keep_last, keep_daily, keep_weekly); never deletes the newest good backup'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and not __fish_seen_subcommand_from list prune help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s e -l env -d 'Only this env\'s backups' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from list" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from prune" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "list" -d 'The complete backups in the store, newest first'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "prune" -d 'Apply [retention] (keep_last, keep_daily, keep_weekly); never deletes the newest good backup'
complete -c drctl -n "__fish_drctl_using_subcommand backup; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s e -l env -d 'Verify the hash-chained tables of this env: --table, or every [environments.ENV.chains.*]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l table -d 'With --env: the table to verify (schema-qualified if needed); its [environments.ENV.chains.T] settings apply, flags override them' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l order-by -d 'The column that orders the chain [default: id]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l hash-column -d 'The column holding each row\'s hash (text hex or bytea) [default: hash]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l prev-column -d 'The column holding the previous row\'s hash (text hex or bytea) [default: prev_hash]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l content -d 'SQL expression of the hashed content, read as text [default: payload::text]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l genesis -d 'What the first row\'s prev_hash holds: 64 zeros, NULL, or the empty string [default: zeros]' -r -f -a "zeros\t''
null\t''
empty\t''"
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l bytea-hash -d 'For bytea hash columns: the application hashed the hex text of prev_hash (hex) or its raw bytes (raw) [default: hex]' -r -f -a "hex\t''
raw\t''"
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l jobs -d 'Parallel connections per table, each verifying one range of an integer order column [default: 4]' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l artifacts -d 'Re-read every object under URL (s3://BUCKET/PREFIX or file:///PATH) and check that its key is PREFIX/ab/<sha256 of its content>, sharded by the hash\'s first two hex digits' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l journal -d 'Verify the journal\'s hash chain, every entry from the first (and every index checkpoint against the state refolded from the chain)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l since-checkpoint -d 'With --journal: verify only the entries after the newest checkpoint that a full verification wrote (for an hourly cron; keep a daily full walk)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l backups -d 'Verify every listed backup\'s manifest and objects'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l deep -d 'Re-read every stored object of every listed backup and check its sha256 (implies --backups)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l dense -d 'Also report a gap in the order column (ids expected to be consecutive integers)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l all-errors -d 'List every bad entry instead of stopping at the first'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l since-anchor -d 'Verify only the rows after the newest anchor (after checking every anchor): cheap for cron'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l allow-empty -d 'An empty --table (or configured chain) verifies; without this it is exit 3, since a wrong table or an emptied one proves nothing (per table in drctl.toml: allow_empty = true)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand verify-chain" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l from -d 'The env whose database is copied (only read)' -r
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l to -d 'The standby env whose database is replaced' -r
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l jobs -d 'Connections loading TO at once: table rows on all of them, then pg_restore --jobs for indexes and constraints [default: the number of cores, 2 to 8]' -r
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand sync" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand promote-replica" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l to -d 'The env that will serve [dns].record' -r
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand dns-cutover" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l to -d 'The env that takes over: a replica_of env (promoted), or any env with a dns_target' -r
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand failover" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l run -d 'The run of the dns-cutover or failover to undo (default: the newest cutover)' -r
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand rollback" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand status" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand status" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand status" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand status" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand status" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand status" -l audit -d 'Check the prerequisites of a recoverable setup (store, bucket, RDS, chain tables, backups) instead of each env\'s readiness'
complete -c drctl -n "__fish_drctl_using_subcommand status" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand status" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand status" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand wal-push" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand wal-fetch" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l target-time -d 'Recover up to this moment (RFC 3339 in UTC, e.g. 2026-12-01T13:59:00Z)' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l target-lsn -d 'Recover up to this WAL location (e.g. 0/3000060); self-managed only' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l data-dir -d 'Self-managed: the new data directory (absent or empty)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l target-instance -d 'RDS (an env with rds_instance): the identifier of the new instance to create; it must not exist, unless this same command created it (then the rerun continues with it)' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l port -d 'Self-managed: the port the restored server listens on [default: a free one]' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l latest -d 'Recover everything archived (RDS: to the latest restorable time)'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l no-start -d 'Self-managed: leave a ready-to-start data directory instead of starting the server'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand pitr-restore" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s e -l env -d 'The environment (a table under [environments] in drctl.toml); defaults to $DRCTL_ENV, or the only env when there is one' -r
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l from-backup -d 'The backup to restore (an id from `backup list` of this env) [default: the env\'s newest]' -r
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand drill" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand log" -l runbook -d 'Only entries of this runbook (e.g. backup)' -r
complete -c drctl -n "__fish_drctl_using_subcommand log" -l since -d 'Only entries at or after T (RFC 3339, or a duration back from now such as 24h)' -r
complete -c drctl -n "__fish_drctl_using_subcommand log" -l limit -d 'At most N entries' -r
complete -c drctl -n "__fish_drctl_using_subcommand log" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand log" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand log" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand log" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand log" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand log" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand log" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand log" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand log" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand log" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand log" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand log" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c drctl -n "__fish_drctl_using_subcommand log" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s h -l help -d 'Print help'
complete -c drctl -n "__fish_drctl_using_subcommand completions" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s c -l config -d 'Config file [default: $DRCTL_CONFIG, ./drctl.toml, $XDG_CONFIG_HOME/drctl/drctl.toml, /etc/drctl/drctl.toml, the first that exists]. A relative file:// store URL in it (the default file://./.drctl too) is relative to this file\'s directory, not the working directory' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand man" -s o -l output -d 'Report format on stdout: human tables, or exactly one JSON document' -r -f -a "table\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand man" -l accept -d 'Waive one named preflight check (repeatable); the waiver is journaled' -r
complete -c drctl -n "__fish_drctl_using_subcommand man" -l lock-wait -d 'Wait up to DURATION (e.g. 10m) for a held lock instead of exiting 5 at once' -r
complete -c drctl -n "__fish_drctl_using_subcommand man" -l log-format -d 'Log line format on stderr' -r -f -a "text\t''
json\t''"
complete -c drctl -n "__fish_drctl_using_subcommand man" -l metrics-file -d 'After the run, update this Prometheus textfile-collector file (flock + atomic rename; not under --dry-run)' -r -F
complete -c drctl -n "__fish_drctl_using_subcommand man" -l dry-run -d 'Take no lock, run every preflight check and print each step as done or pending; change nothing'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s y -l yes -d 'Do not ask for confirmation (required off a TTY for runbooks that move live traffic or data)'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s v -l verbose -d 'More log lines on stderr (repeat for more)'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s q -l quiet -d 'For cron: a successful run prints nothing at all (no report, no log lines), so MAILTO mails only failures; a failed run prints its report and the error whatever -q says'
complete -c drctl -n "__fish_drctl_using_subcommand man" -l no-progress -d 'No progress bars, even on a TTY (where they show bytes, rate, and the expected total and ETA when the tables\' size is known; the report\'s expected_bytes holds that total)'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s h -l help -d 'Print help'
complete -c drctl -n "__fish_drctl_using_subcommand man" -s V -l version -d 'Print version'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "check" -d 'Validate the config and reach every endpoint it names with the privileges the runbooks need'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "backup" -d 'Take a backup of an env into the store, or list / prune the stored backups'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "verify-chain" -d 'Verify hash chains: the journal and backups, application tables, content-addressed artifacts'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "sync" -d 'Refresh a warm standby: FROM\'s database dumped, restored into a scratch copy on TO, validated, then swapped in'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "promote-replica" -d 'Promote a streaming replica (an env declaring replica_of) to a primary, fencing the old one'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "dns-cutover" -d 'Point [dns].record at ENV\'s dns_target: checked, one atomic change, INSYNC, read back'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "failover" -d 'The incident command: promote (when ENV is a replica), point the record at ENV, report readiness'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "rollback" -d 'Undo the newest dns-cutover or failover: the record back to its exact previous value'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "status" -d 'Readiness of every env: reachable, role, replication lag, live, healthy, data age vs RPO'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "wal-push" -d 'Archive one WAL file into the store: PostgreSQL\'s archive_command'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "wal-fetch" -d 'Restore one archived WAL file from the store: PostgreSQL\'s restore_command'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "pitr-restore" -d 'Point-in-time recovery: a base backup plus archived WAL into a new data directory, or an RDS instance restored to a point in time'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "drill" -d 'A recovery rehearsal: restore a backup into a scratch database, verify it, measure the RTO and RPO achieved, drop the copy'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "log" -d 'Show the journal, newest first'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "completions" -d 'Print shell completions for SHELL'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "man" -d 'Print the man page (roff)'
complete -c drctl -n "__fish_drctl_using_subcommand help; and not __fish_seen_subcommand_from check backup verify-chain sync promote-replica dns-cutover failover rollback status wal-push wal-fetch pitr-restore drill log completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c drctl -n "__fish_drctl_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "list" -d 'The complete backups in the store, newest first'
complete -c drctl -n "__fish_drctl_using_subcommand help; and __fish_seen_subcommand_from backup" -f -a "prune" -d 'Apply [retention] (keep_last, keep_daily, keep_weekly); never deletes the newest good backup'
