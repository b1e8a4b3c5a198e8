//! The local-directory store. STUB: to be implemented.

use std::path::PathBuf;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::{ByteRx, ObjectInfo, Store, Versioned};
use crate::error::Result;

pub struct LocalStore {
    url: String,
    root: PathBuf,
}

impl LocalStore {
    pub fn new(url: &str, path: &str) -> Self {
        LocalStore { url: url.to_string(), root: PathBuf::from(path) }
    }
}

#[async_trait]
impl Store for LocalStore {
    fn url(&self) -> &str {
        &self.url
    }
    async fn get(&self, _key: &str) -> Result<Option<Versioned>> {
        let _ = &self.root;
        todo!()
    }
    async fn put(&self, _key: &str, _data: Bytes) -> Result<()> {
        todo!()
    }
    async fn put_if_absent(&self, _key: &str, _data: Bytes) -> Result<bool> {
        todo!()
    }
    async fn put_if_match(&self, _key: &str, _data: Bytes, _etag: &str) -> Result<bool> {
        todo!()
    }
    async fn list(&self, _prefix: &str) -> Result<Vec<ObjectInfo>> {
        todo!()
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        todo!()
    }
    async fn head(&self, _key: &str) -> Result<Option<ObjectInfo>> {
        todo!()
    }
    async fn upload(&self, _key: &str, _rx: ByteRx) -> Result<u64> {
        todo!()
    }
    async fn download(&self, _key: &str) -> Result<Option<ByteRx>> {
        todo!()
    }
    async fn remove_unfinished(&self, _prefix: &str) -> Result<usize> {
        todo!()
    }
    async fn now(&self) -> Result<SystemTime> {
        todo!()
    }
}
