//! kill -9 of a client process in the middle of a multi-region commit (issue 11).
//!
//! The test cluster runs in this test process; the client is this same test binary
//! re-invoked as a child (`kill_child`, an `#[ignore]`d test selected with `--exact`,
//! told where PD is by `TIKV_KILL_CHILD_PD`). The child commits one optimistic
//! transaction writing one key in each of the cluster's 4 regions. The cluster holds
//! the chosen `KvCommit` call ([`TestCluster::hold`]), and the test SIGKILLs the
//! child once the call is parked:
//!
//! - **after prewrite**: the primary's commit is held before it applies: every key is
//!   locked, nothing committed;
//! - **after the primary commit**: the primary's commit applied, its response is held:
//!   the primary is committed, the secondaries are locked;
//! - **mid-secondaries**: the third `KvCommit` (a secondary) is held before it applies,
//!   once another secondary committed: some keys committed, the others locked.
//!
//! Then readers (in this process) must never see a partial transaction (all 4 keys
//! old, or all new), and must get their answer within about the lock TTL: Percolator
//! readers resolve the dead client's locks from its primary (committed: roll the
//! secondaries forward at once; not committed: wait until the TTL expired, then roll
//! back). Sources: the Percolator paper (Peng & Dabek, OSDI 2010, §2.2 "lazy
//! cleanup"); TiKV `src/storage/txn/actions/check_txn_status.rs`.

use datalayer_kv::{Bytes, KvStore, WriteSet};
use datalayer_tikv_testkit::{ClusterConfig, HoldPoint, Rpc, TestCluster};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The environment variable naming the PD address the child commits to.
const CHILD_PD: &str = "TIKV_KILL_CHILD_PD";
/// The keys of the transaction: one in each of the 4 default regions.
const KEYS: [&str; 4] = ["a", "d", "k", "t"];

fn b(s: &str) -> Bytes {
    s.as_bytes().to_vec()
}

fn writes(v: &str) -> WriteSet {
    KEYS.iter().map(|k| (b(k), Some(b(v)))).collect()
}

async fn engine(pd: String) -> datalayer_kv::KvEngine {
    datalayer_tikv::open(datalayer_tikv::TikvOptions::new(vec![pd]))
        .await
        .expect("open the tikv engine")
}

/// What a new transaction reads for [`KEYS`].
async fn read_all(store: &dyn KvStore) -> datalayer_core::Result<Vec<Option<Bytes>>> {
    let keys: Vec<Bytes> = KEYS.iter().map(|k| b(k)).collect();
    let mut t = store.begin(Default::default()).await?;
    let got = t.batch_get(&keys).await;
    let _ = t.rollback().await;
    got
}

/// A child process, SIGKILLed and reaped when dropped (also when the test panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child: commits [`writes`]`("new")` to the cluster of `TIKV_KILL_CHILD_PD`
/// (where the parent kills it mid-commit). Run on its own (`cargo test -- --ignored`),
/// without the variable, it commits on a cluster of its own and checks the whole
/// transaction is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of the kill tests (run by them via current_exe)"]
async fn kill_child() {
    let (pd, own) = match std::env::var(CHILD_PD) {
        Ok(pd) => (pd, None),
        Err(_) => {
            let c = TestCluster::start(ClusterConfig::default()).await.unwrap();
            (c.pd_addr(), Some(c))
        }
    };
    let engine = engine(pd).await;
    let store = engine.store().as_ref();
    println!("CHILD BEGIN");
    let t = store.begin(Default::default()).await.unwrap();
    t.commit(writes("new")).await.unwrap();
    println!("CHILD COMMITTED");
    if own.is_none() {
        // The secondaries are committed in the background after `commit` returned:
        // stay alive, so that the parent kills the process in the middle of them.
        tokio::time::sleep(Duration::from_secs(60)).await;
    } else {
        assert_eq!(
            read_all(store).await.unwrap(),
            KEYS.iter().map(|_| Some(b("new"))).collect::<Vec<_>>()
        );
    }
}

/// Where the child is killed.
#[derive(Clone, Copy, Debug)]
enum Point {
    AfterPrewrite,
    AfterPrimary,
    MidSecondaries,
}

/// Runs one kill at `point`; returns how long the first reader waited.
async fn kill_at(point: Point) -> Duration {
    let cluster = TestCluster::start(ClusterConfig::default()).await.unwrap();
    assert!(cluster.regions().len() >= 4);
    let engine = engine(cluster.pd_addr()).await;
    let store = engine.store().clone();
    let t = store.begin(Default::default()).await.unwrap();
    t.commit(writes("old")).await.unwrap();
    assert!(cluster.settle(Duration::from_secs(5)).await);

    let hold = match point {
        Point::AfterPrewrite => cluster.hold(Rpc::Commit, 1, HoldPoint::BeforeApply),
        Point::AfterPrimary => cluster.hold(Rpc::Commit, 1, HoldPoint::AfterApply),
        Point::MidSecondaries => cluster.hold(Rpc::Commit, 3, HoldPoint::BeforeApply),
    };
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "--exact",
                "kill_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_PD, cluster.pd_addr())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the child"),
    );
    let commits_before = cluster.rpc_count(Rpc::Commit);
    assert!(
        hold.reached(Duration::from_secs(30)).await,
        "{point:?}: the child's commit never reached the hold ({} KvCommit calls, {} locks, child exit {:?})",
        cluster.rpc_count(Rpc::Commit) - commits_before,
        cluster.lock_count(),
        child.0.try_wait()
    );
    if let Point::MidSecondaries = point {
        // Let the secondaries that are not held finish.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cluster.lock_count() > 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    // SIGKILL, and reap it: the client is gone.
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "{point:?}: the child was killed");
    hold.fail();

    let locks = cluster.locks();
    let primary = locks[0].primary.clone();
    let committed = cluster.commit_count(&primary) == 2;
    match point {
        Point::AfterPrewrite => {
            assert_eq!(locks.len(), KEYS.len(), "{point:?}: every key prewritten");
            assert!(!committed, "{point:?}: primary not committed");
        }
        Point::AfterPrimary => {
            assert_eq!(locks.len(), KEYS.len() - 1, "{point:?}: secondaries locked");
            assert!(committed, "{point:?}: primary committed");
        }
        Point::MidSecondaries => {
            assert!(committed, "{point:?}: primary committed");
            assert_eq!(locks.len(), 1, "{point:?}: one secondary still locked");
        }
    }
    let expiry_ms = locks
        .iter()
        .map(|l| (l.start_ts >> 18) + l.ttl_ms)
        .max()
        .unwrap();
    let ttl_ms = locks.iter().map(|l| l.ttl_ms).max().unwrap();

    // Readers: never a partial transaction, an answer within about the TTL.
    let want = if committed { "new" } else { "old" };
    let all = |v: &str| KEYS.iter().map(|_| Some(b(v))).collect::<Vec<_>>();
    let started = Instant::now();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let store = store.clone();
        readers.push(tokio::spawn(async move {
            let s = Instant::now();
            loop {
                match read_all(store.as_ref()).await {
                    Ok(got) => return (got, s.elapsed()),
                    // A live lock that outlasted the client's lock backoff: retry.
                    Err(e) if e.is_retryable() => continue,
                    Err(e) => panic!("read: {e}"),
                }
            }
        }));
    }
    let mut waited = Duration::ZERO;
    for r in readers {
        let (got, took) = r.await.unwrap();
        assert!(
            got == all("old") || got == all("new"),
            "{point:?}: a partial transaction is visible: {got:?}"
        );
        assert_eq!(got, all(want), "{point:?}");
        waited = waited.max(took);
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // At most about the TTL: done within 1.5 s of the locks' expiry.
    assert!(
        now_ms <= expiry_ms + 1500,
        "{point:?}: readers answered {} ms after the locks expired (TTL {ttl_ms} ms)",
        now_ms.saturating_sub(expiry_ms)
    );
    if committed {
        // The primary is committed: readers roll forward at once, no TTL wait.
        assert!(
            started.elapsed() < Duration::from_millis(ttl_ms),
            "{point:?}: readers waited {:?} for a committed transaction",
            started.elapsed()
        );
    }
    assert!(cluster.settle(Duration::from_secs(5)).await, "{point:?}");
    for k in KEYS {
        let n = cluster.commit_count(k.as_bytes());
        assert_eq!(n, if committed { 2 } else { 1 }, "{point:?} {k}");
    }
    // The cluster takes new transactions on these keys.
    let t = store.begin(Default::default()).await.unwrap();
    t.commit(writes("after")).await.unwrap();
    assert_eq!(read_all(store.as_ref()).await.unwrap(), all("after"));
    eprintln!("{point:?}: readers answered in {waited:?} (lock TTL {ttl_ms} ms)");
    waited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_prewrite_nothing_is_visible_and_readers_wait_at_most_the_ttl() {
    let waited = kill_at(Point::AfterPrewrite).await;
    // The locks were live: the readers did wait for them.
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_primary_commit_everything_is_visible() {
    kill_at(Point::AfterPrimary).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_mid_secondaries_everything_is_visible() {
    kill_at(Point::MidSecondaries).await;
}
