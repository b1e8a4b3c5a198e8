//! PostgreSQL connections for every runbook: `connect` maps a libpq-style `DbUrl` onto
//! tokio-postgres and rustls.
//!
//! tokio-postgres knows only `sslmode` disable/prefer/require and never verifies anything itself,
//! so drctl picks the rustls verifier per mode, the way libpq does:
//!
//! | sslmode     | handshake                  | certificate check                                   |
//! | ----------- | -------------------------- | --------------------------------------------------- |
//! | disable     | plain                      | —                                                   |
//! | prefer      | TLS if offered, else plain | none; the chain if `sslrootcert` is given            |
//! | require     | TLS                        | none; the chain if `sslrootcert` is given            |
//! | verify-ca   | TLS                        | the chain against the roots, not the host name       |
//! | verify-full | TLS                        | the chain and the host name                          |
//!
//! Roots are the `sslrootcert` PEM file, else the system store. Unlike libpq, `prefer` does not
//! retry in plain text after a failed handshake: tokio-postgres falls back only when the server
//! declines TLS.

pub mod replication;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::dburl::{DbUrl, SslMode};
use crate::error::{Error, Result};

/// Connect with drctl's own TLS mapping of `sslmode` / `sslrootcert`, `connect_timeout` and
/// `application_name=drctl`. The connection task is spawned; errors name host:port, never the password.
pub async fn connect(url: &DbUrl) -> Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(&url.host).port(url.port).user(&url.user).dbname(&url.dbname).application_name("drctl");
    if let Some(pw) = url.password() {
        cfg.password(pw);
    }
    let timeout = (url.connect_timeout_s > 0).then(|| Duration::from_secs(url.connect_timeout_s));
    if let Some(t) = timeout {
        cfg.connect_timeout(t);
    }

    let connecting = async {
        match tls_plan(url.sslmode, url.sslrootcert.is_some()) {
            None => {
                cfg.ssl_mode(PgSslMode::Disable);
                let (client, conn) = cfg.connect(tokio_postgres::NoTls).await.map_err(|e| db_error(url, &e))?;
                tokio::spawn(conn);
                Ok(client)
            }
            Some((mode, verify)) => {
                cfg.ssl_mode(mode);
                let tls = MakeRustlsConnect::new(client_config(url, verify)?);
                let (client, conn) = cfg.connect(tls).await.map_err(|e| db_error(url, &e))?;
                // A connection that dies later surfaces as an error on the client's next query,
                // which is where the caller has the context to report it.
                tokio::spawn(conn);
                Ok(client)
            }
        }
    };
    // tokio-postgres's connect_timeout covers the TCP connect only; libpq's covers the whole
    // handshake, and a server that accepts but never answers must not hang a runbook.
    match timeout {
        Some(t) => tokio::time::timeout(t, connecting)
            .await
            .unwrap_or_else(|_| Err(db_problem(url, format!("no answer within connect_timeout ({}s)", t.as_secs())))),
        None => connecting.await,
    }
}

/// `server_version_num` / 10000, e.g. 15.
pub async fn server_major(client: &tokio_postgres::Client) -> Result<u32> {
    let problem = |p: String| Error::Db { target: "SHOW server_version_num".into(), problem: p };
    let row = client.query_one("SHOW server_version_num", &[]).await.map_err(|e| problem(describe(&e)))?;
    let text: String = row.get(0);
    text.trim().parse::<u32>().map(|n| n / 10000).map_err(|_| problem(format!("unexpected value `{text}`")))
}

/// `Error::Db` for `url` (host:port/db) from a tokio-postgres error.
pub fn db_error(url: &DbUrl, e: &tokio_postgres::Error) -> Error {
    let text = describe(e);
    // tokio-postgres's words when the server asks for a password and the client has none.
    if url.password().is_none() && text.contains("password missing") {
        return db_problem(
            url,
            format!("the server asks {} for a password and none was found: {}", url.user, url.password_sources()),
        );
    }
    db_problem(url, text)
}

/// The server's own message when there is one (with its SQLSTATE), else the client-side error
/// chain (connection refused, TLS handshake failure, …). Neither can hold the password.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            // tokio-postgres's Display stops at "error connecting to server"; the cause is below.
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                let more = cause.to_string();
                if !text.contains(&more) {
                    text = format!("{text}: {more}");
                }
                source = cause.source();
            }
            text
        }
    }
}

fn db_problem(url: &DbUrl, problem: String) -> Error {
    Error::Db { target: format!("{}/{}", url.addr(), url.dbname), problem }
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Any certificate; handshake signatures are still checked against it.
    Nothing,
    /// The chain up to the roots, whatever name the certificate is for.
    Chain,
    /// The chain and the host name.
    ChainAndName,
}

/// tokio-postgres's mode and our verification for a URL's sslmode; `None` is plain text.
fn tls_plan(mode: SslMode, has_rootcert: bool) -> Option<(PgSslMode, Verify)> {
    // libpq verifies the chain in prefer/require too once a root file is configured.
    let weak = if has_rootcert { Verify::Chain } else { Verify::Nothing };
    match mode {
        SslMode::Disable => None,
        SslMode::Prefer => Some((PgSslMode::Prefer, weak)),
        SslMode::Require => Some((PgSslMode::Require, weak)),
        SslMode::VerifyCa => Some((PgSslMode::Require, Verify::Chain)),
        SslMode::VerifyFull => Some((PgSslMode::Require, Verify::ChainAndName)),
    }
}

/// The crypto provider is passed explicitly rather than installed process-wide, so nothing
/// depends on which other crate (the AWS SDK, reqwest) touched rustls first.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn client_config(url: &DbUrl, verify: Verify) -> Result<ClientConfig> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match verify {
        Verify::Nothing => Arc::new(AcceptAnyCert(provider.signature_verification_algorithms)),
        Verify::Chain | Verify::ChainAndName => {
            let roots = match &url.sslrootcert {
                Some(file) => roots_from_file(file).map_err(|p| db_problem(url, p))?,
                None => system_roots().map_err(|p| db_problem(url, p))?,
            };
            let webpki = webpki_verifier(roots, provider.clone()).map_err(|p| db_problem(url, p))?;
            if verify == Verify::Chain { Arc::new(IgnoreHostName(webpki)) } else { webpki }
        }
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| db_problem(url, format!("TLS setup: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki_verifier(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<Arc<WebPkiServerVerifier>, String> {
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| format!("TLS setup: {e}"))
}

/// The roots in a PEM file (`sslrootcert`); every problem names the file.
fn roots_from_file(file: &Path) -> Result<RootCertStore, String> {
    let name = file.display();
    let certs = CertificateDer::pem_file_iter(file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("sslrootcert {name}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("sslrootcert {name}: no PEM certificate in the file"));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| format!("sslrootcert {name}: {e}"))?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no system root certificates found{}; set sslrootcert in the URL",
            if why.is_empty() { String::new() } else { format!(" ({})", why.join("; ")) }
        ));
    }
    Ok(roots)
}

/// sslmode prefer/require without a root file: libpq checks nothing about the certificate, but
/// the handshake must still prove the server holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// verify-ca: the full WebPKI check except the name, as libpq does for that mode.
#[derive(Debug)]
struct IgnoreHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for IgnoreHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain before the name, so a name error means the chain was good.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A test CA, a server certificate it signed for DNS:localhost only, and an unrelated CA; all
    // valid 2000-2100. The integration harness serves the same pair.
    const CA: &str = include_str!("../../tests/fixtures/tls/ca.pem");
    const LEAF: &str = include_str!("../../tests/fixtures/tls/server.crt");
    const OTHER_CA: &str = include_str!("../../tests/fixtures/tls/other-ca.pem");

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    fn verifier(verify: Verify, ca: &str) -> Arc<dyn ServerCertVerifier> {
        let mut roots = RootCertStore::empty();
        roots.add(der(ca)).unwrap();
        let webpki = webpki_verifier(roots, provider()).unwrap();
        match verify {
            Verify::Nothing => Arc::new(AcceptAnyCert(provider().signature_verification_algorithms)),
            Verify::Chain => Arc::new(IgnoreHostName(webpki)),
            Verify::ChainAndName => webpki,
        }
    }

    fn check(v: &dyn ServerCertVerifier, name: &str) -> Result<(), rustls::Error> {
        let name = ServerName::try_from(name.to_string()).unwrap();
        v.verify_server_cert(&der(LEAF), &[], &name, &[], UnixTime::now()).map(|_| ())
    }

    fn url(s: &str) -> DbUrl {
        DbUrl::parse(s).unwrap()
    }

    #[test]
    fn each_sslmode_maps_to_libpqs_verification() {
        use SslMode::*;
        assert_eq!(tls_plan(Disable, true), None);
        assert_eq!(tls_plan(Prefer, false), Some((PgSslMode::Prefer, Verify::Nothing)));
        assert_eq!(tls_plan(Prefer, true), Some((PgSslMode::Prefer, Verify::Chain)));
        assert_eq!(tls_plan(Require, false), Some((PgSslMode::Require, Verify::Nothing)));
        assert_eq!(tls_plan(Require, true), Some((PgSslMode::Require, Verify::Chain)));
        assert_eq!(tls_plan(VerifyCa, false), Some((PgSslMode::Require, Verify::Chain)));
        assert_eq!(tls_plan(VerifyFull, false), Some((PgSslMode::Require, Verify::ChainAndName)));
        assert_eq!(tls_plan(VerifyFull, true), Some((PgSslMode::Require, Verify::ChainAndName)));
    }

    #[test]
    fn verify_full_checks_chain_and_name() {
        let v = verifier(Verify::ChainAndName, CA);
        check(&*v, "localhost").unwrap();
        let e = check(&*v, "127.0.0.1").unwrap_err();
        assert!(e.to_string().contains("not valid for name"), "{e}");
        let e = check(&*verifier(Verify::ChainAndName, OTHER_CA), "localhost").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), "{e}");
    }

    #[test]
    fn verify_ca_checks_the_chain_but_not_the_name() {
        let v = verifier(Verify::Chain, CA);
        check(&*v, "localhost").unwrap();
        check(&*v, "db.example.com").unwrap();
        check(&*v, "127.0.0.1").unwrap();
        let e = check(&*verifier(Verify::Chain, OTHER_CA), "db.example.com").unwrap_err();
        assert!(matches!(e, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)), "{e}");
    }

    #[test]
    fn require_accepts_any_certificate_but_keeps_the_signature_schemes() {
        let v = verifier(Verify::Nothing, OTHER_CA);
        check(&*v, "db.example.com").unwrap();
        // The schemes come from the provider, so handshake signatures are checked, not waved through.
        let schemes = v.supported_verify_schemes();
        assert_eq!(schemes, provider().signature_verification_algorithms.supported_schemes());
        assert!(schemes.contains(&SignatureScheme::ECDSA_NISTP256_SHA256));
    }

    #[test]
    fn root_file_problems_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = roots_from_file(&missing).unwrap_err();
        assert!(e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = roots_from_file(&empty).unwrap_err();
        assert!(e.contains("empty.pem") && e.contains("no PEM certificate"), "{e}");
        let good = dir.path().join("ca.pem");
        std::fs::write(&good, format!("{CA}{OTHER_CA}")).unwrap();
        assert_eq!(roots_from_file(&good).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn bad_rootcert_fails_before_connecting_and_names_the_file() {
        let u = url("postgres://app:hunter2@127.0.0.1:1/app?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem");
        let e = connect(&u).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("127.0.0.1:1/app") && text.contains("/nonexistent/ca.pem"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[tokio::test]
    async fn refused_connection_names_host_port_and_db_not_the_password() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        for mode in ["disable", "require"] {
            let u = url(&format!("postgres://app:hunter2@127.0.0.1:{port}/shop?sslmode={mode}"));
            let e = connect(&u).await.unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, Error::Db { .. }), "{text}");
            assert!(text.contains(&format!("127.0.0.1:{port}/shop")), "{text}");
            assert!(text.to_lowercase().contains("refused"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_times_out_after_connect_timeout() {
        // Accepts TCP but never answers the startup packet.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let u = url(&format!("postgres://app:pw@127.0.0.1:{port}/shop?sslmode=disable&connect_timeout=1"));
        let e = connect(&u).await.unwrap_err();
        assert!(e.to_string().contains("connect_timeout"), "{e}");
        hold.abort();
    }
}
