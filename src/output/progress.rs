//! indicatif progress on stderr, only when it is a TTY and `--no-progress` is not given.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(enabled: bool, label: &str, total: Option<u64>, bytes: bool) -> Progress {
        if !enabled {
            return Progress { bar: None };
        }
        let bar = match total {
            Some(t) => ProgressBar::new(t),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = match (total.is_some(), bytes) {
            (true, true) => "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            (true, false) => "{prefix} [{bar:30}] {pos}/{len} {per_sec} {eta}",
            (false, true) => "{spinner} {prefix} {bytes} {bytes_per_sec} {elapsed}",
            (false, false) => "{spinner} {prefix} {pos} {per_sec} {elapsed}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(label.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n)
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear()
        }
    }
}
