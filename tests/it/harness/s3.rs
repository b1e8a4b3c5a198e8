//! Direct S3 access to moto for tests that inspect or damage what drctl stored (moto refuses
//! unsigned GETs, so this goes through the real SDK with the harness's fake credentials).

use std::collections::{BTreeSet, HashMap};

pub fn s3() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&crate::clients::sdk()).force_path_style(true).build(),
    )
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// An object's bytes and user metadata, `None` for NoSuchKey.
pub fn s3_get(bucket: &str, key: &str) -> Option<(Vec<u8>, HashMap<String, String>)> {
    block_on(async {
        match s3().get_object().bucket(bucket).key(key).send().await {
            Ok(o) => {
                let meta = o.metadata().cloned().unwrap_or_default();
                Some((o.body.collect().await.unwrap().into_bytes().to_vec(), meta))
            }
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => None,
            Err(e) => panic!("GET s3://{bucket}/{key}: {e:?}"),
        }
    })
}

pub fn s3_put(bucket: &str, key: &str, body: Vec<u8>, meta: &[(&str, &str)]) {
    block_on(async {
        let mut req = s3().put_object().bucket(bucket).key(key).body(body.into());
        for (k, v) in meta {
            req = req.metadata(*k, *v);
        }
        req.send().await.unwrap_or_else(|e| panic!("PUT s3://{bucket}/{key}: {e:?}"));
    })
}

/// Every key under `prefix` in `bucket` (all pages).
pub fn s3_keys(bucket: &str, prefix: &str) -> BTreeSet<String> {
    block_on(async {
        let mut keys = BTreeSet::new();
        let mut pages = s3().list_objects_v2().bucket(bucket).prefix(prefix).into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.unwrap_or_else(|e| panic!("LIST s3://{bucket}/{prefix}: {e:?}"));
            keys.extend(page.contents().iter().filter_map(|o| o.key().map(str::to_string)));
        }
        keys
    })
}
