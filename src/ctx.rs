//! `Ctx`: what a run needs, built once after the config loads and passed down as `&Ctx`.

use std::sync::Arc;

use crate::cli::Global;
use crate::clients::aws::Aws;
use crate::config::Config;
use crate::output::Output;
use crate::store::Store;

pub struct Ctx {
    pub config: Config,
    pub global: Global,
    pub aws: Aws,
    pub store: Arc<dyn Store>,
    pub run_id: String,
    pub out: Output,
}
