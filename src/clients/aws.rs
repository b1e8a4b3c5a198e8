//! One `aws-config` load per process, from which the S3, Route 53 and RDS clients are made lazily.
//!
//! The standard chain applies (env vars, profiles, IMDS); `[aws] region` and `[aws] endpoint_url`
//! override it, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured by aws-config
//! itself. A run that never touches AWS (a file store, no `[dns]`) never loads credentials.
//!
//! Retries: the SDK's standard mode (exponential backoff with full jitter, a retry quota shared by
//! the process) for throttling (503 SlowDown), 5xx, timeouts and connection errors, with more
//! attempts than its default 3: a run makes hundreds of requests, and with 3 attempts a flaky
//! endpoint failing one request in three fails a run's request now and then (1 in 27 when the
//! failures are independent). `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` still win when set.
//! Conditional writes are retried too: S3 answers a retried `PutObject If-None-Match: *` whose
//! first attempt was applied (its response lost) with 412, which reads as "someone else wrote it".

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

/// Attempts per request, the first included: with one request in three failing independently, a
/// request still fails after all of them about once in 59,000.
const MAX_ATTEMPTS: u32 = 10;
/// The backoff ceiling (the SDK's default is 20 s). Pauses are random up to 1, 2, 4 s, then this:
/// a request that keeps failing gives up after about 19 s of pauses on average, not 55 s.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The retry policy of every AWS client, unless the environment sets one.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS).with_max_backoff(MAX_BACKOFF)
}

#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
}

pub struct Aws {
    settings: AwsSettings,
    sdk: OnceCell<SdkConfig>,
    s3: OnceCell<aws_sdk_s3::Client>,
    route53: OnceCell<aws_sdk_route53::Client>,
    rds: OnceCell<aws_sdk_rds::Client>,
}

impl Aws {
    pub fn new(settings: AwsSettings) -> Self {
        Aws { settings, sdk: OnceCell::new(), s3: OnceCell::new(), route53: OnceCell::new(), rds: OnceCell::new() }
    }

    async fn sdk(&self) -> &SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(BehaviorVersion::latest());
                if let Some(region) = &self.settings.region {
                    loader = loader.region(aws_config::Region::new(region.clone()));
                }
                if let Some(url) = &self.settings.endpoint_url {
                    loader = loader.endpoint_url(url.clone());
                }
                if std::env::var_os("AWS_MAX_ATTEMPTS").is_none() && std::env::var_os("AWS_RETRY_MODE").is_none() {
                    loader = loader.retry_config(retry_config());
                }
                let mut cfg = loader.load().await;
                if cfg.region().is_none() {
                    // S3 and Route 53 need *a* region to sign; us-east-1 is what the AWS CLI assumes.
                    cfg = cfg.into_builder().region(aws_config::Region::new("us-east-1")).build();
                }
                cfg
            })
            .await
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        self.s3
            .get_or_init(|| async {
                let conf = aws_sdk_s3::config::Builder::from(self.sdk().await)
                    // Custom endpoints (moto, MinIO) serve buckets by path, not by virtual host.
                    .force_path_style(self.has_custom_endpoint())
                    .build();
                aws_sdk_s3::Client::from_conf(conf)
            })
            .await
            .clone()
    }

    pub async fn route53(&self) -> aws_sdk_route53::Client {
        self.route53.get_or_init(|| async { aws_sdk_route53::Client::new(self.sdk().await) }).await.clone()
    }

    pub async fn rds(&self) -> aws_sdk_rds::Client {
        self.rds.get_or_init(|| async { aws_sdk_rds::Client::new(self.sdk().await) }).await.clone()
    }

    fn has_custom_endpoint(&self) -> bool {
        self.settings.endpoint_url.is_some()
            || std::env::var_os("AWS_ENDPOINT_URL").is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
    }
}

#[cfg(test)]
mod tests {
    use aws_config::retry::RetryMode;

    use super::*;

    #[test]
    fn retries_are_standard_mode_with_ten_attempts() {
        let c = retry_config();
        assert_eq!(c.mode(), RetryMode::Standard);
        assert_eq!(c.max_attempts(), MAX_ATTEMPTS);
        assert_eq!(c.max_backoff(), MAX_BACKOFF);
    }
}
