//! One `aws-config` load per process, from which the S3, Route 53 and RDS clients are made lazily.
//!
//! The standard chain applies (env vars, profiles, IMDS); `[aws] region` and `[aws] endpoint_url`
//! override it, and `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured by aws-config
//! itself. A run that never touches AWS (a file store, no `[dns]`) never loads credentials.

use aws_config::{BehaviorVersion, SdkConfig};
use tokio::sync::OnceCell;

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
