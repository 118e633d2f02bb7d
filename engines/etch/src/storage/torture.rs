//! The store's torture tests on [`CrashFs`] (cargo feature `crashfs`), shared by the
//! crate's own tests (a few workloads) and the `datalayer-torture` binary (hundreds).
//!
//! - [`power_loss`]: SQLite's crash-VFS test and redb's crash backend, at every sync
//!   point. Seeded workloads of concurrent committers (group commit) run on a
//!   [`CrashFs`] that records the file system at the start of every file and directory
//!   fsync; at each one, the power is cut with every [`Damage`] variant, the store is
//!   reopened and checked: it opens; its state is exactly the state after some commit
//!   `k` with (commits acknowledged by then) ≤ `k` ≤ (commits appended); it accepts a
//!   new commit that survives a clean restart. [`Damage`] only touches bytes that were
//!   never fsynced, so any `Corrupted` is a false alarm.
//! - [`io_faults`]: fail the N-th I/O operation of a workload, for every N, with EIO or
//!   ENOSPC (a failed fsync drops the file's unsynced bytes, later fsyncs succeed),
//!   through commits, a checkpoint and `close`; then cut the power. No acknowledged
//!   commit may be missing, and once a commit has failed none may succeed.
//!
//! A commit's writes depend only on its seq (and the workload's seed), so the expected
//! state after commit `k` is known whatever order concurrent committers ran in.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::crashfs::{CrashFs, Damage};
use super::{FlushPolicy, Store, StoreError, StoreOptions};

type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;
type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// The writes of commit `seq` in workload `w`: a few puts of varying size, a delete
/// every fourth commit, and `last = seq` (so a partial commit cannot look whole).
fn writes_for(w: u64, seq: u64) -> Writes {
    // Workload numbers come from seeds (any u64): keep the arithmetic small.
    let w = w % 1_000_003;
    let mut out = Vec::new();
    // Up to ~3 KiB per value: records span 4 KiB pages, so page-level damage can
    // hit one record and spare a later one.
    let len = ((seq * 397).wrapping_add(w.wrapping_mul(11)) % 3_000) as usize;
    for j in 0..(1 + seq % 3) {
        let key = format!("k{:02}", (seq * 5 + j * 7).wrapping_add(w) % 23).into_bytes();
        let mut value = format!("{w}:{seq}:{j}:").into_bytes();
        value.resize(len + value.len(), b'a' + (seq % 26) as u8);
        out.push((key, Some(value)));
    }
    if seq.is_multiple_of(4) {
        out.push((format!("k{:02}", (seq * 3) % 23).into_bytes(), None));
    }
    out.push((b"last".to_vec(), Some(seq.to_be_bytes().to_vec())));
    out
}

/// `states[k]` = the state after commits `1..=k` of workload `w`.
fn expected_states(w: u64, commits: u64) -> Vec<State> {
    let mut states = vec![State::new()];
    for seq in 1..=commits {
        let mut s = states.last().cloned().unwrap_or_default();
        for (k, v) in writes_for(w, seq) {
            match v {
                Some(v) => s.insert(k, v),
                None => s.remove(&k),
            };
        }
        states.push(s);
    }
    states
}

fn contents(store: &Store) -> (u64, State) {
    let snap = store.snapshot();
    let state = snap.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
    (snap.seq(), state)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Figures of a [`power_loss`] run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PowerLossReport {
    /// Workloads run.
    pub workloads: u64,
    /// Sync points at which the power was cut (summed over workloads).
    pub sync_points: u64,
    /// Recoveries checked (sync points × damage variants, plus the final states).
    pub recoveries: u64,
    /// Recoveries that lost an acknowledged commit.
    pub lost: u64,
    /// Recoveries whose state was not the state after any single commit.
    pub partial: u64,
    /// Recoveries that reported `Corrupted` (no durable byte is ever damaged).
    pub false_corrupted: u64,
    /// Other failures: a refused open, a phantom commit, a store that would not take
    /// or keep a new commit.
    pub other: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl PowerLossReport {
    /// True when no invariant broke.
    pub fn ok(&self) -> bool {
        self.lost + self.partial + self.false_corrupted + self.other == 0
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }
}

impl std::fmt::Display for PowerLossReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} workloads x {} sync points x {} variants ({} recoveries): {} lost, {} partial, \
             {} false Corrupted, {} other",
            self.workloads,
            self.sync_points,
            Damage::ALL.len(),
            self.recoveries,
            self.lost,
            self.partial,
            self.false_corrupted,
            self.other
        )
    }
}

/// Runs `workloads` seeded power-loss workloads of `commits` commits each (see the
/// module docs) and returns the figures; never panics on a broken invariant.
pub fn power_loss(workloads: u64, commits: u64, seed: u64) -> PowerLossReport {
    let rt = runtime();
    let mut report = PowerLossReport::default();
    for i in 0..workloads {
        let w = seed.wrapping_mul(1_000_003).wrapping_add(i);
        // Small segments in every other workload: checkpoints and segment switches.
        let opts = StoreOptions {
            flush: FlushPolicy::EveryCommit,
            compact_after_bytes: if i % 2 == 0 { 40_000 } else { 64 << 20 },
            ..StoreOptions::default()
        };
        report.workloads += 1;
        if let Err(e) = power_loss_workload(&rt, w, commits, &opts, &mut report) {
            report.other += 1;
            report.fail(format!("workload {w}: {e}"));
        }
    }
    report
}

fn power_loss_workload(
    rt: &tokio::runtime::Runtime,
    w: u64,
    commits: u64,
    opts: &StoreOptions,
    report: &mut PowerLossReport,
) -> Result<(), StoreError> {
    let fs = CrashFs::new();
    // Slow fsyncs in some workloads: more records wait for each one (group commit).
    if !w.is_multiple_of(3) {
        fs.set_sync_delay(std::time::Duration::from_micros(300 * (w % 3)));
    }
    let acked = Arc::new(AtomicU64::new(0));
    let store = Store::open_dir(fs.dir(), opts.clone())?;
    {
        let acked = acked.clone();
        fs.record_sync_points(move || acked.load(Ordering::SeqCst));
    }
    let next = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (store, acked, next) = (store.clone(), acked.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let txn = store.begin_write().await;
                    let seq = txn.base().seq() + 1;
                    if seq > commits {
                        return Ok::<(), StoreError>(());
                    }
                    next.fetch_max(seq, Ordering::SeqCst);
                    let got = txn.commit(writes_for(w, seq)).await?;
                    acked.fetch_max(got, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))??;
        }
        Ok::<(), StoreError>(())
    })?;
    store.checkpoint()?;
    store.close()?;
    drop(store);
    let states = expected_states(w, commits);
    let mut rng = StdRng::seed_from_u64(w);
    let mut points = fs.sync_points();
    points.push((commits, fs.clone()));
    for (must, image) in points {
        report.sync_points += 1;
        for damage in Damage::ALL {
            report.recoveries += 1;
            let crashed = image.power_loss(damage, &mut rng);
            check_recovery(&crashed, opts, must, &states, report, w, damage);
        }
    }
    report.sync_points -= 1; // the final state is not a sync point
    Ok(())
}

fn check_recovery(
    crashed: &CrashFs,
    opts: &StoreOptions,
    must: u64,
    states: &[State],
    report: &mut PowerLossReport,
    w: u64,
    damage: Damage,
) {
    let at = format!("workload {w}, {damage:?}, {must} acknowledged");
    let store = match Store::open_dir(crashed.dir(), opts.clone()) {
        Ok(s) => s,
        Err(StoreError::Corrupted {
            file,
            offset,
            reason,
        }) => {
            report.false_corrupted += 1;
            report.fail(format!(
                "{at}: Corrupted {}@{offset}: {reason}",
                file.display()
            ));
            return;
        }
        Err(e) => {
            report.other += 1;
            report.fail(format!("{at}: open failed: {e}"));
            return;
        }
    };
    let (k, state) = contents(&store);
    if k < must {
        report.lost += 1;
        report.fail(format!("{at}: recovered seq {k}"));
        return;
    }
    match states.get(k as usize) {
        None => {
            report.other += 1;
            report.fail(format!("{at}: recovered seq {k} was never appended"));
            return;
        }
        Some(want) if *want != state => {
            report.partial += 1;
            report.fail(format!("{at}: state at seq {k} is not commit {k}'s"));
            return;
        }
        Some(_) => {}
    }
    // The recovered store takes a new commit, which survives a restart.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let extra = vec![(b"extra".to_vec(), Some(k.to_be_bytes().to_vec()))];
    let committed = rt.block_on(async { store.begin_write().await.commit(extra).await });
    let closed = store.close();
    drop(store);
    let reopened = committed
        .map_err(|e| format!("commit after recovery: {e}"))
        .and_then(|seq| closed.map(|()| seq).map_err(|e| format!("close: {e}")))
        .and_then(|seq| {
            let again = Store::open_dir(crashed.restart().dir(), opts.clone())
                .map_err(|e| format!("reopen after a commit: {e}"))?;
            let snap = again.snapshot();
            let kept = snap.get(b"extra") == Some(&k.to_be_bytes()[..]);
            if snap.seq() == seq && kept {
                Ok(())
            } else {
                Err(format!("after reopen seq {} (want {seq})", snap.seq()))
            }
        });
    if let Err(e) = reopened {
        report.other += 1;
        report.fail(format!("{at}: {e}"));
    }
}

/// Figures of an [`io_faults`] run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IoFaultReport {
    /// Runs (one per failed operation number and error kind).
    pub runs: u64,
    /// Runs in which the injected failure happened.
    pub failures_injected: u64,
    /// Acknowledged commits missing after the power loss (summed over runs).
    pub missing: u64,
    /// Commits that returned `Ok` after an earlier commit of the same run failed.
    pub ok_after_failure: u64,
    /// Runs whose store would not reopen, or reopened in a state no commit produced.
    pub bad_recoveries: u64,
    /// The first few failures, described.
    pub failures: Vec<String>,
}

impl IoFaultReport {
    /// True when no invariant broke.
    pub fn ok(&self) -> bool {
        self.missing + self.ok_after_failure + self.bad_recoveries == 0
    }

    fn fail(&mut self, what: String) {
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }
}

impl std::fmt::Display for IoFaultReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} runs ({} with the fault hit): {} acknowledged commits missing after kill -9 or power \
             loss; {} Ok after the first failure; {} bad recoveries",
            self.runs,
            self.failures_injected,
            self.missing,
            self.ok_after_failure,
            self.bad_recoveries
        )
    }
}

/// Fails each I/O operation of sequential workloads of `commits` commits (with a
/// checkpoint at a different commit in each workload and a `close` at the end), for
/// every operation number up to the workload's count plus a few, once with EIO and
/// once with ENOSPC; then checks the store reopened after a process crash and after a
/// power loss (nothing unsynced kept).
pub fn io_faults(workloads: u64, commits: u64, seed: u64) -> IoFaultReport {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let opts = StoreOptions {
        flush: FlushPolicy::EveryCommit,
        compact_after_bytes: 64 << 20,
        ..StoreOptions::default()
    };
    let mut report = IoFaultReport::default();
    for i in 0..workloads {
        let w = seed.wrapping_mul(1_000_003).wrapping_add(i);
        let checkpoint_at = (i * 7 + commits / 2) % commits.max(1);
        let states = expected_states(w, commits);
        // Count the operations of a fault-free run.
        let total = {
            let fs = CrashFs::new();
            let _ = io_fault_run(&rt, &fs, &opts, w, commits, checkpoint_at);
            fs.ops() + 4
        };
        for n in 1..=total {
            for kind in [ErrorKind::Other, ErrorKind::StorageFull] {
                report.runs += 1;
                let at = format!("workload {w}, op {n} ({kind:?})");
                let fs = CrashFs::new();
                fs.fail_op(n, kind);
                let (acked, ok_after) = io_fault_run(&rt, &fs, &opts, w, commits, checkpoint_at);
                if !fs.failed_ops().is_empty() {
                    report.failures_injected += 1;
                }
                report.ok_after_failure += ok_after;
                if ok_after > 0 {
                    report.fail(format!("{at}: {ok_after} Ok after a failure"));
                }
                let power_loss = fs.power_loss(Damage::NoneKept, &mut StdRng::seed_from_u64(n));
                for (how, image) in [("kill -9", fs.kill()), ("power loss", power_loss)] {
                    check_io_recovery(&image, &opts, acked, &states, &mut report, &at, how);
                }
            }
        }
    }
    report
}

fn check_io_recovery(
    image: &CrashFs,
    opts: &StoreOptions,
    acked: u64,
    states: &[State],
    report: &mut IoFaultReport,
    at: &str,
    how: &str,
) {
    match Store::open_dir(image.dir(), opts.clone()) {
        Ok(store) => {
            let (k, state) = contents(&store);
            if k < acked {
                report.missing += acked - k;
                report.fail(format!("{at}, {how}: acked {acked}, recovered {k}"));
            }
            if states.get(k as usize) != Some(&state) {
                report.bad_recoveries += 1;
                report.fail(format!("{at}, {how}: state at {k} is wrong"));
            }
        }
        Err(e) => {
            report.bad_recoveries += 1;
            report.fail(format!("{at}, {how}: reopen failed: {e}"));
        }
    }
}

/// One sequential run; returns (highest acknowledged seq, commits Ok after a failed
/// one).
fn io_fault_run(
    rt: &tokio::runtime::Runtime,
    fs: &CrashFs,
    opts: &StoreOptions,
    w: u64,
    commits: u64,
    checkpoint_at: u64,
) -> (u64, u64) {
    let Ok(store) = Store::open_dir(fs.dir(), opts.clone()) else {
        return (0, 0);
    };
    let mut acked = 0;
    let mut failed = false;
    let mut ok_after = 0;
    let mut rng = StdRng::seed_from_u64(w);
    for i in 0..commits {
        if i == checkpoint_at {
            let _ = store.checkpoint();
        }
        let res = rt.block_on(async {
            let txn = store.begin_write().await;
            let seq = txn.base().seq() + 1;
            txn.commit(writes_for(w, seq)).await
        });
        match res {
            Ok(seq) => {
                acked = seq;
                if failed {
                    ok_after += 1;
                }
            }
            Err(_) => failed = true,
        }
        if rng.random_bool(0.1) {
            std::thread::yield_now();
        }
    }
    let _ = store.close();
    (acked, ok_after)
}

// ---------------------------------------------------------------------------------
// Fuzzing: the store's readers of untrusted bytes (WAL records, snapshot files,
// recovery over a whole directory) must return an error, never panic or hang.

/// What [`fuzz_one`] feeds the bytes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FuzzTarget {
    /// The bytes are the only WAL segment, `wal-…1.log` (record decoding, the torn-tail
    /// scan, replay).
    Wal,
    /// The bytes are the only snapshot, `snap-…N.etch` (snapshot parsing).
    Snapshot,
    /// The bytes are a whole directory (see [`split_files`]): recovery over any mix of
    /// snapshots, segments and leftovers.
    Recovery,
}

impl FuzzTarget {
    /// Every target.
    pub const ALL: [FuzzTarget; 3] = [FuzzTarget::Wal, FuzzTarget::Snapshot, FuzzTarget::Recovery];
}

/// Splits fuzz input into at most 8 files: repeated `kind: u8, seq: u8, len: u16 LE,
/// data[len]` (a short last file takes what is left). `kind % 3`: 0 a WAL segment
/// `wal-<seq>.log`, 1 a snapshot `snap-<seq>.etch`, 2 a leftover `snap-<seq>.etch.tmp`.
pub fn split_files(mut data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    while data.len() >= 4 && out.len() < 8 {
        let seq = u64::from(data[1]);
        let len = (u16::from_le_bytes([data[2], data[3]]) as usize).min(data.len() - 4);
        let name = match data[0] % 3 {
            0 => super::store::wal_name(seq),
            1 => super::store::snap_name(seq),
            _ => format!("{}.tmp", super::store::snap_name(seq)),
        };
        out.push((name, data[4..4 + len].to_vec()));
        data = &data[4 + len..];
    }
    out
}

/// Opens a store on `files` and, if it opens, reads it whole and closes it. Returns the
/// recovered seq or the typed error; a panic is a bug (the fuzzers report it).
///
/// # Errors
/// Whatever [`Store::open_dir`] or [`Store::close`] returns for these files.
pub fn open_files(files: Vec<(String, Vec<u8>)>) -> Result<u64, StoreError> {
    let fs = CrashFs::with_files(files);
    let store = Store::open_dir(fs.dir(), StoreOptions::default())?;
    let snap = store.snapshot();
    let _entries = snap.iter().count();
    store.close()?;
    Ok(snap.seq())
}

/// One fuzz input for `target` (the entry point of the `fuzz/` cargo-fuzz targets and
/// of [`fuzz`]). Returns the result of [`open_files`].
///
/// # Errors
/// As [`open_files`].
pub fn fuzz_one(target: FuzzTarget, data: &[u8]) -> Result<u64, StoreError> {
    match target {
        FuzzTarget::Wal => open_files(vec![(super::store::wal_name(1), data.to_vec())]),
        FuzzTarget::Snapshot => open_files(vec![(super::store::snap_name(3), data.to_vec())]),
        FuzzTarget::Recovery => open_files(split_files(data)),
    }
}

/// Valid inputs for `target`, made by running a small workload: the starting corpus.
pub fn fuzz_corpus(target: FuzzTarget) -> Vec<Vec<u8>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let fs = CrashFs::new();
    let opts = StoreOptions {
        compact_after_bytes: 64 << 20,
        ..StoreOptions::default()
    };
    let Ok(store) = Store::open_dir(fs.dir(), opts) else {
        return Vec::new();
    };
    for seq in 1..=3 {
        let _ = rt.block_on(async { store.begin_write().await.commit(writes_for(7, seq)).await });
    }
    // The WAL target's input: the segment starting at seq 1, before the checkpoint.
    let first_segment = fs
        .files()
        .into_iter()
        .find(|(n, _)| *n == super::store::wal_name(1))
        .map(|(_, d)| d);
    let _ = store.checkpoint();
    for seq in 4..=6 {
        let _ = rt.block_on(async { store.begin_write().await.commit(writes_for(7, seq)).await });
    }
    let _ = store.close();
    let files = fs.files();
    let pick = |prefix: &str| -> Vec<Vec<u8>> {
        files
            .iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, d)| d.clone())
            .collect()
    };
    match target {
        FuzzTarget::Wal => first_segment.into_iter().collect(),
        FuzzTarget::Snapshot => pick("snap-"),
        FuzzTarget::Recovery => {
            let mut dir = Vec::new();
            for (name, data) in &files {
                let (kind, seq) = match name.strip_prefix("wal-") {
                    Some(rest) => (0u8, rest.trim_end_matches(".log")),
                    None => (
                        1,
                        name.trim_start_matches("snap-").trim_end_matches(".etch"),
                    ),
                };
                let len = data.len().min(u16::MAX as usize);
                dir.push(kind);
                dir.push(seq.parse::<u8>().unwrap_or(0));
                dir.extend_from_slice(&(len as u16).to_le_bytes());
                dir.extend_from_slice(&data[..len]);
            }
            vec![dir]
        }
    }
}

/// Applies 1–4 random mutations (bit flips, byte overwrites, cuts, extensions,
/// duplicated chunks, extreme length fields) to `input`.
fn mutate(input: &[u8], rng: &mut StdRng) -> Vec<u8> {
    let mut d = input.to_vec();
    for _ in 0..rng.random_range(1..=4) {
        let len = d.len();
        match rng.random_range(0..7) {
            0 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] ^= 1 << rng.random_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.random_range(0..len);
                d[i] = rng.random();
            }
            2 if len > 0 => d.truncate(rng.random_range(0..len)),
            3 => {
                let n = rng.random_range(1..64);
                d.extend((0..n).map(|_| rng.random::<u8>()));
            }
            4 if len > 8 => {
                let a = rng.random_range(0..len - 4);
                let b = rng.random_range(a..len.min(a + 512));
                let chunk = d[a..b].to_vec();
                let at = rng.random_range(0..=len);
                d.splice(at..at, chunk);
            }
            5 if len >= 4 => {
                let i = rng.random_range(0..=len - 4);
                let v = [0u32, 1, 2, u32::MAX, u32::MAX / 2, 0x8000_0000][rng.random_range(0..6)];
                d[i..i + 4].copy_from_slice(&v.to_le_bytes());
            }
            _ => d.reverse(),
        }
    }
    d
}

/// Figures of a [`fuzz`] run of one target.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FuzzReport {
    /// Inputs tried.
    pub runs: u64,
    /// Inputs that opened.
    pub opened: u64,
    /// Inputs refused with a typed error.
    pub refused: u64,
    /// Inputs that panicked (a bug).
    pub panics: u64,
    /// The first panicking inputs, hex-encoded (at most 3).
    pub crashes: Vec<String>,
}

/// Mutation fuzzing of `target` for `duration`, starting from [`fuzz_corpus`]: each
/// run mutates a corpus entry and feeds it to [`fuzz_one`], catching panics. Inputs
/// that open are added to the corpus (a crude coverage signal). For coverage-guided
/// fuzzing, run the same entry under libFuzzer (`fuzz/`, `cargo fuzz run`).
pub fn fuzz(target: FuzzTarget, duration: std::time::Duration, seed: u64) -> FuzzReport {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut corpus = fuzz_corpus(target);
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let mut report = FuzzReport::default();
    let start = std::time::Instant::now();
    while start.elapsed() < duration {
        let base = &corpus[rng.random_range(0..corpus.len())];
        let input = mutate(base, &mut rng);
        report.runs += 1;
        match std::panic::catch_unwind(|| fuzz_one(target, &input)) {
            Ok(Ok(_)) => {
                report.opened += 1;
                if corpus.len() < 256 {
                    corpus.push(input);
                }
            }
            Ok(Err(_)) => report.refused += 1,
            Err(_) => {
                report.panics += 1;
                if report.crashes.len() < 3 {
                    report
                        .crashes
                        .push(input.iter().map(|b| format!("{b:02x}")).collect());
                }
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fuzz_inputs_are_refused_or_opened_never_a_panic() {
        for target in FuzzTarget::ALL {
            let corpus = fuzz_corpus(target);
            assert!(!corpus.is_empty(), "{target:?}");
            // The unmutated corpus opens.
            for input in &corpus {
                fuzz_one(target, input).unwrap_or_else(|e| panic!("{target:?}: {e}"));
            }
            let r = fuzz(target, std::time::Duration::from_millis(300), 5);
            assert!(r.runs > 10 && r.refused > 0, "{target:?}: {r:?}");
            assert_eq!(r.panics, 0, "{target:?}: {:?}", r.crashes);
        }
    }

    #[test]
    fn states_follow_the_writes() {
        let states = expected_states(3, 8);
        assert_eq!(states.len(), 9);
        assert!(states[0].is_empty());
        assert_eq!(states[8][&b"last".to_vec()], 8u64.to_be_bytes().to_vec());
        assert_ne!(states[7], states[8]);
    }

    #[test]
    fn the_checker_sees_a_lost_commit_and_a_partial_one() {
        let opts = StoreOptions::default();
        let states = expected_states(1, 3);
        let fs = CrashFs::new();
        let store = Store::open_dir(fs.dir(), opts.clone()).unwrap();
        let rt = runtime();
        rt.block_on(async {
            for seq in 1..=2 {
                let txn = store.begin_write().await;
                txn.commit(writes_for(1, seq)).await.unwrap();
            }
            // Commit 3 with only part of its writes: not any commit's state.
            let txn = store.begin_write().await;
            let mut partial = writes_for(1, 3);
            partial.pop();
            txn.commit(partial).await.unwrap();
        });
        store.close().unwrap();
        drop(store);
        let mut report = PowerLossReport::default();
        check_recovery(&fs, &opts, 3, &states, &mut report, 1, Damage::AllKept);
        assert_eq!(report.partial, 1, "{report:?}");
        let mut report = PowerLossReport::default();
        check_recovery(&fs, &opts, 4, &states, &mut report, 1, Damage::AllKept);
        assert_eq!(report.lost, 1, "{report:?}");
        assert!(!report.ok());
    }
}
