//! Commit outcome unknown: a loopback TCP proxy between the engine and the local
//! server forwards a `COMMIT` to the server, waits for the server's answer and then
//! cuts the connection instead of passing the answer on. The server has committed;
//! the client cannot know it. The error must be `CommitUnknown` (not retryable), and
//! `retry(n)` must not run the transaction a second time: it is applied exactly once.

mod common;

use common::{Account, Ns};
use datalayer::{Db, ErrorKind};
use datalayer_pg::{PgEngine, PgOptions};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The simple-query message `COMMIT` as tokio-postgres sends it (`batch_execute`):
/// type `Q`, length 11 (4 length bytes + "COMMIT\0"), the text.
const COMMIT_MSG: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// A one-way-cutting proxy: armed once, it cuts the first connection that sends
/// `COMMIT`, right after the server answered it.
struct CutProxy {
    port: u16,
    armed: Arc<AtomicBool>,
    cuts: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    async fn start(upstream: String) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicU32::new(0));
        let (a, c) = (armed.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(pump(client, server, a.clone(), c.clone()));
            }
        });
        CutProxy {
            port,
            armed,
            cuts,
            task,
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards both ways; once an armed proxy has forwarded a `COMMIT`, the next bytes
/// from the server (its answer) are swallowed and both sockets are closed.
async fn pump(client: TcpStream, server: TcpStream, armed: Arc<AtomicBool>, cuts: Arc<AtomicU32>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let cut = Arc::new(AtomicBool::new(false));
    let cut_up = cut.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if chunk.windows(COMMIT_MSG.len()).any(|w| w == COMMIT_MSG)
                && armed.swap(false, Ordering::SeqCst)
            {
                // Set before the COMMIT leaves, so its answer is never forwarded.
                cut_up.store(true, Ordering::SeqCst);
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if cut.load(Ordering::SeqCst) {
            // The server answered the COMMIT: it is applied. Drop the answer and the
            // connection.
            cuts.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if cw.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    up.abort();
}

/// The server's `host:port`, and the engine URL of `ns`'s schema through a proxy on
/// `port`.
fn proxied_url(ns: &Ns, port: u16) -> (String, String) {
    let opts = PgOptions::from_url(&ns.url).unwrap();
    let host = match &opts.config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        other => panic!("the commit-unknown test needs a TCP server URL, got {other:?}"),
    };
    let upstream = format!("{host}:{}", opts.config.get_ports()[0]);
    let user = opts.config.get_user().unwrap_or("postgres");
    let password = opts
        .config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    let dbname = opts.config.get_dbname().unwrap_or("postgres");
    let url = format!(
        "postgres://{user}{password}@127.0.0.1:{port}/{dbname}?schema={}&pool_size=2",
        ns.schema
    );
    (upstream, url)
}

async fn count_rows(ns: &Ns, ids: &[i64]) -> i64 {
    let raw = ns.raw().await;
    let row = raw
        .query_one(
            &format!(
                "SELECT count(*) FROM \"{}\".accounts WHERE id = ANY($1)",
                ns.schema
            ),
            &[&ids.to_vec()],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_cut_off_is_commit_unknown_and_never_retried() {
    let ns = Ns::new();
    // Create the schema and table over a direct connection first.
    ns.db("").await.close().await.unwrap();
    let (upstream, _) = proxied_url(&ns, 0);
    let proxy = CutProxy::start(upstream).await;
    let (_, url) = proxied_url(&ns, proxy.port);
    let db = Db::with_engine(Arc::new(PgEngine::open(&url).await.unwrap()))
        .table::<Account>()
        .queries::<Account>()
        .connect()
        .await
        .unwrap();

    // An explicit transaction under retry(5).
    let calls = Arc::new(AtomicU32::new(0));
    proxy.armed.store(true, Ordering::SeqCst);
    let c = calls.clone();
    let err = db
        .tx_with()
        .retry(5)
        .run(async move |tx| {
            c.fetch_add(1, Ordering::SeqCst);
            tx.repo::<Account>()
                .insert(&Account::new(7, "once", 100))
                .await?;
            Ok(())
        })
        .await
        .expect_err("the proxy cut the connection after COMMIT was sent");
    assert_eq!(err.kind(), ErrorKind::CommitUnknown, "{err}");
    assert!(!err.is_retryable(), "CommitUnknown must not be retryable");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the proxy cut once");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "retry(5) must not re-run a transaction whose commit outcome is unknown"
    );
    assert_eq!(count_rows(&ns, &[7]).await, 1, "applied exactly once");

    // The documented way to re-run safely: the unique key makes a second attempt fail
    // with AlreadyExists instead of applying twice. The pool replaced the dead
    // connection, so the engine works on.
    let again = db
        .repo::<Account>()
        .insert(&Account::new(7, "once", 100))
        .await
        .expect_err("the first attempt was applied");
    assert_eq!(again.kind(), ErrorKind::AlreadyExists, "{again}");

    // An autocommit multi-row write (BEGIN .. COMMIT inside the engine).
    proxy.armed.store(true, Ordering::SeqCst);
    let err = db
        .repo::<Account>()
        .insert_many(&[Account::new(8, "many", 1), Account::new(9, "many", 2)])
        .await
        .expect_err("the proxy cut the connection after COMMIT was sent");
    assert_eq!(err.kind(), ErrorKind::CommitUnknown, "{err}");
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 2);
    assert_eq!(count_rows(&ns, &[8, 9]).await, 2, "applied exactly once");

    db.close().await.unwrap();
    ns.drop_schema().await;
}
