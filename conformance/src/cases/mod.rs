//! Every conformance case, by area.

pub mod batch;
pub mod capability;
pub mod cdc;
pub mod crud;
pub mod durability;
pub mod evolve;
pub mod index;
pub mod input;
pub mod outbox;
pub mod query;
pub mod relation;
pub mod scan;
pub mod tx;
pub mod types;
pub mod version;

use crate::model::User;
use crate::{Case, Need};
use datalayer::Db;

macro_rules! case {
    ($f:path) => {
        case!($f, [])
    };
    ($f:path, [$($n:ident),*]) => {
        Case {
            name: stringify!($f).replace(' ', ""),
            needs: &[$(Need::$n),*],
            run: |cx| Box::pin($f(cx)),
        }
    };
}

/// Every case.
pub fn all() -> Vec<Case> {
    vec![
        case!(crud::insert_get),
        case!(crud::insert_duplicate_key),
        case!(crud::get_missing),
        case!(crud::update_existing_and_missing),
        case!(crud::upsert_inserts_then_replaces),
        case!(crud::delete_existing_and_missing),
        case!(crud::insert_many_is_atomic),
        case!(crud::get_many_in_key_order),
        case!(crud::every_column_type_round_trips),
        case!(crud::count_rows),
        case!(crud::composite_primary_key),
        case!(version::insert_sets_one_update_increments),
        case!(version::two_writers_one_wins),
        case!(version::missing_row_and_upsert_refused),
        case!(version::query_update_increments),
        case!(evolve::add_columns_and_indexes),
        case!(evolve::writes_during_migration_are_kept),
        case!(evolve::index_builds_keep_writers_going),
        case!(evolve::unique_violation_names_values),
        case!(evolve::renames_keep_rows),
        case!(evolve::destructive_steps_need_allowing),
        case!(evolve::destructive_copy_resumes),
        case!(types::round_trip_and_null),
        case!(types::order_and_range),
        case!(types::unique_and_equality),
        case!(types::bad_input_and_stored_data),
        case!(types::change_feed_carries_types, [ChangeFeed]),
        case!(query::one_or_not_found),
        case!(query::optional_and_unique_lookup),
        case!(query::filter_order_limit),
        case!(query::range_and_condition),
        case!(query::starts_with_and_null_checks),
        case!(query::projection_and_scalar),
        case!(query::count_queries),
        case!(query::update_with_arithmetic),
        case!(query::update_literals_and_nulls),
        case!(query::delete_query),
        case!(query::or_not_and_ne),
        case!(query::nulls_never_match_comparisons),
        case!(query::order_without_index),
        case!(query::small_int_params),
        case!(index::unique_violation_on_insert_and_update),
        case!(index::unique_allows_many_nulls),
        case!(index::unique_value_freed_by_update_and_delete),
        case!(index::composite_index_prefix_and_range),
        case!(index::conditional_index_holds_only_matching_rows),
        case!(scan::keyset_pages_cover_everything_once),
        case!(scan::reverse_pages),
        case!(scan::range_bounds),
        case!(scan::primary_key_scan_and_composite_prefix),
        case!(scan::cursor_with_null_index_values),
        case!(scan::stream_all_rows),
        case!(relation::belongs_to_batched),
        case!(relation::has_many_batched),
        case!(relation::id_list),
        case!(tx::commit_makes_visible),
        case!(tx::err_rolls_back),
        case!(tx::panic_rolls_back),
        case!(tx::dropped_guard_rolls_back),
        case!(tx::guard_commit_and_rollback),
        case!(tx::read_your_writes),
        case!(tx::failed_op_keeps_tx_usable),
        case!(tx::retry_reruns_on_retryable_error),
        case!(tx::savepoints, [Savepoints]),
        case!(tx::nested_savepoint_closure, [Savepoints]),
        case!(tx::read_only_rejects_writes, [ReadOnlyTx]),
        case!(tx::concurrent_increments_are_serializable),
        case!(batch::results_in_order),
        case!(batch::batch_is_atomic),
        case!(batch::batch_in_tx),
        case!(durability::reopen_keeps_committed, [Durable]),
        case!(durability::reopen_drops_uncommitted, [Durable]),
        case!(input::bad_identifiers_and_keys),
        case!(input::oversize_value),
        case!(input::wrong_types_rejected),
        case!(capability::declared_matches_behaviour),
        case!(cdc::captures_in_commit_order, [ChangeFeed]),
        case!(cdc::resume_and_trim, [ChangeFeed]),
        case!(cdc::undone_writes_leave_no_change, [ChangeFeed, Savepoints]),
        case!(cdc::changes_survive_reopen, [ChangeFeed, Durable]),
        case!(outbox::capability_matches),
        case!(outbox::rollback_leaves_no_event),
        case!(outbox::fifo_per_partition),
        case!(outbox::scheduled_not_early),
        case!(outbox::two_groups_see_everything),
        case!(outbox::workers_share_and_take_over),
        case!(outbox::late_commit_is_delivered),
        case!(outbox::poison_event_dead_lettered),
        case!(outbox::table_events_in_tx),
        case!(outbox::crashing_handler_dead_lettered),
        case!(outbox::dead_letter_error_truncated),
        case!(outbox::immediate_behind_many_scheduled),
    ]
}

/// Inserts `User::sample(1..=n)`.
///
/// # Errors
/// The engine's error from `insert_many`.
pub async fn seed_users(db: &Db, n: i64) -> anyhow::Result<Vec<User>> {
    let users: Vec<User> = (1..=n).map(User::sample).collect();
    db.repo::<User>().insert_many(&users).await?;
    Ok(users)
}
