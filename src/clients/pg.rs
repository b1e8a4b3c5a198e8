//! PostgreSQL connections for every runbook. STUB: to be implemented.

use crate::dburl::DbUrl;
use crate::error::Result;

/// Connect with drctl's own TLS mapping of `sslmode` / `sslrootcert`, `connect_timeout` and
/// `application_name=drctl`. The connection task is spawned; errors name host:port, never the password.
pub async fn connect(_url: &DbUrl) -> Result<tokio_postgres::Client> {
    todo!()
}

/// `server_version_num` / 10000, e.g. 15.
pub async fn server_major(_client: &tokio_postgres::Client) -> Result<u32> {
    todo!()
}
