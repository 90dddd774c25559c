//! The history of a run: every edit, every request (invoked, then ok,
//! failed, or indeterminate when a timeout hid the outcome), every fault,
//! and the server's journal of what each request did. Checkers read only
//! this, never the engine's internals (Jepsen style).
//!
//! Events are appended in the order the single-threaded simulation runs
//! them, so a history is deterministic for one seed and one build.

use crate::server::Effect;
use serde::Serialize;
use std::fmt::Write as _;
use sync_core::remote::OpRef;
use sync_core::{EntityType, OpKind};

fn is_first_tab(tab: &u32) -> bool {
    *tab == 0
}

/// Outcome of a request as the device saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Failed {
        error: String,
    },
    /// Timed out: it may or may not have committed.
    Indeterminate,
    /// Dropped unanswered: the tab that sent it closed, or the app was
    /// killed. Nothing reads the answer; the server may still run it.
    Dropped,
}

/// What the server did with one request.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ServerResult {
    Committed { effects: Vec<Effect> },
    Rejected { error: String },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The user's edit reached the local store (and, when `enqueued`, the
    /// queue in the same transaction).
    Edit {
        t_ms: i64,
        user: u32,
        index: u32,
        op_id: String,
        entity_type: EntityType,
        entity_id: String,
        kind: OpKind,
        version: i64,
        bad: bool,
        enqueued: bool,
    },
    /// A non-atomic edit's enqueue, after its local write.
    Enqueued { t_ms: i64, user: u32, index: u32 },
    Invoke {
        t_ms: i64,
        user: u32,
        /// The tab that sent it: 0 the tab the app opened with, 1 the
        /// second tab (fault `second_tab`; "tab 2" in the trace), `2 + k`
        /// the tab opened at the hand-over `k` from 0 (fault
        /// `tab_handover`; "tab h1" for the first). Left out of the JSON
        /// when 0, so a history with one tab reads as before tabs existed.
        #[serde(skip_serializing_if = "is_first_tab")]
        tab: u32,
        req_id: u64,
        call: &'static str,
        /// The bulk call's batch id (hardened exactly-once); left out of the
        /// JSON when the call has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        batch_id: Option<String>,
        ops: Vec<OpRef>,
        bytes: u64,
    },
    Complete {
        t_ms: i64,
        user: u32,
        req_id: u64,
        outcome: Outcome,
    },
    /// The server finished a request (commit or rejection).
    Server {
        t_ms: i64,
        user: u32,
        req_id: u64,
        call: &'static str,
        result: ServerResult,
    },
    Fault {
        t_ms: i64,
        user: Option<u32>,
        what: String,
    },
    /// Queue depth after a pass or an edit: `depth` counts pending, syncing
    /// and failed operations, `active` only pending and syncing.
    Depth {
        t_ms: i64,
        user: u32,
        depth: u64,
        active: u64,
    },
    /// A sync pass that sent nothing (ready work that had to wait, or a
    /// busy loop).
    IdlePass { t_ms: i64, user: u32 },
    /// The user tapped "Retry failed": `revived` failed operations went
    /// back to pending.
    RetryFailed { t_ms: i64, user: u32, revived: u64 },
}

impl Event {
    pub fn t_ms(&self) -> i64 {
        match self {
            Event::Edit { t_ms, .. }
            | Event::Enqueued { t_ms, .. }
            | Event::Invoke { t_ms, .. }
            | Event::Complete { t_ms, .. }
            | Event::Server { t_ms, .. }
            | Event::Fault { t_ms, .. }
            | Event::Depth { t_ms, .. }
            | Event::IdlePass { t_ms, .. }
            | Event::RetryFailed { t_ms, .. } => *t_ms,
        }
    }

    /// One trace line (`sim replay --trace`).
    pub fn trace_line(&self) -> String {
        let mut s = format!("[{:>10.3}s] ", self.t_ms() as f64 / 1000.0);
        match self {
            Event::Edit {
                user,
                index,
                op_id,
                entity_type,
                entity_id,
                kind,
                version,
                bad,
                enqueued,
                ..
            } => {
                let _ =
                    write!(
                    s,
                    "u{user} edit #{index} {} {entity_type} {entity_id} v{version} op={op_id}{}{}",
                    kind.as_str(),
                    if *bad { " BAD" } else { "" },
                    if *enqueued { "" } else { " (local only, enqueue follows)" }
                );
            }
            Event::Enqueued { user, index, .. } => {
                let _ = write!(s, "u{user} enqueued edit #{index}");
            }
            Event::Invoke {
                user,
                tab,
                req_id,
                call,
                batch_id,
                ops,
                bytes,
                ..
            } => {
                let _ = write!(
                    s,
                    "u{user}{} -> #{req_id} {call}{} ops={} bytes={bytes} [",
                    match tab {
                        0 => String::new(),
                        1 => " tab 2".to_string(),
                        n => format!(" tab h{}", n - 1),
                    },
                    batch_id
                        .as_ref()
                        .map(|b| format!(" batch={b}"))
                        .unwrap_or_default(),
                    ops.len()
                );
                for (i, op) in ops.iter().enumerate() {
                    if i == 12 {
                        s.push_str(", ...");
                        break;
                    }
                    let _ = write!(
                        s,
                        "{}{} {}/{} v{}",
                        if i == 0 { "" } else { ", " },
                        op.kind.as_str(),
                        op.entity_type,
                        op.entity_id,
                        op.version
                    );
                }
                s.push(']');
            }
            Event::Complete {
                user,
                req_id,
                outcome,
                ..
            } => {
                let o = match outcome {
                    Outcome::Ok => "ok".to_string(),
                    Outcome::Failed { error } => format!("failed: {error}"),
                    Outcome::Indeterminate => "indeterminate (timeout)".to_string(),
                    Outcome::Dropped => {
                        "dropped (its tab closed or the app was killed)".to_string()
                    }
                };
                let _ = write!(s, "u{user} <- #{req_id} {o}");
            }
            Event::Server {
                user,
                req_id,
                call,
                result,
                ..
            } => match result {
                ServerResult::Committed { effects } => {
                    let _ = write!(
                        s,
                        "server #{req_id} {call} for u{user}: committed {} effects",
                        effects.len()
                    );
                }
                ServerResult::Rejected { error } => {
                    let _ = write!(s, "server #{req_id} {call} for u{user}: rejected {error}");
                }
            },
            Event::Fault { user, what, .. } => match user {
                Some(u) => {
                    let _ = write!(s, "nemesis u{u}: {what}");
                }
                None => {
                    let _ = write!(s, "nemesis: {what}");
                }
            },
            Event::Depth {
                user,
                depth,
                active,
                ..
            } => {
                let _ = write!(s, "u{user} queue depth {depth} (active {active})");
            }
            Event::IdlePass { user, .. } => {
                let _ = write!(s, "u{user} sync pass sent nothing");
            }
            Event::RetryFailed { user, revived, .. } => {
                let _ = write!(s, "u{user} tapped Retry failed: {revived} revived");
            }
        }
        s
    }
}
