//! The [`KvStore`] contract as executable cases, for every store of the KV family.
//!
//! Each case is a public async function that takes a **fresh, empty** store and checks one
//! promise of the [`KvStore`] / [`KvTxn`] docs. It returns `Ok(())` when the store keeps
//! the promise, panics with a message naming the store and the violated property when it
//! does not, and returns the store's error when an operation the contract says must
//! succeed fails. A case never closes the store.
//!
//! Cases ([`cases`] lists them in this order):
//! - [`snapshot_reads`]: where the store declares
//!   [`KvCapability::snapshot_reads`](crate::KvCapability::snapshot_reads), a
//!   transaction reads one consistent state and a commit made after its first read is
//!   not seen; where it does not, a transaction whose read changed before its commit
//!   fails that commit with `Conflict` (backward validation). Either way a new
//!   transaction sees the latest commit.
//! - [`committed_writes_visible`]: puts, overwrites and deletes are visible to every
//!   transaction begun after the commit; an empty write set and deleting a missing key
//!   are no-ops.
//! - [`atomic_commit`]: a write set is applied all at once (a reader that began before
//!   sees none of it where the store has snapshot reads, one begun after sees all of
//!   it), or not at all when the commit fails.
//! - [`write_conflict`]: two concurrent read-modify-writes of one key never both succeed
//!   on a store that declares snapshot, repeatable-read or serializable isolation: the
//!   loser fails with `Conflict` (or, on a single-writer store, waits for the winner or
//!   times out at `begin`) and applies nothing. Never waits on itself: the two
//!   transactions run concurrently.
//! - [`scan_bounds`]: every combination of included / excluded / unbounded start and end,
//!   forward and reverse, against a model (keys between, before and after the stored ones;
//!   empty and inverted ranges).
//! - [`scan_limit`]: `limit` keeps the first entries in scan order (0, 1, exact, larger,
//!   `usize::MAX`).
//! - [`scan_reverse`]: descending order, with bounds and limits.
//! - [`empty_key_and_value`]: the empty key and the empty value are ordinary (an empty
//!   value is not a missing one).
//! - [`large_value`]: a 1 MiB value round-trips (skipped when the store declares a
//!   smaller `max_value_bytes` or `max_txn_bytes`).
//! - [`count_ranges`]: `count` agrees with the model for every bound combination.
//! - [`batch_get_order`]: one result per key, in the order asked, duplicates and missing
//!   keys included.
//! - [`scan_with_targets`]: scanned entries with the values their values point at, as
//!   a scan and a `batch_get` would give them, isolated alike.
//! - [`scan_with_targets_by_layout`]: the same for real index entries (80 of them,
//!   more than one small read serves) with their [`EntryLayout`]:
//!   the answer equals the one without the layout, and a target changed or an entry
//!   deleted after the scan fails the commit with `Conflict` (without snapshot reads)
//!   or is not seen (with them).
//! - [`assume_absent`]: a key assumed absent without a read is validated at commit.
//! - [`rollback_discards`]: `rollback` changes nothing and releases the transaction (a
//!   read-write one can begin again afterwards).
//! - [`drop_discards`]: dropping a transaction without `commit` does the same.
//! - [`lock_keys`]: where the store declares
//!   [`KvCapability::pessimistic_locks`](crate::KvCapability::pessimistic_locks), a
//!   locked key fails another transaction's `lock` and `commit` of it with `Conflict`,
//!   and locks are released at commit, rollback and drop; where it does not, `lock`
//!   returns `Unsupported`.
//! - [`max_txn_bytes`]: where the store declares
//!   [`KvCapability::max_txn_bytes`](crate::KvCapability::max_txn_bytes) (up to 64 MiB),
//!   a write set of exactly that many bytes commits and one byte more fails with
//!   `InvalidInput`, applying nothing.
//! - [`concurrent_writers`]: where the store declares
//!   [`KvCapability::concurrent_writers`](crate::KvCapability::concurrent_writers), a
//!   second read-write transaction begins while one is open and both commit disjoint
//!   writes; where it does not, the second does not begin until the first finishes.
//!
//! Not checked, because the trait does not promise it: that a read-only transaction
//! refuses a non-empty write set (the `read_only_tx` capability is enforced by
//! [`crate::KvEngine`]); whether two blind writes of one key conflict; when exactly the
//! snapshot is taken (at `begin` or at the first read).
//!
//! # Running the cases
//! [`kv_contract_tests!`](crate::kv_contract_tests) turns every case into its own
//! `#[tokio::test]` on a fresh store (the calling crate needs `tokio` with the `macros`
//! and `rt` features):
//! ```
//! // tests/contract.rs of an engine crate
//! datalayer_kv::kv_contract_tests!(async { datalayer_kv::mem::MemKv::new() });
//! # fn main() {}
//! ```
//! The expression is evaluated once per test and awaited; its value is anything that is
//! [`StoreUnderTest`] (a store, a [`KvEngine`], or either in a pair with a guard such as
//! a temporary directory). Invoke the macro in separate modules to run the suite on
//! several configurations. [`cases`] lists the same cases for other harnesses.

use crate::codec::{self, TableKeys};
use crate::{Bytes, EntryLayout, KvEngine, KvStore, KvTxn, WriteSet};
use datalayer_core::engine::TxOptions;
use datalayer_core::error::{Error, ErrorKind, Result};
use datalayer_core::schema::{ColumnDef, IndexDef, TableSchema};
use datalayer_core::value::{ColumnType, Row, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Bound;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;

// ---- running the cases ------------------------------------------------------------------

/// What a contract test runs against: a store, a [`KvEngine`] (its store), or either of
/// them paired with a guard that must outlive it, such as the `tempfile::TempDir` of an
/// on-disk store (`(engine, dir)`).
pub trait StoreUnderTest: Send + Sync {
    /// The store.
    fn kv(&self) -> &dyn KvStore;
}

impl<S: KvStore> StoreUnderTest for S {
    fn kv(&self) -> &dyn KvStore {
        self
    }
}

impl StoreUnderTest for KvEngine {
    fn kv(&self) -> &dyn KvStore {
        self.store().as_ref()
    }
}

impl StoreUnderTest for Arc<dyn KvStore> {
    fn kv(&self) -> &dyn KvStore {
        self.as_ref()
    }
}

impl<S: StoreUnderTest, G: Send + Sync> StoreUnderTest for (S, G) {
    fn kv(&self) -> &dyn KvStore {
        self.0.kv()
    }
}

/// The future of one case run.
pub type CaseFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + Send + 'a>>;

/// One contract case: its name (the name of its function) and a way to run it on a
/// fresh, empty store.
#[derive(Clone, Copy)]
pub struct Case {
    /// The case's name, e.g. `snapshot_reads`.
    pub name: &'static str,
    /// Runs the case (see the [module docs](self) for what `Ok`, `Err` and a panic mean).
    pub run: for<'a> fn(&'a dyn KvStore) -> CaseFuture<'a>,
}

/// Every case, in the order of the [module docs](self). Run each on its own fresh store.
pub fn cases() -> Vec<Case> {
    crate::__kv_contract_list!(__kv_contract_case_list!())
}

/// The list of case names, handed to `$cb` after its own arguments. Not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __kv_contract_list {
    ($cb:ident ! ($($args:tt)*)) => {
        $crate::$cb! {
            ($($args)*)
            snapshot_reads
            committed_writes_visible
            atomic_commit
            write_conflict
            scan_bounds
            scan_limit
            scan_reverse
            empty_key_and_value
            large_value
            count_ranges
            batch_get_order
            scan_with_targets
            scan_with_targets_by_layout
            assume_absent
            rollback_discards
            drop_discards
            lock_keys
            max_txn_bytes
            concurrent_writers
        }
    };
}

/// Builds [`cases`]. Not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __kv_contract_case_list {
    (() $($case:ident)*) => {
        vec![$(
            $crate::contract::Case {
                name: stringify!($case),
                run: |store| Box::pin($crate::contract::$case(store)),
            }
        ),*]
    };
}

/// One test per case. Not a stable API.
#[doc(hidden)]
#[macro_export]
macro_rules! __kv_contract_test_fns {
    (($make:expr) $($case:ident)*) => {
        $(
            #[tokio::test]
            async fn $case() {
                let subject = $make.await;
                let store = $crate::contract::StoreUnderTest::kv(&subject);
                if let Err(e) = $crate::contract::$case(store).await {
                    panic!(
                        "kv contract case {} on store {}: unexpected error: {}",
                        stringify!($case),
                        store.name(),
                        e
                    );
                }
                if let Err(e) = store.close().await {
                    panic!("store {}: close after case {}: {}", store.name(), stringify!($case), e);
                }
            }
        )*
    };
}

/// Defines one `#[tokio::test]` per case of [`contract`](crate::contract), each on a
/// fresh store: `$make` is an expression evaluated and awaited once per test, whose value
/// is a [`StoreUnderTest`](crate::contract::StoreUnderTest). The store is closed after a
/// passing case. The calling crate needs `tokio` (features `macros`, `rt`).
///
/// ```
/// mod memkv {
///     datalayer_kv::kv_contract_tests!(async { datalayer_kv::mem::MemKv::new() });
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! kv_contract_tests {
    ($make:expr $(,)?) => {
        $crate::__kv_contract_list!(__kv_contract_test_fns!($make));
    };
}

// ---- helpers ---------------------------------------------------------------------------------

/// A scan's start and end bounds.
type KeyRange<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// Key-value pairs in scan order.
type Entries = Vec<(Bytes, Bytes)>;

fn rw() -> TxOptions {
    TxOptions {
        isolation: None,
        read_only: false,
    }
}

fn ro() -> TxOptions {
    TxOptions {
        isolation: None,
        read_only: true,
    }
}

fn b(s: &str) -> Bytes {
    s.as_bytes().to_vec()
}

fn show(k: &[u8]) -> String {
    if k.len() > 40 {
        format!("\"{}\"…({} bytes)", k[..40].escape_ascii(), k.len())
    } else {
        format!("\"{}\"", k.escape_ascii())
    }
}

fn show_bound(b: Bound<&[u8]>) -> String {
    match b {
        Bound::Included(k) => format!("Included({})", show(k)),
        Bound::Excluded(k) => format!("Excluded({})", show(k)),
        Bound::Unbounded => "Unbounded".into(),
    }
}

/// Readable rendering of what a case compares.
trait Show {
    fn show(&self) -> String;
}

impl Show for Bytes {
    fn show(&self) -> String {
        show(self)
    }
}

impl<T: Show> Show for Option<T> {
    fn show(&self) -> String {
        match self {
            Some(v) => v.show(),
            None => "None".into(),
        }
    }
}

impl<A: Show, B: Show> Show for (A, B) {
    fn show(&self) -> String {
        format!("{}={}", self.0.show(), self.1.show())
    }
}

impl<A: Show, B: Show, C: Show> Show for (A, B, C) {
    fn show(&self) -> String {
        format!("{}={}->{}", self.0.show(), self.1.show(), self.2.show())
    }
}

impl<T: Show> Show for Vec<T> {
    fn show(&self) -> String {
        let items: Vec<String> = self.iter().map(Show::show).collect();
        format!("[{}]", items.join(", "))
    }
}

impl Show for u64 {
    fn show(&self) -> String {
        self.to_string()
    }
}

/// Panics unless `got == want`, naming the store and the property.
#[track_caller]
fn expect<T: PartialEq + Show>(store: &dyn KvStore, got: &T, want: &T, what: &str) {
    if got != want {
        panic!(
            "kv contract violated by store {}: {what}\n       got: {}\n  expected: {}",
            store.name(),
            got.show(),
            want.show()
        );
    }
}

/// Panics with a message naming the store and the property.
#[track_caller]
fn violated(store: &dyn KvStore, what: &str) -> ! {
    panic!("kv contract violated by store {}: {what}", store.name())
}

/// Commits puts (`Some`) and deletes (`None`) in one read-write transaction.
async fn write(store: &dyn KvStore, ops: &[(&str, Option<&str>)]) -> Result<()> {
    let set: BTreeMap<Bytes, Option<Bytes>> = ops.iter().map(|(k, v)| (b(k), v.map(b))).collect();
    commit(store, set.into_iter().collect()).await
}

async fn commit(store: &dyn KvStore, writes: WriteSet) -> Result<()> {
    let txn = store.begin(rw()).await?;
    txn.commit(writes).await
}

async fn put(store: &dyn KvStore, pairs: &[(&str, &str)]) -> Result<()> {
    let ops: Vec<(&str, Option<&str>)> = pairs.iter().map(|&(k, v)| (k, Some(v))).collect();
    write(store, &ops).await
}

async fn scan_all(t: &mut dyn KvTxn) -> Result<Vec<(Bytes, Bytes)>> {
    t.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, false)
        .await
}

/// Every entry, read by a new read-only transaction.
async fn dump(store: &dyn KvStore) -> Result<Vec<(Bytes, Bytes)>> {
    let mut t = store.begin(ro()).await?;
    let all = scan_all(t.as_mut()).await?;
    t.rollback().await?;
    Ok(all)
}

fn entries(pairs: &[(&str, &str)]) -> Vec<(Bytes, Bytes)> {
    pairs.iter().map(|&(k, v)| (b(k), b(v))).collect()
}

fn in_range(k: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    let lo = match start {
        Bound::Included(s) => k >= s,
        Bound::Excluded(s) => k > s,
        Bound::Unbounded => true,
    };
    let hi = match end {
        Bound::Included(e) => k <= e,
        Bound::Excluded(e) => k < e,
        Bound::Unbounded => true,
    };
    lo && hi
}

/// What `scan` must return, computed from a model of the store's contents.
fn model_scan(
    model: &BTreeMap<Bytes, Bytes>,
    start: Bound<&[u8]>,
    end: Bound<&[u8]>,
    limit: usize,
    reverse: bool,
) -> Vec<(Bytes, Bytes)> {
    let it = model
        .iter()
        .filter(|(k, _)| in_range(k, start, end))
        .map(|(k, v)| (k.clone(), v.clone()));
    if reverse {
        it.rev().take(limit).collect()
    } else {
        it.take(limit).collect()
    }
}

/// Every bound over `keys`: unbounded, then included and excluded of each.
fn bounds(keys: &[Bytes]) -> Vec<Bound<&[u8]>> {
    let mut out = vec![Bound::Unbounded];
    for k in keys {
        out.push(Bound::Included(k.as_slice()));
        out.push(Bound::Excluded(k.as_slice()));
    }
    out
}

/// Stored keys for the range cases, and bound keys between, on and around them.
fn range_fixture() -> (BTreeMap<Bytes, Bytes>, Vec<Bytes>) {
    let mut model = BTreeMap::new();
    for k in [
        "a", "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "z",
    ] {
        model.insert(b(k), format!("v-{k}").into_bytes());
    }
    model.insert(vec![0xFF], b("v-ff"));
    model.insert(vec![0xFF, 0xFF], b("v-ffff"));
    let bound_keys: Vec<Bytes> = [
        &b""[..],
        b"a",
        b"b",
        b"k",
        b"k0",
        b"k4",
        b"k45",
        b"k5",
        b"k9",
        b"k99",
        b"z",
        &[0xFF],
        &[0xFF, 0xFF],
        &[0xFF, 0xFF, 0xFF],
    ]
    .iter()
    .map(|k| k.to_vec())
    .collect();
    (model, bound_keys)
}

async fn load(store: &dyn KvStore, model: &BTreeMap<Bytes, Bytes>) -> Result<()> {
    commit(
        store,
        model
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
    )
    .await
}

/// A future that is pending once (lets the other side of [`join2`] run).
struct YieldOnce(bool);

impl Future for YieldOnce {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

async fn yield_now() {
    YieldOnce(false).await
}

/// Runs two futures concurrently on the current task (no runtime needed).
async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let (mut a, mut b) = (pin!(a), pin!(b));
    let (mut ra, mut rb) = (None, None);
    std::future::poll_fn(move |cx| {
        if ra.is_none()
            && let Poll::Ready(v) = a.as_mut().poll(cx)
        {
            ra = Some(v);
        }
        if rb.is_none()
            && let Poll::Ready(v) = b.as_mut().poll(cx)
        {
            rb = Some(v);
        }
        if ra.is_some() && rb.is_some() {
            Poll::Ready((ra.take().expect("ready"), rb.take().expect("ready")))
        } else {
            Poll::Pending
        }
    })
    .await
}

// ---- the cases ----------------------------------------------------------------------------

/// Consistent reads within a transaction, as the store declares them.
///
/// Without [`KvCapability::snapshot_reads`](crate::KvCapability::snapshot_reads), see
/// [`validated_reads`] (what is checked instead). With it:
/// a read-only transaction that has read once does not see a commit made afterwards
/// (`get`, `batch_get`, `scan` forward and reverse, `count`); a transaction begun before
/// a two-key commit and reading after it sees both keys or neither; a read-write
/// transaction likewise where the store declares `concurrent_writers` (on a
/// single-writer store a second read-write transaction could not begin); and a new
/// transaction sees the latest commit.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn snapshot_reads(store: &dyn KvStore) -> Result<()> {
    if !store.kv_capability().snapshot_reads {
        return validated_reads(store).await;
    }
    put(store, &[("a", "1"), ("b", "1")]).await?;

    let mut r = store.begin(ro()).await?;
    expect(
        store,
        &r.get(b"a").await?,
        &Some(b("1")),
        "get in a read-only transaction",
    );
    put(store, &[("a", "2"), ("b", "2"), ("c", "2")]).await?;
    expect(
        store,
        &r.get(b"b").await?,
        &Some(b("1")),
        "a read-only transaction saw (get) a commit made after its first read",
    );
    expect(
        store,
        &r.get(b"c").await?,
        &None,
        "a read-only transaction saw (get) a key committed after its first read",
    );
    expect(
        store,
        &r.batch_get(&[b("a"), b("b"), b("c")]).await?,
        &vec![Some(b("1")), Some(b("1")), None],
        "a read-only transaction saw (batch_get) a commit made after its first read",
    );
    expect(
        store,
        &scan_all(r.as_mut()).await?,
        &entries(&[("a", "1"), ("b", "1")]),
        "a read-only transaction saw (scan) a commit made after its first read",
    );
    expect(
        store,
        &r.scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, true)
            .await?,
        &entries(&[("b", "1"), ("a", "1")]),
        "a read-only transaction saw (reverse scan) a commit made after its first read",
    );
    expect(
        store,
        &r.count(Bound::Unbounded, Bound::Unbounded).await?,
        &2,
        "a read-only transaction saw (count) a commit made after its first read",
    );
    r.rollback().await?;

    // Begun before a commit, first read after it: all of the commit or none of it.
    let mut r = store.begin(ro()).await?;
    put(store, &[("a", "3"), ("b", "3")]).await?;
    let (a, bv) = (r.get(b"a").await?, r.get(b"b").await?);
    if a != bv || !(a == Some(b("2")) || a == Some(b("3"))) {
        violated(
            store,
            &format!(
                "a transaction begun before a commit of a=3, b=3 (over a=2, b=2) read a={} b={}: \
                 not one consistent state",
                a.show(),
                bv.show()
            ),
        );
    }
    r.rollback().await?;

    if store.kv_capability().concurrent_writers {
        let mut w = store.begin(rw()).await?;
        expect(
            store,
            &w.get(b"a").await?,
            &Some(b("3")),
            "get in a read-write transaction",
        );
        put(store, &[("a", "4"), ("b", "4"), ("d", "4")]).await?;
        expect(
            store,
            &w.get(b"b").await?,
            &Some(b("3")),
            "a read-write transaction saw (get) a commit made after its first read",
        );
        expect(
            store,
            &scan_all(w.as_mut()).await?,
            &entries(&[("a", "3"), ("b", "3"), ("c", "2")]),
            "a read-write transaction saw (scan) a commit made after its first read",
        );
        w.rollback().await?;
    }

    let latest = if store.kv_capability().concurrent_writers {
        entries(&[("a", "4"), ("b", "4"), ("c", "2"), ("d", "4")])
    } else {
        entries(&[("a", "3"), ("b", "3"), ("c", "2")])
    };
    expect(
        store,
        &dump(store).await?,
        &latest,
        "a transaction begun after the commits does not see all of them",
    );
    Ok(())
}

/// What [`snapshot_reads`] checks on a store without
/// [`KvCapability::snapshot_reads`](crate::KvCapability::snapshot_reads): every read is
/// validated at commit (backward validation).
///
/// - A read-only transaction whose `get` of a key was followed by a commit changing
///   that key fails its commit (with an empty write set) with `Conflict`; likewise a
///   read-write one after `batch_get`, and one after a `scan` or a `count` whose range
///   gained a key; a failed commit applies nothing of its write set.
/// - A transaction whose reads did not change commits (empty and non-empty write
///   sets), and a new transaction sees the latest commit.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn validated_reads(store: &dyn KvStore) -> Result<()> {
    put(store, &[("a", "1"), ("b", "1")]).await?;
    let must_conflict = |what: &str, r: Result<()>| match r {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        Err(e) => violated(
            store,
            &format!(
                "{what}: the commit failed with {e}, not Conflict (a store without \
                 snapshot reads must validate its reads at commit)"
            ),
        ),
        Ok(()) => violated(
            store,
            &format!(
                "{what}: the commit succeeded (a store without snapshot reads must \
                 validate its reads at commit and fail with Conflict)"
            ),
        ),
    };

    // get, read-only, empty write set. Two reads: a transaction served by one atomic
    // read may commit unvalidated (see the KvTxn docs).
    let mut t = store.begin(ro()).await?;
    expect(
        store,
        &t.get(b"a").await?,
        &Some(b("1")),
        "get before a commit",
    );
    put(store, &[("a", "2")]).await?;
    expect(store, &t.get(b"zz").await?, &None, "get of a missing key");
    must_conflict(
        "a read-only transaction read a, then a commit changed a, then it read zz",
        t.commit(Vec::new()).await,
    );

    // batch_get, read-write, non-empty write set: nothing applied.
    let mut t = store.begin(rw()).await?;
    expect(
        store,
        &t.batch_get(&[b("a"), b("b")]).await?,
        &vec![Some(b("2")), Some(b("1"))],
        "batch_get before a commit",
    );
    put(store, &[("b", "2")]).await?;
    must_conflict(
        "a read-write transaction read b (batch_get), then a commit changed b",
        t.commit(vec![(b("x"), Some(b("from t")))]).await,
    );
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "2"), ("b", "2")]),
        "state after a commit that failed validation",
    );

    // scan and count: a key appears in the range read.
    let mut t = store.begin(rw()).await?;
    expect(
        store,
        &scan_all(t.as_mut()).await?,
        &entries(&[("a", "2"), ("b", "2")]),
        "scan before a commit",
    );
    put(store, &[("c", "3")]).await?;
    t.get(b"zz").await?;
    must_conflict(
        "a transaction scanned everything, then a commit added c",
        t.commit(Vec::new()).await,
    );
    let mut t = store.begin(ro()).await?;
    expect(
        store,
        &t.count(Bound::Unbounded, Bound::Unbounded).await?,
        &3,
        "count before a commit",
    );
    put(store, &[("d", "4")]).await?;
    t.get(b"zz").await?;
    must_conflict(
        "a transaction counted everything, then a commit added d",
        t.commit(Vec::new()).await,
    );

    // Unchanged reads commit.
    let mut t = store.begin(rw()).await?;
    expect(
        store,
        &t.get(b"a").await?,
        &Some(b("2")),
        "get of an unchanged key",
    );
    put(store, &[("z", "9")]).await?;
    t.commit(vec![(b("y"), Some(b("from t")))]).await?;
    let mut t = store.begin(ro()).await?;
    t.get(b"b").await?;
    t.commit(Vec::new()).await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[
            ("a", "2"),
            ("b", "2"),
            ("c", "3"),
            ("d", "4"),
            ("y", "from t"),
            ("z", "9"),
        ]),
        "a transaction begun after the commits does not see all of them",
    );
    Ok(())
}

/// Read-your-committed-writes: after `commit` returns, every transaction begun later
/// (read-only and read-write) sees the puts, overwrites and deletes through `get`,
/// `batch_get`, `scan` and `count`. Deleting a missing key and committing an empty write
/// set are accepted and change nothing.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn committed_writes_visible(store: &dyn KvStore) -> Result<()> {
    put(store, &[("a", "1"), ("b", "2"), ("c", "3")]).await?;
    let want = entries(&[("a", "1"), ("b", "2"), ("c", "3")]);
    for opts in [ro(), rw()] {
        let kind = if opts.read_only {
            "read-only"
        } else {
            "read-write"
        };
        let mut t = store.begin(opts).await?;
        expect(
            store,
            &t.get(b"b").await?,
            &Some(b("2")),
            &format!("a committed put, read by get in a later {kind} transaction"),
        );
        expect(
            store,
            &t.batch_get(&[b("a"), b("c")]).await?,
            &vec![Some(b("1")), Some(b("3"))],
            &format!("committed puts, read by batch_get in a later {kind} transaction"),
        );
        expect(
            store,
            &scan_all(t.as_mut()).await?,
            &want,
            &format!("committed puts, read by scan in a later {kind} transaction"),
        );
        expect(
            store,
            &t.count(Bound::Unbounded, Bound::Unbounded).await?,
            &3,
            &format!("committed puts, counted in a later {kind} transaction"),
        );
        t.rollback().await?;
    }

    write(store, &[("b", Some("20")), ("c", None), ("missing", None)]).await?;
    let mut t = store.begin(ro()).await?;
    expect(
        store,
        &t.get(b"b").await?,
        &Some(b("20")),
        "a committed overwrite, read by get",
    );
    expect(
        store,
        &t.get(b"c").await?,
        &None,
        "a committed delete, read by get",
    );
    expect(
        store,
        &t.get(b"missing").await?,
        &None,
        "deleting a missing key created it",
    );
    t.rollback().await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1"), ("b", "20")]),
        "state after an overwrite and deletes",
    );

    commit(store, Vec::new()).await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1"), ("b", "20")]),
        "state after committing an empty write set",
    );
    Ok(())
}

/// Atomic commit: a write set of 300 puts, overwrites and deletes is seen all at once —
/// a read-only transaction that read before the commit sees none of it (where the store
/// declares snapshot reads; without them it would see the commit, and
/// [`snapshot_reads`] checks that its commit then fails), a transaction begun after
/// sees all of it. Where the store declares `max_value_bytes` (up to
/// 64 MiB), a write set holding one value over the limit is committed: if that fails,
/// none of the write set may be applied; if it succeeds, all of it. (The failure side is
/// also checked by [`write_conflict`] on stores with concurrent writers.)
///
/// # Errors
/// The store's error when an operation fails.
pub async fn atomic_commit(store: &dyn KvStore) -> Result<()> {
    let mut before = BTreeMap::new();
    for i in 0..50 {
        before.insert(format!("d{i:03}").into_bytes(), b("old"));
        before.insert(format!("u{i:03}").into_bytes(), b("old"));
    }
    load(store, &before).await?;

    let mut r = store.begin(ro()).await?;
    expect(
        store,
        &r.get(b"d000").await?,
        &Some(b("old")),
        "first read before the big commit",
    );

    let mut writes: WriteSet = Vec::new();
    let mut after = BTreeMap::new();
    for i in 0..50 {
        writes.push((format!("d{i:03}").into_bytes(), None));
    }
    for i in 0..200 {
        let k = format!("n{i:03}").into_bytes();
        writes.push((k.clone(), Some(b("new"))));
        after.insert(k, b("new"));
    }
    for i in 0..50 {
        let k = format!("u{i:03}").into_bytes();
        writes.push((k.clone(), Some(b("new"))));
        after.insert(k, b("new"));
    }
    commit(store, writes).await?;

    let before_v: Vec<(Bytes, Bytes)> = before.into_iter().collect();
    if store.kv_capability().snapshot_reads {
        expect(
            store,
            &scan_all(r.as_mut()).await?,
            &before_v,
            "a transaction that read before a commit saw part or all of it",
        );
        expect(
            store,
            &r.count(Bound::Unbounded, Bound::Unbounded).await?,
            &(before_v.len() as u64),
            "a transaction that read before a commit counted part or all of it",
        );
    }
    r.rollback().await?;
    let after_v: Vec<(Bytes, Bytes)> = after.into_iter().collect();
    expect(
        store,
        &dump(store).await?,
        &after_v,
        "a transaction begun after a 300-key commit does not see exactly all of it",
    );

    if let Some(max) = store.capability().max_value_bytes
        && max < 64 << 20
    {
        let writes = vec![
            (b("x1"), Some(b("small"))),
            (b("x2"), Some(vec![7u8; max + 1])),
        ];
        let applied = commit(store, writes).await.is_ok();
        let mut t = store.begin(ro()).await?;
        let got = t.batch_get(&[b("x1"), b("x2")]).await?;
        t.rollback().await?;
        let lens: Vec<Option<usize>> = got.iter().map(|v| v.as_ref().map(Vec::len)).collect();
        let want = if applied {
            vec![Some(5), Some(max + 1)]
        } else {
            vec![None, None]
        };
        if lens != want {
            violated(
                store,
                &format!(
                    "a commit with a value over max_value_bytes ({max}) {} but left value lengths \
                     {lens:?} for x1, x2 (expected {want:?}): not all or nothing",
                    if applied { "succeeded" } else { "failed" }
                ),
            );
        }
    }
    Ok(())
}

/// One side of [`write_conflict`]: reads the counter, lets the other side run, then
/// commits counter + 1 and 20 marker keys. Returns the value read, or the failing step
/// and its error.
async fn increment(
    store: &dyn KvStore,
    who: char,
) -> std::result::Result<u32, (&'static str, Error)> {
    let mut t = store.begin(rw()).await.map_err(|e| ("begin", e))?;
    let v = t.get(b"n").await.map_err(|e| ("get", e))?;
    let n: u32 = v
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| violated(store, &format!("counter n holds {}", v.show())));
    yield_now().await;
    yield_now().await;
    let mut writes: WriteSet = markers(who)
        .into_iter()
        .map(|k| (k, Some(vec![who as u8])))
        .collect();
    writes.push((b("n"), Some((n + 1).to_string().into_bytes())));
    writes.sort();
    t.commit(writes).await.map_err(|e| ("commit", e))?;
    Ok(n)
}

fn markers(who: char) -> Vec<Bytes> {
    (0..20)
        .map(|i| format!("m{who}{i:02}").into_bytes())
        .collect()
}

/// Conflicting writers: two read-write transactions run concurrently, each reading
/// counter `n` (0) and committing `n + 1` with 20 marker keys of its own.
///
/// - At least one commits, and its markers are all there.
/// - A failed side failed with `Conflict` (at any step), or — on a store without
///   `concurrent_writers` — with `Timeout` at `begin`; none of its markers is there
///   (all or nothing).
/// - Where the store declares snapshot, repeatable-read or serializable isolation, no
///   update is lost: if both commit, one read the other's write (`n` ends at 2);
///   otherwise `n` ends at 1.
///
/// The two sides run concurrently on one task, so a store that makes the second
/// read-write `begin` wait for the first (a single writer) does not hang the case.
///
/// # Errors
/// The store's error when an operation other than the conflicting one fails.
pub async fn write_conflict(store: &dyn KvStore) -> Result<()> {
    let cap = store.capability();
    let isolated = cap.snapshot || cap.serializable || cap.repeatable_read;
    let concurrent = store.kv_capability().concurrent_writers;
    put(store, &[("n", "0")]).await?;
    let (ra, rb) = join2(increment(store, 'a'), increment(store, 'b')).await;

    let mut t = store.begin(ro()).await?;
    let n = t.get(b"n").await?;
    let mut marks = BTreeMap::new();
    for who in ['a', 'b'] {
        let got = t.batch_get(&markers(who)).await?;
        marks.insert(who, got.iter().filter(|v| v.is_some()).count());
    }
    t.rollback().await?;

    let mut committed = Vec::new();
    for (who, r) in [('a', ra), ('b', rb)] {
        match r {
            Ok(read) => {
                if marks[&who] != 20 {
                    violated(
                        store,
                        &format!(
                            "transaction {who} committed but only {} of its 20 keys are there",
                            marks[&who]
                        ),
                    );
                }
                committed.push(read);
            }
            Err((step, e)) => {
                let allowed = e.kind() == ErrorKind::Conflict
                    || (step == "begin" && e.kind() == ErrorKind::Timeout && !concurrent);
                if !allowed {
                    return Err(e);
                }
                if marks[&who] != 0 {
                    violated(
                        store,
                        &format!(
                            "transaction {who} failed at {step} ({e}) but {} of its 20 keys \
                             were applied",
                            marks[&who]
                        ),
                    );
                }
            }
        }
    }
    let n: Option<u32> = n
        .as_deref()
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.parse().ok());
    match committed.as_slice() {
        [] => violated(store, "neither of two conflicting transactions committed"),
        [read] => {
            if n != Some(read + 1) {
                violated(
                    store,
                    &format!(
                        "one transaction committed n = {} (it read {read}), but n is {n:?}",
                        read + 1
                    ),
                );
            }
        }
        [ra, rb] => {
            let serial = (*ra == 0 && *rb == 1) || (*ra == 1 && *rb == 0);
            if isolated && (!serial || n != Some(2)) {
                violated(
                    store,
                    &format!(
                        "lost update: both read-modify-write transactions committed (they read \
                         {ra} and {rb}), n is {n:?}; the second commit must fail with \
                         Conflict or the store must serialise them"
                    ),
                );
            }
            if n != Some(ra + 1) && n != Some(rb + 1) {
                violated(
                    store,
                    &format!("n is {n:?} after commits of {} and {}", ra + 1, rb + 1),
                );
            }
        }
        _ => unreachable!(),
    }
    Ok(())
}

/// `scan` with every combination of included, excluded and unbounded start and end,
/// forward and reverse, against a model: 14 stored keys (including `0xFF` and
/// `0xFF 0xFF`), bound keys on, between, before and after them (including the empty
/// key); empty ranges (`[k, k)`, `(k, k]`, `(k, k)`) and inverted ones (start > end)
/// return nothing.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn scan_bounds(store: &dyn KvStore) -> Result<()> {
    let (model, keys) = range_fixture();
    load(store, &model).await?;
    let mut t = store.begin(ro()).await?;
    for &start in &bounds(&keys) {
        for &end in &bounds(&keys) {
            for reverse in [false, true] {
                let got = t.scan(start, end, usize::MAX, reverse).await?;
                let want = model_scan(&model, start, end, usize::MAX, reverse);
                expect(
                    store,
                    &got,
                    &want,
                    &format!(
                        "scan({}, {}, reverse = {reverse})",
                        show_bound(start),
                        show_bound(end)
                    ),
                );
            }
        }
    }
    t.rollback().await?;
    Ok(())
}

/// `scan` with `limit`: 0 (nothing), 1, one less than, equal to and one more than the
/// number of entries in range, and `usize::MAX`; forward and reverse; over the whole
/// store and bounded ranges. The result is the first `limit` entries in scan order.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn scan_limit(store: &dyn KvStore) -> Result<()> {
    let (model, _) = range_fixture();
    load(store, &model).await?;
    let (k2, k7) = (b("k2"), b("k7"));
    let ranges: [KeyRange<'_>; 3] = [
        (Bound::Unbounded, Bound::Unbounded),
        (Bound::Included(&k2), Bound::Excluded(&k7)),
        (Bound::Excluded(&k2), Bound::Included(&k7)),
    ];
    let mut t = store.begin(ro()).await?;
    for (start, end) in ranges {
        let n = model_scan(&model, start, end, usize::MAX, false).len();
        for limit in [0, 1, 2, n - 1, n, n + 1, usize::MAX] {
            for reverse in [false, true] {
                let got = t.scan(start, end, limit, reverse).await?;
                let want = model_scan(&model, start, end, limit, reverse);
                expect(
                    store,
                    &got,
                    &want,
                    &format!(
                        "scan({}, {}, limit = {limit}, reverse = {reverse})",
                        show_bound(start),
                        show_bound(end)
                    ),
                );
            }
        }
    }
    t.rollback().await?;
    Ok(())
}

/// `scan` with `reverse`: entries in descending key order, the bounds still meaning
/// `start <= key < end`, a limit keeping the largest keys. Checked against literal
/// expectations (not only the model of [`scan_bounds`]).
///
/// # Errors
/// The store's error when an operation fails.
pub async fn scan_reverse(store: &dyn KvStore) -> Result<()> {
    let keys = ["k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9"];
    let pairs: Vec<(&str, &str)> = keys.iter().map(|&k| (k, k)).collect();
    put(store, &pairs).await?;
    let only = |ks: &[&str]| -> Vec<(Bytes, Bytes)> { ks.iter().map(|&k| (b(k), b(k))).collect() };
    let (k2, k7) = (b("k2"), b("k7"));
    let mut t = store.begin(ro()).await?;
    let cases: [(KeyRange<'_>, usize, Entries); 5] = [
        (
            (Bound::Unbounded, Bound::Unbounded),
            usize::MAX,
            only(&["k9", "k8", "k7", "k6", "k5", "k4", "k3", "k2", "k1", "k0"]),
        ),
        ((Bound::Unbounded, Bound::Unbounded), 1, only(&["k9"])),
        (
            (Bound::Included(&k2), Bound::Excluded(&k7)),
            3,
            only(&["k6", "k5", "k4"]),
        ),
        (
            (Bound::Excluded(&k2), Bound::Included(&k7)),
            usize::MAX,
            only(&["k7", "k6", "k5", "k4", "k3"]),
        ),
        (
            (Bound::Unbounded, Bound::Excluded(&k2)),
            usize::MAX,
            only(&["k1", "k0"]),
        ),
    ];
    for ((start, end), limit, want) in cases {
        let got = t.scan(start, end, limit, true).await?;
        expect(
            store,
            &got,
            &want,
            &format!(
                "scan({}, {}, limit = {limit}, reverse = true)",
                show_bound(start),
                show_bound(end)
            ),
        );
    }
    t.rollback().await?;
    Ok(())
}

/// The empty key and the empty value: `""` → `"v"` and `"k"` → `""` are stored, read
/// back (`get`, `batch_get`, `scan`, `count`; an empty value is `Some(vec![])`, not
/// `None`), the empty key sorts first, and deleting it works.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn empty_key_and_value(store: &dyn KvStore) -> Result<()> {
    put(store, &[("", "v"), ("k", "")]).await?;
    let mut t = store.begin(ro()).await?;
    expect(
        store,
        &t.get(b"").await?,
        &Some(b("v")),
        "get of the empty key",
    );
    expect(
        store,
        &t.get(b"k").await?,
        &Some(Vec::new()),
        "get of a key with an empty value (must be Some(empty), not None)",
    );
    expect(
        store,
        &t.batch_get(&[b("k"), b(""), b("x")]).await?,
        &vec![Some(Vec::new()), Some(b("v")), None],
        "batch_get of the empty key and an empty value",
    );
    expect(
        store,
        &scan_all(t.as_mut()).await?,
        &entries(&[("", "v"), ("k", "")]),
        "scan with the empty key and an empty value",
    );
    expect(
        store,
        &t.scan(
            Bound::Included(b""),
            Bound::Excluded(b"k"),
            usize::MAX,
            false,
        )
        .await?,
        &entries(&[("", "v")]),
        "scan [\"\", \"k\")",
    );
    expect(
        store,
        &t.count(Bound::Unbounded, Bound::Unbounded).await?,
        &2,
        "count with the empty key and an empty value",
    );
    t.rollback().await?;
    write(store, &[("", None)]).await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("k", "")]),
        "state after deleting the empty key",
    );
    Ok(())
}

/// A 1 MiB value (a non-repeating byte pattern) round-trips through `get`, `batch_get`
/// and `scan`, between two small neighbours. Skipped when the store declares a smaller
/// `max_value_bytes`, or a `max_txn_bytes` too small for the write set.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn large_value(store: &dyn KvStore) -> Result<()> {
    const SIZE: usize = 1 << 20;
    if store.capability().max_value_bytes.is_some_and(|m| m < SIZE)
        || store
            .kv_capability()
            .max_txn_bytes
            .is_some_and(|m| m < SIZE + 64)
    {
        return Ok(());
    }
    let big: Bytes = (0..SIZE).map(|i| (i % 251) as u8).collect();
    commit(
        store,
        vec![
            (b("a"), Some(b("1"))),
            (b("big"), Some(big.clone())),
            (b("c"), Some(b("3"))),
        ],
    )
    .await?;
    let mut t = store.begin(ro()).await?;
    let got = t.get(b"big").await?;
    if got.as_ref() != Some(&big) {
        violated(
            store,
            &format!(
                "a 1 MiB value read back by get as {} bytes{}",
                got.as_ref().map_or(0, Vec::len),
                if got.is_none() {
                    " (None)"
                } else {
                    " with different content"
                }
            ),
        );
    }
    let got = t.batch_get(&[b("c"), b("big")]).await?;
    if got != [Some(b("3")), Some(big.clone())] {
        violated(store, "a 1 MiB value read back wrong by batch_get");
    }
    let got = t
        .scan(Bound::Unbounded, Bound::Unbounded, usize::MAX, false)
        .await?;
    if got != [(b("a"), b("1")), (b("big"), big), (b("c"), b("3"))] {
        violated(
            store,
            &format!(
                "scan over a 1 MiB value returned keys {} with value lengths {:?}",
                got.iter()
                    .map(|(k, _)| k.clone())
                    .collect::<Vec<_>>()
                    .show(),
                got.iter().map(|(_, v)| v.len()).collect::<Vec<_>>()
            ),
        );
    }
    t.rollback().await?;
    Ok(())
}

/// `count` for every combination of included, excluded and unbounded start and end
/// (the fixture of [`scan_bounds`]), before and after deletes, and on an empty store.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn count_ranges(store: &dyn KvStore) -> Result<()> {
    let mut t = store.begin(ro()).await?;
    expect(
        store,
        &t.count(Bound::Unbounded, Bound::Unbounded).await?,
        &0,
        "count of an empty store",
    );
    t.rollback().await?;

    let (mut model, keys) = range_fixture();
    load(store, &model).await?;
    for round in ["loaded", "after deletes"] {
        let mut t = store.begin(ro()).await?;
        for &start in &bounds(&keys) {
            for &end in &bounds(&keys) {
                let got = t.count(start, end).await?;
                let want = model_scan(&model, start, end, usize::MAX, false).len() as u64;
                expect(
                    store,
                    &got,
                    &want,
                    &format!("count({}, {}) {round}", show_bound(start), show_bound(end)),
                );
            }
        }
        t.rollback().await?;
        if round == "loaded" {
            write(store, &[("k4", None), ("k5", None), ("z", None)]).await?;
            for k in ["k4", "k5", "z"] {
                model.remove(k.as_bytes());
            }
        }
    }
    Ok(())
}

/// `batch_get` returns one value per key in the order asked — unsorted keys, a
/// duplicate, missing keys — and nothing for no keys.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn batch_get_order(store: &dyn KvStore) -> Result<()> {
    put(store, &[("a", "1"), ("b", "2"), ("c", "3")]).await?;
    for opts in [ro(), rw()] {
        let mut t = store.begin(opts).await?;
        expect(
            store,
            &t.batch_get(&[b("c"), b("missing"), b("a"), b("b"), b("a"), b("0")])
                .await?,
            &vec![
                Some(b("3")),
                None,
                Some(b("1")),
                Some(b("2")),
                Some(b("1")),
                None,
            ],
            &format!(
                "batch_get [c, missing, a, b, a, 0] (read_only = {})",
                opts.read_only
            ),
        );
        expect(
            store,
            &t.batch_get(&[]).await?,
            &Vec::new(),
            "batch_get of no keys",
        );
        t.rollback().await?;
    }
    Ok(())
}

/// `scan_with_targets` returns what `scan` returns, each entry with the value at
/// `prefix ‖ entry value` (`None` when absent), for bounds, limits and both
/// directions; its reads are isolated like a scan and a `batch_get`: on a store with
/// snapshot reads a later commit to a target is not seen, on one without, it fails the
/// commit with `Conflict`.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn scan_with_targets(store: &dyn KvStore) -> Result<()> {
    put(
        store,
        &[
            ("i1", "x"),
            ("i2", "y"),
            ("i3", "gone"),
            ("i4", "x"),
            ("j", "y"),
            ("r:x", "X"),
            ("r:y", "Y"),
        ],
    )
    .await?;
    let bounds = |k: &[u8], kind: u8| match kind {
        0 => Bound::Unbounded,
        1 => Bound::Included(k.to_vec()),
        _ => Bound::Excluded(k.to_vec()),
    };
    let mut t = store.begin(ro()).await?;
    for (lo, hi) in [(b("i"), b("j")), (b("i2"), b("i4")), (b("i4"), b("i1"))] {
        for (lk, hk) in [(0u8, 0u8), (1, 1), (1, 2), (2, 1), (2, 2)] {
            let (start, end) = (bounds(&lo, lk), bounds(&hi, hk));
            for reverse in [false, true] {
                for limit in [0, 1, 2, 3, usize::MAX] {
                    let got = t
                        .scan_with_targets(
                            as_ref(&start),
                            as_ref(&end),
                            limit,
                            reverse,
                            b"r:",
                            None,
                        )
                        .await?;
                    let mut want: Vec<(Bytes, Bytes, Option<Bytes>)> = Vec::new();
                    let model = [
                        ("i1", "x", Some("X")),
                        ("i2", "y", Some("Y")),
                        ("i3", "gone", None),
                        ("i4", "x", Some("X")),
                        ("j", "y", Some("Y")),
                        ("r:x", "X", None),
                        ("r:y", "Y", None),
                    ];
                    let mut rows: Vec<_> = model
                        .iter()
                        .filter(|(k, _, _)| in_bounds(k.as_bytes(), as_ref(&start), as_ref(&end)))
                        .collect();
                    if reverse {
                        rows.reverse();
                    }
                    for (k, v, target) in rows.into_iter().take(limit) {
                        // Entries outside the index also get their target looked up.
                        let target = match *k {
                            "r:x" | "r:y" => None,
                            _ => target.map(b),
                        };
                        want.push((b(k), b(v), target));
                    }
                    expect(
                        store,
                        &got,
                        &want,
                        &format!(
                            "scan_with_targets({}, {}, limit {limit}, reverse {reverse}, \
                             prefix r:)",
                            show_bound(as_ref(&start)),
                            show_bound(as_ref(&end))
                        ),
                    );
                }
            }
        }
    }
    t.rollback().await?;

    // Read-only where reads are snapshots (a single-writer store could not run the
    // commit below next to a read-write one); read-write with a write where they are
    // validated.
    let snapshot = store.kv_capability().snapshot_reads;
    let mut t = store.begin(if snapshot { ro() } else { rw() }).await?;
    let first = index_i(t.as_mut()).await?;
    expect(
        store,
        &first.iter().map(|(_, _, t)| t.clone()).collect::<Vec<_>>(),
        &vec![Some(b("X")), Some(b("Y")), None, Some(b("X"))],
        "targets of i1..i4",
    );
    put(store, &[("r:y", "Y2")]).await?;
    if snapshot {
        let again = index_i(t.as_mut()).await?;
        expect(
            store,
            &again,
            &first,
            "scan_with_targets saw a commit made after the transaction's first read",
        );
        t.rollback().await?;
    } else {
        t.get(b"zz").await?;
        match t.commit(vec![(b("w"), Some(b("1")))]).await {
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            other => violated(
                store,
                &format!(
                    "a transaction read target r:y through scan_with_targets, then a \
                     commit changed it: its commit returned {other:?}, not Conflict"
                ),
            ),
        }
    }
    Ok(())
}

/// `scan_with_targets` given the [`EntryLayout`] of a non-unique index over
/// `(name text, g bigint)` of a table keyed by `id bigint`: 80 entries (names longer
/// than one 8-byte memcomparable group, NULL names, one entry without its row) answer
/// exactly as without the layout, for bounds, limits and both directions. Then the
/// isolation of such a scan: a target changed after it, or an entry deleted after it,
/// fails the commit with `Conflict` on a store without snapshot reads, and is not seen
/// on one with them.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn scan_with_targets_by_layout(store: &dyn KvStore) -> Result<()> {
    let (table, entries, rows, spare) = layout_fixture();
    let ix = &table.indexes[0];
    let layout = EntryLayout::of(&table, ix).expect("a non-unique index has a layout");
    let prefix = codec::index_prefix(&table, ix);
    let rp = codec::row_prefix(&table);
    let mut all: WriteSet = entries
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    all.extend(rows.iter().map(|(k, v)| (k.clone(), Some(v.clone()))));
    // In small commits: a store may cap a write set at a few KiB (`max_txn_bytes`).
    for chunk in all.chunks(10) {
        store.begin(rw()).await?.commit(chunk.to_vec()).await?;
    }

    let end = codec::prefix_end(&prefix).expect("an index prefix has an end");
    let mid = entries[10].0.clone();
    let bounds: [KeyBounds; 4] = [
        (Bound::Included(&prefix), Bound::Excluded(&end)),
        (Bound::Included(&mid), Bound::Excluded(&end)),
        (Bound::Excluded(&mid), Bound::Excluded(&end)),
        (Bound::Included(&prefix), Bound::Included(&mid)),
    ];
    let mut t = store.begin(ro()).await?;
    for (start, stop) in bounds {
        for reverse in [false, true] {
            for limit in [1, 5, 33, 80, usize::MAX] {
                let want = t
                    .scan_with_targets(start, stop, limit, reverse, &rp, None)
                    .await?;
                let got = t
                    .scan_with_targets(start, stop, limit, reverse, &rp, Some(&layout))
                    .await?;
                expect(
                    store,
                    &got,
                    &want,
                    &format!(
                        "scan_with_targets({}, {}, limit {limit}, reverse {reverse}) of \
                         index entries with their layout vs without",
                        show_bound(start),
                        show_bound(stop)
                    ),
                );
            }
        }
    }
    t.rollback().await?;

    let snapshot = store.kv_capability().snapshot_reads;
    let (changed_row, _) = rows[3].clone();
    let (deleted_entry, _) = entries[40].clone();
    let changes: [(&str, WriteSet); 2] = [
        ("a target changed", vec![(changed_row, Some(b("new")))]),
        // The count of the range stays: only the deleted entry's absence tells.
        (
            "an entry deleted and another inserted",
            vec![
                (deleted_entry, None),
                (spare.0.clone(), Some(spare.1.clone())),
            ],
        ),
    ];
    for (what, change) in changes {
        let mut t = store.begin(if snapshot { ro() } else { rw() }).await?;
        let range = (
            Bound::Included(prefix.as_slice()),
            Bound::Excluded(end.as_slice()),
        );
        let first = scan_by_layout(t.as_mut(), range, &rp, &layout).await?;
        store.begin(rw()).await?.commit(change.clone()).await?;
        if snapshot {
            let again = scan_by_layout(t.as_mut(), range, &rp, &layout).await?;
            expect(
                store,
                &again,
                &first,
                &format!("a scan by layout saw a commit made after its first read ({what})"),
            );
            t.rollback().await?;
        } else {
            match t.commit(vec![(b("w"), Some(b("1")))]).await {
                Err(e) if e.kind() == ErrorKind::Conflict => {}
                other => violated(
                    store,
                    &format!(
                        "a transaction scanned index entries by layout, then {what} in \
                         another commit: its commit returned {other:?}, not Conflict"
                    ),
                ),
            }
        }
        // Undo the change for the next round.
        let undo: WriteSet = change
            .iter()
            .map(|(k, _)| {
                let v = entries.iter().chain(&rows).find(|(ek, _)| ek == k);
                (k.clone(), v.map(|(_, v)| v.clone()))
            })
            .collect();
        store.begin(rw()).await?.commit(undo).await?;
    }
    Ok(())
}

/// A scan's start and end.
type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// The first 1,000 entries in `range` (a scan's usual chunk) with their targets,
/// found by `layout`.
async fn scan_by_layout(
    t: &mut dyn KvTxn,
    range: KeyBounds<'_>,
    target_prefix: &[u8],
    layout: &EntryLayout,
) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
    t.scan_with_targets(range.0, range.1, 1000, false, target_prefix, Some(layout))
        .await
}

/// The table, index entries and rows of [`scan_with_targets_by_layout`], each as
/// `(key, value)` in key order (the row of entry 7 is missing), and one more entry,
/// not among them.
#[allow(clippy::type_complexity)]
fn layout_fixture() -> (
    TableSchema,
    Vec<(Bytes, Bytes)>,
    Vec<(Bytes, Bytes)>,
    (Bytes, Bytes),
) {
    let col = |n: &str, ty| ColumnDef::new(n, ty, n == "name");
    let table = TableSchema {
        version: None,
        name: "people".into(),
        columns: vec![
            col("id", ColumnType::I64),
            col("name", ColumnType::String),
            col("g", ColumnType::I64),
        ],
        primary_key: vec![0],
        indexes: vec![IndexDef {
            name: "by_name_g".into(),
            columns: vec![1, 2],
            unique: false,
            when: None,
        }],
    };
    let ix = &table.indexes[0];
    let keys = TableKeys::new(&table);
    let (mut entries, mut rows) = (Vec::new(), Vec::new());
    for i in 0..81i64 {
        let name = match i % 4 {
            0 => Value::Null,
            1 => Value::String(format!("a name longer than one group {}", i % 3)),
            _ => Value::String(format!("n{}", i % 2)),
        };
        let row: Row = vec![Value::I64(i), name, Value::I64(i % 5)];
        let pk = codec::pk_suffix(&table, &row);
        entries.push((
            codec::index_key(&keys.indexes[0], &table, ix, &row, &pk),
            pk,
        ));
        if i != 7 && i != 80 {
            rows.push((keys.row_key(&table, &row), codec::encode_row(&row)));
        }
    }
    let spare = entries.pop().expect("81 entries");
    entries.sort();
    rows.sort();
    (table, entries, rows, spare)
}

/// Every entry of the `i` keys with its `r:` target.
async fn index_i(t: &mut dyn KvTxn) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
    t.scan_with_targets(
        Bound::Included(b"i"),
        Bound::Excluded(b"j"),
        usize::MAX,
        false,
        b"r:",
        None,
    )
    .await
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Unbounded => Bound::Unbounded,
        Bound::Included(k) => Bound::Included(k.as_slice()),
        Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
    }
}

fn in_bounds(k: &[u8], start: Bound<&[u8]>, end: Bound<&[u8]>) -> bool {
    (match start {
        Bound::Unbounded => true,
        Bound::Included(s) => k >= s,
        Bound::Excluded(s) => k > s,
    }) && (match end {
        Bound::Unbounded => true,
        Bound::Included(e) => k <= e,
        Bound::Excluded(e) => k < e,
    })
}

/// Where `assume_absent` records the assumption (returns true): a commit succeeds
/// when the key is absent, and fails with `Conflict`, applying nothing, when the key
/// was present all along or was written by another commit after the assumption. A
/// store that declines (returns false) has nothing to check.
///
/// # Errors
/// The store's error when an operation fails.
pub async fn assume_absent(store: &dyn KvStore) -> Result<()> {
    put(store, &[("taken", "1")]).await?;
    let mut t = store.begin(rw()).await?;
    if !t.assume_absent(b"free") {
        t.rollback().await?;
        return Ok(());
    }
    t.commit(vec![(b("free"), Some(b("mine")))]).await?;
    let must_conflict = |what: &str, r: Result<()>| match r {
        Err(e) if e.kind() == ErrorKind::Conflict => {}
        other => violated(
            store,
            &format!("{what}: the commit returned {other:?}, not Conflict"),
        ),
    };
    let mut t = store.begin(rw()).await?;
    if !t.assume_absent(b"taken") {
        violated(store, "assume_absent accepted one key and declined another");
    }
    must_conflict(
        "a transaction assumed absent a key that was present",
        t.commit(vec![(b("taken"), Some(b("over"))), (b("w1"), Some(b("1")))])
            .await,
    );
    let mut t = store.begin(rw()).await?;
    t.assume_absent(b"late");
    put(store, &[("late", "theirs")]).await?;
    must_conflict(
        "a transaction assumed absent a key that another commit then wrote",
        t.commit(vec![(b("late"), Some(b("mine"))), (b("w2"), Some(b("1")))])
            .await,
    );
    expect(
        store,
        &dump(store).await?,
        &entries(&[("free", "mine"), ("late", "theirs"), ("taken", "1")]),
        "state after commits whose assumptions failed",
    );
    Ok(())
}

/// `rollback` of a read-write and of a read-only transaction (after reads) succeeds,
/// changes nothing, and releases the transaction: a read-write transaction can begin
/// and commit afterwards.
///
/// # Errors
/// The store's error when an operation fails (including a `Timeout` at `begin` when a
/// rolled-back transaction still holds a single writer lock).
pub async fn rollback_discards(store: &dyn KvStore) -> Result<()> {
    put(store, &[("a", "1")]).await?;
    for opts in [rw(), ro(), rw()] {
        let mut t = store.begin(opts).await?;
        expect(
            store,
            &t.get(b"a").await?,
            &Some(b("1")),
            "get before rollback",
        );
        scan_all(t.as_mut()).await?;
        t.rollback().await?;
    }
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1")]),
        "state after rolled-back transactions",
    );
    put(store, &[("b", "2")]).await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1"), ("b", "2")]),
        "a commit after rolled-back transactions",
    );
    Ok(())
}

/// Dropping a read-write and a read-only transaction (after reads) without `commit` or
/// `rollback` changes nothing and releases it: a read-write transaction can begin and
/// commit afterwards.
///
/// # Errors
/// The store's error when an operation fails (including a `Timeout` at `begin` when a
/// dropped transaction still holds a single writer lock).
pub async fn drop_discards(store: &dyn KvStore) -> Result<()> {
    put(store, &[("a", "1")]).await?;
    for opts in [rw(), ro(), rw()] {
        let mut t = store.begin(opts).await?;
        expect(store, &t.get(b"a").await?, &Some(b("1")), "get before drop");
        scan_all(t.as_mut()).await?;
        drop(t);
    }
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1")]),
        "state after dropped transactions",
    );
    put(store, &[("b", "2")]).await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "1"), ("b", "2")]),
        "a commit after dropped transactions",
    );
    Ok(())
}

/// Panics unless `r` is an error of `kind`, naming the store and the property.
#[track_caller]
fn expect_err<T>(store: &dyn KvStore, r: Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Err(e) if e.kind() == kind => {}
        Err(e) => violated(
            store,
            &format!("{what}: failed with {e}, expected an error of kind {kind:?}"),
        ),
        Ok(_) => violated(
            store,
            &format!("{what}: succeeded, expected an error of kind {kind:?}"),
        ),
    }
}

/// Pessimistic locks, as declared by
/// [`KvCapability::pessimistic_locks`](crate::KvCapability::pessimistic_locks).
///
/// Without the declaration: `lock` in a read-write transaction returns `Unsupported`.
/// With it:
/// - a transaction locks two keys, one of them again, no keys, and a missing key;
/// - where the store also declares `concurrent_writers`: while it is open, another
///   transaction's `lock` of one of its keys fails with `Conflict`, and a commit of a
///   write set holding one of them fails with `Conflict` and applies nothing;
/// - the locks are released when the holder commits, and a lock taken afterwards is
///   released by `rollback` and by dropping the transaction (each checked by locking
///   the keys again in a new transaction);
/// - `lock` in a read-only transaction fails with `InvalidInput`;
/// - a lock writes nothing: the locked missing key is still missing.
///
/// # Errors
/// The store's error when an operation the contract says must succeed fails.
pub async fn lock_keys(store: &dyn KvStore) -> Result<()> {
    let cap = store.kv_capability();
    put(store, &[("k1", "0"), ("k2", "0")]).await?;
    let (k1, k2, missing) = (b("k1"), b("k2"), b("missing"));
    if !cap.pessimistic_locks {
        let mut t = store.begin(rw()).await?;
        expect_err(
            store,
            t.lock(std::slice::from_ref(&k1)).await,
            ErrorKind::Unsupported,
            "lock on a store that does not declare pessimistic_locks",
        );
        t.rollback().await?;
        return Ok(());
    }
    let relock = |what: &'static str| async move {
        let mut t = store.begin(rw()).await?;
        if let Err(e) = t.lock(&[b("k1"), b("k2"), b("missing")]).await {
            violated(
                store,
                &format!("locking k1, k2 and a missing key again {what} failed: {e}"),
            );
        }
        Ok::<_, Error>(t)
    };

    let mut a = store.begin(rw()).await?;
    a.lock(&[k1.clone(), k2.clone()]).await?;
    a.lock(std::slice::from_ref(&k1)).await?;
    a.lock(&[]).await?;
    a.lock(std::slice::from_ref(&missing)).await?;
    if cap.concurrent_writers {
        let mut other = store.begin(rw()).await?;
        expect_err(
            store,
            other.lock(std::slice::from_ref(&k2)).await,
            ErrorKind::Conflict,
            "lock of a key another open transaction has locked",
        );
        other.rollback().await?;
        let other = store.begin(rw()).await?;
        expect_err(
            store,
            other
                .commit(vec![
                    (k1.clone(), Some(b("other"))),
                    (b("z"), Some(b("other"))),
                ])
                .await,
            ErrorKind::Conflict,
            "commit of a write set holding a key another open transaction has locked",
        );
        expect(
            store,
            &dump(store).await?,
            &entries(&[("k1", "0"), ("k2", "0")]),
            "state after a commit refused for a locked key (nothing may be applied)",
        );
    }
    a.commit(vec![(k1.clone(), Some(b("a")))]).await?;

    let t = relock("after the holder committed").await?;
    t.rollback().await?;
    let t = relock("after the holder rolled back").await?;
    drop(t);
    let t = relock("after the holder was dropped").await?;
    t.commit(vec![(k2.clone(), Some(b("t")))]).await?;

    let mut r = store.begin(ro()).await?;
    expect_err(
        store,
        r.lock(std::slice::from_ref(&k1)).await,
        ErrorKind::InvalidInput,
        "lock in a read-only transaction",
    );
    r.rollback().await?;
    expect(
        store,
        &dump(store).await?,
        &entries(&[("k1", "a"), ("k2", "t")]),
        "state after the lock case (a lock must write nothing)",
    );
    Ok(())
}

/// A sorted write set of puts under keys starting with `prefix` whose size, as
/// [`write_set_bytes`](crate::write_set_bytes) counts it, is exactly `n`; no value
/// is longer than `max_value` (at least 1) or 64 KiB.
fn sized_write_set(prefix: char, n: usize, max_value: usize) -> WriteSet {
    const KEY: usize = 5; // prefix + 4 digits
    let chunk = max_value.clamp(1, 64 << 10);
    let mut out: WriteSet = Vec::new();
    let mut rest = n;
    while rest >= KEY {
        let v = (rest - KEY).min(chunk);
        out.push((
            format!("{prefix}{:04}", out.len()).into_bytes(),
            Some(vec![b'v'; v]),
        ));
        rest -= KEY + v;
    }
    if rest > 0 {
        // Fewer bytes left than a key: lengthen the last key (it stays the largest).
        match out.last_mut() {
            Some((k, _)) => k.extend(std::iter::repeat_n(b'~', rest)),
            None => {
                let mut k = vec![prefix as u8];
                k.extend(std::iter::repeat_n(b'~', rest - 1));
                out.push((k, Some(Vec::new())));
            }
        }
    }
    out
}

/// The write-set limit, as declared by
/// [`KvCapability::max_txn_bytes`](crate::KvCapability::max_txn_bytes): a write set of
/// exactly that many bytes (keys plus values) commits and is visible; one byte more
/// fails with `InvalidInput` and applies nothing. Skipped when the store declares no
/// limit, or one over 64 MiB (too large to build here).
///
/// # Errors
/// The store's error when an operation the contract says must succeed fails (other
/// than the commit at the limit, which is a violation).
pub async fn max_txn_bytes(store: &dyn KvStore) -> Result<()> {
    let Some(max) = store.kv_capability().max_txn_bytes else {
        return Ok(());
    };
    if max > 64 << 20 {
        return Ok(());
    }
    let max_value = store.capability().max_value_bytes.unwrap_or(usize::MAX);
    let at = sized_write_set('a', max, max_value);
    debug_assert_eq!(crate::write_set_bytes(&at), max);
    if let Err(e) = commit(store, at.clone()).await {
        violated(
            store,
            &format!("a write set of exactly max_txn_bytes ({max}) bytes failed: {e}"),
        );
    }
    let want: Vec<(Bytes, Bytes)> = at
        .into_iter()
        .map(|(k, v)| (k, v.unwrap_or_default()))
        .collect();
    expect(
        store,
        &dump(store).await?,
        &want,
        &format!("state after committing a write set of max_txn_bytes ({max}) bytes"),
    );
    let over = sized_write_set('b', max + 1, max_value);
    expect_err(
        store,
        commit(store, over).await,
        ErrorKind::InvalidInput,
        &format!(
            "commit of a write set of {} bytes, over max_txn_bytes",
            max + 1
        ),
    );
    expect(
        store,
        &dump(store).await?,
        &want,
        "state after a commit over max_txn_bytes was refused (nothing may be applied)",
    );
    Ok(())
}

/// A future that is ready once `after` has passed (a thread sleeps and wakes it), so
/// a case can bound a wait on any runtime.
struct Deadline {
    after: std::time::Duration,
    state: Option<Arc<std::sync::Mutex<Timer>>>,
}

/// What a [`Deadline`] shares with its thread: whether the time has passed, and whom
/// to wake then.
type Timer = (bool, Option<std::task::Waker>);

fn deadline(after: std::time::Duration) -> Deadline {
    Deadline { after, state: None }
}

impl Future for Deadline {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let after = self.after;
        let state = self.state.get_or_insert_with(|| {
            let state: Arc<std::sync::Mutex<Timer>> =
                Arc::new(std::sync::Mutex::new((false, None)));
            let timer = Arc::clone(&state);
            std::thread::spawn(move || {
                std::thread::sleep(after);
                let mut s = timer.lock().unwrap_or_else(|e| e.into_inner());
                s.0 = true;
                if let Some(w) = s.1.take() {
                    w.wake();
                }
            });
            state
        });
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        if s.0 {
            Poll::Ready(())
        } else {
            s.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

/// Polls `fut` until it is ready or `after` has passed (`None`).
async fn within<F: Future>(fut: Pin<&mut F>, after: std::time::Duration) -> Option<F::Output> {
    let mut fut = fut;
    let mut timer = pin!(deadline(after));
    std::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Concurrent writers, as declared by
/// [`KvCapability::concurrent_writers`](crate::KvCapability::concurrent_writers).
///
/// A read-write transaction A begins and reads. With the declaration: a second one, B,
/// begins while A is open (within 10 s), and both commit writes of disjoint keys
/// after reading disjoint keys. Without it: B's `begin` does not succeed while A is
/// open (it waits — checked for 100 ms — or fails); once A has committed, B begins
/// (the pending `begin`, or a new one if it failed) and commits.
///
/// # Errors
/// The store's error when an operation the contract says must succeed fails.
pub async fn concurrent_writers(store: &dyn KvStore) -> Result<()> {
    let concurrent = store.kv_capability().concurrent_writers;
    put(store, &[("a", "0"), ("b", "0")]).await?;
    let mut a = store.begin(rw()).await?;
    a.get(b"a").await?;
    let mut begin_b = pin!(store.begin(rw()));
    let wait = if concurrent {
        std::time::Duration::from_secs(10)
    } else {
        std::time::Duration::from_millis(100)
    };
    let early = within(begin_b.as_mut(), wait).await;
    let mut b_txn = if concurrent {
        match early {
            Some(Ok(t)) => t,
            Some(Err(e)) => violated(
                store,
                &format!(
                    "a second read-write begin failed ({e}) while another read-write \
                     transaction was open, though the store declares concurrent_writers"
                ),
            ),
            None => violated(
                store,
                "a second read-write begin did not complete within 10 s while another \
                 read-write transaction was open, though the store declares \
                 concurrent_writers",
            ),
        }
    } else {
        if let Some(Ok(_)) = early {
            violated(
                store,
                "two read-write transactions were open at once, though the store does \
                 not declare concurrent_writers (one writer at a time)",
            );
        }
        a.commit(vec![(b("a"), Some(b("A")))]).await?;
        let b_txn = match early {
            None => begin_b.await?,
            Some(_) => store.begin(rw()).await?,
        };
        b_txn.commit(vec![(b("b"), Some(b("B")))]).await?;
        return check_disjoint_writes(store).await;
    };
    b_txn.get(b"b").await?;
    a.commit(vec![(b("a"), Some(b("A")))]).await?;
    b_txn.commit(vec![(b("b"), Some(b("B")))]).await?;
    check_disjoint_writes(store).await
}

/// The end state of [`concurrent_writers`].
async fn check_disjoint_writes(store: &dyn KvStore) -> Result<()> {
    expect(
        store,
        &dump(store).await?,
        &entries(&[("a", "A"), ("b", "B")]),
        "state after two writers of disjoint keys committed",
    );
    Ok(())
}
