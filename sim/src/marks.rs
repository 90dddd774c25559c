//! Coverage marks: named interesting states a run reached.
//!
//! Code marks a state where it happens (the world for faults, the engine
//! through `Host::mark`). A scenario lists the marks it exists to reach
//! (`marks = [...]`); a hardened sweep fails when one of them is reached by
//! no seed, so a fault that silently stopped firing is noticed instead of
//! leaving a scenario that tests nothing. Counts are per run, in a
//! `BTreeMap`, so they reach reports in a fixed order.

/// Every mark, with what it means.
pub const MARKS: &[(&str, &str)] = &[
    (
        "request_lost",
        "a request vanished before the server saw it",
    ),
    (
        "response_lost_after_commit",
        "the server committed a call and its response was lost",
    ),
    (
        "kill_after_commit",
        "the app was killed after the server committed its call, before mark_batch_completed",
    ),
    ("app_killed", "the app was killed"),
    (
        "second_tab_engine_ran",
        "a second tab of the app ran its own engine on the device's queue",
    ),
    (
        "second_tab_left_to_lock",
        "a second tab of the app opened and left syncing to the tab holding the device's lock",
    ),
    (
        "tab_lock_handed_over",
        "the tab holding the device's lock closed and the tab waiting for it took it over, starting its engine",
    ),
    (
        "tab_closed_mid_call",
        "the tab the user worked in closed (a tab hand-over) while its engine had a call in flight",
    ),
    (
        "wait_capped_after_clock_back",
        "the engine brought in ready times further out than its longest backoff, set on a device clock that has gone back since",
    ),
    (
        "device_clock_went_back",
        "the device clock read earlier than it had before (a clock_skew window began behind true time, or one ahead of it ended)",
    ),
    (
        "reconnect_with_backlog",
        "the device came back online with operations pending",
    ),
    ("silent_drop", "a request vanished in a silent-drop window"),
    (
        "client_timeout",
        "a request timed out on the device (AbortError)",
    ),
    (
        "token_expired_401",
        "the server answered 401: the token had expired",
    ),
    ("server_5xx", "the server answered a 5xx burst status"),
    (
        "lock_waited",
        "a server call reached a row another running call of its user had written, and waited for that call to end",
    ),
    (
        "deadlock_detected",
        "two running server calls of one user each held a row the other needed; one failed with 40P01",
    ),
    (
        "roster_rows_unseen",
        "a roster replacement without a version began before another call's roster rows committed, and its DELETE misses them (PostgreSQL: 23505 on a shared player, else both rosters stay)",
    ),
    (
        "game_created_unseen",
        "a game save without a version began before another call that created the game committed: it finds no row, answers version 1 again and overwrites",
    ),
    (
        "statement_timeout",
        "a call ran past the statement timeout and was cancelled (57014)",
    ),
    (
        "bad_record_rejected",
        "the server rejected a call for a bad record (22xxx/23xxx)",
    ),
    (
        "bad_record_isolated",
        "the engine split a failed batch to isolate a bad record",
    ),
    ("quarantined", "the engine quarantined an operation"),
    (
        "batch_resent_same_id",
        "the engine re-sent an unresolved batch under its batch id",
    ),
    (
        "batch_duplicate_waited",
        "a call waited for a running call with its batch id to finish (017 claims the id first), then replayed or applied",
    ),
    (
        "replay_answered",
        "the server answered a batch id it had committed before",
    ),
    (
        "chunk_shrunk",
        "the engine halved its chunk size after a timeout",
    ),
    (
        "op_changed_before_mark",
        "an operation changed (an edit merged into it, or replaced it) between its fetch for a batch and mark syncing; the engine sent what the queue held then",
    ),
    (
        "changed_op_deferred",
        "an operation that changed before mark syncing now links a parent queued outside its call; the engine left it for the next pass",
    ),
    (
        "roster_delete_subsumed",
        "a roster delete was completed locally because its team's queued delete removes the roster on the server",
    ),
    (
        "superseded_before_send",
        "an operation about to be sent was completed locally: a newer queued operation of its entity supersedes it",
    ),
    (
        "superseded_after_newer_left",
        "an operation about to be sent was completed locally: its entity had moved past it on the device, and the newer operation that carried it had already left the queue (sent, or completed locally as subsumed)",
    ),
    (
        "split_half_trimmed",
        "a half of a split call, held to the rules again when its turn came, lost an operation that edits made while earlier halves were in flight had subsumed, superseded or orphaned",
    ),
    (
        "name_awaits_release",
        "an upsert taking a name another member gave up on the device waited: the server may still hold the name until that member's delete or rename lands",
    ),
    (
        "name_swap_sent",
        "an upsert taking a released name was sent without waiting: the member that gave it up waits, in turn, for a name this one gave up (a swap), and no order of sends works",
    ),
    (
        "retry_failed_revived",
        "the user's Retry failed sent failed operations back to pending",
    ),
    (
        "queue_over_1000",
        "a device queue held over 1,000 operations",
    ),
];

/// Whether `name` is a known mark.
pub fn is_known(name: &str) -> bool {
    MARKS.iter().any(|(n, _)| *n == name)
}

/// The known names, for error messages.
pub fn names() -> Vec<&'static str> {
    MARKS.iter().map(|(n, _)| *n).collect()
}

/// The catalogue entry of a name used in code (a typo fails loudly in
/// tests rather than never being reached).
pub fn known(name: &'static str) -> &'static str {
    debug_assert!(is_known(name), "mark {name} is not in marks::MARKS");
    name
}
