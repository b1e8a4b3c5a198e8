//! wal-push (archive_command) and wal-fetch (restore_command). NOT BUILT YET: placeholder entry
//! points so the command line is in place.

use crate::cli::{Global, WalFetchArgs, WalPushArgs};
use crate::error::{Error, exit};
use crate::output::Output;

pub fn push_main(_global: &Global, _args: &WalPushArgs, out: &Output) -> u8 {
    out.error(&Error::Usage { problem: "wal-push is not built yet".into(), hint: None });
    exit::USAGE
}

pub fn fetch_main(_global: &Global, args: &WalFetchArgs, out: &Output) -> u8 {
    out.error(&Error::Usage { problem: format!("wal-fetch {}: not built yet", args.name), hint: None });
    exit::WAL_FETCH_FAILED
}
