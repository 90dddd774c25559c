//! `SyncEngine`: one engine, three presets.
//!
//! - `individual`: today's app (app-behavior.md, "The per-operation
//!   engine"): up to 10 ready operations a pass, one request each, the app's
//!   error classes, no permanent class.
//! - `batched`: the plan as written (`doProcessQueueBatched`): one
//!   `get_pending_batched(50)`, one bulk call for every non-game type, the
//!   whole batch marked failed on any error, then games one at a time.
//! - `hardened`: the plan plus the fixes the simulator shows are needed, each
//!   a separate switch in [`Hardening`] so a sweep can turn one off and show
//!   the seed that then fails.
//!
//! The engine is a pure core driven from outside (quinn-proto style): it owns
//! no timers and no tasks. The driver calls [`SyncEngine::process_queue`] on
//! the app's triggers (a nudge after every enqueue, the online event, a 30 s
//! interval, engine start after [`SyncEngine::start`], resume) and never runs
//! two passes at once; it honours [`EngineConfig::debounce_ms`] before a
//! nudge-triggered pass. Time and connectivity come from [`Host`], the
//! network from [`Remote`], jitter from a seed.
//!
//! Invariant deliberately absent from code: the engine never holds the queue
//! mutex across an `.await` (a kill drops the future; SQLite transactions
//! must never span one). Every `lock()` below is a statement-level borrow.

use crate::model::{EntityType, MergePolicy, OpKind, SyncOperation};
use crate::payload::{
    parents_of, plan_chunks, server_order_key, BulkSyncPayload, ChunkOptions, DEFAULT_MAX_PER_TYPE,
    MAX_OPS_PER_CALL,
};
use crate::queue::{BatchIdAfter, BatchSelect, NewerVersion, QueueError, SyncQueue};
use crate::remote::{AppErrorClass, Disposition, GameSave, OpRef, Remote, RemoteError, RequestCtx};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, info, warn};

/// What the engine asks of its host: the device clock and connectivity.
pub trait Host {
    /// Device clock, milliseconds.
    fn now_ms(&self) -> i64;
    /// Whether the device believes it is online (the browser's flag). A pass
    /// stops when it turns false.
    fn is_online(&self) -> bool {
        true
    }
    /// A coverage mark: the engine reached a named interesting state (a
    /// simulator counts them to prove its faults still fire). No-op by
    /// default.
    fn mark(&self, _name: &'static str) {}
    /// A sync pass ended without sending anything. A simulator records it:
    /// many at one instant are a busy loop. No-op by default.
    fn idle_pass(&self) {}
}

/// The three named configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    Individual,
    Batched,
    Hardened,
}

impl Preset {
    pub const ALL: [Preset; 3] = [Preset::Individual, Preset::Batched, Preset::Hardened];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Individual => "individual",
            Preset::Batched => "batched",
            Preset::Hardened => "hardened",
        }
    }

    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// How operations travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// One request per operation.
    Individual,
    /// Bulk calls for non-game types, games one at a time.
    Batched,
}

/// The hardened preset's fixes, each a switch that can be turned off alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hardening {
    /// One operation in flight per entity; a new edit merges into a pending
    /// or failed operation; a failed operation superseded by a newer one of
    /// the same entity is dropped instead of replayed later.
    pub single_flight: bool,
    /// A batch id per bulk call, kept across an indeterminate outcome so the
    /// re-send is answered from the server's record (exactly-once).
    pub batch_id: bool,
    /// Per-entity versions: the server ignores stale writes and deletes
    /// leave tombstones (no stale overwrite, no resurrection).
    pub versions: bool,
    /// A child waits while its parent has a queued upsert not in the same
    /// bulk call (rosters, adjustments and games after their team, season,
    /// tournament).
    pub parents_first: bool,
    /// A permanent error splits the batch to find the bad record, which is
    /// quarantined with its error; the rest syncs.
    pub isolate_bad_records: bool,
    /// SQLSTATE classification: 22xxx/23xxx/42501 permanent; everything else
    /// transient and retried forever with capped, jittered backoff.
    pub classify_errors: bool,
    /// Chunk size halves on a timeout and grows back on success, and no
    /// call carries more operations than the server accepts
    /// (`MAX_OPS_PER_CALL`), whatever `max_per_type` is.
    pub adaptive_chunk: bool,
    /// The local write and the enqueue happen in one SQLite transaction
    /// (the driver's business; recorded here so a preset names it).
    pub atomic_local_write: bool,
    /// No operation waits longer than the longest backoff: when the device
    /// clock reads earlier than before (a user who set it ahead puts it
    /// right, an NTP step) and at engine start, ready times further out
    /// than that are brought in. Without it, an operation that failed
    /// while the clock was a day ahead waits a day after it is corrected.
    pub clock_guard: bool,
    /// One engine per device: in a browser, every tab of the app shares the
    /// queue, and only the tab that holds the device's lock (Web Locks)
    /// runs its engine (the driver's business, as `atomic_local_write`).
    pub tab_lock: bool,
}

impl Hardening {
    pub const NONE: Hardening = Hardening {
        single_flight: false,
        batch_id: false,
        versions: false,
        parents_first: false,
        isolate_bad_records: false,
        classify_errors: false,
        adaptive_chunk: false,
        atomic_local_write: false,
        clock_guard: false,
        tab_lock: false,
    };
    pub const ALL: Hardening = Hardening {
        single_flight: true,
        batch_id: true,
        versions: true,
        parents_first: true,
        isolate_bad_records: true,
        classify_errors: true,
        adaptive_chunk: true,
        atomic_local_write: true,
        clock_guard: true,
        tab_lock: true,
    };

    /// Switch names, for sweeps that turn one off.
    pub const NAMES: [&'static str; 10] = [
        "single_flight",
        "batch_id",
        "versions",
        "parents_first",
        "isolate_bad_records",
        "classify_errors",
        "adaptive_chunk",
        "atomic_local_write",
        "clock_guard",
        "tab_lock",
    ];

    /// Turns one switch off by name; false when the name is unknown.
    pub fn disable(&mut self, name: &str) -> bool {
        let slot = match name {
            "single_flight" => &mut self.single_flight,
            "batch_id" => &mut self.batch_id,
            "versions" => &mut self.versions,
            "parents_first" => &mut self.parents_first,
            "isolate_bad_records" => &mut self.isolate_bad_records,
            "classify_errors" => &mut self.classify_errors,
            "adaptive_chunk" => &mut self.adaptive_chunk,
            "atomic_local_write" => &mut self.atomic_local_write,
            "clock_guard" => &mut self.clock_guard,
            "tab_lock" => &mut self.tab_lock,
            _ => return false,
        };
        *slot = false;
        true
    }
}

/// Engine configuration. Build one with [`EngineConfig::preset`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngineConfig {
    pub preset: Preset,
    pub mode: Mode,
    /// Individual mode: ready operations taken per pass (the app's 10).
    pub pass_limit: usize,
    /// Batched mode: operations per entity type per bulk call (plan: 50).
    pub max_per_type: usize,
    /// The client-side request timer (the app's 90 s race).
    pub request_timeout_ms: i64,
    /// Wait after a nudge before a pass, to collect edits (plan's open
    /// question 1; default 0 = immediate).
    pub debounce_ms: i64,
    /// Hardened backoff cap (jittered).
    pub backoff_cap_ms: i64,
    /// Bound on passes per `process_queue` call (the re-check loop).
    pub max_passes_per_call: u32,
    pub hardening: Hardening,
    /// Bugs planted on purpose to show the simulator catches them. They act
    /// only in simulation builds (`--cfg madsim`); elsewhere they compile to
    /// nothing.
    #[serde(default)]
    pub planted: PlantedEngineBugs,
}

/// Engine bugs from the app's history, planted on purpose (simulation builds
/// only; see [`EngineConfig::planted`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlantedEngineBugs {
    /// Engine start skips `reset_stale_syncing`: an operation in flight at a
    /// kill stays `syncing` forever.
    pub no_stale_reset: bool,
    /// The bulk payload is built from the copies fetched before earlier
    /// `.await`s, not from what is marked syncing: a merge that lands in
    /// between is lost (the app's lost-update bug).
    pub stale_payload: bool,
    /// The re-check after a pass counts operations still in backoff as
    /// work, and a pass that sent nothing does not stop the loop: the
    /// engine spins through empty passes until its pass bound (the app's
    /// busy loop).
    pub busy_loop: bool,
    /// Enqueue uses the plan's merge rule (`MergePolicy::PendingOnly`): a
    /// `failed` operation is skipped, so a new edit of its entity becomes a
    /// second operation, and "Retry failed" later replays the failed one's
    /// older data over it (the app's "failed operation that escaped
    /// merging").
    pub failed_escapes_merge: bool,
    /// A merge keeps the operation's batch id (planted in the queue by
    /// `SyncQueue::plant_merge_keeps_batch_id`, which the driver calls): an
    /// edit merged into an operation whose batch committed behind a lost
    /// response is re-sent under that batch's id, answered as a replay, and
    /// `mark_batch_completed` deletes it (the app's completion deleting a
    /// newer merged edit).
    pub merge_keeps_batch_id: bool,
    /// An operation that changed between its selection and mark syncing is
    /// sent without the selection's parent rules: an edit that re-linked a
    /// child to a parent created after the selection sends the child
    /// without it, the call fails its foreign key, and the child is
    /// quarantined as a bad record (found in the hardened engine by
    /// `sim explore partial-failure`, seed 778893).
    pub changed_op_unchecked: bool,
    /// `without_subsumed` runs only on a fresh selection, as it first did:
    /// a roster delete that its team's queued delete subsumes is still sent
    /// when it comes back in an unresolved batch (the team's create left the
    /// batch by merging into a delete) or is pulled in as a blocker of the
    /// team's delete. On a team the server never saw, the call fails "team
    /// not found" and the roster delete is quarantined as a bad record
    /// (found in the hardened engine by `sim explore flaky-network`, seed
    /// 779437).
    pub roster_delete_unsubsumed: bool,
    /// An operation that a newer version of its entity supersedes is still
    /// sent when it comes back to pending from an unresolved batch, the
    /// unsent half of a split call or a kill (the whole rule off; see
    /// `stale_resent` for its second half alone): an adjustment created
    /// for a team, then deleted while in flight, is re-sent after the
    /// team's delete and fails its foreign key on a server that never saw
    /// the team (found in the hardened engine by `sim explore
    /// offline-reconnect`, seed 14001710, through `no_honest_rejection`);
    /// and a game's save, back to pending after a kill beside the user's
    /// newer delete of the game, is sent naming a parent deleted since
    /// (found by the full-mix scenario; regression
    /// `superseded-game-seed438`).
    pub superseded_resent: bool,
    /// The halves of a split call are sent as they were split, not held to
    /// the selection's rules again when their turn comes: an edit made
    /// while earlier halves were in flight (a team's create merged into a
    /// delete, a newer edit superseding an operation) is not seen, and a
    /// roster delete or an orphaned child is sent for a parent the server
    /// never saw (found in the hardened engine by the orphan-resend
    /// scenario, seeds 2412 and 82, where it shows on 1 seed of 3,000; the
    /// bisect-churn scenario makes it common). The engine test
    /// `a_child_relinked_mid_pass_waits_for_its_new_parent` also plants it,
    /// with `changed_op_unchecked`, as its control.
    pub half_unchecked: bool,
    /// An operation counts as superseded only while the newer operation of
    /// its entity is still queued: once that one has left (sent, or
    /// completed locally as subsumed), the stale one is sent again. A
    /// roster's create, in flight when the user deleted the roster and its
    /// team, comes back after the roster's delete was subsumed by the
    /// team's, and fails its foreign key alone on a server that never saw
    /// the team (found in the hardened engine by full-mix, seed 21002778).
    pub stale_resent: bool,
    /// A member that takes a name another one gave up locally is sent
    /// without waiting for that one's delete or rename to land: the call
    /// applies upserts before deletes, and a rename merged with a later
    /// edit may sit behind the taker, so the server still holds the name
    /// and rejects the call with a unique violation; the taker is then
    /// quarantined as a bad record (found in the hardened engine by the
    /// name-handover scenario).
    pub name_handover_unchecked: bool,
}

impl PlantedEngineBugs {
    fn active(flag: bool) -> bool {
        cfg!(madsim) && flag
    }
}

impl EngineConfig {
    pub fn preset(preset: Preset) -> EngineConfig {
        let (mode, hardening) = match preset {
            Preset::Individual => (Mode::Individual, Hardening::NONE),
            Preset::Batched => (Mode::Batched, Hardening::NONE),
            Preset::Hardened => (Mode::Batched, Hardening::ALL),
        };
        EngineConfig {
            preset,
            mode,
            pass_limit: 10,
            max_per_type: DEFAULT_MAX_PER_TYPE,
            request_timeout_ms: 90_000,
            debounce_ms: 0,
            backoff_cap_ms: crate::model::BACKOFF_CAP_MS,
            max_passes_per_call: 1_000,
            hardening,
            planted: PlantedEngineBugs::default(),
        }
    }

    /// The merge policy enqueue should use under this configuration.
    pub fn merge_policy(&self) -> MergePolicy {
        if self.hardening.single_flight
            && !PlantedEngineBugs::active(self.planted.failed_escapes_merge)
        {
            MergePolicy::PendingOrFailed
        } else {
            MergePolicy::PendingOnly
        }
    }
}

/// Counters since the engine was created (memory only: lost on a kill).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStats {
    pub passes: u64,
    pub requests: u64,
    pub bulk_requests: u64,
    pub ops_sent: u64,
    pub ops_completed: u64,
    pub aborts: u64,
    pub failures: u64,
    pub retries_scheduled: u64,
    pub ops_quarantined: u64,
    pub ops_superseded: u64,
    pub batch_splits: u64,
    pub replays_answered: u64,
}

/// A snapshot for the UI and the driver.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineStatus {
    pub pending: u64,
    pub in_flight: u64,
    pub failed: u64,
    pub quarantined: u64,
    pub last_error: Option<String>,
    pub next_retry_at_ms: Option<i64>,
    /// Operations that will not reach the server without the user's action
    /// ("retry failed"): failed and not quarantined.
    pub stalled: bool,
}

/// Errors of a pass: only the local queue can fail it. Remote errors are
/// outcomes, recorded on the operations.
pub type EngineError = QueueError;

/// Tiny deterministic PRNG for jitter (SplitMix64): no global randomness.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi]`.
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        debug_assert!(lo <= hi);
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as i64
    }
}

/// Whether an upsert taking a unique name must wait for others to give it
/// up on the server first (`SyncEngine::name_releasers_awaited`).
enum NameWait {
    /// It takes no name another member gave up.
    None,
    /// Members swapped names: no order of sends works, so it is sent.
    SwapSent,
    /// It waits for these members' releases.
    For(Vec<String>),
}

/// Outcome of sending one group of operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    Ok,
    /// Failed; keep going with the rest of the pass.
    Failed,
    /// Stop the pass (offline, abort or a transient error under hardening).
    Stop,
}

/// The plan's `SyncEngine`.
pub struct SyncEngine<R: Remote, H: Host> {
    config: EngineConfig,
    queue: Arc<Mutex<SyncQueue>>,
    remote: R,
    host: H,
    rng: SplitMix64,
    /// `save_game_with_relations` expected versions (memory only, like the
    /// app's cache).
    game_versions: BTreeMap<String, i64>,
    /// Adaptive chunk size (hardened); `config.max_per_type` otherwise.
    chunk_limit: usize,
    /// Half the chunk size whose call the server last cancelled for its
    /// statement timeout (hardened; `max_per_type` until then). Below it
    /// the chunk doubles after a success; from it up, it grows by a
    /// quarter, so it does not climb straight back to a size the server
    /// is known to be too slow for (TCP's slow-start threshold).
    chunk_threshold: usize,
    last_error: Option<String>,
    stats: EngineStats,
    /// The latest device clock reading any decision used since the last
    /// round of passes began (`clock_guard`), memory only: a restart caps
    /// waits anyway. A `Cell`, so that every read goes through `now_ms`.
    clock_seen_ms: std::cell::Cell<i64>,
}

impl<R: Remote, H: Host> SyncEngine<R, H> {
    pub fn new(
        config: EngineConfig,
        queue: Arc<Mutex<SyncQueue>>,
        remote: R,
        host: H,
        jitter_seed: u64,
    ) -> Self {
        let chunk_limit = config.max_per_type.max(1);
        SyncEngine {
            config,
            queue,
            remote,
            host,
            rng: SplitMix64::new(jitter_seed),
            game_versions: BTreeMap::new(),
            chunk_limit,
            chunk_threshold: chunk_limit,
            last_error: None,
            stats: EngineStats::default(),
            clock_seen_ms: std::cell::Cell::new(i64::MIN),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    pub fn remote(&self) -> &R {
        &self.remote
    }

    pub fn remote_mut(&mut self) -> &mut R {
        &mut self.remote
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    /// Current adaptive chunk size.
    pub fn chunk_limit(&self) -> usize {
        self.chunk_limit
    }

    fn q(&self) -> MutexGuard<'_, SyncQueue> {
        // A poisoned mutex means a panic elsewhere already failed the run.
        self.queue.lock().expect("queue mutex poisoned")
    }

    /// Engine start: every `syncing` operation goes back to `pending` (the
    /// app's rule; an operation in flight at a kill is sent again), and
    /// under `clock_guard` no wait is left longer than the longest backoff.
    pub fn start(&mut self) -> Result<u64, EngineError> {
        let n = if PlantedEngineBugs::active(self.config.planted.no_stale_reset) {
            0
        } else {
            self.q().reset_stale_syncing()?
        };
        if n > 0 {
            info!(
                reset = n,
                "engine start: stale syncing operations back to pending"
            );
        }
        // The clock may have gone back while the app was not running, and
        // the reset derives ready times from attempt times read on it.
        if self.config.hardening.clock_guard {
            let now = self.now_ms();
            self.clock_seen_ms.set(now);
            self.cap_waits(now)?;
        }
        Ok(n)
    }

    /// The device clock; every reading the engine acts on comes through
    /// here, so that `guard_clock` knows the latest one.
    fn now_ms(&self) -> i64 {
        let t = self.host.now_ms();
        if t > self.clock_seen_ms.get() {
            self.clock_seen_ms.set(t);
        }
        t
    }

    /// The longest wait any backoff here sets: the app's capped backoff,
    /// the hardened jittered one, the 2 s rule after an abort.
    fn max_wait_ms(&self) -> i64 {
        crate::model::BACKOFF_CAP_MS
            .max(self.config.backoff_cap_ms)
            .max(crate::model::ABORT_RETRY_DELAY_MS)
    }

    /// `clock_guard`: a ready time further out than the longest wait was
    /// computed on a clock that has since gone back; it is brought in to
    /// the longest wait from now. O(pending), so only at start and when the
    /// clock is seen going back.
    fn cap_waits(&mut self, now: i64) -> Result<(), EngineError> {
        let max_wait = self.max_wait_ms();
        let capped = self.q().cap_waits(now, max_wait)?;
        if capped > 0 {
            self.host.mark("wait_capped_after_clock_back");
            info!(ops = capped, "device clock went back: waits capped");
        }
        Ok(())
    }

    /// `clock_guard`, before each round of passes: notices the device clock
    /// reading earlier than it did.
    fn guard_clock(&mut self) -> Result<(), EngineError> {
        if !self.config.hardening.clock_guard {
            return Ok(());
        }
        // Against the latest reading anything used, not only the last
        // round's start: a call that timed out after the clock jumped
        // ahead set its ready time on the ahead clock, inside a round that
        // began before the jump.
        let seen = self.clock_seen_ms.get();
        let now = self.host.now_ms();
        self.clock_seen_ms.set(now);
        if now < seen {
            self.cap_waits(now)?;
        }
        Ok(())
    }

    pub fn status(&self) -> Result<EngineStatus, EngineError> {
        let now = self.now_ms();
        let q = self.q();
        let s = q.stats(now)?;
        Ok(EngineStatus {
            pending: s.pending,
            in_flight: s.syncing,
            failed: s.failed,
            quarantined: s.quarantined,
            last_error: self.last_error.clone(),
            next_retry_at_ms: q.next_ready_at_ms()?,
            stalled: s.failed > s.quarantined,
        })
    }

    /// Whether a ready operation is waiting (the re-check after a pass:
    /// operations still in backoff are not work, or the loop would spin).
    fn has_ready_work(&self) -> Result<bool, EngineError> {
        if PlantedEngineBugs::active(self.config.planted.busy_loop) {
            let (pending, _, _) = self.q().status_counts()?;
            return Ok(pending > 0);
        }
        let now = self.now_ms();
        self.q().any_ready(now)
    }

    /// Runs passes until no ready work is left, the device is offline, a pass
    /// stops on a transient error, or `max_passes_per_call` is reached.
    pub async fn process_queue(&mut self) -> Result<(), EngineError> {
        self.guard_clock()?;
        for _ in 0..self.config.max_passes_per_call {
            if !self.host.is_online() || !self.has_ready_work()? {
                return Ok(());
            }
            self.stats.passes += 1;
            let requests_before = self.stats.requests;
            let sent = match self.config.mode {
                Mode::Individual => self.pass_individual().await?,
                Mode::Batched => self.pass_batched().await?,
            };
            // A pass that sent nothing (every ready child waits for a
            // parent in backoff) would spin: stop until a trigger.
            let idle = self.stats.requests == requests_before;
            if idle {
                self.host.idle_pass();
            }
            let spin = PlantedEngineBugs::active(self.config.planted.busy_loop);
            if sent == Sent::Stop || (idle && !spin) {
                return Ok(());
            }
        }
        warn!(
            passes = self.config.max_passes_per_call,
            "process_queue hit its pass bound with work left"
        );
        Ok(())
    }

    // ----- individual (today's engine) -------------------------------------

    async fn pass_individual(&mut self) -> Result<Sent, EngineError> {
        let now = self.now_ms();
        let ops = self.q().get_pending(self.config.pass_limit, now)?;
        debug!(count = ops.len(), "individual pass");
        for op in ops {
            if !self.host.is_online() {
                return Ok(Sent::Stop);
            }
            // The op may have been merged or removed since the fetch.
            let Some(current) = self.q().get(&op.id)? else {
                continue;
            };
            self.send_single(current).await?;
        }
        Ok(Sent::Ok)
    }

    /// One operation, one request: mark syncing, send, complete or fail.
    async fn send_single(&mut self, op: SyncOperation) -> Result<Sent, EngineError> {
        let now = self.now_ms();
        self.q()
            .mark_batch_syncing(std::slice::from_ref(&op.id), now, None)?;
        let ctx = self.ctx(std::slice::from_ref(&op));
        let version = self.config.hardening.versions.then_some(op.version);
        self.stats.requests += 1;
        self.stats.ops_sent += 1;
        let result = match (op.entity_type, op.kind) {
            (EntityType::Game, OpKind::Delete) => {
                self.remote
                    .delete_entity(&ctx, op.entity_type, &op.entity_id, &op.data, version)
                    .await
            }
            (EntityType::Game, _) => self.save_game(&ctx, &op).await,
            (EntityType::TeamRoster, kind) => {
                let roster = if kind.is_delete() {
                    Vec::new()
                } else {
                    op.data.as_array().cloned().unwrap_or_default()
                };
                self.remote
                    .set_team_roster(&ctx, &op.entity_id, &roster, version)
                    .await
            }
            (t, OpKind::Delete) => {
                self.remote
                    .delete_entity(&ctx, t, &op.entity_id, &op.data, version)
                    .await
            }
            (t, _) => self.remote.upsert_entity(&ctx, t, &op.data, version).await,
        };
        let ids = [op.id.clone()];
        match result {
            Ok(()) => {
                self.complete(&ids)?;
                Ok(Sent::Ok)
            }
            Err(e) => self.fail(&ids, &e, false),
        }
    }

    async fn save_game(&mut self, ctx: &RequestCtx, op: &SyncOperation) -> Result<(), RemoteError> {
        let mut save = GameSave::from_op_data(&op.data);
        save.expected_version = self.game_versions.get(&op.entity_id).copied();
        save.sync_version = self.config.hardening.versions.then_some(op.version);
        match self.remote.save_game_with_relations(ctx, &save).await {
            Ok(v) => {
                self.game_versions.insert(op.entity_id.clone(), v);
                Ok(())
            }
            Err(e) => {
                if e.sqlstate() == Some("40001") {
                    // The app drops its cached version so the retry
                    // overwrites.
                    self.game_versions.remove(&op.entity_id);
                }
                Err(e)
            }
        }
    }

    // ----- batched (the plan) and hardened ---------------------------------

    async fn pass_batched(&mut self) -> Result<Sent, EngineError> {
        let h = self.config.hardening;
        let now = self.now_ms();

        // Hardened exactly-once: an unresolved batch (sent, outcome unknown)
        // is re-sent as it was, under its id, before anything new.
        if h.batch_id {
            let unresolved = self.q().unresolved_batch(now)?;
            if let Some((batch_id, ops)) = unresolved {
                // Dropping operations from an unresolved batch is safe (if
                // it committed, a dropped one is sent again later and the
                // version gate skips it); adding would not be. A child
                // whose parent has since gained a newer queued edit (that
                // left the batch when it merged) waits for it. A roster
                // delete whose team's create left the batch by merging into
                // a delete is subsumed, as in a fresh selection: sent alone
                // it names a team the server may never have seen (found by
                // `sim explore flaky-network`, seed 779437).
                let kept = if h.parents_first {
                    self.held_to_rules(ops.clone())?
                } else {
                    ops.clone()
                };
                let dropped: Vec<String> = ops
                    .iter()
                    .filter(|o| !kept.iter().any(|k| k.id == o.id))
                    .map(|o| o.id.clone())
                    .collect();
                self.q().clear_batch_id(&dropped)?;
                // A batch that keeps timing out would be re-sent unchanged
                // forever. Once the chunk size has shrunk below it, dissolve
                // it: its operations go back to normal selection under new
                // ids. Safe only with versions (if the old batch committed,
                // the re-sends are skipped as stale), so only then.
                let mut per_type: BTreeMap<EntityType, usize> = BTreeMap::new();
                for o in &kept {
                    *per_type.entry(o.entity_type).or_default() += 1;
                }
                let too_big = per_type.values().any(|n| *n > self.chunk_limit);
                if h.adaptive_chunk && h.versions && too_big {
                    info!(batch_id = %batch_id, ops = kept.len(), limit = self.chunk_limit,
                        "dissolving an unresolved batch larger than the chunk size");
                    let ids: Vec<String> = kept.iter().map(|o| o.id.clone()).collect();
                    self.q().clear_batch_id(&ids)?;
                } else if !kept.is_empty() {
                    info!(batch_id = %batch_id, ops = kept.len(), "re-sending unresolved batch");
                    self.host.mark("batch_resent_same_id");
                    return self.send_bulk(kept, Some(batch_id)).await;
                }
            }
        }

        let select = BatchSelect {
            max_per_type: if h.adaptive_chunk {
                self.chunk_limit
            } else {
                self.config.max_per_type
            },
            single_flight: h.single_flight,
        };
        let batched = self.q().get_pending_batched(select, now)?;
        if batched.is_empty() {
            return Ok(Sent::Ok);
        }
        let mut bulk_ops: Vec<SyncOperation> = Vec::new();
        let mut game_ops: Vec<SyncOperation> = Vec::new();
        for (t, ops) in batched {
            if t == EntityType::Game {
                game_ops.extend(ops);
            } else {
                bulk_ops.extend(ops);
            }
        }
        if h.parents_first {
            bulk_ops = self.without_subsumed(bulk_ops, true)?;
            bulk_ops = self.without_orphans(bulk_ops, true)?;
        }
        info!(ops = bulk_ops.len(), games = game_ops.len(), "batch formed");

        if !bulk_ops.is_empty() {
            // The plan sends one call for everything get_pending_batched
            // returned; chunking only splits what a single payload cannot
            // hold (two operations on one singleton or roster).
            let opts = ChunkOptions {
                max_per_type: usize::MAX,
                max_ops: if h.adaptive_chunk {
                    MAX_OPS_PER_CALL
                } else {
                    usize::MAX
                },
                with_versions: h.versions,
                one_per_entity: h.single_flight,
                parents_first: h.parents_first && h.single_flight,
            };
            let by_id: BTreeMap<String, SyncOperation> =
                bulk_ops.into_iter().map(|o| (o.id.clone(), o)).collect();
            // plan_chunks wants oldest first.
            let mut ordered: Vec<SyncOperation> = by_id.into_values().collect();
            ordered.sort_by(|a, b| (a.timestamp_ms, &a.id).cmp(&(b.timestamp_ms, &b.id)));
            let plan = plan_chunks(&ordered, opts);
            // Each operation is in exactly one chunk: moved out, not copied.
            let mut slots: Vec<Option<SyncOperation>> = ordered.into_iter().map(Some).collect();
            for members in plan {
                let ops: Vec<SyncOperation> = members
                    .into_iter()
                    .map(|i| slots[i].take().expect("an operation is in one chunk"))
                    .collect();
                let batch_id = if h.batch_id {
                    Some(self.new_batch_id()?)
                } else {
                    None
                };
                let sent = self.send_bulk(ops, batch_id).await?;
                if sent == Sent::Stop {
                    return Ok(Sent::Stop);
                }
            }
        }

        // Games one at a time, after the batch (the plan's order).
        for op in game_ops {
            if !self.host.is_online() {
                return Ok(Sent::Stop);
            }
            // Fresh from the queue: an edit may have merged into it while
            // the bulk call was in flight (new data, new parent links).
            let Some(current) = self.q().get(&op.id)? else {
                continue;
            };
            if current.status != crate::model::OpStatus::Pending {
                continue;
            }
            // Held to the bulk selection's rules: a game's create that was
            // in flight at a kill and came back to pending, beside the
            // delete the user made meanwhile, is superseded; sent, it names
            // a tournament the user deleted after the game, and the server
            // saves it with the link nulled (found by the full-mix
            // scenario; regression `superseded-game-seed438`).
            let current = if h.parents_first {
                match self.without_subsumed(vec![current], true)?.pop() {
                    Some(op) => op,
                    None => continue,
                }
            } else {
                current
            };
            if h.parents_first && self.must_wait(&current, &BTreeSet::new())? {
                debug!(game = %current.entity_id, "game waits for its parent");
                continue;
            }
            if self.send_single(current).await? == Sent::Stop {
                return Ok(Sent::Stop);
            }
        }
        Ok(Sent::Ok)
    }

    fn new_batch_id(&mut self) -> Result<String, EngineError> {
        let n = self.q().next_sequence("batch")?;
        Ok(format!("batch-{n}"))
    }

    /// Sends one bulk call and records the outcome on its operations. Under
    /// `isolate_bad_records` a permanent error bisects the group (bounded:
    /// at most 2n-1 calls for n operations) until the bad records stand
    /// alone and are quarantined.
    async fn send_bulk(
        &mut self,
        ops: Vec<SyncOperation>,
        batch_id: Option<String>,
    ) -> Result<Sent, EngineError> {
        let h = self.config.hardening;
        let mut ops = ops;
        // Canonical order: upserts parents first, then deletes children
        // first. Bisection then splits parents to the left, and the left
        // half (with all its own halves) is sent before the right one, so a
        // child never travels before its parent's half has committed.
        ops.sort_by_key(server_order_key);
        // Work list of groups to send (a stack: left halves first), each
        // with its batch id and whether it is a half of a split call.
        let mut work: Vec<(Vec<SyncOperation>, Option<String>, bool)> =
            vec![(ops, batch_id, false)];
        let mut outcome = Sent::Ok;
        let mut budget = 2 * work[0].0.len() + 1;
        let recheck_halves =
            h.parents_first && !PlantedEngineBugs::active(self.config.planted.half_unchecked);
        while let Some((group, batch_id, half)) = work.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            // A half waited while earlier halves were in flight, and the
            // user may have edited meanwhile: a team's create that merged
            // into a delete now subsumes its roster's delete, a newer edit
            // now supersedes an operation. Held to the rules again as a
            // fresh selection is (found by the orphan-resend scenario, seed
            // 2412: a roster delete sent in a half after its team's create,
            // never on the server, had merged into a delete), children
            // included: a parent dropped as superseded leaves its child to
            // wait for the newer operation (seed 82).
            let group = if half && recheck_halves {
                let before = group.len();
                let kept = self.held_to_rules(group)?;
                if kept.len() < before {
                    self.host.mark("split_half_trimmed");
                }
                kept
            } else {
                group
            };
            if group.is_empty() {
                continue;
            }
            if !self.host.is_online() {
                return Ok(Sent::Stop);
            }
            let now = self.now_ms();
            // Build the payload from what is now marked syncing, not from
            // the copies fetched earlier: while earlier halves were in
            // flight a new edit may have merged into a pending operation
            // (the app's "lost update between fetch and mark syncing").
            let group = if PlantedEngineBugs::active(self.config.planted.stale_payload) {
                let ids: Vec<String> = group.iter().map(|o| o.id.clone()).collect();
                self.q()
                    .mark_batch_syncing(&ids, now, batch_id.as_deref())?;
                group
            } else {
                self.mark_syncing_fresh(group, now, batch_id.as_deref())?
            };
            if group.is_empty() {
                continue;
            }
            let ids: Vec<String> = group.iter().map(|o| o.id.clone()).collect();
            let mut payload = BulkSyncPayload::default();
            for op in &group {
                payload.push(op, h.versions);
            }
            payload.batch_id = batch_id.clone();
            let ctx = self.ctx(&group);
            self.stats.requests += 1;
            self.stats.bulk_requests += 1;
            self.stats.ops_sent += group.len() as u64;
            info!(ops = ids.len(), batch_id = ?batch_id, "bulk_sync_entities sent");
            match self.remote.bulk_sync(&ctx, &payload).await {
                Ok(result) => {
                    if result.replayed {
                        self.stats.replays_answered += 1;
                    }
                    info!(
                        ops = ids.len(),
                        replayed = result.replayed,
                        "batch committed"
                    );
                    self.complete(&ids)?;
                    if h.adaptive_chunk {
                        self.chunk_limit = if self.chunk_limit < self.chunk_threshold {
                            (self.chunk_limit * 2).min(self.chunk_threshold)
                        } else {
                            self.chunk_limit + (self.chunk_limit / 4).max(1)
                        }
                        .min(self.config.max_per_type);
                    }
                }
                Err(e) => {
                    warn!(ops = ids.len(), error = %e, "batch failed");
                    let permanent = h.classify_errors && e.disposition() == Disposition::Permanent;
                    if permanent && h.isolate_bad_records && group.len() > 1 {
                        // Back to pending without penalty, then bisect. New
                        // batch ids: these are different requests.
                        let now = self.now_ms();
                        self.q().mark_batch_aborted(
                            &ids,
                            &e.to_string(),
                            now,
                            BatchIdAfter::Forget,
                        )?;
                        self.stats.batch_splits += 1;
                        self.host.mark("bad_record_isolated");
                        let mut left = group;
                        let right = left.split_off(left.len() / 2);
                        for half in [right, left] {
                            let id = if h.batch_id {
                                Some(self.new_batch_id()?)
                            } else {
                                None
                            };
                            work.push((half, id, true));
                        }
                        continue;
                    }
                    // A timeout, or a statement the server cancelled for
                    // running too long: the call was too big for this link
                    // or this server right now.
                    let too_big = e.is_indeterminate() || e.sqlstate() == Some("57014");
                    if too_big && h.adaptive_chunk {
                        self.chunk_limit = (self.chunk_limit / 2).max(1);
                        // Only the server's own "too slow" sets the
                        // threshold. A client timeout or a lost answer may
                        // be the link of the moment, and growing back slowly
                        // after one cost abort-cascade 7% of mean drain time
                        // (568 s to 609 s over 100 seeds); after 57014 it
                        // halved big-import's (83 s to 44 s median).
                        if e.sqlstate() == Some("57014") {
                            self.chunk_threshold = self.chunk_limit;
                        }
                        self.host.mark("chunk_shrunk");
                    }
                    match self.fail(&ids, &e, true)? {
                        Sent::Stop => return Ok(Sent::Stop),
                        Sent::Failed => outcome = Sent::Failed,
                        Sent::Ok => {}
                    }
                }
            }
        }
        Ok(outcome)
    }

    /// Marks `group` syncing and returns the operations among it that are
    /// syncing now, with their current content, in the same order. Most
    /// copies are unchanged since they were fetched: a compare-and-set on
    /// each row's `seq` marks those and keeps the copies. Only an operation
    /// that changed (merged, or no longer pending) is read again, held to
    /// the selection's parent rules (`admit_changed`) and marked by id, so
    /// the common case reads nothing.
    fn mark_syncing_fresh(
        &mut self,
        group: Vec<SyncOperation>,
        now_ms: i64,
        batch_id: Option<&str>,
    ) -> Result<Vec<SyncOperation>, EngineError> {
        let marked = self
            .q()
            .mark_batch_syncing_unchanged(&group, now_ms, batch_id)?;
        let changed: Vec<String> = group
            .iter()
            .zip(&marked)
            .filter(|(_, m)| !**m)
            .map(|(o, _)| o.id.clone())
            .collect();
        if !changed.is_empty() {
            self.host.mark("op_changed_before_mark");
            let admitted = self.admit_changed(&group, changed)?;
            self.q().mark_batch_syncing(&admitted, now_ms, batch_id)?;
        }
        let q = self.q();
        let mut out = Vec::with_capacity(group.len());
        for (mut op, unchanged) in group.into_iter().zip(marked) {
            if unchanged {
                // What the UPDATE wrote. Bookkeeping the compare does not
                // cover (`last_error`, `retry_count`) stays as read; from
                // here on only the content and the id are used.
                op.status = crate::model::OpStatus::Syncing;
                op.last_attempt_ms = Some(now_ms);
                if let Some(b) = batch_id {
                    op.batch_id = Some(b.to_string());
                }
                out.push(op);
            } else if let Some(current) = q.get(&op.id)? {
                if current.status == crate::model::OpStatus::Syncing {
                    out.push(current);
                }
            }
        }
        Ok(out)
    }

    /// Which of the `changed` members of `group` may still go in its call.
    /// A changed operation carries content the selection never saw: the
    /// edit that merged in may link a parent created after the selection
    /// (queued, not in this call, not on the server), or may have turned a
    /// roster's operation into a delete that its team's queued delete
    /// subsumes. Under `parents_first` the first kind stays pending for the
    /// next pass, whose selection takes it with its parent (found by
    /// `sim explore partial-failure`, seed 778893: an adjustment re-linked
    /// to a new team was sent without it, failed its foreign key alone, and
    /// was quarantined as a bad record); the second is completed locally,
    /// as `without_subsumed` does (deferred, it would outlive its team's
    /// delete and then be sent alone). Deferring never strands another
    /// member: only a child waits, and the one child that something else
    /// waits for, a roster (a team's delete waits for it), is deferred only
    /// while its team has a queued upsert, so that team has no queued
    /// delete in this call.
    fn admit_changed(
        &mut self,
        group: &[SyncOperation],
        changed: Vec<String>,
    ) -> Result<Vec<String>, EngineError> {
        let h = self.config.hardening;
        if !h.parents_first || PlantedEngineBugs::active(self.config.planted.changed_op_unchecked) {
            return Ok(changed);
        }
        let mut current = Vec::with_capacity(changed.len());
        for id in &changed {
            if let Some(op) = self.q().get(id)? {
                if op.status == crate::model::OpStatus::Pending {
                    current.push(op);
                }
            }
        }
        let current = self.without_subsumed(current, false)?;
        let in_group: BTreeSet<String> = group.iter().map(|o| o.id.clone()).collect();
        let mut admitted = Vec::with_capacity(current.len());
        for op in current {
            if self.must_wait(&op, &in_group)? {
                debug!(op = %op.id, "changed operation waits for the next selection");
                self.host.mark("changed_op_deferred");
            } else {
                admitted.push(op.id);
            }
        }
        Ok(admitted)
    }

    fn ctx(&self, ops: &[SyncOperation]) -> RequestCtx {
        RequestCtx {
            timeout_ms: self.config.request_timeout_ms,
            ops: ops
                .iter()
                .map(|o| OpRef {
                    op_id: o.id.clone(),
                    entity_type: o.entity_type,
                    entity_id: o.entity_id.clone(),
                    kind: o.kind,
                    version: o.version,
                })
                .collect(),
        }
    }

    fn complete(&mut self, ids: &[String]) -> Result<(), EngineError> {
        self.q().mark_batch_completed(ids)?;
        self.stats.ops_completed += ids.len() as u64;
        Ok(())
    }

    /// Records a failed request on its operations, by preset. `bulk`: the
    /// request was a `bulk_sync_entities` call.
    fn fail(&mut self, ids: &[String], e: &RemoteError, bulk: bool) -> Result<Sent, EngineError> {
        let h = self.config.hardening;
        let single = ids.len() == 1;
        let now = self.now_ms();
        let msg = e.to_string();
        self.last_error = Some(msg.clone());
        if e.is_indeterminate() {
            self.stats.aborts += 1;
        } else {
            self.stats.failures += 1;
        }

        if h.classify_errors {
            let sent = match e.disposition() {
                Disposition::Transient { penalty: false } => {
                    // Abort or auth: no penalty; the 2 s rule applies. The
                    // batch id stays so the re-send is recognised.
                    self.q()
                        .mark_batch_aborted(ids, &msg, now, BatchIdAfter::Keep)?;
                    Sent::Stop
                }
                Disposition::Transient { penalty: true } => {
                    self.q()
                        .mark_batch_failed(ids, &msg, now, true, BatchIdAfter::Forget)?;
                    self.schedule_jittered(ids)?;
                    Sent::Stop
                }
                Disposition::Permanent if single && h.isolate_bad_records => {
                    self.q().mark_quarantined(&ids[0], &msg)?;
                    self.stats.ops_quarantined += 1;
                    self.host.mark("quarantined");
                    warn!(op = %ids[0], error = %msg, "operation quarantined");
                    Sent::Failed
                }
                Disposition::Permanent => {
                    self.q()
                        .mark_batch_failed(ids, &msg, now, true, BatchIdAfter::Forget)?;
                    self.schedule_jittered(ids)?;
                    Sent::Failed
                }
            };
            if h.single_flight {
                self.drop_superseded(ids)?;
            }
            return Ok(sent);
        }

        // Today's classes (individual) or the plan's catch-all (batched).
        let plan_batch = bulk;
        let class = e.app_class();
        let sent = match class {
            _ if plan_batch => {
                // The plan: any error marks the whole batch failed.
                self.q()
                    .mark_batch_failed(ids, &msg, now, false, BatchIdAfter::Keep)?;
                Sent::Failed
            }
            AppErrorClass::Abort | AppErrorClass::Auth => {
                self.q()
                    .mark_batch_aborted(ids, &msg, now, BatchIdAfter::Keep)?;
                Sent::Failed
            }
            AppErrorClass::AlreadyExists => {
                // Conflict resolution by last-write-wins on timestamps: the
                // server row is taken as newer and the local edit is
                // acknowledged (the app's "name collision acknowledged
                // silently").
                self.q().mark_batch_completed(ids)?;
                Sent::Failed
            }
            AppErrorClass::Validation | AppErrorClass::Network => {
                self.q()
                    .mark_batch_failed(ids, &msg, now, false, BatchIdAfter::Keep)?;
                Sent::Failed
            }
        };
        self.stats.retries_scheduled += 1;
        // Today's engine keeps going through the pass when the device is
        // online; the plan's batched pass continues to games.
        if !self.host.is_online() {
            return Ok(Sent::Stop);
        }
        Ok(sent)
    }

    /// Hardened backoff: `min(cap, 1 s * 2^(n-1))`, then "equal jitter"
    /// (half fixed, half random) so devices do not retry in lockstep.
    fn schedule_jittered(&mut self, ids: &[String]) -> Result<(), EngineError> {
        let now = self.now_ms();
        let mut ready = Vec::with_capacity(ids.len());
        for id in ids {
            let Some(retries) = self.q().retry_count(id)? else {
                continue;
            };
            let base = crate::model::app_backoff_ms(retries.max(1)).min(self.config.backoff_cap_ms);
            let wait = base / 2 + self.rng.range_i64(0, base / 2);
            ready.push((id.clone(), now + wait));
            self.stats.retries_scheduled += 1;
        }
        self.q().set_ready_at(&ready)?;
        Ok(())
    }

    /// Single-flight: a failed operation with a newer operation queued for
    /// the same entity is dropped; the newer one (a full snapshot with a
    /// higher version) supersedes it.
    fn drop_superseded(&mut self, ids: &[String]) -> Result<(), EngineError> {
        for id in ids {
            // A quarantined operation goes too: the user's newer edit of
            // the entity replaces the bad record.
            if self.superseding(id)?.is_some() {
                self.q().remove(id)?;
                self.stats.ops_superseded += 1;
                debug!(op = %id, "failed operation superseded by a newer edit");
            }
        }
        Ok(())
    }

    /// Where the device holds a newer version of the operation's entity,
    /// if it does (`SyncQueue::newer_version`); with the planted
    /// `stale_resent`, only a newer queued operation counts.
    fn superseding(&self, op_id: &str) -> Result<Option<NewerVersion>, EngineError> {
        let Some(newer) = self.q().newer_version(op_id)? else {
            return Ok(None);
        };
        let local_counts = !PlantedEngineBugs::active(self.config.planted.stale_resent);
        Ok((newer.queued || (newer.local && local_counts)).then_some(newer))
    }

    /// Whether `op` must stay out of a call made of `in_batch`: something
    /// it depends on has not reached the server. Either a blocker (a
    /// parent's upsert, or a team's roster) is queued outside the call, or
    /// `op` takes a name that another member gave up on the device and the
    /// server may still hold (`awaits_released_name`).
    fn must_wait(
        &self,
        op: &SyncOperation,
        in_batch: &BTreeSet<String>,
    ) -> Result<bool, EngineError> {
        Ok(!self.blockers(op, in_batch)?.is_empty() || self.awaits_released_name(op)?)
    }

    /// Whether `op` (an upsert of a `unique_name` type) takes a name that
    /// another member gave up on the device, and that member's release has
    /// not reached the server (`SyncQueue::name_releasers`). The release
    /// cannot share `op`'s call: `bulk_sync_entities` applies every upsert
    /// before any delete, and applies upserts in payload order, where a
    /// rename merged with a later edit sits behind `op`.
    ///
    /// Except when waiting would close a cycle: members that swapped names
    /// (A gives X up, B takes X and gives Y up, A takes Y), their edits
    /// merged, each wait for the other. No order of sends works then (the
    /// intermediate name that let the device do it in turn is gone), so
    /// `op` is sent: the server refuses it and the member is quarantined,
    /// which the user sees, instead of both waiting forever unseen (mark
    /// `name_swap_sent`).
    fn awaits_released_name(&self, op: &SyncOperation) -> Result<bool, EngineError> {
        match self.name_releasers_awaited(op)? {
            NameWait::None => Ok(false),
            NameWait::SwapSent => {
                debug!(op = %op.id, "members swapped names: sent, no order works");
                self.host.mark("name_swap_sent");
                Ok(false)
            }
            NameWait::For(_) => {
                self.host.mark("name_awaits_release");
                Ok(true)
            }
        }
    }

    /// The members whose releases `op` waits for (`awaits_released_name`,
    /// which marks what it finds; this reads only).
    fn name_releasers_awaited(&self, op: &SyncOperation) -> Result<NameWait, EngineError> {
        let t = op.entity_type;
        let name = op
            .data
            .get("name")
            .and_then(serde_json::Value::as_str)
            .filter(|_| t.unique_name() && !op.kind.is_delete());
        let Some(name) = name else {
            return Ok(NameWait::None);
        };
        if PlantedEngineBugs::active(self.config.planted.name_handover_unchecked) {
            return Ok(NameWait::None);
        }
        let releasers = self.q().name_releasers(t, name, &op.entity_id)?;
        if releasers.is_empty() {
            return Ok(NameWait::None);
        }
        if self.name_wait_cycle(t, &op.entity_id, releasers.clone())? {
            return Ok(NameWait::SwapSent);
        }
        Ok(NameWait::For(releasers))
    }

    /// The queued operations of the members whose releases `op` waits for,
    /// as `blockers` gives them: sending one of them is what lets `op` go.
    fn release_blockers(
        &self,
        op: &SyncOperation,
    ) -> Result<Vec<(EntityType, String, String)>, EngineError> {
        let NameWait::For(releasers) = self.name_releasers_awaited(op)? else {
            return Ok(Vec::new());
        };
        let t = op.entity_type;
        let mut out = Vec::new();
        for member in releasers {
            for (id, _) in self.q().queued_for_entity(t, &member)? {
                out.push((t, member.clone(), id));
            }
        }
        Ok(out)
    }

    /// Whether following "waits for the release of" from `releasers` (each
    /// one waits for the members that gave up the name it now holds on the
    /// device) comes back to `start`. Bound: at most
    /// `NAME_WAIT_WALK_MAX` members are visited; a longer walk is taken as
    /// a cycle, since sending early costs one refused call and waiting on
    /// a cycle costs the sync.
    fn name_wait_cycle(
        &self,
        t: EntityType,
        start: &str,
        releasers: Vec<String>,
    ) -> Result<bool, EngineError> {
        const NAME_WAIT_WALK_MAX: usize = 64;
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut frontier = releasers;
        while let Some(member) = frontier.pop() {
            if member == start {
                return Ok(true);
            }
            if !seen.insert(member.clone()) {
                continue;
            }
            if seen.len() > NAME_WAIT_WALK_MAX {
                return Ok(true);
            }
            // The name the member takes now is its local one (its newest
            // operation carries the local state); a deleted member takes
            // none and waits for nobody.
            let local = self.q().local_entity(t, &member)?;
            let held = local
                .filter(|e| !e.deleted)
                .and_then(|e| e.data.get("name")?.as_str().map(str::to_string));
            if let Some(held) = held {
                frontier.extend(self.q().name_releasers(t, &held, &member)?);
            }
        }
        Ok(false)
    }

    /// The queued operations (outside `in_batch`) that must reach the server
    /// before `op`: its parents' upserts; for a team's delete, its roster's
    /// operations (children's deletes before parents': the roster set would
    /// fail once the team is gone). As (type, entity id, operation id), data
    /// unread: most callers only ask whether there are any.
    fn blockers(
        &self,
        op: &SyncOperation,
        in_batch: &BTreeSet<String>,
    ) -> Result<Vec<(EntityType, String, String)>, EngineError> {
        let mut out = Vec::new();
        if op.entity_type == EntityType::Team && op.kind.is_delete() {
            let roster = self
                .q()
                .queued_for_entity(EntityType::TeamRoster, &op.entity_id)?;
            out.extend(
                roster
                    .into_iter()
                    .filter(|(id, _)| !in_batch.contains(id))
                    .map(|(id, _)| (EntityType::TeamRoster, op.entity_id.clone(), id)),
            );
        }
        for (t, entity_id) in parents_of(op) {
            let queued = self.q().queued_for_entity(t, &entity_id)?;
            out.extend(
                queued
                    .into_iter()
                    .filter(|(id, kind)| !kind.is_delete() && !in_batch.contains(id))
                    .map(|(id, _)| (t, entity_id.clone(), id)),
            );
        }
        Ok(out)
    }

    /// A roster delete whose team also has a queued delete is subsumed: the
    /// team's delete removes the roster on the server (cascade), while the
    /// roster's own "set empty" would fail once the team is gone, or if the
    /// team never reached the server. Completed locally, never sent.
    ///
    /// And an operation that a newer version of its entity supersedes
    /// (single flight's second operation, edited while the first was in
    /// flight) is completed locally: the newer one carries the entity's
    /// whole state. Sent, the older one may name a parent deleted since,
    /// and fail its foreign key on a server that never saw that parent. It
    /// comes back to pending, beside the newer one, from an unresolved batch
    /// or the unsent half of a split call, or after a kill; only a failure
    /// dropped it before (`drop_superseded`). The newer one may have left
    /// the queue first (sent, or completed locally as subsumed: a roster's
    /// delete beside its team's), so the question is whether the device's
    /// entity has moved past the operation, not whether a newer operation
    /// is still queued (`SyncQueue::superseded`).
    ///
    /// Every set of operations about to be sent goes through it: a fresh
    /// selection (`fresh`), an unresolved batch re-sent, the roster a team's
    /// delete pulled in as blockers (`without_orphans`), the operations
    /// that changed before mark syncing (`admit_changed`), each half of a
    /// split call when its turn comes (`send_bulk`), and each game before
    /// its save (`pass_batched`).
    fn without_subsumed(
        &mut self,
        ops: Vec<SyncOperation>,
        fresh: bool,
    ) -> Result<Vec<SyncOperation>, EngineError> {
        let planted = &self.config.planted;
        let subsumed = fresh || !PlantedEngineBugs::active(planted.roster_delete_unsubsumed);
        // Single flight's rule, as `drop_superseded` is: without it an
        // entity's operations travel side by side on purpose.
        let superseded = self.config.hardening.single_flight
            && !PlantedEngineBugs::active(planted.superseded_resent);
        let mut kept = Vec::with_capacity(ops.len());
        for op in ops {
            let mark = if subsumed && self.is_subsumed(&op)? {
                Some("roster_delete_subsumed")
            } else if superseded
                // Only an operation already attempted can have a newer one
                // of its entity queued: single flight makes an edit a second
                // operation only while the first is in flight or failed.
                // The filter keeps the query off the common path.
                && op.last_attempt_ms.is_some()
            {
                // Which of the two: the newer operation still queued, or
                // already gone (the stale one would otherwise be the
                // entity's only operation and look current).
                self.superseding(&op.id)?.map(|newer| {
                    if newer.queued {
                        "superseded_before_send"
                    } else {
                        "superseded_after_newer_left"
                    }
                })
            } else {
                None
            };
            match mark {
                Some(mark) => {
                    debug!(op = %op.id, mark, "operation completed locally instead of sent");
                    self.host.mark(mark);
                    self.q().remove(&op.id)?;
                    self.stats.ops_superseded += 1;
                }
                None => kept.push(op),
            }
        }
        Ok(kept)
    }

    /// Operations already selected once (an unresolved batch re-sent, a
    /// half of a split call), held to the selection's rules again: first
    /// what is subsumed or superseded goes, then the children whose parent
    /// is queued outside the call wait. In that order: a parent dropped as
    /// superseded leaves its child to wait for the newer operation.
    fn held_to_rules(
        &mut self,
        ops: Vec<SyncOperation>,
    ) -> Result<Vec<SyncOperation>, EngineError> {
        let ops = self.without_subsumed(ops, false)?;
        self.without_orphans(ops, false)
    }

    /// A roster delete whose team also has a queued delete (see
    /// `without_subsumed`).
    fn is_subsumed(&self, op: &SyncOperation) -> Result<bool, EngineError> {
        Ok(op.entity_type == EntityType::TeamRoster
            && op.kind.is_delete()
            && self
                .q()
                .queued_for_entity(EntityType::Team, &op.entity_id)?
                .iter()
                .any(|(_, kind)| kind.is_delete()))
    }

    /// Drops from a bulk selection the children whose parent has a queued
    /// upsert that is not in the same call (they wait for a later pass).
    fn without_orphans(
        &mut self,
        ops: Vec<SyncOperation>,
        pull_blockers: bool,
    ) -> Result<Vec<SyncOperation>, EngineError> {
        // First pull in the ready operations that block children of this
        // selection (at most MAX_PULLED_BLOCKERS, two rounds): selection
        // takes the oldest operations of each type, and without this a full
        // window of children waiting for parents that sit outside their own
        // type's window starves forever (seen with 60,000-operation
        // backlogs).
        const MAX_PULLED_BLOCKERS: usize = 50;
        let now = self.now_ms();
        let mut ops = ops;
        let mut pulled = 0usize;
        // Never into an unresolved batch: if it committed, its replay would
        // acknowledge operations it never carried.
        let rounds = if pull_blockers { 2 } else { 0 };
        for _round in 0..rounds {
            let ids: BTreeSet<String> = ops.iter().map(|o| o.id.clone()).collect();
            let mut entities: BTreeSet<(EntityType, String)> = ops
                .iter()
                .map(|o| (o.entity_type, o.entity_id.clone()))
                .collect();
            let mut extra = Vec::new();
            for op in &ops {
                // A parent's upsert, or the operation that gives up a name
                // this one takes: the name's holder is the same type, and a
                // window of takers waiting for releasers queued behind them
                // starved the type (hardened at 1 a type on name-handover:
                // 27 of 30 seeds never drained).
                let mut needed = self.blockers(op, &ids)?;
                needed.extend(self.release_blockers(op)?);
                for (t, entity_id, id) in needed {
                    if pulled == MAX_PULLED_BLOCKERS {
                        break;
                    }
                    let key = (t, entity_id);
                    if t.is_bulk() && !entities.contains(&key) && self.q().is_ready(&id, now)? {
                        // Ready a moment ago, in this same synchronous
                        // stretch: it is there.
                        let Some(b) = self.q().get(&id)? else {
                            continue;
                        };
                        entities.insert(key);
                        extra.push(b);
                        pulled += 1;
                    }
                }
            }
            if extra.is_empty() {
                break;
            }
            debug!(pulled = extra.len(), "parents pulled into the batch");
            // A team's delete pulls in its roster's operations; a roster
            // delete among them is subsumed by it and must not be sent.
            let extra = self.without_subsumed(extra, false)?;
            ops.extend(extra);
        }
        let in_batch: BTreeSet<String> = ops.iter().map(|o| o.id.clone()).collect();
        let mut kept = Vec::with_capacity(ops.len());
        for op in ops {
            if self.must_wait(&op, &in_batch)? {
                debug!(op = %op.id, "waits for a parent or a released name");
            } else {
                kept.push(op);
            }
        }
        Ok(kept)
    }
}
