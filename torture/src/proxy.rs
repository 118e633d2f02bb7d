//! A loopback TCP proxy that cuts connections at random: a small tokio copy loop
//! (no proxy crate in reach does this). Client-to-server bytes are forwarded chunk by
//! chunk; a chunk may be dropped together with the connection, and a PostgreSQL
//! `COMMIT` message may be forwarded and then the connection cut before the answer
//! comes back (so the commit is applied but the client sees `CommitUnknown`), or cut
//! before it is forwarded (not applied, also `CommitUnknown`).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The simple-query message `COMMIT` as tokio-postgres sends it: `'Q'`, length 11,
/// `COMMIT\0`.
pub const PG_COMMIT: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";
/// The start of datalayer-redis's commit, a `FCALL` (RESP bulk string `$5 FCALL`).
pub const REDIS_COMMIT: &[u8] = b"$5\r\nFCALL\r\n";

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections cut at an arbitrary chunk.
    pub cuts: AtomicU64,
    /// Connections cut right after forwarding a `COMMIT`.
    pub commit_cuts_after: AtomicU64,
    /// Connections cut instead of forwarding a `COMMIT`.
    pub commit_cuts_before: AtomicU64,
}

impl ProxyStats {
    /// All cuts.
    pub fn total_cuts(&self) -> u64 {
        self.cuts.load(Ordering::Relaxed)
            + self.commit_cuts_after.load(Ordering::Relaxed)
            + self.commit_cuts_before.load(Ordering::Relaxed)
    }
}

/// The proxy; stops accepting when dropped (open connections end with their sockets).
pub struct Proxy {
    addr: SocketAddr,
    /// What it did.
    pub stats: Arc<ProxyStats>,
    enabled: Arc<AtomicBool>,
    accept: tokio::task::JoinHandle<()>,
}

/// How often the proxy cuts.
#[derive(Clone, Copy, Debug)]
pub struct CutRates {
    /// Probability of cutting at any client chunk.
    pub chunk: f64,
    /// Probability of cutting at a `COMMIT` (half after forwarding it, half before).
    pub commit: f64,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`; a client chunk that
    /// contains `commit` is a commit message (see [`CutRates::commit`]).
    ///
    /// # Errors
    /// When the listener cannot be bound.
    pub async fn start(
        upstream: SocketAddr,
        rates: CutRates,
        seed: u64,
        commit: &'static [u8],
    ) -> anyhow::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stats = Arc::new(ProxyStats::default());
        let enabled = Arc::new(AtomicBool::new(true));
        let (s, en) = (stats.clone(), enabled.clone());
        let accept = tokio::spawn(async move {
            let mut n = 0u64;
            while let Ok((client, _)) = listener.accept().await {
                n += 1;
                s.connections.fetch_add(1, Ordering::Relaxed);
                let rng = StdRng::seed_from_u64(seed ^ n.wrapping_mul(0x2545_F491_4F6C_DD1D));
                let (s, en) = (s.clone(), en.clone());
                tokio::spawn(pipe(client, upstream, rates, commit, rng, s, en));
            }
        });
        Ok(Proxy {
            addr,
            stats,
            enabled,
            accept,
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Turns cutting on or off (connections are forwarded either way).
    pub fn set_cutting(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pipe(
    client: TcpStream,
    upstream: SocketAddr,
    rates: CutRates,
    commit: &'static [u8],
    mut rng: StdRng,
    stats: Arc<ProxyStats>,
    enabled: Arc<AtomicBool>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the server is down (restarting): the client sees the connection close
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            if enabled.load(Ordering::Relaxed) {
                let has_commit = chunk.windows(commit.len()).any(|w| w == commit);
                if has_commit && rng.random_bool(rates.commit) {
                    if rng.random_bool(0.5) {
                        let _ = sw.write_all(chunk).await;
                        let _ = sw.flush().await;
                        stats.commit_cuts_after.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.commit_cuts_before.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                if rng.random_bool(rates.chunk) {
                    stats.cuts.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            if sw.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut sr, &mut cw);
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    // Dropping both halves of both sockets closes them: the client sees EOF.
}
