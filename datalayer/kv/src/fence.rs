//! The schema fence of a [`KvEngine`](crate::KvEngine): which declaration of each
//! table this engine's writers may use, and what they must maintain while a schema
//! change runs.
//!
//! In this family the client maintains every index, so a writer holding an old
//! declaration would miss a new index or write rows in an old layout. Each table
//! registered or altered through the engine has a gate:
//!
//! - `live`: the declaration the table is stored with; an op holding another one is
//!   refused (`InvalidInput`).
//! - `mode`: `Open`; `Build` while new indexes are backfilled: writers keep going
//!   and also maintain the new indexes' entries (the *write-only* state of F1's online
//!   schema change, Rae et al., VLDB 2013); or `Hold` while rows are rewritten or
//!   dropped indexes deleted: writers fail with `Conflict` (retryable).
//! - `generation`: a token replaced at every mode change. Each write op takes a
//!   lease (a clone of the token) that its transaction keeps until it ends, so
//!   [`drain`] can wait until no transaction that began under the previous mode is
//!   still open: the backfill then starts from a snapshot holding every write made
//!   without the new indexes, and later writes maintain them themselves (a write
//!   that races a backfill chunk on the same row writes the same index key, so the
//!   store's write-write conflict check orders them).
//!
//! The fence covers this engine's writers only: writers in other processes must be
//! stopped during a schema change (their next connect sees the new schema).

use datalayer_core::engine::Op;
use datalayer_core::error::{Error, Result};
use datalayer_core::evolve::TablePlan;
use datalayer_core::schema::{IndexDef, TableSchema};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A mode's token: a transaction that wrote under that mode holds a clone.
pub(crate) type Lease = Arc<()>;

/// New indexes being built on a table: what its writers maintain besides the
/// indexes of their declaration.
pub(crate) struct Building {
    /// The change being applied (its `from` is the writers' declaration).
    pub(crate) plan: TablePlan,
    /// `plan.column_sources()`, to put a written row in the declared layout.
    pub(crate) sources: Vec<Option<usize>>,
    /// Each index being built: its position in `plan.to.indexes` and key prefix.
    pub(crate) indexes: Vec<(usize, Vec<u8>)>,
}

impl Building {
    /// The indexes of this build that `table` lacks (a writer's declaration of the
    /// table being altered: the caller picks the builds of its table).
    pub(crate) fn extra<'a>(
        &'a self,
        table: &'a TableSchema,
    ) -> impl Iterator<Item = (&'a IndexDef, &'a [u8])> + 'a {
        self.indexes
            .iter()
            .map(|(i, p)| (&self.plan.to.indexes[*i], p.as_slice()))
            .filter(move |(ix, _)| !table.indexes.iter().any(|t| t.name == ix.name))
    }

    /// `row` (in the writer's layout) in the declared layout.
    pub(crate) fn declared(&self, row: &[datalayer_core::Value]) -> Vec<datalayer_core::Value> {
        self.plan.transform_row(&self.sources, row)
    }
}

/// A table's mode (see the module docs).
enum Mode {
    Open,
    Build(Arc<Building>),
    Hold,
}

struct Gate {
    live: Option<Arc<TableSchema>>,
    mode: Mode,
    generation: Lease,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            live: None,
            mode: Mode::Open,
            generation: Arc::new(()),
        }
    }
}

/// What a write op holds while it runs: leases to keep until its transaction ends
/// and the builds its rows must maintain.
#[derive(Default)]
pub(crate) struct Admitted {
    pub(crate) leases: Vec<Lease>,
    pub(crate) builds: Vec<Arc<Building>>,
}

impl Admitted {
    /// Adds `lease` and `build`, each once.
    fn add(&mut self, lease: &Lease, build: Option<&Arc<Building>>) {
        if !self.leases.iter().any(|h| Arc::ptr_eq(h, lease)) {
            self.leases.push(lease.clone());
        }
        if let Some(b) = build
            && !self.builds.iter().any(|h| Arc::ptr_eq(h, b))
        {
            self.builds.push(b.clone());
        }
    }

    /// Adds `other`'s leases and builds, each once.
    pub(crate) fn merge(&mut self, other: Admitted) {
        for l in &other.leases {
            self.add(l, None);
        }
        for b in &other.builds {
            if !self.builds.iter().any(|h| Arc::ptr_eq(h, b)) {
                self.builds.push(b.clone());
            }
        }
    }
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Fence {
    gates: RwLock<HashMap<String, Gate>>,
}

impl Fence {
    /// Admits `ops`: refuses a stale declaration (`InvalidInput`) or a held table
    /// (`Conflict`); a write op gets its table's lease and build.
    pub(crate) fn admit(&self, ops: &[Op<'_>]) -> Result<Admitted> {
        let mut out = Admitted::default();
        let gates = self.gates.read();
        if gates.is_empty() {
            return Ok(out);
        }
        for op in ops {
            let t = op.table();
            let Some(g) = gates.get(&t.name) else {
                continue;
            };
            if let Some(live) = &g.live
                && !std::ptr::eq(live.as_ref(), t)
                && live.as_ref() != t
            {
                return Err(Error::invalid_input(format!(
                    "table {} was altered to another schema on this engine; connect with its current declaration",
                    t.name
                )));
            }
            match &g.mode {
                Mode::Hold => {
                    return Err(Error::conflict(format!(
                        "table {} is being altered; retry",
                        t.name
                    )));
                }
                _ if op.is_read() => {}
                Mode::Build(b) => out.add(&g.generation, Some(b)),
                Mode::Open => out.add(&g.generation, None),
            }
        }
        Ok(out)
    }

    /// Records `schema` as the declaration `schema.name` is stored with.
    pub(crate) fn set_live(&self, schema: &TableSchema) {
        let mut gates = self.gates.write();
        gates.entry(schema.name.clone()).or_default().live = Some(Arc::new(schema.clone()));
    }

    /// Forgets table `name` (dropped): any declaration may register it again.
    pub(crate) fn forget(&self, name: &str) {
        self.gates.write().remove(name);
    }

    /// Puts table `name` in `mode` and returns the previous mode's lease for
    /// [`drain`].
    fn switch(&self, name: &str, mode: Mode) -> Lease {
        let mut gates = self.gates.write();
        let g = gates.entry(name.to_owned()).or_default();
        g.mode = mode;
        std::mem::replace(&mut g.generation, Arc::new(()))
    }

    /// Lets table `name`'s writers go on and maintain `b`'s indexes; returns once no
    /// transaction that wrote the table before is open.
    pub(crate) async fn build(&self, name: &str, b: Building) {
        drain(self.switch(name, Mode::Build(Arc::new(b)))).await;
    }

    /// Holds table `name`'s writers (`Conflict`); returns once no transaction that
    /// wrote it before is open.
    pub(crate) async fn hold(&self, name: &str) {
        drain(self.switch(name, Mode::Hold)).await;
    }

    /// Opens table `name` to writers again; returns once no transaction that wrote it
    /// in the previous mode is open.
    pub(crate) async fn open(&self, name: &str) {
        drain(self.switch(name, Mode::Open)).await;
    }
}

/// Waits until `lease` is the last holder of its generation: every transaction that
/// wrote under it has committed or rolled back. Polls (1 ms): a generation changes a
/// few times per schema change.
async fn drain(lease: Lease) {
    while Arc::strong_count(&lease) > 1 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
