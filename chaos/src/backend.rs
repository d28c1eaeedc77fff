//! Where a scenario's deployments run: server processes on this machine (the default) or
//! containers of a Docker engine, both behind the same `Deployment` abstraction, so every
//! fault of the catalogue works the same on either.

use ferry_fixtures::container;
use ferry_fixtures::{ContainerCluster, ContainerServer, Deployment, LocalCluster, LocalServer};
use serde::{Deserialize, Serialize};

use crate::error::ChaosError;
use crate::scenario::Shape;

/// The fixtures backend scenarios run on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum Backend {
    /// `redis-server`/`valkey-server` processes on 127.0.0.1.
    #[default]
    Local,
    /// Containers on the host's network; `image` defaults to the one `ci/redis-image.sh`
    /// builds from the default server (or `$FERRY_IMAGE`).
    Docker { image: Option<String> },
}

impl Backend {
    /// Why this backend cannot run here (no Docker engine, image missing), if it cannot.
    pub fn unavailable(&self) -> Option<String> {
        match self {
            Backend::Local => None,
            Backend::Docker { image } => container::unavailable(image.as_deref()),
        }
    }

    /// Starts a deployment of `shape`.
    pub fn start(&self, shape: &Shape) -> Result<Box<dyn Deployment>, ChaosError> {
        Ok(match self {
            Backend::Local if shape.masters == 0 => Box::new(
                shape
                    .config
                    .iter()
                    .fold(LocalServer::builder(), |b, line| b.config(line.clone()))
                    .replicas(shape.replicas)
                    .proxied(shape.proxy)
                    .start()?,
            ),
            Backend::Local => Box::new(
                shape
                    .config
                    .iter()
                    .fold(LocalCluster::builder(), |b, line| b.config(line.clone()))
                    .masters(shape.masters)
                    .replicas(shape.replicas)
                    .proxied(shape.proxy)
                    .start()?,
            ),
            Backend::Docker { image } if shape.masters == 0 => {
                let mut builder = shape
                    .config
                    .iter()
                    .fold(ContainerServer::builder(), |b, line| b.config(line.clone()))
                    .replicas(shape.replicas)
                    .proxied(shape.proxy);
                if let Some(image) = image {
                    builder = builder.image(image.clone());
                }
                Box::new(builder.start()?)
            }
            Backend::Docker { image } => {
                let mut builder = shape
                    .config
                    .iter()
                    .fold(ContainerCluster::builder(), |b, line| {
                        b.config(line.clone())
                    })
                    .masters(shape.masters)
                    .replicas(shape.replicas)
                    .proxied(shape.proxy);
                if let Some(image) = image {
                    builder = builder.image(image.clone());
                }
                Box::new(builder.start()?)
            }
        })
    }
}
