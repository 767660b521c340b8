//! TLS and mutual TLS for the gRPC server. Certificates are re-read when
//! their files change (cert-manager rotates them in place), so rotation
//! needs no restart: gRPC asks the fetcher before every new connection.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use grpcio::{
    CertificateRequestType, ServerCredentials, ServerCredentialsBuilder, ServerCredentialsFetcher,
};

/// PEM files: server certificate chain and key, and optionally the CA that
/// client certificates must chain to (which turns on mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Server credentials that reload from `files`. Fails now if they cannot be read.
pub fn server_credentials(files: &TlsFiles) -> Result<ServerCredentials, String> {
    let fetcher = ReloadingFetcher {
        files: files.clone(),
        loaded: Mutex::new(None),
    };
    fetcher.read().map_err(|e| e.to_string())?;
    Ok(ServerCredentials::with_fetcher(
        Box::new(fetcher),
        request_type(files),
    ))
}

fn request_type(files: &TlsFiles) -> CertificateRequestType {
    match files.client_ca {
        Some(_) => CertificateRequestType::RequestAndRequireClientCertificateAndVerify,
        None => CertificateRequestType::DontRequestClientCertificate,
    }
}

struct ReloadingFetcher {
    files: TlsFiles,
    /// The file contents last handed to gRPC.
    loaded: Mutex<Option<Material>>,
}

#[derive(PartialEq, Eq)]
struct Material {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ReloadingFetcher {
    fn read(&self) -> Result<Material, String> {
        Ok(Material {
            cert: read_pem(&self.files.cert, "--tls-cert")?,
            key: read_pem(&self.files.key, "--tls-key")?,
            client_ca: match &self.files.client_ca {
                Some(path) => Some(read_pem(path, "--tls-client-ca")?),
                None => None,
            },
        })
    }
}

impl ServerCredentialsFetcher for ReloadingFetcher {
    fn fetch(&self) -> Result<Option<ServerCredentialsBuilder>, Box<dyn Error>> {
        // A half-written rotation fails here; gRPC keeps the previous certificates.
        let material = self.read()?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if loaded.as_ref() == Some(&material) {
            return Ok(None);
        }
        let mut builder =
            ServerCredentialsBuilder::new().add_cert(material.cert.clone(), material.key.clone());
        if let Some(ca) = &material.client_ca {
            builder = builder.root_cert(ca.clone(), request_type(&self.files));
        }
        let verb = if loaded.is_some() {
            "reloaded"
        } else {
            "loaded"
        };
        log::info!("{verb} TLS certificate {}", self.files.cert.display());
        *loaded = Some(material);
        Ok(Some(builder))
    }
}

fn read_pem(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    let bytes =
        std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))?;
    if !bytes.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(format!("{flag} {} is not a PEM file", path.display()));
    }
    Ok(bytes)
}
