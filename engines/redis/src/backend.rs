//! The Redis server as a datalayer engine: [`RedisKv`] implements the KV family's
//! [`KvStore`] and [`KvTxn`], and [`KvEngine`] supplies everything above it (rows,
//! indexes, queries, savepoints, catalog, change feed). [`open`] and [`open_url`] make
//! the engine.
//!
//! # Layout (one namespace `ns`; every key carries the hash tag `{ns}`)
//! | key | type | holds |
//! |-----|------|-------|
//! | `{ns}:d:` ‖ key | string | version (u64 big-endian: the namespace's commit counter at the write) ‖ value |
//! | `{ns}:k` | sorted set, every score 0 | every key, so `ZRANGE … BYLEX` lists them in byte order |
//! | `{ns}:c` | string (integer) | the commit counter, `INCR`ed by every commit that writes |
//! | `{ns}:b` | sorted set, every score 0 | the bucket names: [`bucket`] of every key ever written (about one per table and index) |
//! | `{ns}:v` | hash | bucket name → the commit counter of the last write of a key in it |
//!
//! Members of a score-0 sorted set are ordered by their bytes (`memcmp`), as etch orders
//! its keys, so scans, reverse scans and cursors are byte-identical to etch
//! (redis.io/docs/latest/commands/zrangebylex).
//!
//! # Transactions: serializable by backward validation
//! Reads go to the server as they come and record what they saw:
//! - `get`, `batch_get` (one `MGET` per 512 keys, atomic round trips): each key's
//!   version, or its absence;
//! - `count` (`ZLEXCOUNT`): the range and the count seen;
//! - `scan` and `scan_with_targets` (up to 4,096 entries: one atomic `FCALL_RO` of the
//!   library's scan function, which reads the counter, `ZRANGE … BYLEX [REV] LIMIT`,
//!   the values and, for an index, the rows they point at; larger scans: a `MULTI` of
//!   `GET {ns}:c` and the `ZRANGE`, then `MGET`s of the values): the range actually
//!   read (up to the last key when the limit cut it short). An index scan given the
//!   entries' [`EntryLayout`] (their value is their key's tail) that finds more than
//!   [`ONE_TRIP_TARGETS`] entries takes the range alone (from the scan function, or
//!   from `GET {ns}:c` and `ZRANGE` once the index's scans are known to be large) and
//!   then, in one `MULTI`, `MGET`s of the rows and `GET {ns}:c` again: an unchanged
//!   counter means both trips read one state. Its entries are recorded as present
//!   (`+`), not by version. A scan of at most `exact_scan_keys` keys records each key's version and
//!   the range's count (exact: only a real change of what it read fails the commit),
//!   while the transaction has recorded fewer than 65,536 keys; a larger one records the commit counter read with the range, and the commit checks
//!   that no bucket ([`bucket`]: about one table or index) intersecting the range was
//!   written after it.
//!
//! The commit is one `FCALL` of the engine's Redis Function (`library.lua`, loaded at
//! connect with `FUNCTION LOAD REPLACE` and again when the server has lost it): it
//! first checks every recorded version (`GETRANGE 0 7`), count (`ZLEXCOUNT`) and
//! bucket range (`ZRANGE … BYLEX` of the bucket set, `HMGET` of their versions); then,
//! only if all hold, it `INCR`s the counter and applies the write set with one
//! variadic call per kind (`MSET`, `DEL`, `ZADD`/`ZREM` of the key set, `ZADD` and
//! `HSET` of the written buckets and their versions; each key once, its last write),
//! and `PUBLISH`es on the outbox
//! channel when the write set emits outbox events. A failed check is `Conflict`, with
//! nothing written. A Function runs atomically (Redis Functions,
//! redis.io/docs/latest/develop/interact/programmability/functions-intro), so
//! validation and writes happen at one point of the server's serial order: the
//! transaction's serialization point, where everything it read still holds.
//! Server-side work is O(reads + writes + buckets in the validated ranges), never
//! O(data). No `WATCH` anywhere, so connections are shared (multiplexed) by every
//! transaction.
//!
//! A transaction without writes is validated with `FCALL_RO` (one round trip, no
//! writes), or not at all when one atomic round trip served every read (a point read,
//! a get of many keys, an index range of up to 4,096 rows): it saw one state at one
//! point of the server's serial order. Every key the function touches is in
//! its `KEYS`, and every key shares the namespace's hash tag (one cluster slot).

use crate::config::{MAX_TXN_ENTRIES, RedisOptions};
use crate::conn::{self, Conn};
use crate::error::{is_function_missing, map_error};
use async_trait::async_trait;
use datalayer_core::{Capability, Error, Result, TxOptions};
use datalayer_kv::{Bytes, EntryLayout, KvCapability, KvEngine, KvStore, KvTxn, WriteSet};
use redis::{Cmd, Pipeline, RedisResult, Value};
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// The engine's function library (Lua), loaded with `FUNCTION LOAD REPLACE`.
pub(crate) const LIBRARY: &str = include_str!("library.lua");
const COMMIT_FN: &str = "dl_v1_commit";
const VALIDATE_FN: &str = "dl_v1_validate";
const SCAN_FN: &str = "dl_v1_scan";
/// Largest `limit` a scan serves in one atomic `FCALL_RO` of [`SCAN_FN`] (range and
/// values, and targets); larger ones take the two-step path (`ZRANGE`, then `MGET`s),
/// so that no single call blocks the server for long.
const ONE_TRIP_SCAN: usize = 4096;
/// Most index entries whose targets the scan function reads itself when the caller
/// gives an [`EntryLayout`]; past it the client reads them with `MGET` in a second
/// round trip, cheaper per key than the function (each reply it handles is converted
/// to Lua and back).
const ONE_TRIP_TARGETS: usize = 32;
/// Keys per `MGET`.
const MGET_CHUNK: usize = 512;
/// The version recorded for a key read as present whatever its version: the commit
/// function checks only that it still exists.
const PRESENT: &[u8] = b"+";
/// Keys a transaction records one by one for exact validation before its further
/// scans fall back to bucket validation, so that paging through a large range in one
/// transaction stays well under [`MAX_TXN_ENTRIES`].
const EXACT_READS_BUDGET: usize = 65_536;

/// What the server said about persistence at connect (`CONFIG GET appendonly` and
/// `appendfsync`): what an acknowledged commit survives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Durability {
    /// `appendonly`: `Some(true)` when every write is logged to the append-only file
    /// (it survives a server restart); `None` when `CONFIG GET` was refused (ACL, a
    /// managed service).
    pub appendonly: Option<bool>,
    /// `appendfsync`: `always` (every acknowledged commit is on disk: it survives a
    /// power loss), `everysec` (up to about one second of acknowledged commits can be
    /// lost in a crash of the machine), `no` (the OS decides); `None` when unknown.
    pub appendfsync: Option<String>,
}

/// The names of a namespace's keys.
#[derive(Debug)]
struct Keys {
    counter: Vec<u8>,
    zkeys: Vec<u8>,
    zbuckets: Vec<u8>,
    versions: Vec<u8>,
    data_prefix: Vec<u8>,
    /// The Pub/Sub channel of outbox wake-ups.
    channel: String,
    /// The row prefix of the outbox's events table: a put under it publishes.
    events_prefix: Vec<u8>,
}

impl Keys {
    fn new(ns: &str) -> Self {
        let k = |s: &str| format!("{{{ns}}}:{s}").into_bytes();
        Keys {
            counter: k("c"),
            zkeys: k("k"),
            zbuckets: k("b"),
            versions: k("v"),
            data_prefix: k("d:"),
            channel: format!("{{{ns}}}:outbox"),
            events_prefix: datalayer_kv::codec::table_prefix(
                datalayer_kv::codec::ROW,
                crate::outbox::EVENTS_TABLE,
            ),
        }
    }

    fn data(&self, key: &[u8]) -> Vec<u8> {
        let mut d = Vec::with_capacity(self.data_prefix.len() + key.len());
        d.extend_from_slice(&self.data_prefix);
        d.extend_from_slice(key);
        d
    }
}

#[derive(Debug)]
struct Inner {
    opts: RedisOptions,
    addr: String,
    /// Clients of the servers the outbox driver may subscribe on: the server, or the
    /// cluster's seed nodes (a classic `PUBLISH` reaches every node of a cluster).
    pubsub: Vec<redis::Client>,
    conns: Vec<Conn>,
    next: AtomicUsize,
    keys: Keys,
    durability: Durability,
    /// Per index (its bucket, [`bucket`]), how many entries its last scan by layout
    /// returned: an index whose scans return more than [`ONE_TRIP_TARGETS`] is read
    /// with `ZRANGE` at once instead of through the scan function, which would only
    /// hand the range back, at a higher cost per key.
    scan_sizes: Mutex<HashMap<Vec<u8>, usize>>,
}

/// [`KvStore`] over one namespace of a Redis server: what [`open`] wraps in a
/// [`KvEngine`]. Cheap to clone (clones share the connections).
#[derive(Clone, Debug)]
pub struct RedisKv {
    inner: Arc<Inner>,
}

impl RedisKv {
    /// Connects (`pool_size` multiplexed connections: on one server each a redis-rs
    /// `ConnectionManager` that reconnects by itself, on a Redis Cluster each a redis-rs
    /// cluster connection that follows the slot map), loads the function library (on
    /// every primary of a cluster) and reads the persistence settings of the server
    /// (on a cluster: of the primary that owns the namespace's slot).
    ///
    /// # Errors
    /// `InvalidInput` for options that fail [`RedisOptions::validate`] (or a `ca_file`
    /// that cannot be read); `Unsupported` for TLS without the cargo feature `tls`;
    /// `ConnectionLost` when the server (or no seed node of the cluster) cannot be
    /// reached (refused, timed out, a cluster whose slots are not all served);
    /// `Engine` with code `AUTH` for a wrong user or password; the server's error when
    /// the library cannot be loaded (`Unsupported` for Redis before 7.0, which has no
    /// Functions).
    pub async fn connect(opts: RedisOptions) -> Result<Self> {
        opts.validate()?;
        let addr = opts.address();
        let conns = conn::connect(&opts, &addr).await?;
        let pubsub = opts
            .servers()
            .iter()
            .map(|(h, p)| conn::client(&opts, h, *p))
            .collect::<Result<Vec<_>>>()?;
        let keys = Keys::new(&opts.namespace);
        let mut conn = conns[0].clone();
        load_library(&mut conn, &addr).await?;
        let durability = read_durability(&mut conn, &keys.counter).await;
        Ok(RedisKv {
            inner: Arc::new(Inner {
                opts,
                addr,
                pubsub,
                conns,
                next: AtomicUsize::new(0),
                keys,
                durability,
                scan_sizes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &RedisOptions {
        &self.inner.opts
    }

    /// The server's persistence settings, as read at connect.
    pub fn durability(&self) -> &Durability {
        &self.inner.durability
    }

    /// The Pub/Sub channel on which every commit that emits outbox events (puts rows
    /// of the outbox's events table) publishes its commit counter
    /// (`{namespace}:outbox`); see [`RedisDriver`](crate::RedisDriver).
    pub fn outbox_channel(&self) -> &str {
        &self.inner.keys.channel
    }

    /// A new outbox driver on this store's namespace: consumers wake on the
    /// [`RedisKv::outbox_channel`] instead of polling. The engine hands one to every
    /// consumer by itself (through `Engine::extension`).
    pub fn outbox_driver(&self) -> crate::RedisDriver {
        crate::outbox::RedisDriver::new(self.inner.pubsub.clone(), self.inner.keys.channel.clone())
    }

    fn conn(&self) -> Conn {
        let i = self.inner.next.fetch_add(1, Ordering::Relaxed) % self.inner.conns.len();
        self.inner.conns[i].clone()
    }
}

/// `FUNCTION LOAD REPLACE` of [`LIBRARY`]; on a cluster on every primary (redis-rs
/// routes `FUNCTION LOAD` to all primaries and fails unless every one succeeded).
async fn load_library(conn: &mut Conn, addr: &str) -> Result<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(LIBRARY)
        .query_async::<Value>(conn)
        .await
        .map(|_| ())
        .map_err(|e| {
            let mut err = map_error(e, addr);
            if err.message().contains("unknown command") {
                err = Error::unsupported("redis", "servers before Redis 7.0 (no Functions)");
            }
            err
        })
}

/// `CONFIG GET appendonly` / `appendfsync` on the node that owns `key` (the
/// namespace's node on a cluster); `None`s when refused.
async fn read_durability(conn: &mut Conn, key: &[u8]) -> Durability {
    async fn get(conn: &mut Conn, key: &[u8], name: &str) -> Option<String> {
        let v: RedisResult<Vec<String>> = conn
            .query_at(redis::cmd("CONFIG").arg("GET").arg(name), key)
            .await;
        v.ok().and_then(|v| v.into_iter().nth(1))
    }
    Durability {
        appendonly: get(conn, key, "appendonly").await.map(|v| v == "yes"),
        appendfsync: get(conn, key, "appendfsync").await,
    }
}

/// Opens the engine on `opts`' server and namespace.
///
/// # Errors
/// As [`RedisKv::connect`].
pub async fn open(opts: RedisOptions) -> Result<KvEngine> {
    Ok(KvEngine::new(RedisKv::connect(opts).await?))
}

/// Opens the engine a Redis URL names (forms in [`RedisOptions::from_url`]).
///
/// # Errors
/// `InvalidInput` (or `Unsupported`) for a URL [`RedisOptions::from_url`] refuses;
/// otherwise as [`RedisKv::connect`].
pub async fn open_url(url: &str) -> Result<KvEngine> {
    open(RedisOptions::from_url(url)?).await
}

/// Removes every key of `opts.namespace` (`SCAN MATCH {namespace}*` and `UNLINK`, in
/// batches): the namespace's data, indexes, catalog and change feed. Returns the
/// number of keys removed. Not atomic: run it when no engine uses the namespace. On a
/// Redis Cluster the `SCAN` goes to the primary that owns the namespace's hash slot
/// (every key of the namespace is there); the function library stays loaded.
///
/// # Errors
/// As [`RedisKv::connect`] for the connection; the server's errors.
pub async fn destroy_namespace(opts: &RedisOptions) -> Result<u64> {
    opts.validate()?;
    let addr = opts.address();
    let one = RedisOptions {
        pool_size: 1,
        ..opts.clone()
    };
    let mut conn = conn::connect(&one, &addr)
        .await?
        .pop()
        .expect("one connection");
    let slot_key = Keys::new(&opts.namespace).counter;
    let mut pattern = String::from("\\{");
    for c in opts.namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("\\}*");
    let mut cursor: u64 = 0;
    let mut removed = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = conn
            .query_at(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000),
                &slot_key,
            )
            .await
            .map_err(|e| map_error(e, &addr))?;
        if !keys.is_empty() {
            let n: u64 = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .map_err(|e| map_error(e, &addr))?;
            removed += n;
        }
        if next == 0 {
            return Ok(removed);
        }
        cursor = next;
    }
}

#[async_trait]
impl KvStore for RedisKv {
    fn name(&self) -> &'static str {
        "redis"
    }

    /// Serializable (and read-committed) transactions by backward validation;
    /// `RepeatableRead` and `Snapshot` are not offered: without snapshot reads two
    /// reads of one transaction can see different states (the commit then fails).
    /// `durable` when the server logs writes to its append-only file
    /// ([`RedisKv::durability`]).
    fn capability(&self) -> Capability {
        let o = &self.inner.opts;
        Capability {
            read_committed: true,
            repeatable_read: false,
            snapshot: false,
            serializable: true,
            read_only_tx: true,
            savepoints: true,
            concurrent_writers: true,
            pipeline_depth: Some(o.pipeline_depth),
            max_value_bytes: Some(o.max_value_bytes),
            max_key_bytes: None,
            durable: self.inner.durability.appendonly == Some(true),
            // The outbox (datalayer-outbox) runs on any transactional engine.
            outbox: true,
            ..Capability::default()
        }
    }

    fn kv_capability(&self) -> KvCapability {
        KvCapability {
            snapshot_reads: false,
            pessimistic_locks: false,
            max_txn_bytes: Some(self.inner.opts.max_txn_bytes),
            concurrent_writers: true,
        }
    }

    /// Starts a transaction without contacting the server (reads and the commit do).
    async fn begin(&self, opts: TxOptions) -> Result<Box<dyn KvTxn>> {
        Ok(Box::new(RedisTxn {
            kv: self.clone(),
            conn: self.conn(),
            read_only: opts.read_only,
            reads: BTreeMap::new(),
            scans: Vec::new(),
            counts: Vec::new(),
            round_trips: 0,
            unrecorded: Vec::new(),
        }))
    }

    /// With `appendonly yes` and an `appendfsync` other than `always`: `WAITAOF 1 0
    /// 10000` (Redis 7.2+), which returns once every write acknowledged so far is
    /// fsynced to the local append-only file. On Redis 7.0/7.1 (no `WAITAOF`), without
    /// `appendonly`, or under `appendfsync always` (every acknowledged commit is already
    /// fsynced): nothing to do, and an acknowledged commit is exactly as durable as
    /// `appendfsync` makes it ([`RedisKv::durability`]).
    ///
    /// # Errors
    /// `Io` when `WAITAOF` reports that the local fsync did not happen within 10 s;
    /// `ConnectionLost` when the server cannot be reached.
    async fn sync(&self) -> Result<()> {
        let d = &self.inner.durability;
        if d.appendonly != Some(true) || d.appendfsync.as_deref() == Some("always") {
            return Ok(());
        }
        let mut conn = self.conn();
        let r: RedisResult<Vec<i64>> = conn
            .query_at(
                redis::cmd("WAITAOF").arg(1).arg(0).arg(10_000),
                &self.inner.keys.counter,
            )
            .await;
        match r {
            Ok(v) if v.first().copied().unwrap_or(0) >= 1 => Ok(()),
            Ok(_) => Err(Error::new(
                datalayer_core::ErrorKind::Io,
                format!(
                    "redis at {}: WAITAOF: the append-only file was not fsynced within 10 s",
                    self.inner.addr
                ),
            )),
            Err(e)
                if e.to_string()
                    .to_ascii_lowercase()
                    .contains("unknown command") =>
            {
                Ok(())
            }
            Err(e) => Err(map_error(e, &self.inner.addr)),
        }
    }

    /// `Arc<dyn datalayer_outbox::Driver>`: a new [`RedisDriver`](crate::RedisDriver)
    /// (Pub/Sub wake-ups for outbox consumers); `None` for any other type.
    fn extension(&self, ty: std::any::TypeId) -> Option<Box<dyn std::any::Any + Send>> {
        if ty == std::any::TypeId::of::<Arc<dyn datalayer_outbox::Driver>>() {
            let d: Arc<dyn datalayer_outbox::Driver> = Arc::new(self.outbox_driver());
            return Some(Box::new(d));
        }
        None
    }

    /// Nothing to flush: the connections close when the last clone of the store is
    /// dropped.
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}

/// A scanned range as the commit function validates it: the lowest and highest bucket
/// it intersects (as `ZRANGE … BYLEX` bounds) and the commit counter seen with it.
struct ScanRecord {
    lo: Vec<u8>,
    hi: Vec<u8>,
    seen: u64,
}

/// A scan's arguments, as recorded for validation.
#[derive(Clone, Copy)]
struct ScanRange<'a> {
    start: Bound<&'a [u8]>,
    end: Bound<&'a [u8]>,
    limit: usize,
    reverse: bool,
}

struct RedisTxn {
    kv: RedisKv,
    conn: Conn,
    read_only: bool,
    /// Data key → the version read (8 bytes), empty when the key was absent, or
    /// [`PRESENT`].
    reads: BTreeMap<Vec<u8>, Vec<u8>>,
    scans: Vec<ScanRecord>,
    /// Ranges whose key count was read: `ZLEXCOUNT` bounds and the count seen.
    counts: Vec<(Vec<u8>, Vec<u8>, u64)>,
    /// Round trips that served reads (each atomic on the server).
    round_trips: usize,
    /// A read-only transaction's reads of its first round trip, not yet in `reads`:
    /// with no second read they are never validated (one atomic read saw one state),
    /// so they join `reads` only when a second read begins.
    unrecorded: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Splits a stored value into its version and the value.
fn split(stored: Vec<u8>, key: &[u8]) -> Result<(Vec<u8>, Bytes)> {
    if stored.len() < 8 {
        return Err(Error::corrupted(format!(
            "redis: the value of key {key:?} has {} bytes, less than its 8-byte version",
            stored.len()
        )));
    }
    let mut v = stored;
    let value = v.split_off(8);
    Ok((v, value))
}

/// The bucket of `key`: its first byte (the KV family's entry kind, `FORMAT.md`), then
/// the self-delimiting memcomparable string after it (the table name; for index
/// entries `i`/`u` also the index name), at most `cap` bytes; a key that ends first is
/// its own bucket, and a byte other than a string's start (`00`, `01`) ends the bucket
/// after it. Where a bucket stops depends only on bytes inside it, so the map is
/// monotone (`a <= b` implies `bucket(a) <= bucket(b)`): every key of a range
/// `[s, e]` has its bucket in `[bucket(s), bucket(e)]`, which is all range validation
/// needs; for keys of another shape it is still correct, only coarser.
pub(crate) fn bucket(key: &[u8], cap: usize) -> &[u8] {
    let mut pos = 1;
    if let Some(&tag) = key.first() {
        let strings = if tag == b'i' || tag == b'u' { 2 } else { 1 };
        for _ in 0..strings {
            match key.get(pos) {
                Some(0x00) => pos += 1,
                Some(0x01) => {
                    pos += 1;
                    loop {
                        if pos + 9 > key.len() {
                            pos = key.len();
                            break;
                        }
                        let marker = key[pos + 8];
                        pos += 9;
                        if marker != 0x09 {
                            break;
                        }
                    }
                }
                // Another byte ends the bucket, itself included: every byte that
                // decides where a bucket stops is part of it.
                Some(_) => {
                    pos += 1;
                    break;
                }
                None => break,
            }
        }
    }
    &key[..pos.min(cap).min(key.len())]
}

/// `writes` with each key once, its last write (what applying them in order leaves):
/// the commit function applies each kind of write in one call. A write set in
/// ascending key order (the KV family's, from its sorted overlay) is returned as is.
fn last_write_per_key(writes: WriteSet) -> WriteSet {
    if writes.windows(2).all(|w| w[0].0 < w[1].0) {
        return writes;
    }
    let last: BTreeMap<Bytes, Option<Bytes>> = writes.into_iter().collect();
    last.into_iter().collect()
}

/// One reply of a pipeline read as `Vec<Value>`, as `T`.
fn parse<T: redis::FromRedisValue>(v: Value) -> RedisResult<T> {
    redis::from_redis_value(v).map_err(redis::RedisError::from)
}

fn version_u64(v: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&v[..8]);
    u64::from_be_bytes(b)
}

fn lex(b: Bound<&[u8]>, unbounded: &[u8]) -> Vec<u8> {
    match b {
        Bound::Unbounded => unbounded.to_vec(),
        Bound::Included(k) => [b"[".as_slice(), k].concat(),
        Bound::Excluded(k) => [b"(".as_slice(), k].concat(),
    }
}

impl RedisTxn {
    fn err(&self, e: redis::RedisError) -> Error {
        map_error(e, &self.kv.inner.addr)
    }

    /// Records that `dkey` was read with `version` (empty: absent); a second read of
    /// the key that saw another version is a `Conflict` now.
    /// [`PRESENT`] stands for any version: a version read later replaces it, and it
    /// agrees with any version read before. In a read-only transaction's first round
    /// trip the read waits in `unrecorded` ([`RedisTxn::flush_unrecorded`]).
    fn record(&mut self, dkey: Vec<u8>, version: Vec<u8>) -> Result<()> {
        if self.read_only && self.round_trips <= 1 {
            self.unrecorded.push((dkey, version));
            return Ok(());
        }
        self.record_now(dkey, version)
    }

    /// Moves the first round trip's reads into `reads`: called before every further
    /// read and before validation, which need them.
    fn flush_unrecorded(&mut self) -> Result<()> {
        for (dkey, version) in std::mem::take(&mut self.unrecorded) {
            self.record_now(dkey, version)?;
        }
        Ok(())
    }

    fn record_now(&mut self, dkey: Vec<u8>, version: Vec<u8>) -> Result<()> {
        match self.reads.get_mut(&dkey) {
            Some(v) if *v == version => Ok(()),
            Some(v) if v.as_slice() == PRESENT && !version.is_empty() => {
                *v = version;
                Ok(())
            }
            Some(v) if version == PRESENT && !v.is_empty() => Ok(()),
            Some(_) => Err(Error::conflict(
                "redis: a key read twice by the transaction changed in between",
            )),
            None => {
                self.reads.insert(dkey, version);
                Ok(())
            }
        }
    }

    fn bucket_bound(&self, b: Bound<&[u8]>, unbounded: &[u8]) -> Vec<u8> {
        let p = self.kv.inner.opts.bucket_prefix_bytes;
        match b {
            Bound::Unbounded => unbounded.to_vec(),
            Bound::Included(k) | Bound::Excluded(k) => [b"[".as_slice(), bucket(k, p)].concat(),
        }
    }

    fn record_scan(&mut self, lo: Bound<&[u8]>, hi: Bound<&[u8]>, seen: u64) {
        let rec = ScanRecord {
            lo: self.bucket_bound(lo, b"-"),
            hi: self.bucket_bound(hi, b"+"),
            seen,
        };
        self.scans.push(rec);
    }

    /// Records the range a scan read (up to the last key when the limit cut it short):
    /// its key count, when the scan is exact (the caller then records every key seen,
    /// so the count makes sure no key joined the range), else its buckets with the
    /// counter `seen`. Returns whether it is exact: at most `exact_scan_keys` keys and
    /// within the transaction's [`EXACT_READS_BUDGET`].
    fn record_range(&mut self, range: ScanRange<'_>, seen: u64, members: &[Vec<u8>]) -> bool {
        let ScanRange {
            start,
            end,
            limit,
            reverse,
        } = range;
        let full = members.len() == limit;
        let (lo, hi) = match (members.last(), full, reverse) {
            (Some(l), true, false) => (start, Bound::Included(l.as_slice())),
            (Some(l), true, true) => (Bound::Included(l.as_slice()), end),
            _ => (start, end),
        };
        let exact = members.len() <= self.kv.inner.opts.exact_scan_keys
            && self.reads.len() + members.len() <= EXACT_READS_BUDGET;
        if exact {
            let n = members.len() as u64;
            self.counts.push((lex(lo, b"-"), lex(hi, b"+"), n));
        } else {
            self.record_scan(lo, hi, seen);
        }
        exact
    }

    /// Records what a scan of `[start, end)` read (the counter `seen` with it, the
    /// `members` found, in scan order, and their stored `values`) for validation at
    /// commit, and returns the entries. A member whose value is gone or newer than
    /// `seen` is a `Conflict` (only the two-step path can see one).
    #[allow(clippy::too_many_arguments)]
    fn absorb_scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
        seen: u64,
        members: Vec<Vec<u8>>,
        values: Vec<Option<Vec<u8>>>,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        let range = ScanRange {
            start,
            end,
            limit,
            reverse,
        };
        let exact = self.record_range(range, seen, &members);
        let mut out = Vec::with_capacity(members.len());
        for (k, v) in members.into_iter().zip(values) {
            let Some(stored) = v else {
                return Err(Error::conflict(
                    "redis: a key of the scanned range was deleted during the scan",
                ));
            };
            let (ver, value) = split(stored, &k)?;
            if exact {
                let dkey = self.kv.inner.keys.data(&k);
                self.record(dkey, ver)?;
            } else if version_u64(&ver) > seen {
                return Err(Error::conflict(
                    "redis: a key of the scanned range changed during the scan",
                ));
            }
            out.push((k, value));
        }
        Ok(out)
    }

    /// One atomic `MULTI` of `GET {ns}:c` and `ZRANGE {ns}:k min max BYLEX [REV]
    /// LIMIT 0 limit`: the commit counter and the range's members.
    async fn range_members(
        &mut self,
        min: &[u8],
        max: &[u8],
        limit: usize,
        reverse: bool,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut p = redis::pipe();
        p.atomic().cmd("GET").arg(&self.kv.inner.keys.counter);
        let z = p.cmd("ZRANGE").arg(&self.kv.inner.keys.zkeys);
        if reverse {
            z.arg(max).arg(min).arg("BYLEX").arg("REV");
        } else {
            z.arg(min).arg(max).arg("BYLEX");
        }
        let count: i64 = i64::try_from(limit).unwrap_or(-1);
        z.arg("LIMIT").arg(0).arg(count);
        let (seen, members): (Option<u64>, Vec<Vec<u8>>) = p
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        self.round_trips += 1;
        Ok((seen.unwrap_or(0), members))
    }

    /// Whether the last scan by layout of the index of `key` returned more than
    /// [`ONE_TRIP_TARGETS`] entries; remembers `now` (when given) as its new size.
    fn many_expected(&self, key: &[u8], now: Option<usize>) -> bool {
        let b = bucket(key, usize::MAX);
        let mut sizes = self
            .kv
            .inner
            .scan_sizes
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let before = sizes.get(b).copied();
        if let Some(n) = now.filter(|&n| before != Some(n)) {
            // One entry per index ever scanned: bounded by the schema.
            sizes.insert(b.to_vec(), n);
        }
        before.is_some_and(|n| n > ONE_TRIP_TARGETS)
    }

    /// The second round trip of an index scan with a layout: `members` (index
    /// entries, read with the counter `seen`) → their targets `data prefix ‖
    /// target_prefix ‖ value` ([`EntryLayout::value_of`]), with one atomic `MULTI` of
    /// `MGET`s and `GET {ns}:c`. An unchanged counter means no commit came between the
    /// two trips: both read one state, as one atomic call would (a read-only
    /// transaction served by them commits without validation). Otherwise a target
    /// newer than `seen` is a `Conflict` at once, as in [`RedisTxn::absorb_scan`].
    /// Entries are recorded as present (`+`: their value is their key's tail, so only
    /// their existence can change) and the range as `absorb_scan` records it.
    async fn targets_by_layout(
        &mut self,
        range: ScanRange<'_>,
        seen: u64,
        members: Vec<Vec<u8>>,
        target_prefix: &[u8],
        layout: &EntryLayout,
    ) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
        let data_prefix = self.kv.inner.keys.data_prefix.clone();
        let mut pks = Vec::with_capacity(members.len());
        for m in &members {
            let pk = layout.value_of(m).ok_or_else(|| {
                Error::corrupted(format!(
                    "redis: key {m:?} in an index range is not an entry of the index"
                ))
            })?;
            pks.push(pk.to_vec());
        }
        let tkeys: Vec<Vec<u8>> = pks
            .iter()
            .map(|pk| [data_prefix.as_slice(), target_prefix, pk].concat())
            .collect();
        let mut p = Pipeline::with_capacity(tkeys.len() / MGET_CHUNK + 2);
        p.atomic();
        for c in tkeys.chunks(MGET_CHUNK) {
            p.cmd("MGET").arg(c);
        }
        p.cmd("GET").arg(&self.kv.inner.keys.counter);
        let mut reply: Vec<Value> = p
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        let now: Option<u64> = match reply.pop() {
            Some(v) => parse(v).map_err(|e| self.err(e))?,
            None => None,
        };
        let mut targets: Vec<Option<Vec<u8>>> = Vec::with_capacity(tkeys.len());
        for v in reply {
            let chunk: Vec<Option<Vec<u8>>> = parse(v).map_err(|e| self.err(e))?;
            targets.extend(chunk);
        }
        let one_state = now.unwrap_or(0) == seen;
        if !one_state {
            self.round_trips += 1;
        }
        if self.record_range(range, seen, &members) {
            for m in &members {
                let dkey = self.kv.inner.keys.data(m);
                self.record(dkey, PRESENT.to_vec())?;
            }
        }
        let mut out = Vec::with_capacity(members.len());
        for ((member, pk), (tkey, t)) in members
            .into_iter()
            .zip(pks)
            .zip(tkeys.into_iter().zip(targets))
        {
            let t = match t {
                None => {
                    self.record(tkey, Vec::new())?;
                    None
                }
                Some(stored) => {
                    let (ver, value) = split(stored, &tkey)?;
                    if !one_state && version_u64(&ver) > seen {
                        return Err(Error::conflict(
                            "redis: a row of the scanned index range changed during the scan",
                        ));
                    }
                    self.record(tkey, ver)?;
                    Some(value)
                }
            };
            out.push((member, pk, t));
        }
        Ok(out)
    }

    /// `MGET`s of the data keys `dkeys`, chunked, `pipeline_depth` commands per atomic
    /// round trip; `None` for a missing key.
    async fn mget(&mut self, dkeys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(dkeys.len());
        let per_trip = MGET_CHUNK * self.kv.inner.opts.pipeline_depth;
        for trip in dkeys.chunks(per_trip) {
            let chunks: Vec<&[Vec<u8>]> = trip.chunks(MGET_CHUNK).collect();
            if chunks.len() == 1 {
                let v: Vec<Option<Vec<u8>>> = redis::cmd("MGET")
                    .arg(chunks[0])
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| self.err(e))?;
                out.extend(v);
            } else {
                let mut p = Pipeline::with_capacity(chunks.len());
                p.atomic();
                for c in &chunks {
                    p.cmd("MGET").arg(*c);
                }
                let v: Vec<Vec<Option<Vec<u8>>>> = p
                    .query_async(&mut self.conn)
                    .await
                    .map_err(|e| self.err(e))?;
                out.extend(v.into_iter().flatten());
            }
            self.round_trips += 1;
        }
        Ok(out)
    }

    /// An `FCALL` (or `FCALL_RO`) of `function` with this transaction's reads and
    /// `writes`; loads the library again once if the server has lost it.
    async fn fcall(&mut self, function: &str, writes: &WriteSet) -> RedisResult<Value> {
        let inner = &self.kv.inner;
        let k = &inner.keys;
        let mut cmd = Cmd::new();
        cmd.arg(if function == VALIDATE_FN {
            "FCALL_RO"
        } else {
            "FCALL"
        })
        .arg(function)
        .arg(4 + self.reads.len() + writes.len())
        .arg(&k.counter)
        .arg(&k.zkeys)
        .arg(&k.zbuckets)
        .arg(&k.versions);
        for dk in self.reads.keys() {
            cmd.arg(dk);
        }
        for (key, _) in writes {
            cmd.arg(k.data(key));
        }
        let cap = inner.opts.bucket_prefix_bytes;
        let buckets: std::collections::BTreeSet<&[u8]> =
            writes.iter().map(|(k, _)| bucket(k, cap)).collect();
        cmd.arg(buckets.len())
            .arg(self.reads.len())
            .arg(self.scans.len())
            .arg(writes.len())
            .arg(k.data_prefix.len())
            .arg(
                if writes
                    .iter()
                    .any(|(key, v)| v.is_some() && key.starts_with(&k.events_prefix))
                {
                    k.channel.as_str()
                } else {
                    ""
                },
            )
            .arg(self.counts.len());
        for v in self.reads.values() {
            cmd.arg(v);
        }
        for s in &self.scans {
            cmd.arg(&s.lo).arg(&s.hi).arg(s.seen);
        }
        for (min, max, n) in &self.counts {
            cmd.arg(min).arg(max).arg(*n);
        }
        for (_, v) in writes {
            match v {
                Some(v) => {
                    let mut w = Vec::with_capacity(v.len() + 1);
                    w.push(b'p');
                    w.extend_from_slice(v);
                    cmd.arg(w);
                }
                None => {
                    cmd.arg("d");
                }
            }
        }
        for b in &buckets {
            cmd.arg(*b);
        }
        self.call(&cmd).await
    }

    /// Sends `cmd` (an `FCALL` of the library); loads the library again once if the
    /// server has lost it (a restart without persistence, `FUNCTION FLUSH`) and
    /// resends.
    async fn call<T: redis::FromRedisValue>(&mut self, cmd: &Cmd) -> RedisResult<T> {
        match cmd.query_async::<T>(&mut self.conn).await {
            Err(e) if is_function_missing(&e) => {
                load_library(&mut self.conn, &self.kv.inner.addr)
                    .await
                    .map_err(|le| {
                        redis::RedisError::from((
                            redis::ErrorKind::Client,
                            "reloading the function library failed",
                            le.to_string(),
                        ))
                    })?;
                cmd.query_async::<T>(&mut self.conn).await
            }
            r => r,
        }
    }

    /// One atomic `FCALL_RO` of [`SCAN_FN`]: the commit counter, up to `limit`
    /// members of the range with their stored values and, with a `target_prefix`,
    /// the stored values their values point at. With more members than
    /// `values_up_to`, values and targets come back empty (the caller reads them).
    #[allow(clippy::type_complexity, clippy::too_many_arguments)]
    async fn scan_call(
        &mut self,
        min: &[u8],
        max: &[u8],
        limit: usize,
        reverse: bool,
        target_prefix: &[u8],
        values_up_to: Option<usize>,
    ) -> Result<(
        u64,
        Vec<Vec<u8>>,
        Vec<Option<Vec<u8>>>,
        Vec<Option<Vec<u8>>>,
    )> {
        let k = &self.kv.inner.keys;
        let mut cmd = Cmd::new();
        cmd.arg("FCALL_RO")
            .arg(SCAN_FN)
            .arg(2)
            .arg(&k.counter)
            .arg(&k.zkeys)
            .arg(min)
            .arg(max)
            .arg(limit)
            .arg(if reverse { "1" } else { "0" })
            .arg(&k.data_prefix)
            .arg(target_prefix);
        if let Some(n) = values_up_to {
            cmd.arg(n);
        }
        let r = self.call(&cmd).await.map_err(|e| self.err(e))?;
        self.round_trips += 1;
        Ok(r)
    }
}

#[async_trait]
impl KvTxn for RedisTxn {
    async fn get(&mut self, key: &[u8]) -> Result<Option<Bytes>> {
        self.flush_unrecorded()?;
        let dkey = self.kv.inner.keys.data(key);
        let v: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&dkey)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        self.round_trips += 1;
        match v {
            None => {
                self.record(dkey, Vec::new())?;
                Ok(None)
            }
            Some(stored) => {
                let (ver, value) = split(stored, key)?;
                self.record(dkey, ver)?;
                Ok(Some(value))
            }
        }
    }

    /// One `MGET` per 512 keys, at most `pipeline_depth` of them per atomic round trip.
    async fn batch_get(&mut self, keys: &[Bytes]) -> Result<Vec<Option<Bytes>>> {
        self.flush_unrecorded()?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let dkeys: Vec<Vec<u8>> = keys.iter().map(|k| self.kv.inner.keys.data(k)).collect();
        let got = self.mget(&dkeys).await?;
        let mut out = Vec::with_capacity(keys.len());
        for ((dkey, key), v) in dkeys.into_iter().zip(keys).zip(got) {
            match v {
                None => {
                    self.record(dkey, Vec::new())?;
                    out.push(None);
                }
                Some(stored) => {
                    let (ver, value) = split(stored, key)?;
                    self.record(dkey, ver)?;
                    out.push(Some(value));
                }
            }
        }
        Ok(out)
    }

    /// Up to [`ONE_TRIP_SCAN`] entries: one atomic `FCALL_RO` of the library's scan
    /// function (counter, range and values). More: a `MULTI` of `GET {ns}:c` and
    /// `ZRANGE {ns}:k … BYLEX [REV] LIMIT 0 n`, then the values with `MGET`; a key
    /// whose value is gone or newer than the counter read fails the scan with
    /// `Conflict` at once (the commit could not validate).
    async fn scan(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
    ) -> Result<Vec<(Bytes, Bytes)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.flush_unrecorded()?;
        let (min, max) = (lex(start, b"-"), lex(end, b"+"));
        if limit <= ONE_TRIP_SCAN {
            let (seen, members, values, _) = self
                .scan_call(&min, &max, limit, reverse, b"", None)
                .await?;
            return self.absorb_scan(start, end, limit, reverse, seen, members, values);
        }
        let (seen, members) = self.range_members(&min, &max, limit, reverse).await?;
        let dkeys: Vec<Vec<u8>> = members.iter().map(|k| self.kv.inner.keys.data(k)).collect();
        let values = if dkeys.is_empty() {
            Vec::new()
        } else {
            self.mget(&dkeys).await?
        };
        self.absorb_scan(start, end, limit, reverse, seen, members, values)
    }

    /// Up to [`ONE_TRIP_SCAN`] entries with a non-empty `target_prefix`: range, values
    /// and targets in one atomic `FCALL_RO` of the library's scan function (so that a
    /// read-only transaction served by it commits without validation). With a
    /// `layout` and more than [`ONE_TRIP_TARGETS`] entries, the function returns the
    /// range only and [`RedisTxn::targets_by_layout`] reads the targets. Otherwise a
    /// scan and an `MGET` of the targets.
    async fn scan_with_targets(
        &mut self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        limit: usize,
        reverse: bool,
        target_prefix: &[u8],
        layout: Option<&EntryLayout>,
    ) -> Result<Vec<(Bytes, Bytes, Option<Bytes>)>> {
        self.flush_unrecorded()?;
        if limit == 0 || limit > ONE_TRIP_SCAN || target_prefix.is_empty() {
            let entries = self.scan(start, end, limit, reverse).await?;
            return datalayer_kv::join_targets(self, entries, target_prefix).await;
        }
        let (min, max) = (lex(start, b"-"), lex(end, b"+"));
        let range = ScanRange {
            start,
            end,
            limit,
            reverse,
        };
        let index_key = match (start, end) {
            (Bound::Included(k) | Bound::Excluded(k), _)
            | (_, Bound::Included(k) | Bound::Excluded(k)) => Some(k),
            _ => None,
        };
        // Only a bounded range has an index to remember sizes by.
        let by_layout = layout.zip(index_key);
        if let Some((layout, key)) = by_layout
            && limit > ONE_TRIP_TARGETS
            && self.many_expected(key, None)
        {
            let (seen, members) = self.range_members(&min, &max, limit, reverse).await?;
            self.many_expected(key, Some(members.len()));
            return self
                .targets_by_layout(range, seen, members, target_prefix, layout)
                .await;
        }
        let values_up_to = by_layout.map(|_| ONE_TRIP_TARGETS);
        let (seen, members, values, targets) = self
            .scan_call(&min, &max, limit, reverse, target_prefix, values_up_to)
            .await?;
        if let Some((layout, key)) = by_layout {
            self.many_expected(key, Some(members.len()));
            if values.len() < members.len() {
                return self
                    .targets_by_layout(range, seen, members, target_prefix, layout)
                    .await;
            }
        }
        let entries = self.absorb_scan(start, end, limit, reverse, seen, members, values)?;
        let mut out = Vec::with_capacity(entries.len());
        for ((k, v), t) in entries.into_iter().zip(targets) {
            let dkey = [self.kv.inner.keys.data_prefix.as_slice(), target_prefix, &v].concat();
            let t = match t {
                None => {
                    self.record(dkey, Vec::new())?;
                    None
                }
                Some(stored) => {
                    let (ver, value) = split(stored, &dkey)?;
                    self.record(dkey, ver)?;
                    Some(value)
                }
            };
            out.push((k, v, t));
        }
        Ok(out)
    }

    /// `ZLEXCOUNT`: one round trip, no values copied; the commit checks that the count
    /// is unchanged.
    async fn count(&mut self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Result<u64> {
        self.flush_unrecorded()?;
        let (min, max) = (lex(start, b"-"), lex(end, b"+"));
        let n: u64 = redis::cmd("ZLEXCOUNT")
            .arg(&self.kv.inner.keys.zkeys)
            .arg(&min)
            .arg(&max)
            .query_async(&mut self.conn)
            .await
            .map_err(|e| self.err(e))?;
        self.round_trips += 1;
        self.counts.push((min, max, n));
        Ok(n)
    }

    /// Recorded as a read that found `key` absent (validated by the commit function
    /// like any read), without a round trip; false in a read-only transaction and for
    /// a key already read as present.
    fn assume_absent(&mut self, key: &[u8]) -> bool {
        if self.read_only {
            return false;
        }
        let dkey = self.kv.inner.keys.data(key);
        match self.reads.get(&dkey) {
            Some(v) => v.is_empty(),
            None => {
                self.reads.insert(dkey, Vec::new());
                true
            }
        }
    }

    async fn commit(mut self: Box<Self>, writes: WriteSet) -> Result<()> {
        if self.read_only && !writes.is_empty() {
            return Err(Error::invalid_input("write in a read-only transaction"));
        }
        let writes = last_write_per_key(writes);
        let opts = &self.kv.inner.opts;
        self.kv.kv_capability().check_write_set("redis", &writes)?;
        if let Some((k, v)) = writes.iter().find_map(|(k, v)| {
            v.as_ref()
                .filter(|v| v.len() > opts.max_value_bytes)
                .map(|v| (k, v))
        }) {
            return Err(Error::invalid_input(format!(
                "redis: a value of {} bytes (key {k:?}) exceeds max_value_bytes ({} bytes)",
                v.len(),
                opts.max_value_bytes
            )));
        }
        let entries = writes.len() + self.reads.len() + self.scans.len() + self.counts.len();
        if entries > MAX_TXN_ENTRIES {
            return Err(Error::invalid_input(format!(
                "redis: a transaction of {entries} reads and writes exceeds the limit of \
                 {MAX_TXN_ENTRIES} per commit; split the transaction"
            )));
        }
        if writes.is_empty() {
            // Nothing read, or every read served by one atomic round trip: the
            // transaction saw one state at one point of the server's serial order and
            // is serialized there (the KvTxn contract's exception); nothing to check.
            if self.round_trips <= 1 {
                return Ok(());
            }
            self.flush_unrecorded()?;
            return self
                .fcall(VALIDATE_FN, &writes)
                .await
                .map(|_| ())
                .map_err(|e| self.err(e));
        }
        match self.fcall(COMMIT_FN, &writes).await {
            Ok(_) => Ok(()),
            // A reply of the server (READONLY, BUSY, OOM, a failed validation) says the
            // function did not write; only a broken connection or a timeout leaves
            // the outcome unknown.
            Err(e) if e.code().is_some() => Err(self.err(e)),
            Err(e) => Err(self.err(e).at_commit()),
        }
    }

    async fn rollback(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{bucket, last_write_per_key};

    /// Keys made of the bytes the bucket parser cares about.
    fn keys() -> Vec<Vec<u8>> {
        let alphabet = [0x00u8, 0x01, 0x09, b'a', b'i', b'r', 0xff];
        let mut out = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..4 {
            let mut next = Vec::new();
            for k in &frontier {
                for &b in &alphabet {
                    let mut k2: Vec<u8> = k.clone();
                    k2.push(b);
                    next.push(k2);
                }
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        // Real shapes: rows and index entries of short and long table names.
        for t in ["users", "_dl_outbox_groups", "abcdefgh"] {
            let mc = memcomparable_str(t);
            for tag in [b'r', b'i', b'u', b'h'] {
                for suffix in [&b""[..], &[0x01, 0x80, 0, 1][..], &[0xff; 12][..]] {
                    let mut k = vec![tag];
                    k.extend_from_slice(&mc);
                    if tag == b'i' || tag == b'u' {
                        k.extend_from_slice(&memcomparable_str("by_name"));
                    }
                    k.extend_from_slice(suffix);
                    out.push(k);
                }
            }
        }
        out
    }

    fn memcomparable_str(s: &str) -> Vec<u8> {
        let mut out = vec![0x01];
        let b = s.as_bytes();
        let groups: Vec<&[u8]> = b.chunks(8).collect();
        for (i, g) in groups.iter().enumerate() {
            let mut padded = g.to_vec();
            padded.resize(8, 0);
            out.extend_from_slice(&padded);
            out.push(if i + 1 < groups.len() {
                9
            } else {
                g.len() as u8
            });
        }
        out
    }

    #[test]
    fn buckets_are_monotone_prefixes() {
        let mut ks = keys();
        ks.sort();
        for cap in [1, 3, 11, 64] {
            for w in ks.windows(2) {
                let (a, b) = (bucket(&w[0], cap), bucket(&w[1], cap));
                assert!(
                    a <= b,
                    "cap {cap}: {:?} <= {:?} but buckets {a:?} > {b:?}",
                    w[0],
                    w[1]
                );
            }
            for k in &ks {
                assert!(k.starts_with(bucket(k, cap)) && bucket(k, cap).len() <= cap);
            }
        }
    }

    #[test]
    fn a_write_set_keeps_each_keys_last_write() {
        let w =
            |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        let sorted = vec![w("a", Some("1")), w("b", None)];
        assert_eq!(last_write_per_key(sorted.clone()), sorted);
        let mixed = vec![
            w("b", Some("1")),
            w("a", Some("2")),
            w("b", None),
            w("a", Some("3")),
        ];
        assert_eq!(
            last_write_per_key(mixed),
            vec![w("a", Some("3")), w("b", None)]
        );
    }

    #[test]
    fn a_bucket_is_a_table_or_an_index() {
        let users = memcomparable_str("users");
        let mut row = vec![b'r'];
        row.extend_from_slice(&users);
        let table = row.clone();
        row.extend_from_slice(&[0x01, 0x80, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(bucket(&row, 64), &table[..]);
        let mut idx = vec![b'i'];
        idx.extend_from_slice(&users);
        idx.extend_from_slice(&memcomparable_str("by_email"));
        let index = idx.clone();
        idx.extend_from_slice(&[0x01, 0x01, b'x', 0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(bucket(&idx, 64), &index[..]);
        // Tables that share their first 8 bytes get different buckets.
        let mut a = vec![b'r'];
        a.extend_from_slice(&memcomparable_str("_dl_outbox_groups"));
        let mut b = vec![b'r'];
        b.extend_from_slice(&memcomparable_str("_dl_outbox_members"));
        assert_ne!(bucket(&a, 64), bucket(&b, 64));
    }
}
