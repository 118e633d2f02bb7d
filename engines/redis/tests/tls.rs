//! `rediss://` (TLS).
//!
//! With the cargo feature `tls` (`cargo test -p datalayer-redis --features tls --test
//! tls`): each case generates a private CA and a server certificate for `127.0.0.1`
//! and `localhost` (rcgen), starts its own TLS-only `redis-server` (`--port 0
//! --tls-port …`, Redis built with TLS, as Debian's is) on free loopback ports in a
//! temporary directory, and connects through `rediss://…?ca_file=` (the CA trusted
//! through the URL); a three-node TLS cluster (`--tls-cluster yes`) is reached through
//! `rediss+cluster://`. A server without TLS support fails the case with a clear
//! message (nothing is skipped). Servers are killed and directories removed on drop.
//!
//! Without the feature: `rediss://` and `rediss+cluster://` URLs fail with
//! `Unsupported`, naming the feature, also through `Db::builder`.

mod common;

#[cfg(not(feature = "tls"))]
#[tokio::test]
async fn rediss_needs_the_tls_feature() {
    datalayer_redis::register();
    for url in [
        "rediss://127.0.0.1:1?namespace=x",
        "rediss+cluster://127.0.0.1:1,127.0.0.1:2?namespace=x",
    ] {
        let e = datalayer_redis::open_url(url).await.err().unwrap();
        assert!(
            e.is_unsupported() && e.message().contains("`tls`"),
            "{url}: {e}"
        );
        let e = datalayer_core::Db::builder(url)
            .connect()
            .await
            .err()
            .unwrap();
        assert!(e.is_unsupported(), "{url}: {e}");
    }
}

#[cfg(feature = "tls")]
mod with_tls {
    use crate::common::{ServerProcs as Servers, free_port};
    use datalayer_conformance::model::User;
    use datalayer_redis::RedisOptions;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const INSTALL: &str = "the TLS test needs redis-server and redis-cli 7.0 or later built \
                           with TLS (Debian: apt-get install redis-server)";

    /// A CA and a server certificate signed by it, as PEM files in a directory.
    struct Certs {
        dir: tempfile::TempDir,
    }

    impl Certs {
        fn generate() -> Certs {
            use rcgen::{
                BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
                KeyPair, KeyUsagePurpose,
            };
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.distinguished_name
                .push(DnType::CommonName, "datalayer test CA");
            ca.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
            ];
            let ca_key = KeyPair::generate().unwrap();
            let ca_cert = ca.self_signed(&ca_key).unwrap();
            let issuer = Issuer::new(ca, ca_key);
            let mut srv =
                CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .unwrap();
            srv.distinguished_name.push(DnType::CommonName, "127.0.0.1");
            srv.use_authority_key_identifier_extension = true;
            srv.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            srv.extended_key_usages = vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ];
            let srv_key = KeyPair::generate().unwrap();
            let srv_cert = srv.signed_by(&srv_key, &issuer).unwrap();
            // A space in the path checks the percent-encoding of `ca_file=`.
            let dir = tempfile::Builder::new()
                .prefix("dl redis tls ")
                .tempdir()
                .unwrap();
            std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
            std::fs::write(dir.path().join("server.pem"), srv_cert.pem()).unwrap();
            std::fs::write(dir.path().join("server.key"), srv_key.serialize_pem()).unwrap();
            Certs { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// `ca_file=` with the CA's path, percent-encoded.
        fn ca_param(&self) -> String {
            let p = self.path("ca.pem");
            let mut out = String::from("ca_file=");
            for &b in p.to_str().unwrap().as_bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    out.push(b as char);
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            out
        }
    }

    fn tls_cli(certs: &Certs, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("--tls")
            .arg("--cacert")
            .arg(certs.path("ca.pem"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}): {INSTALL}"));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// TLS-only `redis-server`s (one, or three joined in a cluster), killed and removed
    /// on drop.
    impl Servers {
        fn start(certs: &Certs, n: usize) -> Servers {
            let mut s = Servers::new();
            for _ in 0..n {
                let port = free_port();
                let dir = tempfile::Builder::new()
                    .prefix("dl-redis-tls-")
                    .tempdir()
                    .unwrap();
                let mut cmd = Command::new("redis-server");
                cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                    .args(["--bind", "127.0.0.1"])
                    .arg("--tls-cert-file")
                    .arg(certs.path("server.pem"))
                    .arg("--tls-key-file")
                    .arg(certs.path("server.key"))
                    .arg("--tls-ca-cert-file")
                    .arg(certs.path("ca.pem"))
                    .args(["--tls-auth-clients", "no"])
                    .args(["--appendonly", "no", "--save", ""])
                    .arg("--dir")
                    .arg(dir.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped());
                if n > 1 {
                    cmd.args(["--cluster-enabled", "yes", "--tls-cluster", "yes"])
                        .args(["--cluster-port", &free_port().to_string()])
                        .args(["--cluster-config-file", "nodes.conf"]);
                }
                let mut child = cmd
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start redis-server ({e}): {INSTALL}"));
                let deadline = Instant::now() + Duration::from_secs(10);
                while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            use std::io::Read;
                            let _ = e.read_to_string(&mut err);
                        }
                        panic!("redis-server with --tls-port exited ({status}): {err}; {INSTALL}");
                    }
                    assert!(
                        Instant::now() < deadline,
                        "TLS redis-server on port {port} did not start"
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
                s.children.push(child);
                s.dirs.push(dir);
                s.ports.push(port);
            }
            if n > 1 {
                let nodes: Vec<String> = s.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
                let mut args = vec!["--cluster", "create"];
                args.extend(nodes.iter().map(String::as_str));
                args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
                let out = tls_cli(certs, s.ports[0], &args);
                assert!(out.contains("[OK]"), "redis-cli --cluster create: {out}");
                let deadline = Instant::now() + Duration::from_secs(30);
                for &p in &s.ports {
                    loop {
                        let info = tls_cli(certs, p, &["CLUSTER", "INFO"]);
                        if info.contains("cluster_state:ok")
                            && info.contains(&format!("cluster_known_nodes:{n}"))
                        {
                            break;
                        }
                        assert!(
                            Instant::now() < deadline,
                            "TLS node {p} never reached cluster_state:ok: {info}"
                        );
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            s
        }
    }

    async fn round_trip(url: &str) {
        let opts = RedisOptions::from_url(url).unwrap();
        assert!(opts.tls);
        let engine = datalayer_redis::open(opts.clone())
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
        let db = datalayer_conformance::model::register(datalayer_core::Db::with_engine(Arc::new(
            engine,
        )))
        .connect()
        .await
        .unwrap();
        let users: Vec<User> = (1..=20).map(User::sample).collect();
        db.repo::<User>().insert_many(&users).await.unwrap();
        assert_eq!(
            db.repo::<User>().get(7i64).await.unwrap(),
            Some(users[6].clone())
        );
        assert_eq!(db.repo::<User>().count().await.unwrap(), 20);
        db.close().await.unwrap();
        assert!(datalayer_redis::destroy_namespace(&opts).await.unwrap() > 0);
    }

    fn ns() -> String {
        format!("dlt_{}", datalayer_conformance::random_suffix())
    }

    /// `rediss://` with the test CA trusted through `ca_file=`: rows round-trip; without
    /// the CA (system roots only) the server's certificate is refused.
    #[tokio::test]
    async fn rediss_round_trip_with_ca_file() {
        let certs = Certs::generate();
        let s = Servers::start(&certs, 1);
        let port = s.ports[0];
        let url = format!(
            "rediss://127.0.0.1:{port}?namespace={}&{}",
            ns(),
            certs.ca_param()
        );
        round_trip(&url).await;
        // `localhost` is in the certificate too.
        let url = format!(
            "rediss://localhost:{port}?namespace={}&{}",
            ns(),
            certs.ca_param()
        );
        round_trip(&url).await;
        // Through the registry.
        datalayer_redis::register();
        let url = format!(
            "rediss://127.0.0.1:{port}?namespace={}&{}",
            ns(),
            certs.ca_param()
        );
        let db = datalayer_core::Db::builder(url.clone())
            .connect()
            .await
            .unwrap();
        db.close().await.unwrap();
        // Not trusted without the CA.
        let untrusted = format!(
            "rediss://127.0.0.1:{port}?namespace={}&connect_timeout_ms=2000",
            ns()
        );
        let e = datalayer_redis::open_url(&untrusted).await.err().unwrap();
        assert!(
            e.code() == Some("TLS") && e.message().contains("ca_file"),
            "{e}"
        );
        // Plain text to a TLS port fails too (the server drops it).
        let plain = format!(
            "redis://127.0.0.1:{port}?namespace={}&connect_timeout_ms=1000&response_timeout_ms=1000",
            ns()
        );
        assert!(datalayer_redis::open_url(&plain).await.is_err());
        // A CA file that does not exist is InvalidInput.
        let e = datalayer_redis::open_url(&format!(
            "rediss://127.0.0.1:{port}?ca_file=/nonexistent/ca.pem"
        ))
        .await
        .err()
        .unwrap();
        assert!(e.is_invalid_input(), "{e}");
        drop(s);
    }

    /// `rediss+cluster://`: a three-node cluster that speaks only TLS (also on its bus).
    #[tokio::test]
    async fn rediss_cluster_round_trip() {
        let certs = Certs::generate();
        let s = Servers::start(&certs, 3);
        let nodes: Vec<String> = s.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        for _ in 0..3 {
            let url = format!(
                "rediss+cluster://{}?namespace={}&{}",
                nodes[2],
                ns(),
                certs.ca_param()
            );
            round_trip(&url).await;
        }
        // Function library on every primary.
        for &p in &s.ports {
            let out = tls_cli(
                &certs,
                p,
                &["FUNCTION", "LIST", "LIBRARYNAME", "datalayer_v1"],
            );
            assert!(out.contains("dl_v1_commit"), "node {p}: {out}");
        }
    }
}
