//! A consumer group's position in one partition, and how it advances.
//!
//! The position is `(high, pending)`: every event with `seq <= high` has been seen by
//! the group — delivered (or dead-lettered), or, when it was not yet due, listed in
//! `pending` with its delivery time. Events with `seq > high` have not been seen.
//!
//! Because seqs are assigned in commit order per partition (see the module docs of
//! [`crate::outbox`]), an event that is not yet visible always has a seq above every
//! visible one, hence above `high`: a late commit is never skipped.
//!
//! `pending` holds only scheduled events that were read before their time, so it stays
//! as small as the number of outstanding scheduled events (a far-future event never
//! holds the window back, unlike a "committed prefix + done list" position).

use datalayer_core::error::{Error, Result};
use std::collections::HashSet;

/// A group's position in one partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Every seq `<= high` has been seen.
    pub high: i64,
    /// `(seq, deliver_at_us)` of seen events that were not yet due, sorted by delivery
    /// time then seq.
    pub pending: Vec<(i64, i64)>,
}

impl Window {
    /// The window stored as `high` and the postcard bytes of `pending` (empty bytes:
    /// nothing pending).
    ///
    /// # Errors
    /// `Corrupted` when the bytes do not decode.
    pub fn decode(high: i64, pending: &[u8]) -> Result<Window> {
        let pending = if pending.is_empty() {
            Vec::new()
        } else {
            postcard::from_bytes(pending)
                .map_err(|e| Error::corrupted(format!("outbox pending list: {e}")))?
        };
        Ok(Window { high, pending })
    }

    /// The postcard bytes of `pending`.
    pub fn encode_pending(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.pending).expect("postcard encodes a Vec")
    }

    /// Every seq `<= passed()` is finished for this group (retention may delete it).
    pub fn passed(&self) -> i64 {
        self.pending
            .iter()
            .map(|&(s, _)| s - 1)
            .fold(self.high, i64::min)
    }

    /// Seqs of pending events due at `now_us`, in delivery order.
    pub fn due(&self, now_us: i64) -> Vec<i64> {
        self.pending
            .iter()
            .filter(|&&(_, d)| d <= now_us)
            .map(|&(s, _)| s)
            .collect()
    }

    /// The earliest delivery time among pending events.
    pub fn next_due(&self) -> Option<i64> {
        self.pending.iter().map(|&(_, d)| d).min()
    }

    /// The window after a round: `fetched` are the `(seq, deliver_at_us)` of events
    /// read with `seq > high`, in ascending seq, at time `now_us` (events with
    /// `deliver_at_us > now_us` were not due); `processed` are the seqs delivered or
    /// dead-lettered in the round (fetched or pending).
    ///
    /// `high` moves over the longest run of fetched events that are processed or not
    /// due (those go to `pending`); a due event left unprocessed (the worker was asked
    /// to stop) ends the run, so it and everything after it is read again next time.
    /// Processed events after it are delivered again then (at least once).
    pub fn advance(&self, fetched: &[(i64, i64)], now_us: i64, processed: &HashSet<i64>) -> Window {
        let mut pending: Vec<(i64, i64)> = self
            .pending
            .iter()
            .filter(|(s, _)| !processed.contains(s))
            .copied()
            .collect();
        let mut high = self.high;
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
        pending.sort_by_key(|&(s, d)| (d, s));
        Window { high, pending }
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
            Window {
                high: 3,
                pending: vec![]
            }
        );
        assert_eq!(n.passed(), 3);
    }

    #[test]
    fn scheduled_events_go_pending_and_do_not_hold_high() {
        let w = Window {
            high: 4,
            pending: vec![],
        };
        let f = [(5, 10), (6, 500), (7, 20)];
        let n = w.advance(&f, 100, &set(&[5, 7]));
        assert_eq!(
            n,
            Window {
                high: 7,
                pending: vec![(6, 500)]
            }
        );
        assert_eq!(n.passed(), 5, "retention keeps seq 6");
        assert_eq!(n.due(499), Vec::<i64>::new());
        assert_eq!(n.due(500), vec![6]);
        assert_eq!(n.next_due(), Some(500));
        let m = n.advance(&[], 600, &set(&[6]));
        assert_eq!(
            m,
            Window {
                high: 7,
                pending: vec![]
            }
        );
        assert_eq!(m.passed(), 7);
    }

    #[test]
    fn unprocessed_due_event_stops_the_run() {
        let w = Window::default();
        let f = [(1, 10), (2, 10), (3, 10), (4, 900)];
        // stopped after delivering 1 and 3 (3 was earlier by delivery time)
        let n = w.advance(&f, 100, &set(&[1, 3]));
        assert_eq!(
            n,
            Window {
                high: 1,
                pending: vec![]
            }
        );
    }

    #[test]
    fn pending_sorted_by_time_then_seq() {
        let w = Window {
            high: 0,
            pending: vec![(2, 50)],
        };
        let n = w.advance(&[(3, 40), (4, 50), (5, 40)], 10, &set(&[]));
        assert_eq!(n.pending, vec![(3, 40), (5, 40), (2, 50), (4, 50)]);
        assert_eq!(n.high, 5);
        assert_eq!(n.passed(), 1);
    }

    #[test]
    fn encoding_round_trips() {
        let w = Window {
            high: 9,
            pending: vec![(3, 7), (8, 9)],
        };
        assert_eq!(Window::decode(9, &w.encode_pending()).unwrap(), w);
        assert_eq!(
            Window::decode(2, &[]).unwrap(),
            Window {
                high: 2,
                pending: vec![]
            }
        );
        assert!(Window::decode(2, &[0xff, 0xff]).unwrap_err().is_corrupted());
    }
}
