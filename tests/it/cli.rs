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
    for c in ["check", "backup", "sync", "status", "verify-chain", "log", "completions", "man"] {
        assert!(r.stdout.contains(c), "{c} missing from --help");
    }
    for c in ["failover", "pitr-restore", "wal-push", "dns-cutover"] {
        assert!(!r.stdout.contains(c), "{c} is not built yet but shows in --help");
    }
}
