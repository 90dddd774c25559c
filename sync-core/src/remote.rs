//! The network boundary: the `Remote` trait the engine sends through, the
//! typed error it gets back, and the classification of that error.
//!
//! The trait uses `async fn`, so the library names no runtime: the simulator
//! implements it on madsim RPC, tests on a scripted fake, a real app on HTTP.
//! A request's timeout is the implementor's business (the engine tells it the
//! configured value in [`RequestCtx::timeout_ms`]); a timeout must come back
//! as [`RemoteError::Aborted`] and, as in the app, need not cancel the
//! request on the server.

use crate::model::{EntityType, OpKind};
use crate::payload::BulkSyncPayload;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::future::Future;

/// What the app could see of a failed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteError {
    /// The request was aborted or timed out: its outcome is unknown (it may
    /// have committed).
    Aborted { message: String },
    /// 401/403, JWT or session errors.
    Auth { status: u16, message: String },
    /// HTTP 5xx without a database error.
    Server { status: u16, message: String },
    /// A PostgreSQL error with its SQLSTATE (e.g. `23503`).
    Database { sqlstate: String, message: String },
    /// The request could not be sent (offline, connection refused).
    Network { message: String },
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteError::Aborted { message } => write!(f, "AbortError: {message}"),
            RemoteError::Auth { status, message } => write!(f, "auth {status}: {message}"),
            RemoteError::Server { status, message } => write!(f, "server {status}: {message}"),
            RemoteError::Database { sqlstate, message } => {
                write!(f, "database {sqlstate}: {message}")
            }
            RemoteError::Network { message } => write!(f, "network: {message}"),
        }
    }
}

impl std::error::Error for RemoteError {}

/// How the app of today names an error (app-behavior.md, "Error classes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppErrorClass {
    /// Aborted or timed out: back to pending, no retry penalty.
    Abort,
    /// 401/403: back to pending, no penalty.
    Auth,
    /// 23505: last-write-wins conflict resolution.
    AlreadyExists,
    /// 23503, 23514, 22xxx: retry with backoff, failed after 10.
    Validation,
    /// Anything else, 5xx included: retry with backoff, failed after 10.
    Network,
}

/// How the hardened engine treats an error (SQLSTATE based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Retry later, forever, with capped jittered backoff. `penalty` is false
    /// for aborts and auth errors (the app's "no retry penalty").
    Transient { penalty: bool },
    /// The request can never succeed as sent: 22xxx, 23xxx, 42501. A batch
    /// is split to find the bad record; a single operation is quarantined.
    Permanent,
}

impl RemoteError {
    pub fn aborted(message: impl Into<String>) -> Self {
        RemoteError::Aborted {
            message: message.into(),
        }
    }

    pub fn database(sqlstate: &str, message: impl Into<String>) -> Self {
        RemoteError::Database {
            sqlstate: sqlstate.to_string(),
            message: message.into(),
        }
    }

    /// The SQLSTATE, when the server sent one.
    pub fn sqlstate(&self) -> Option<&str> {
        match self {
            RemoteError::Database { sqlstate, .. } => Some(sqlstate),
            _ => None,
        }
    }

    /// Whether the outcome is unknown (the request may have committed).
    pub fn is_indeterminate(&self) -> bool {
        matches!(self, RemoteError::Aborted { .. })
    }

    /// Today's app classification.
    pub fn app_class(&self) -> AppErrorClass {
        match self {
            RemoteError::Aborted { .. } => AppErrorClass::Abort,
            RemoteError::Auth { .. } => AppErrorClass::Auth,
            RemoteError::Database { sqlstate, .. } => {
                if sqlstate == "23505" {
                    AppErrorClass::AlreadyExists
                } else if sqlstate == "23503" || sqlstate == "23514" || sqlstate.starts_with("22") {
                    AppErrorClass::Validation
                } else if sqlstate == "42501" || sqlstate == "28000" {
                    // Insufficient privilege / not authenticated surfaces to
                    // the app as a session error.
                    AppErrorClass::Auth
                } else {
                    AppErrorClass::Network
                }
            }
            RemoteError::Server { .. } | RemoteError::Network { .. } => AppErrorClass::Network,
        }
    }

    /// The hardened classification: 22xxx, 23xxx and 42501 are permanent;
    /// 40001, 5xx, network, abort and 401 are transient.
    pub fn disposition(&self) -> Disposition {
        match self {
            RemoteError::Aborted { .. } | RemoteError::Auth { .. } => {
                Disposition::Transient { penalty: false }
            }
            RemoteError::Database { sqlstate, .. } => {
                if sqlstate.starts_with("22") || sqlstate.starts_with("23") || sqlstate == "42501" {
                    Disposition::Permanent
                } else if sqlstate == "28000" {
                    // "Not authenticated" raised by the function itself.
                    Disposition::Transient { penalty: false }
                } else {
                    Disposition::Transient { penalty: true }
                }
            }
            RemoteError::Server { .. } | RemoteError::Network { .. } => {
                Disposition::Transient { penalty: true }
            }
        }
    }
}

/// One operation a request carries, for logs and for the simulator's
/// history. The server's semantics never depend on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpRef {
    pub op_id: String,
    pub entity_type: EntityType,
    pub entity_id: String,
    pub kind: OpKind,
    pub version: i64,
}

/// Per-request context the engine hands the remote.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCtx {
    /// The client-side timer (the app's 90 s race) after which the caller
    /// gives up with [`RemoteError::Aborted`].
    pub timeout_ms: i64,
    /// The operations this request carries.
    pub ops: Vec<OpRef>,
}

/// What `bulk_sync_entities` returns: per-type counts as JSON (the plan's
/// `v_result`), e.g. `{"players": 3, "deleted_teams": 1}`. A replayed batch
/// id returns the stored result of its first commit.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BulkSyncResult {
    pub counts: Value,
    /// True when the server recognised the batch id and applied nothing.
    pub replayed: bool,
}

/// Arguments of `save_game_with_relations`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GameSave {
    /// The game row (snake_case columns, no user_id).
    pub game: Value,
    pub players: Vec<Value>,
    pub events: Vec<Value>,
    pub assessments: Vec<Value>,
    pub tactical: Option<Value>,
    /// Optimistic concurrency: the server version the client last saw.
    pub expected_version: Option<i64>,
    /// Hardened: the local entity version; the server ignores a save whose
    /// version is not newer than the one it holds.
    pub sync_version: Option<i64>,
}

impl GameSave {
    /// Splits a queued game operation's data (`{"game": {...}, "players":
    /// [...], "events": [...], "assessments": [...], "tactical": {...}}`).
    pub fn from_op_data(data: &Value) -> GameSave {
        let list = |key: &str| {
            data.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        GameSave {
            game: data.get("game").cloned().unwrap_or(Value::Null),
            players: list("players"),
            events: list("events"),
            assessments: list("assessments"),
            tactical: data.get("tactical").filter(|v| !v.is_null()).cloned(),
            expected_version: None,
            sync_version: None,
        }
    }
}

/// The server as the engine sees it. Every call is one request.
///
/// `version` arguments are `Some` only under the hardened preset (per-entity
/// versions; the server ignores a write that is not newer and a delete
/// leaves a tombstone).
pub trait Remote {
    /// `bulk_sync_entities(payload)`: all or nothing.
    fn bulk_sync(
        &mut self,
        ctx: &RequestCtx,
        payload: &BulkSyncPayload,
    ) -> impl Future<Output = Result<BulkSyncResult, RemoteError>>;

    /// `save_game_with_relations(...)`: returns the game's new server version.
    fn save_game_with_relations(
        &mut self,
        ctx: &RequestCtx,
        save: &GameSave,
    ) -> impl Future<Output = Result<i64, RemoteError>>;

    /// `set_team_roster(team_id, roster)`: fails when the team is missing.
    fn set_team_roster(
        &mut self,
        ctx: &RequestCtx,
        team_id: &str,
        roster: &[Value],
        version: Option<i64>,
    ) -> impl Future<Output = Result<(), RemoteError>>;

    /// Per-entity upsert on (user_id, id) (create and update alike).
    fn upsert_entity(
        &mut self,
        ctx: &RequestCtx,
        entity_type: EntityType,
        data: &Value,
        version: Option<i64>,
    ) -> impl Future<Output = Result<(), RemoteError>>;

    /// Per-entity delete.
    fn delete_entity(
        &mut self,
        ctx: &RequestCtx,
        entity_type: EntityType,
        entity_id: &str,
        data: &Value,
        version: Option<i64>,
    ) -> impl Future<Output = Result<(), RemoteError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_sqlstate() {
        let db = |s: &str| RemoteError::database(s, "x");
        assert_eq!(db("23503").app_class(), AppErrorClass::Validation);
        assert_eq!(db("23514").app_class(), AppErrorClass::Validation);
        assert_eq!(db("22P02").app_class(), AppErrorClass::Validation);
        assert_eq!(db("23505").app_class(), AppErrorClass::AlreadyExists);
        assert_eq!(db("40001").app_class(), AppErrorClass::Network);
        for s in ["22P02", "23503", "23505", "23514", "42501"] {
            assert_eq!(db(s).disposition(), Disposition::Permanent, "{s}");
        }
        for s in ["40001", "57014", "53300"] {
            assert_eq!(
                db(s).disposition(),
                Disposition::Transient { penalty: true },
                "{s}"
            );
        }
        assert_eq!(
            RemoteError::aborted("t").disposition(),
            Disposition::Transient { penalty: false }
        );
        assert_eq!(
            RemoteError::Auth {
                status: 401,
                message: "jwt expired".into()
            }
            .disposition(),
            Disposition::Transient { penalty: false }
        );
        assert_eq!(
            RemoteError::Server {
                status: 503,
                message: "x".into()
            }
            .app_class(),
            AppErrorClass::Network
        );
    }
}
