//! `rediss://` end to end against real TLS servers (fixtures' throwaway CA): discovery sees
//! the TLS ports, a full+incremental sync between TLS clusters is exact, mutual TLS works
//! with a client certificate and fails in one clear line without one, as does a wrong CA.

use std::time::Duration;

use ferry_engine::deployment::{Deployment as Discovered, DiscoverError};
use ferry_engine::endpoint::Endpoint;
use ferry_engine::sync::SyncMode;
use ferry_engine::tls::{TlsConfig, TlsOptions};
use ferry_fixtures::{ClientAuth, Dataset, LocalCluster, LocalServer, TlsFiles, Workload};

use crate::incr::{assert_exact, options, Running};

const TIMEOUT: Duration = Duration::from_secs(5);

/// `url` (rediss://) trusting the deployment's CA, with its client certificate when `client`.
fn tls_endpoint(url: &str, files: &TlsFiles, client: bool) -> Endpoint {
    let mut endpoint = Endpoint::parse(url).unwrap();
    let mut options = TlsOptions {
        ca_file: Some(files.ca.clone()),
        ..TlsOptions::default()
    };
    if client {
        options.cert_file = Some(files.client_cert.clone());
        options.key_file = Some(files.client_key.clone());
    }
    endpoint.tls = Some(TlsConfig::new(options).unwrap());
    endpoint
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_nodes_are_announced_with_tls_ports_on_tls_connections() {
    let cluster = LocalCluster::builder()
        .masters(2)
        .tls(ClientAuth::Optional)
        .start()
        .unwrap();
    let files = cluster.tls().unwrap();
    let tls_ports: Vec<u16> = cluster
        .local_nodes()
        .iter()
        .map(|n| n.tls_addr().unwrap().port)
        .collect();
    let plain_ports: Vec<u16> = cluster.local_nodes().iter().map(|n| n.port()).collect();

    let over_tls = tls_endpoint(&cluster.tls_url().unwrap(), files, false);
    let found = Discovered::discover(&over_tls, TIMEOUT).await.unwrap();
    for shard in &found.topology.shards {
        assert!(tls_ports.contains(&shard.master.port), "{shard:?}");
    }
    let plain = Endpoint::plain("127.0.0.1", plain_ports[0]);
    let found = Discovered::discover(&plain, TIMEOUT).await.unwrap();
    for shard in &found.topology.shards {
        assert!(plain_ports.contains(&shard.master.port), "{shard:?}");
    }

    // rediss:// to the plain port: the server waits for the rest of a "command".
    let mut wrong_port = over_tls.clone();
    wrong_port.port = plain_ports[0];
    let error = Discovered::discover(&wrong_port, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, DiscoverError::Link(link) if link.is_tls()),
        "{error}"
    );
    assert!(
        error.to_string().contains("does this port serve tls?"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_and_incremental_sync_between_tls_clusters_is_exact() {
    let source = LocalCluster::builder()
        .masters(3)
        .tls(ClientAuth::Optional)
        .start()
        .unwrap();
    let target = LocalCluster::builder()
        .masters(2)
        .tls(ClientAuth::Optional)
        .start()
        .unwrap();
    Dataset::new(31).scale(2_000).load(&source).unwrap();
    let during = Workload::new(32)
        .rate(2_000)
        .duration(Duration::from_secs(3))
        .spawn(&source)
        .unwrap();
    let source_endpoint = tls_endpoint(&source.tls_url().unwrap(), source.tls().unwrap(), false);
    let target_endpoint = tls_endpoint(&target.tls_url().unwrap(), target.tls().unwrap(), false);
    let mut sync = Running::start_endpoints(
        &source_endpoint,
        &target_endpoint,
        options(SyncMode::FullIncr),
    )
    .await;
    let report = tokio::task::block_in_place(|| during.join()).unwrap();
    assert!(report.ops > 2_000, "{report:?}");
    sync.caught_up(Duration::from_secs(30)).await;
    // Judged over the fixtures' own plain connections, independent of ferry's TLS.
    assert_exact(&source, &target).await;
    assert_eq!(sync.full_resyncs(), 3, "one snapshot per shard");
    sync.stop().await;
}

/// The one-line message of a discovery that failed on TLS.
async fn tls_failure(endpoint: &Endpoint) -> String {
    let error = Discovered::discover(endpoint, TIMEOUT).await.unwrap_err();
    let DiscoverError::Link(link) = &error else {
        panic!("not a link error: {error}");
    };
    assert!(link.is_tls(), "not a tls error: {error}");
    let message = error.to_string();
    assert_eq!(message.lines().count(), 1, "{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_needs_the_client_certificate_and_the_right_ca() {
    let server = LocalServer::builder()
        .tls(ClientAuth::Required)
        .start()
        .unwrap();
    let files = server.tls().unwrap();
    let url = server.tls_url().unwrap();

    let with_cert = tls_endpoint(&url, files, true);
    let found = Discovered::discover(&with_cert, TIMEOUT).await.unwrap();
    assert_eq!(found.topology.shards.len(), 1);

    let without_cert = tls_endpoint(&url, files, false);
    let message = tls_failure(&without_cert).await;
    assert!(message.contains("client certificate"), "{message}");

    let stranger = tempfile_dir("stranger-ca");
    let other = TlsFiles::generate(&stranger).unwrap();
    let mut wrong_ca = tls_endpoint(&url, files, true);
    wrong_ca.tls = Some(
        TlsConfig::new(TlsOptions {
            ca_file: Some(other.ca.clone()),
            cert_file: Some(files.client_cert.clone()),
            key_file: Some(files.client_key.clone()),
            ..TlsOptions::default()
        })
        .unwrap(),
    );
    let message = tls_failure(&wrong_ca).await;
    assert!(message.contains("not signed by a trusted CA"), "{message}");

    // A configured server name replaces the node's host, for SNI and verification.
    let named = |name: &str| {
        let mut endpoint = Endpoint::parse(&url).unwrap();
        endpoint.tls = Some(
            TlsConfig::new(TlsOptions {
                ca_file: Some(files.ca.clone()),
                cert_file: Some(files.client_cert.clone()),
                key_file: Some(files.client_key.clone()),
                server_name: Some(name.to_string()),
                insecure: false,
            })
            .unwrap(),
        );
        endpoint
    };
    Discovered::discover(&named("localhost"), TIMEOUT)
        .await
        .unwrap();
    let message = tls_failure(&named("cache.example.com")).await;
    assert!(message.contains("does not name this host"), "{message}");

    // The platform's roots do not know the throwaway CA either.
    let message = tls_failure(&Endpoint::parse(&url).unwrap()).await;
    assert!(message.contains("not signed by a trusted CA"), "{message}");
    std::fs::remove_dir_all(&stranger).unwrap();
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("ferry-it-{name}-{}", std::process::id()))
}
