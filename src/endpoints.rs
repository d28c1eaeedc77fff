//! Source and target endpoints from the command line: URLs, plus passwords from the
//! environment or a file so that they never appear in argv or shell history, plus the TLS
//! settings of `rediss://` endpoints.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::replica::Credentials;
use ferry_engine::tls::{TlsConfig, TlsOptions};

/// `--source-tls-*`: TLS settings for a `rediss://` source.
#[derive(Args, Clone, Default)]
pub struct SourceTlsArgs {
    /// CA certificate(s) the source's server certificates are checked against, PEM
    /// (default: the platform's roots)
    #[arg(long, value_name = "FILE")]
    pub source_tls_ca: Option<PathBuf>,
    /// Client certificate (chain) for a source that requires mutual TLS, PEM
    #[arg(long, value_name = "FILE", requires = "source_tls_key")]
    pub source_tls_cert: Option<PathBuf>,
    /// Private key of --source-tls-cert, PEM
    #[arg(long, value_name = "FILE", requires = "source_tls_cert")]
    pub source_tls_key: Option<PathBuf>,
    /// Name sent (SNI) and verified for every source node instead of the node's host
    /// (cluster nodes announce IP addresses)
    #[arg(long, value_name = "NAME")]
    pub source_tls_server_name: Option<String>,
    /// Do not verify the source's certificates (insecure: anyone on the path can read and
    /// change the data)
    #[arg(long)]
    pub source_tls_insecure: bool,
}

/// `--target-tls-*`: TLS settings for a `rediss://` target.
#[derive(Args, Clone, Default)]
pub struct TargetTlsArgs {
    /// CA certificate(s) the target's server certificates are checked against, PEM
    /// (default: the platform's roots)
    #[arg(long, value_name = "FILE")]
    pub target_tls_ca: Option<PathBuf>,
    /// Client certificate (chain) for a target that requires mutual TLS, PEM
    #[arg(long, value_name = "FILE", requires = "target_tls_key")]
    pub target_tls_cert: Option<PathBuf>,
    /// Private key of --target-tls-cert, PEM
    #[arg(long, value_name = "FILE", requires = "target_tls_cert")]
    pub target_tls_key: Option<PathBuf>,
    /// Name sent (SNI) and verified for every target node instead of the node's host
    #[arg(long, value_name = "NAME")]
    pub target_tls_server_name: Option<String>,
    /// Do not verify the target's certificates (insecure)
    #[arg(long)]
    pub target_tls_insecure: bool,
}

impl SourceTlsArgs {
    /// The options given, `None` when no `--source-tls-*` flag was.
    pub fn options(&self) -> Option<TlsOptions> {
        options(TlsOptions {
            ca_file: self.source_tls_ca.clone(),
            cert_file: self.source_tls_cert.clone(),
            key_file: self.source_tls_key.clone(),
            server_name: self.source_tls_server_name.clone(),
            insecure: self.source_tls_insecure,
        })
    }
}

impl TargetTlsArgs {
    /// The options given, `None` when no `--target-tls-*` flag was.
    pub fn options(&self) -> Option<TlsOptions> {
        options(TlsOptions {
            ca_file: self.target_tls_ca.clone(),
            cert_file: self.target_tls_cert.clone(),
            key_file: self.target_tls_key.clone(),
            server_name: self.target_tls_server_name.clone(),
            insecure: self.target_tls_insecure,
        })
    }
}

fn options(options: TlsOptions) -> Option<TlsOptions> {
    (options != TlsOptions::default()).then_some(options)
}

/// `side` ("source" or "target") takes TLS flags only with a `rediss://` URL, and an insecure
/// one is warned about.
pub fn check_tls(side: &str, rediss: bool, options: Option<&TlsOptions>) -> Result<()> {
    let Some(options) = options else {
        return Ok(());
    };
    if !rediss {
        bail!("--{side}-tls-* options need a rediss:// url for --{side}");
    }
    if options.insecure {
        eprintln!(
            "warning: --{side}-tls-insecure: the {side}'s certificates are not verified; \
             anyone on the network path can read and change the data"
        );
    }
    Ok(())
}

/// Sets the user's TLS settings on a `rediss://` endpoint (the files are read now).
pub fn set_tls(side: &str, endpoint: &mut Endpoint, options: Option<TlsOptions>) -> Result<()> {
    check_tls(side, endpoint.tls.is_some(), options.as_ref())?;
    if let Some(options) = options {
        let config = TlsConfig::new(options).map_err(|e| anyhow!("--{side}-tls-*: {e}"))?;
        endpoint.tls = Some(config);
    }
    Ok(())
}

/// `--source` / `--target` and where their passwords may come from.
#[derive(Args, Clone)]
pub struct EndpointArgs {
    /// Source deployment: redis://[user:password@]host:port, rediss:// for TLS (`ferry sync`
    /// also takes the path of an RDB file)
    #[arg(long)]
    pub source: String,
    /// Target deployment: redis://[user:password@]host:port, rediss:// for TLS
    #[arg(long)]
    pub target: String,
    /// File holding the source password, or `user:password` (overrides the URL's).
    /// FERRY_SOURCE_PASSWORD in the environment does the same.
    #[arg(long, value_name = "FILE")]
    pub source_password_file: Option<std::path::PathBuf>,
    /// File holding the target password, or `user:password` (overrides the URL's).
    /// FERRY_TARGET_PASSWORD in the environment does the same.
    #[arg(long, value_name = "FILE")]
    pub target_password_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub source_tls: SourceTlsArgs,
    #[command(flatten)]
    pub target_tls: TargetTlsArgs,
}

impl EndpointArgs {
    pub fn resolve(&self) -> Result<(Endpoint, Endpoint)> {
        Ok((self.resolve_source()?, self.resolve_target()?))
    }

    pub fn resolve_source(&self) -> Result<Endpoint> {
        let mut endpoint = endpoint(
            "--source",
            &self.source,
            "FERRY_SOURCE_PASSWORD",
            &self.source_password_file,
        )?;
        set_tls("source", &mut endpoint, self.source_tls.options())?;
        Ok(endpoint)
    }

    pub fn resolve_target(&self) -> Result<Endpoint> {
        let mut endpoint = endpoint(
            "--target",
            &self.target,
            "FERRY_TARGET_PASSWORD",
            &self.target_password_file,
        )?;
        set_tls("target", &mut endpoint, self.target_tls.options())?;
        Ok(endpoint)
    }

    /// The source as an RDB file path, when it is one rather than a URL.
    pub fn source_file(&self) -> Option<std::path::PathBuf> {
        let is_url = self.source.starts_with("redis://") || self.source.starts_with("rediss://");
        (!is_url && std::path::Path::new(&self.source).is_file())
            .then(|| self.source.clone().into())
    }
}

/// `url` with the password from `file` or the environment variable `env`, if given.
pub fn endpoint(
    flag: &str,
    url: &str,
    env: &str,
    file: &Option<std::path::PathBuf>,
) -> Result<Endpoint> {
    let mut endpoint = Endpoint::parse(url).context(flag.to_string())?;
    let secret = match file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{flag} password file {}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_string(),
        ),
        None => std::env::var(env).ok().filter(|v| !v.is_empty()),
    };
    if let Some(secret) = secret {
        if secret.is_empty() {
            bail!("{flag} password file is empty");
        }
        endpoint.credentials = Some(credentials(&secret));
    }
    Ok(endpoint)
}

/// `password` or `user:password` (the form managed services print).
fn credentials(secret: &str) -> Credentials {
    match secret.split_once(':') {
        Some((user, password)) if !user.is_empty() => Credentials {
            user: Some(user.to_string()),
            password: password.to_string(),
        },
        _ => Credentials {
            user: None,
            password: secret.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_may_name_a_user() {
        let c = credentials("app:s3:cret");
        assert_eq!(
            (c.user.as_deref(), c.password.as_str()),
            (Some("app"), "s3:cret")
        );
        let c = credentials("plain");
        assert_eq!((c.user, c.password.as_str()), (None, "plain"));
    }
}
