//! The drctl binary: parse, run, exit with the contract's code. Everything else lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Streaming moves large short-lived buffers (8 MiB S3 parts, 1 MiB chunks) between threads;
    // glibc would keep freed ones cached per arena and grow RSS past the 64 MiB budget. Buffers
    // of 1 MiB and more are mmap'ed and returned to the OS on free, and the arenas are capped.
    // SAFETY: mallopt is called before any other thread exists.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // try_parse: a wal-fetch command line clap refuses must exit 126, not clap's 2.
    let code = match drctl::cli::Cli::try_parse() {
        Ok(cli) => drctl::run(cli),
        Err(e) => drctl::parse_failed(e),
    };
    std::process::ExitCode::from(code)
}
