//! Where a deployment is and how to log in: `redis://[user:password@]host:port[/db]` and
//! `rediss://...` URLs, as the Redis ecosystem writes them.

use std::fmt;

use crate::replica::Credentials;
use crate::tls::TlsConfig;

/// A parsed `redis://` or `rediss://` URL: one seed node of a deployment.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// `rediss://`: TLS to every node, the seed and the nodes it announces, with these
    /// settings (the platform's roots and nothing else until the edge sets the user's).
    pub tls: Option<TlsConfig>,
    pub credentials: Option<Credentials>,
    /// The db in the URL path (`/3`), for standalone deployments.
    pub db: Option<u32>,
}

/// A URL that is not a valid endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("url {url:?} must start with redis:// or rediss://")]
    Scheme { url: String },
    #[error("url {url:?} has no host")]
    NoHost { url: String },
    #[error("url {url:?} has an invalid port {port:?}, expected 1-65535")]
    Port { url: String, port: String },
    #[error("url {url:?} has an invalid db {db:?}, expected a number")]
    Db { url: String, db: String },
    #[error("url {url:?} has a bad percent-escape in its user or password")]
    Escape { url: String },
}

impl Endpoint {
    /// `redis://host:port`: no TLS, no credentials.
    pub fn plain(host: impl Into<String>, port: u16) -> Self {
        Endpoint {
            host: host.into(),
            port,
            tls: None,
            credentials: None,
            db: None,
        }
    }

    /// Parses a URL; the port defaults to 6379. The password never appears in errors or in
    /// `Display`/`Debug` output.
    pub fn parse(url: &str) -> Result<Self, EndpointError> {
        // Errors show the URL with its password masked.
        let shown = mask_password(url);
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss://") {
            (true, rest)
        } else {
            return Err(EndpointError::Scheme { url: shown });
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, authority),
        };
        let credentials = match userinfo {
            None => None,
            Some(info) => {
                let (user, password) = info.split_once(':').unwrap_or(("", info));
                let decode = |s: &str| {
                    percent_decode(s).ok_or_else(|| EndpointError::Escape { url: shown.clone() })
                };
                let user = decode(user)?;
                Some(Credentials {
                    user: (!user.is_empty()).then_some(user),
                    password: decode(password)?,
                })
            }
        };
        let (host, port) = split_host_port(hostport);
        if host.is_empty() {
            return Err(EndpointError::NoHost { url: shown });
        }
        let port = match port {
            None => 6379,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => {
                    return Err(EndpointError::Port {
                        url: shown,
                        port: p.to_string(),
                    })
                }
            },
        };
        let path = path.split(['?', '#']).next().unwrap_or("");
        let db = if path.is_empty() {
            None
        } else {
            Some(path.parse::<u32>().map_err(|_| EndpointError::Db {
                url: shown.clone(),
                db: path.to_string(),
            })?)
        };
        Ok(Endpoint {
            host: host.to_string(),
            port,
            tls: tls.then(TlsConfig::platform),
            credentials,
            db,
        })
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        write!(f, "{scheme}://")?;
        if let Some(credentials) = &self.credentials {
            write!(f, "{}:***@", credentials.user.as_deref().unwrap_or(""))?;
        }
        f.write_str(&self.addr())?;
        if let Some(db) = self.db {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// `host:port`, `[v6]:port`, `host` or `[v6]`.
fn split_host_port(hostport: &str) -> (&str, Option<&str>) {
    if let Some(rest) = hostport.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':'));
        }
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (hostport, None),
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with anything between `:` and `@` in its userinfo replaced by `***`.
fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let authority_end = url[scheme_end..]
        .find('/')
        .map_or(url.len(), |i| scheme_end + i);
    let Some(at) = url[scheme_end..authority_end]
        .rfind('@')
        .map(|i| scheme_end + i)
    else {
        return url.to_string();
    };
    let userinfo = &url[scheme_end..at];
    let user = userinfo.split_once(':').map_or("", |(u, _)| u);
    format!("{}{user}:***{}", &url[..scheme_end], &url[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_authenticated_urls_parse() {
        let e = Endpoint::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls.is_some(), e.db),
            ("127.0.0.1", 7000, false, None)
        );
        assert_eq!(e.credentials, None);

        let e = Endpoint::parse("rediss://app:p%40ss:word@cache.internal:6380/2").unwrap();
        assert!(e.tls.is_some());
        assert_eq!(e.db, Some(2));
        let c = e.credentials.clone().unwrap();
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.password, "p@ss:word");
        assert_eq!(e.to_string(), "rediss://app:***@cache.internal:6380/2");
        assert!(!format!("{e:?}").contains("p@ss"));

        let e = Endpoint::parse("redis://:only-password@localhost").unwrap();
        assert_eq!(e.port, 6379);
        assert_eq!(e.credentials.unwrap().user, None);

        let e = Endpoint::parse("redis://[::1]:7001").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 7001));
        assert_eq!(e.addr(), "[::1]:7001");
    }

    #[test]
    fn bad_urls_are_one_line_errors_without_the_password() {
        let cases = [
            ("http://x:1", "must start with redis:// or rediss://"),
            ("redis://:1", "has no host"),
            ("redis://host:0", "invalid port \"0\""),
            ("redis://host:99999", "invalid port \"99999\""),
            ("redis://u:secret@host:x", "invalid port \"x\""),
            ("redis://host:1/abc", "invalid db \"abc\""),
            ("redis://u:se%zzcret@host:1", "bad percent-escape"),
        ];
        for (url, expected) in cases {
            let err = Endpoint::parse(url).unwrap_err().to_string();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("secret") && !err.contains("se%zz"), "{err}");
            assert_eq!(err.lines().count(), 1);
        }
    }
}
