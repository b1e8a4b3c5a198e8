//! The checked-in completions/ and man/ are exactly what the binary prints.

use crate::harness::drctl::Drctl;

#[test]
fn checked_in_completions_and_man_page_match_the_binary() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (args, file) in [
        (vec!["completions", "bash"], "completions/drctl.bash"),
        (vec!["completions", "zsh"], "completions/_drctl"),
        (vec!["completions", "fish"], "completions/drctl.fish"),
        (vec!["man"], "man/drctl.1"),
    ] {
        let r = Drctl::new().args(args.clone()).run().expect_code(0);
        let on_disk = std::fs::read_to_string(root.join(file)).unwrap_or_default();
        assert!(r.stdout == on_disk, "{file} differs from `drctl {}`: run scripts/gen-docs", args.join(" "));
    }
}

#[test]
fn help_lists_only_working_commands() {
    let r = Drctl::new().args(["--help"]).run().expect_code(0);
    for c in [
        "check",
        "backup",
        "sync",
        "promote-replica",
        "dns-cutover",
        "failover",
        "rollback",
        "status",
        "verify-chain",
        "log",
        "pitr-restore",
        "wal-push",
        "wal-fetch",
        "drill",
        "completions",
        "man",
    ] {
        assert!(r.stdout.contains(c), "{c} missing from --help");
    }
}

#[test]
fn scheduled_runs_in_runbooks_are_quiet_on_success() {
    // cron mails whatever is printed: every drctl it starts must be silent unless something failed.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("runbooks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.ends_with(".cron") || name.ends_with(".service")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            for run in line.split("/usr/local/bin/drctl ").skip(1) {
                seen += 1;
                assert!(run.starts_with("-q "), "{name}: drctl without -q: {line}");
            }
        }
    }
    assert!(seen >= 6, "only {seen} drctl runs found in {}", dir.display());
}
