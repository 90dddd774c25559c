//! The batch-sync plan's client side as a runtime-agnostic library.
//!
//! - [`model`]: entity types, operations, the merge table, the app's backoff;
//! - [`queue`]: [`SyncQueue`], the durable SQLite queue and local store;
//! - [`payload`]: [`BulkSyncPayload`] and its chunking;
//! - [`remote`]: the [`Remote`] trait and error classification;
//! - [`engine`]: [`SyncEngine`] with the `individual`, `batched` and
//!   `hardened` presets.
//!
//! No runtime, no wall clock, no global randomness: time, network and jitter
//! come in through [`engine::Clock`], [`Remote`] and a seed.

pub mod engine;
pub mod model;
pub mod payload;
pub mod queue;
pub mod remote;

pub use engine::{EngineConfig, Preset, SyncEngine};
pub use model::{EntityType, NewOperation, OpKind, OpStatus, SyncOperation};
pub use payload::BulkSyncPayload;
pub use queue::SyncQueue;
pub use remote::{Remote, RemoteError};
