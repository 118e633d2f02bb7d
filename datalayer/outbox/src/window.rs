//! A consumer group's position in one partition, and how it advances.
//!
//! A partition's events live in two lanes, chosen at emit time (both take their seq
//! from the partition's one commit-order counter):
//! - the **seq lane**, `_dl_outbox`: events due when emitted (and, in stores written
//!   before the scheduled lane existed, scheduled ones). The position is `high`: every
//!   event of this lane with `seq <= high` has been seen by the group — delivered (or
//!   dead-lettered), or, when it was not yet due, recorded as one row of
//!   `_dl_outbox_pending` `(grp, topic, part, deliver_at_us, seq)`. Events with
//!   `seq > high` have not been seen;
//! - the **scheduled lane**, `_dl_outbox_scheduled`: events emitted with a future
//!   delivery time, indexed by `(deliver_at_us, seq)`, so a round reads the due ones
//!   directly, however many later ones there are ([`Sched`]).
//!
//! Because seqs are assigned in commit order per partition (see the crate docs), an
//! event that is not yet visible always has a seq above every visible one, hence
//! above `high` (and above [`Sched::seen`]): a late commit is never skipped. Both
//! marks jump to the partition's last seq `V` (read before the events) when a round
//! read everything above them: every seq `<= V` was committed by then.
//!
//! The group row holds only `high`, the earliest delivery time among the pending rows
//! (so a round knows without reading them whether any is due), the scheduled lane's
//! cursor and the round in flight ([`Inflight`]). Its size is the same for 0 or 10⁶
//! scheduled events (at most [`MAX_STATE_BYTES`]).

use datalayer_core::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The largest encoded state ([`Window::encode_state`]), in bytes.
pub const MAX_STATE_BYTES: usize = 128;

/// The first two bytes of the current state encoding. The encoding of earlier
/// versions (the postcard of a `Vec<(i64, i64)>`, the pending list itself) never
/// starts with a zero byte unless it is the empty list `[0]`.
const STATE_V1: [u8; 2] = [0, 1];
/// The first two bytes of the state encoding with the scheduled lane ([`Sched`]).
const STATE_V2: [u8; 2] = [0, 2];

/// A group's position in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Every seq `<= high` has been seen.
    pub high: i64,
    /// The earliest `deliver_at_us` among the group's pending rows of this partition;
    /// `None` when it has none.
    pub next_due_us: Option<i64>,
    /// The delivery round that was started and has not checkpointed yet (a worker
    /// stopped or crashed in it); see [`Inflight`].
    pub inflight: Option<Inflight>,
    /// `(seq, deliver_at_us)` of pending events stored in the encoding of earlier
    /// versions (inside the group row); moved to `_dl_outbox_pending` at the next
    /// checkpoint. Empty for positions written by this version.
    pub legacy: Vec<(i64, i64)>,
    /// The group's position in the scheduled lane.
    pub sched: Sched,
}

/// A group's position in a partition's scheduled lane (`_dl_outbox_scheduled`,
/// ordered by `(deliver_at_us, seq)`).
///
/// Invariant: a scheduled event with `seq <= seen` has been processed if and only if
/// `(deliver_at_us, seq) <= done`. A round first reads the scheduled events with
/// `seen < seq <= V` (those committed since the last round; `V` the partition's last
/// seq, read first) and delivers those at or before `done` (late commits: their time
/// was passed while they were invisible); then it reads the events after `done` that
/// are due, in delivery order, and moves `done` over the ones it processed. Neither
/// read touches the events scheduled later, so reaching a due event costs the same
/// behind 0 or 10⁶ scheduled ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    /// Scheduled events with `seq <= seen` are accounted for by `done`.
    pub seen: i64,
    /// `(deliver_at_us, seq)` of the last scheduled event processed in delivery order;
    /// `None` when none was.
    pub done: Option<(i64, i64)>,
    /// The earliest delivery time after `done` as of the last round (`None`: none);
    /// events committed since have seqs above `seen`, which makes the next round read.
    pub next_due_us: Option<i64>,
}

impl Sched {
    /// Whether the scheduled event `(deliver_at_us, seq)` is at or before `done`.
    pub fn is_done(&self, deliver_at_us: i64, seq: i64) -> bool {
        self.done.is_some_and(|d| (deliver_at_us, seq) <= d)
    }
}

/// A delivery round in flight: written (fenced by the lease) before the first handler
/// call of the round, and before every retry, and cleared by the round's checkpoint.
/// Found set when a round starts, it means that a worker stopped mid-round (crash,
/// kill, lost lease): the events of `lo..=hi` are then delivered one at a time, each
/// attempt counted here before the handler runs, so an event whose handler crashes
/// the worker is dead-lettered after `max_attempts` crashes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    /// The lowest seq the round was delivering.
    pub lo: i64,
    /// The highest seq the round was delivering.
    pub hi: i64,
    /// The event whose attempts are counted in `attempts`; 0 when the round did not
    /// record which event it was in (the batch mode).
    pub seq: i64,
    /// Handler calls started for `seq` (each counted before the call).
    pub attempts: u32,
}

/// What the group row's bytes hold (version 1).
#[derive(Serialize, Deserialize)]
struct State {
    next_due_us: Option<i64>,
    inflight: Option<Inflight>,
}

/// What the group row's bytes hold (version 2: with the scheduled lane).
#[derive(Serialize, Deserialize)]
struct StateV2 {
    next_due_us: Option<i64>,
    inflight: Option<Inflight>,
    sched: Sched,
}

/// The result of [`Window::advance`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advance {
    /// The new `high`.
    pub high: i64,
    /// `(seq, deliver_at_us)` of fetched events that were not due: new pending rows.
    pub pending: Vec<(i64, i64)>,
}

impl Window {
    /// The window stored as `high` and the group row's state bytes (empty bytes:
    /// nothing pending, no round in flight).
    ///
    /// # Errors
    /// `Corrupted` when the bytes do not decode.
    pub fn decode(high: i64, state: &[u8]) -> Result<Window> {
        let mut w = Window {
            high,
            ..Window::default()
        };
        if state.is_empty() || state == [0] {
            return Ok(w);
        }
        if let Some(rest) = state.strip_prefix(&STATE_V2) {
            let s: StateV2 = postcard::from_bytes(rest)
                .map_err(|e| Error::corrupted(format!("outbox group state: {e}")))?;
            w.next_due_us = s.next_due_us;
            w.inflight = s.inflight;
            w.sched = s.sched;
        } else if let Some(rest) = state.strip_prefix(&STATE_V1) {
            let s: State = postcard::from_bytes(rest)
                .map_err(|e| Error::corrupted(format!("outbox group state: {e}")))?;
            w.next_due_us = s.next_due_us;
            w.inflight = s.inflight;
        } else {
            w.legacy = postcard::from_bytes(state)
                .map_err(|e| Error::corrupted(format!("outbox pending list: {e}")))?;
        }
        Ok(w)
    }

    /// The state bytes of this window (`legacy` is not encoded: it must have been
    /// moved to pending rows). At most [`MAX_STATE_BYTES`].
    pub fn encode_state(&self) -> Vec<u8> {
        if self.next_due_us.is_none() && self.inflight.is_none() && self.sched == Sched::default() {
            return Vec::new();
        }
        let mut out = STATE_V2.to_vec();
        let s = StateV2 {
            next_due_us: self.next_due_us,
            inflight: self.inflight,
            sched: self.sched,
        };
        out.extend(postcard::to_allocvec(&s).expect("postcard encodes the state"));
        debug_assert!(out.len() <= MAX_STATE_BYTES);
        out
    }

    /// Every seq `<= passed(..)` is finished for this group (retention may delete it),
    /// given the lowest seq among its pending rows.
    pub fn passed(&self, min_pending_seq: Option<i64>) -> i64 {
        self.legacy
            .iter()
            .map(|&(s, _)| s)
            .chain(min_pending_seq)
            .map(|s| s - 1)
            .fold(self.high, i64::min)
    }

    /// Whether some pending event of the seq lane is due at `now_us`.
    pub fn has_due(&self, now_us: i64) -> bool {
        self.next_due_us.is_some_and(|d| d <= now_us)
            || self.legacy.iter().any(|&(_, d)| d <= now_us)
    }

    /// Whether a round has work at `now_us`, given the partition's last seq `last`:
    /// events not seen by a lane, a due pending or scheduled event, a round in flight
    /// or a pending list of an earlier version to move.
    pub fn has_work(&self, last: i64, now_us: i64) -> bool {
        last > self.high
            || last > self.sched.seen
            || self.has_due(now_us)
            || self.sched.next_due_us.is_some_and(|d| d <= now_us)
            || self.inflight.is_some()
            || !self.legacy.is_empty()
    }

    /// How `high` moves after a round: `fetched` are the `(seq, deliver_at_us)` of
    /// events read with `seq > high`, in ascending seq, at time `now_us` (events with
    /// `deliver_at_us > now_us` were not due); `processed` are the seqs delivered or
    /// dead-lettered in the round.
    ///
    /// `high` moves over the longest run of fetched events that are processed or not
    /// due (those become pending rows); a due event left unprocessed (the worker was
    /// asked to stop) ends the run, so it and everything after it is read again next
    /// time. Processed events after it are delivered again then (at least once).
    pub fn advance(
        &self,
        fetched: &[(i64, i64)],
        now_us: i64,
        processed: &HashSet<i64>,
    ) -> Advance {
        let mut high = self.high;
        let mut pending = Vec::new();
        for &(seq, due) in fetched {
            debug_assert!(seq > high, "fetched in ascending seq above high");
            if processed.contains(&seq) {
                high = seq;
            } else if due > now_us {
                pending.push((seq, due));
                high = seq;
            } else {
                break;
            }
        }
        Advance { high, pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[i64]) -> HashSet<i64> {
        v.iter().copied().collect()
    }

    #[test]
    fn all_processed_moves_high() {
        let w = Window::default();
        let f = [(1, 10), (2, 10), (3, 11)];
        let n = w.advance(&f, 100, &set(&[1, 2, 3]));
        assert_eq!(
            n,
            Advance {
                high: 3,
                pending: vec![]
            }
        );
    }

    #[test]
    fn scheduled_events_go_pending_and_do_not_hold_high() {
        let w = Window {
            high: 4,
            ..Window::default()
        };
        let f = [(5, 10), (6, 500), (7, 20)];
        let n = w.advance(&f, 100, &set(&[5, 7]));
        assert_eq!(
            n,
            Advance {
                high: 7,
                pending: vec![(6, 500)]
            }
        );
        let w = Window {
            high: 7,
            next_due_us: Some(500),
            ..Window::default()
        };
        assert_eq!(w.passed(Some(6)), 5, "retention keeps seq 6");
        assert_eq!(w.passed(None), 7);
        assert!(!w.has_due(499));
        assert!(w.has_due(500));
    }

    #[test]
    fn unprocessed_due_event_stops_the_run() {
        let w = Window::default();
        let f = [(1, 10), (2, 10), (3, 10), (4, 900)];
        // stopped after delivering 1 and 3 (3 was earlier by delivery time)
        let n = w.advance(&f, 100, &set(&[1, 3]));
        assert_eq!(
            n,
            Advance {
                high: 1,
                pending: vec![]
            }
        );
    }

    #[test]
    fn encoding_round_trips_and_is_bounded() {
        let w = Window {
            high: 9,
            next_due_us: Some(i64::MAX),
            inflight: Some(Inflight {
                lo: i64::MIN,
                hi: i64::MAX,
                seq: i64::MAX,
                attempts: u32::MAX,
            }),
            legacy: vec![],
            sched: Sched {
                seen: i64::MAX,
                done: Some((i64::MIN, i64::MAX)),
                next_due_us: Some(i64::MIN),
            },
        };
        let bytes = w.encode_state();
        assert!(bytes.len() <= MAX_STATE_BYTES, "{}", bytes.len());
        assert_eq!(Window::decode(9, &bytes).unwrap(), w);
        let empty = Window {
            high: 2,
            ..Window::default()
        };
        assert_eq!(empty.encode_state(), Vec::<u8>::new());
        assert_eq!(Window::decode(2, &[]).unwrap(), empty);
        assert_eq!(
            Window::decode(2, &[0]).unwrap(),
            empty,
            "the old empty list"
        );
        assert!(Window::decode(2, &[0xff, 0xff]).unwrap_err().is_corrupted());
        // A version 1 state (written by the previous version) still reads.
        let mut v1 = STATE_V1.to_vec();
        v1.extend(
            postcard::to_allocvec(&State {
                next_due_us: Some(5),
                inflight: None,
            })
            .unwrap(),
        );
        let w = Window::decode(3, &v1).unwrap();
        assert_eq!(
            (w.high, w.next_due_us, w.sched),
            (3, Some(5), Sched::default())
        );
        let lane = Window {
            high: 1,
            sched: Sched {
                seen: 7,
                ..Sched::default()
            },
            ..Window::default()
        };
        assert_eq!(Window::decode(1, &lane.encode_state()).unwrap(), lane);
        assert!(lane.has_work(8, 0) && !lane.has_work(1, 0) && lane.has_work(2, 0));
    }

    #[test]
    fn the_old_pending_list_is_read() {
        let old: Vec<(i64, i64)> = vec![(3, 7), (8, 9)];
        let bytes = postcard::to_allocvec(&old).unwrap();
        let w = Window::decode(9, &bytes).unwrap();
        assert_eq!(w.legacy, old);
        assert_eq!(w.passed(None), 2);
        assert!(w.has_due(7));
        assert!(!w.has_due(6));
    }
}
