//! Source and target endpoints from the command line: URLs, plus passwords from the
//! environment or a file so that they never appear in argv or shell history.

use anyhow::{bail, Context, Result};
use clap::Args;
use ferry_engine::endpoint::Endpoint;
use ferry_engine::replica::Credentials;

/// `--source` / `--target` and where their passwords may come from.
#[derive(Args, Clone)]
pub struct EndpointArgs {
    /// Source deployment: redis://[user:password@]host:port (`ferry sync` also takes the path
    /// of an RDB file)
    #[arg(long)]
    pub source: String,
    /// Target deployment: redis://[user:password@]host:port
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
}

impl EndpointArgs {
    pub fn resolve(&self) -> Result<(Endpoint, Endpoint)> {
        Ok((self.resolve_source()?, self.resolve_target()?))
    }

    pub fn resolve_source(&self) -> Result<Endpoint> {
        endpoint(
            "--source",
            &self.source,
            "FERRY_SOURCE_PASSWORD",
            &self.source_password_file,
        )
    }

    pub fn resolve_target(&self) -> Result<Endpoint> {
        endpoint(
            "--target",
            &self.target,
            "FERRY_TARGET_PASSWORD",
            &self.target_password_file,
        )
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
