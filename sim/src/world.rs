//! The world: one madsim runtime per (scenario, seed, preset) with a server
//! node, one device node per user, and the nemesis driving faults from a
//! `FaultPlan`.
//!
//! - The server node answers one RPC (`Call`) by applying it to the
//!   in-memory [`ServerModel`] after a processing time that grows with the
//!   payload; a statement that would run past the statement timeout is
//!   cancelled (57014, nothing committed). A request whose response the
//!   nemesis drops still commits: the handler never answers, and the device
//!   sees a timeout (the app's AbortError) while the server has the write.
//! - A device node runs the app: the user's edits (local write + enqueue),
//!   the driver that triggers `SyncEngine::process_queue` (nudge after every
//!   enqueue, the online event, a 30 s interval, start after
//!   `reset_stale_syncing`), never two passes at once. Its SQLite queue lives
//!   on the "disk" (outside the node) and survives a kill; the engine's
//!   memory does not. No SQLite transaction spans an `.await`, so a kill
//!   never leaves one half-done.
//! - Two phases: faults until `fault_phase_ms`, then heal (online, token
//!   valid, no loss, no 5xx, every device running) and quiesce until every
//!   queue is drained or the budget runs out, then settle long enough for
//!   any request still in the network to land. Checkers run on the history
//!   and the final states.

use crate::history::{Event, Outcome, ServerResult};
use crate::nemesis::{FaultParams, FaultPlan};
use crate::server::{
    Carried, DbError, Lock, RecentCommits, ServerModel, Snapshot, UserId, MAX_BULK_OPS,
};
use crate::workload::{Edit, WorkloadParams};
use madsim::net::rpc::Request;
use madsim::net::Endpoint;
use madsim::runtime::{Handle, Runtime};
use madsim::time::{sleep, timeout, Instant};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{c_int, c_void};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_core::engine::{EngineConfig, Host, PlantedEngineBugs, SplitMix64};
use sync_core::payload::BulkSyncPayload;
use sync_core::queue::{LocalEntity, QueueBackend, QueueStats};
use sync_core::remote::{BulkSyncResult, GameSave, RemoteError, RequestCtx};
use sync_core::{EntityType, Remote, SyncOperation, SyncQueue};

/// Everything a run needs besides the seed and the engine configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct WorldParams {
    pub workload: WorkloadParams,
    pub faults: FaultParams,
    pub quiesce_budget_ms: i64,
    pub request_timeout_ms: i64,
    pub interval_ms: i64,
    /// Time a non-atomic local write takes before its enqueue (IndexedDB).
    pub local_write_ms: i64,
    /// Server bugs planted on purpose (`sim explore --bug`); none by default.
    pub server_bugs: crate::server::ServerBugs,
    /// The store each device's queue keeps its rows in: SQLite (the queue
    /// the plan ships, the default) or the B-tree queue (`sim explore
    /// --queue btree`), which answers the same and costs a fraction.
    pub queue: QueueBackend,
    /// An explicit workload and fault plan (a scenario's `[script]`, e.g. a
    /// shrunk failure) instead of the ones the seed expands to. The seed
    /// still drives madsim: loss draws, latencies, backoff jitter.
    pub script: Option<Arc<Script>>,
}

/// A run's workload and faults as data: what the seed expands to, or what a
/// scenario file spells out.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub edits: Vec<Edit>,
    pub plan: FaultPlan,
}

impl WorldParams {
    /// When the run ends at the latest: the fault phase, then the quiesce
    /// budget. The quiesce loop stops here, and "Retry failed" taps go on
    /// until here, so the two cannot disagree.
    pub fn deadline_ms(&self) -> i64 {
        self.faults.fault_phase_ms + self.quiesce_budget_ms
    }

    /// The edits and fault plan of one seed (the script's, if any).
    pub fn expand(&self, seed: u64) -> Script {
        match &self.script {
            Some(script) => Script::clone(script),
            None => Script {
                edits: crate::workload::generate(&self.workload, seed),
                plan: crate::nemesis::plan(&self.faults, self.workload.users, seed),
            },
        }
    }
}

/// What a run leaves for the checkers and the report.
#[derive(Debug)]
pub struct RunOutput {
    /// The edits made bad on purpose (the checkers excuse their quarantine).
    /// The others are consumed as the users make them: a 100,000-edit
    /// workload kept to the end was a third of a run's peak memory.
    pub bad_edits: Vec<Edit>,
    pub plan: FaultPlan,
    /// Coverage marks reached, with how often.
    pub marks: BTreeMap<&'static str, u64>,
    pub history: Vec<Event>,
    pub devices: Vec<DeviceFinal>,
    pub server: ServerModel,
    /// Simulated time when the quiesce phase found every queue drained
    /// (`None`: the budget ran out first).
    pub drained_at_ms: Option<i64>,
    pub end_ms: i64,
    pub fault_phase_ms: i64,
}

#[cfg(test)]
impl RunOutput {
    /// A run that is its history alone: no faults, no devices, an empty
    /// server (tests of what reads only the history).
    pub(crate) fn of_history(history: Vec<Event>) -> RunOutput {
        RunOutput {
            bad_edits: Vec::new(),
            plan: FaultPlan {
                request_loss: 0.0,
                response_loss: 0.0,
                latency_ms: (0, 0),
                bandwidth_bytes_per_ms: 0,
                server_ms_per_row: 0.0,
                statement_timeout_ms: 0,
                offline: Vec::new(),
                silent_drop: Vec::new(),
                kills: Vec::new(),
                token_expired: Vec::new(),
                server_errors: Vec::new(),
                server_error_status: 503,
                clock_skew: Vec::new(),
                clock_skew_ms: 0,
                second_tab: Vec::new(),
                tab_handover: Vec::new(),
            },
            marks: BTreeMap::new(),
            history,
            devices: Vec::new(),
            server: ServerModel::new(),
            drained_at_ms: Some(0),
            end_ms: 0,
            fault_phase_ms: 0,
        }
    }
}

/// A device's durable state at the end.
#[derive(Debug)]
pub struct DeviceFinal {
    pub user: u32,
    pub user_id: UserId,
    pub local: Vec<LocalEntity>,
    pub ops: Vec<SyncOperation>,
    pub stats: QueueStats,
}

/// The requests a device can make.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerRequest {
    Bulk(Box<BulkSyncPayload>),
    SaveGame(GameSave),
    SetRoster {
        team_id: String,
        roster: Vec<Value>,
        version: Option<i64>,
    },
    Upsert {
        entity_type: EntityType,
        data: Value,
        version: Option<i64>,
    },
    Delete {
        entity_type: EntityType,
        entity_id: String,
        version: Option<i64>,
    },
}

impl ServerRequest {
    pub fn name(&self) -> &'static str {
        match self {
            ServerRequest::Bulk(_) => "bulk_sync_entities",
            ServerRequest::SaveGame(_) => "save_game_with_relations",
            ServerRequest::SetRoster { .. } => "set_team_roster",
            ServerRequest::Upsert { .. } => "upsert_entity",
            ServerRequest::Delete { .. } => "delete_entity",
        }
    }

    /// Rows the statement writes (drives processing time): one per entity
    /// or delete, and a roster replaces its team's rows, so it writes one
    /// more per player, in a bulk call as in `set_team_roster`. Counting a
    /// bulk roster as one row made the plan's calls look cheaper than
    /// today's for the same roster.
    fn work_units(&self) -> usize {
        match self {
            ServerRequest::Bulk(p) => {
                let roster_rows: usize = p.team_rosters.iter().map(|r| r.roster.len()).sum();
                (p.op_count() + roster_rows).max(1)
            }
            ServerRequest::SaveGame(g) => {
                1 + g.players.len() + g.events.len() + g.assessments.len()
            }
            ServerRequest::SetRoster { roster, .. } => 1 + roster.len(),
            _ => 1,
        }
    }

    /// What the request locks, in the order it reaches it, each with the
    /// rows it writes before (`server::lock_order` for a bulk call; the
    /// others lock their entity's rows first).
    fn lock_order(&self) -> Vec<(Lock, usize)> {
        let lock = match self {
            ServerRequest::Bulk(p) => return crate::server::lock_order(p),
            ServerRequest::SaveGame(g) => Lock::Row(EntityType::Game, entity_id_of(&g.game)),
            ServerRequest::SetRoster {
                team_id,
                roster,
                version,
            } => Lock::Roster {
                team_id: team_id.clone(),
                players: crate::server::roster_players(roster),
                versioned: version.is_some(),
            },
            ServerRequest::Upsert {
                entity_type, data, ..
            } => {
                let id = match entity_type {
                    EntityType::Settings => "app".to_string(),
                    EntityType::WarmupPlan => "default".to_string(),
                    _ => entity_id_of(data),
                };
                Lock::Row(*entity_type, id)
            }
            ServerRequest::Delete {
                entity_type,
                entity_id,
                ..
            } => Lock::Row(*entity_type, entity_id.clone()),
        };
        vec![(lock, 0)]
    }

    /// What `RecentCommits::record` keeps of this request, committed with
    /// `reply`.
    fn carried(&self, reply: &Reply) -> Carried<'_> {
        match (self, reply) {
            (ServerRequest::Bulk(p), _) => Carried::bulk(p),
            (
                ServerRequest::SetRoster {
                    team_id, roster, ..
                },
                _,
            ) => Carried::roster(team_id, roster),
            (ServerRequest::SaveGame(g), Reply::GameVersion(v)) => Carried::game_save(g, *v),
            _ => Carried::default(),
        }
    }

    /// What this request, begun at `started_ms`, cannot see of the calls
    /// `user` committed since, when it replaces a roster or saves a game
    /// without a version (`server::Snapshot`).
    fn snapshot(&self, recent: &RecentCommits, user: UserId, started_ms: i64) -> Snapshot {
        match self {
            ServerRequest::Bulk(p) => recent.snapshot_for_bulk(user, started_ms, p),
            ServerRequest::SetRoster {
                team_id, version, ..
            } => recent.snapshot_for_roster(user, started_ms, team_id, *version),
            ServerRequest::SaveGame(g) => recent.snapshot_for_game(user, started_ms, g),
            _ => Snapshot::default(),
        }
    }

    /// The request's size as JSON, counted as it is written: nothing is
    /// buffered (a 50-operation payload is kilobytes, and every request
    /// is measured).
    fn wire_bytes(&self) -> u64 {
        let mut count = ByteCount(0);
        match serde_json::to_writer(&mut count, self) {
            Ok(()) => count.0,
            Err(_) => 0,
        }
    }
}

/// PostgreSQL's answer to the victim of a deadlock.
fn deadlock() -> RemoteError {
    RemoteError::database("40P01", "deadlock detected")
}

/// A row's `id`, or empty.
fn entity_id_of(row: &Value) -> String {
    row.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// An `io::Write` that only counts what is written to it.
struct ByteCount(u64);

impl std::io::Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Successful replies.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Reply {
    Bulk(BulkSyncResult),
    GameVersion(i64),
    Done,
}

/// The one RPC: a request with its envelope (who, and what the token says).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Call {
    pub req_id: u64,
    pub user: u32,
    /// `None`: the token expired (PostgREST answers 401 before the database).
    pub auth: Option<UserId>,
    /// The nemesis drops this request's response after the commit.
    pub drop_response: bool,
    pub request: ServerRequest,
}

impl Request for Call {
    type Response = Result<Reply, RemoteError>;
    const ID: u64 = 0x5359_4e43_4341_4c4c; // "SYNCCALL"
}

const SERVER_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const SERVER_PORT: u16 = 5432;

fn device_ip(user: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 1, (user + 1) as u8))
}

/// The user id of simulated user `u` (deterministic).
pub fn user_id(u: u32) -> UserId {
    UserId::from_index(u)
}

/// State shared by every node of one run. Lives outside the nodes, so it
/// outlives kills (the disk, the server's database, the recorders).
struct Shared {
    params: WorldParams,
    config: EngineConfig,
    plan: FaultPlan,
    start: Instant,
    history: Mutex<Vec<Event>>,
    /// Batch ids claimed by the server calls now running, per authenticated
    /// user (017 claims the id first): a duplicate waits on the `Notify`
    /// until the claim is released.
    batch_claims: Mutex<BTreeMap<(UserId, String), Arc<tokio::sync::Notify>>>,
    /// What the calls committed within the last statement timeout wrote: a
    /// call running beside them may not see it (`server::Snapshot`).
    recent_commits: Mutex<RecentCommits>,
    /// The server calls whose statements run, by request id
    /// (`RunningCall`).
    running_calls: Mutex<BTreeMap<u64, LockReach>>,
    /// Running calls a deadlock ended: each answers 40P01 at its commit
    /// point.
    deadlock_victims: Mutex<BTreeSet<u64>>,
    /// Fault edges no task wakes up for (see `planned_edges`), oldest
    /// first, not yet in the history.
    planned: Mutex<VecDeque<(i64, Option<u32>, String)>>,
    /// Coverage marks reached (see marks.rs), counted.
    marks: Mutex<BTreeMap<&'static str, u64>>,
    trace: bool,
    server: Mutex<ServerModel>,
    next_req_id: AtomicU64,
    devices: Vec<DeviceShared>,
    healed: AtomicBool,
    seed: u64,
    _counted: LiveWorld,
}

/// Worlds alive in this process. A run frees its world before it returns
/// (queues, server, history); a count that stays up after a run is a leak,
/// which over a sweep's thousands of seeds runs out of memory.
static LIVE_WORLDS: AtomicUsize = AtomicUsize::new(0);

/// How many worlds are alive now (see `LIVE_WORLDS`; tests).
pub fn live_worlds() -> usize {
    LIVE_WORLDS.load(Ordering::SeqCst)
}

/// Counts one world in `LIVE_WORLDS` for as long as it lives.
struct LiveWorld;

impl LiveWorld {
    fn new() -> Self {
        LIVE_WORLDS.fetch_add(1, Ordering::SeqCst);
        LiveWorld
    }
}

impl Drop for LiveWorld {
    fn drop(&mut self) {
        LIVE_WORLDS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One device's durable parts and the flags the nemesis flips.
struct DeviceShared {
    queue: Arc<Mutex<SyncQueue>>,
    /// Index of the user's next edit (the user's progress, not app memory).
    next_edit: AtomicUsize,
    /// The user's edits not made yet, in time order; taken one by one.
    edits: Mutex<VecDeque<Edit>>,
    /// When the user will tap "Retry failed", in time order (taken like
    /// the edits: one due while the app is dead waits for the restart).
    retry_taps_ms: Mutex<VecDeque<i64>>,
    online: AtomicBool,
    token_valid: AtomicBool,
    silent_drop: AtomicBool,
    alive: AtomicBool,
    nudge: tokio::sync::Notify,
    restarts: AtomicU64,
    /// The last request the server committed for this device.
    last_committed_req: AtomicU64,
    /// Every call of the device's tabs still awaiting its answer: a kill
    /// drops them all (`Outcome::Dropped`), and one of them being the last
    /// committed means "killed after commit, before mark_batch_completed"
    /// (the `kill_after_commit` mark). Bounded by the tabs, one call each.
    calls_in_flight: Mutex<BTreeSet<u64>>,
    /// The latest device clock reading, to notice the clock going back.
    clock_seen_ms: AtomicI64,
}

impl Shared {
    /// True time: the history, the nemesis and the server read this one.
    fn now_ms(&self) -> i64 {
        self.start.elapsed().as_millis() as i64
    }

    /// User `user`'s device clock (the app's `Date.now()`): true time, off
    /// by the plan's skew inside a `clock_skew` window. The engine's timers
    /// (interval, debounce, request timeout) run on true time, as a
    /// browser's setTimeout does.
    fn device_now_ms(&self, user: u32) -> i64 {
        let t = self.plan.device_clock_ms(user as usize, self.now_ms());
        let seen = self.devices[user as usize]
            .clock_seen_ms
            .swap(t, Ordering::SeqCst);
        if t < seen {
            self.mark("device_clock_went_back");
        }
        t
    }

    fn mark(&self, name: &'static str) {
        *self
            .marks
            .lock()
            .expect("marks")
            .entry(crate::marks::known(name))
            .or_default() += 1;
    }

    fn record(&self, e: Event) {
        let mut history = self.history.lock().expect("history lock");
        self.write_planned(&mut history, e.t_ms());
        if self.trace {
            println!("{}", e.trace_line());
        }
        history.push(e);
    }

    /// Moves the planned fault edges due at or before `t_ms` into the
    /// history (bound: each edge is moved once).
    fn write_planned(&self, history: &mut Vec<Event>, t_ms: i64) {
        let mut planned = self.planned.lock().expect("planned lock");
        while planned.front().is_some_and(|(t, ..)| *t <= t_ms) {
            let Some((t_ms, user, what)) = planned.pop_front() else {
                break;
            };
            let e = Event::Fault { t_ms, user, what };
            if self.trace {
                println!("{}", e.trace_line());
            }
            history.push(e);
        }
    }
}

/// The fault edges that act only through the plan, read when something
/// asks (the server's 5xx bursts, a device clock's skew): no task wakes up
/// at them, because an extra timer would move every later event of the run
/// (madsim draws the order of the tasks ready at one instant). The history
/// still shows them, each just before the first event at or after its time
/// (`Shared::record`), so a trace's timeline has every fault. A 5xx burst
/// still on at the heal ends there (the "healed" line says so).
fn planned_edges(plan: &FaultPlan, fault_phase_ms: i64) -> VecDeque<(i64, Option<u32>, String)> {
    let mut edges = Vec::new();
    for (start_ms, end_ms) in union_of(&plan.server_errors) {
        if start_ms >= fault_phase_ms {
            continue;
        }
        edges.push((
            start_ms,
            None,
            format!("server answers {} to every call", plan.server_error_status),
        ));
        if end_ms < fault_phase_ms {
            edges.push((end_ms, None, "server errors end".to_string()));
        }
    }
    for (u, windows) in plan.clock_skew.iter().enumerate() {
        for (start_ms, end_ms) in union_of(windows) {
            edges.push((
                start_ms,
                Some(u as u32),
                format!(
                    "device clock off by {:+.3}s",
                    plan.clock_skew_ms as f64 / 1000.0
                ),
            ));
            edges.push((
                end_ms,
                Some(u as u32),
                "device clock back to true time".to_string(),
            ));
        }
    }
    // Stable: at one instant, the order they were pushed in.
    edges.sort_by_key(|e| e.0);
    edges.into()
}

/// The time a fault is on when it is on inside any of `windows` (which may
/// overlap): disjoint (start, end) spans, oldest first.
fn union_of(windows: &[crate::nemesis::Window]) -> Vec<(i64, i64)> {
    let mut spans: Vec<(i64, i64)> = windows
        .iter()
        .filter(|w| w.start_ms < w.end_ms)
        .map(|w| (w.start_ms, w.end_ms))
        .collect();
    spans.sort_unstable();
    let mut out: Vec<(i64, i64)> = Vec::with_capacity(spans.len());
    for (start_ms, end_ms) in spans {
        match out.last_mut() {
            Some(last) if start_ms <= last.1 => last.1 = last.1.max(end_ms),
            _ => out.push((start_ms, end_ms)),
        }
    }
    out
}

/// Tunes SQLite once per process, before the first connection:
/// - memory statistics off: they take a global mutex on every allocation,
///   which showed as a tenth of a sweep's profile and serialized workers;
/// - SQLite allocates from mimalloc, like the rest of the simulator, instead
///   of glibc's malloc: 5% more seeds a second on one core (three paired
///   1,000-seed sweeps of offline-reconnect).
fn tune_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let methods = rusqlite::ffi::sqlite3_mem_methods {
            xMalloc: Some(sqlite_malloc),
            xFree: Some(sqlite_free),
            xRealloc: Some(sqlite_realloc),
            xSize: Some(sqlite_size),
            xRoundup: Some(sqlite_roundup),
            xInit: Some(sqlite_mem_init),
            xShutdown: Some(sqlite_mem_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: sqlite3_config may only run before SQLite is initialized
        // or after sqlite3_shutdown; Once runs this before any connection of
        // this process is opened by the simulator, and a failure (SQLite
        // already initialized elsewhere) only leaves the default setting,
        // for both calls. SQLite copies `methods`, so a local is enough.
        unsafe {
            rusqlite::ffi::sqlite3_config(rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS, 0);
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const rusqlite::ffi::sqlite3_mem_methods,
            );
        }
    });
}

// SQLite's allocator hooks (`sqlite3_mem_methods`). SQLite never passes a
// negative or zero size to xMalloc/xRealloc and needs 8-byte alignment,
// which mimalloc gives to every block.
unsafe extern "C" fn sqlite_malloc(n: c_int) -> *mut c_void {
    // SAFETY: plain allocation; SQLite checks for null.
    unsafe { libmimalloc_sys::mi_malloc(n.max(0) as usize) }
}
unsafe extern "C" fn sqlite_free(p: *mut c_void) {
    // SAFETY: `p` came from sqlite_malloc/sqlite_realloc (or is null).
    unsafe { libmimalloc_sys::mi_free(p) }
}
unsafe extern "C" fn sqlite_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    // SAFETY: as sqlite_free.
    unsafe { libmimalloc_sys::mi_realloc(p, n.max(0) as usize) }
}
unsafe extern "C" fn sqlite_size(p: *mut c_void) -> c_int {
    // SAFETY: as sqlite_free; SQLite's blocks are far below 2 GiB.
    unsafe { libmimalloc_sys::mi_usable_size(p) as c_int }
}
unsafe extern "C" fn sqlite_roundup(n: c_int) -> c_int {
    (n.max(0) + 7) & !7
}
unsafe extern "C" fn sqlite_mem_init(_: *mut c_void) -> c_int {
    rusqlite::ffi::SQLITE_OK
}
unsafe extern "C" fn sqlite_mem_shutdown(_: *mut c_void) {}

/// Runs one world to completion.
pub fn run(params: &WorldParams, seed: u64, config: EngineConfig, trace: bool) -> RunOutput {
    tune_sqlite();
    let users = params.workload.users;
    let Script { edits, plan } = params.expand(seed);
    let bad_edits: Vec<Edit> = edits.iter().filter(|e| e.bad).cloned().collect();
    let mut per_user: Vec<VecDeque<Edit>> = (0..users).map(|_| VecDeque::new()).collect();
    for e in edits {
        per_user[e.user as usize].push_back(e);
    }
    let mut madsim_config = madsim::Config::default();
    // Latency is ours (FaultPlan); madsim's own stays minimal.
    madsim_config.net.send_latency = Duration::from_micros(100)..Duration::from_micros(200);
    let rt = Runtime::with_seed_and_config(seed, madsim_config);
    let taps_ms = params
        .workload
        .retry_failed_taps_ms(params.faults.fault_phase_ms, params.deadline_ms());
    let params = params.clone();
    let planted = config.planted;
    let (out, shared) = rt.block_on(async move {
        let devices = per_user
            .into_iter()
            .enumerate()
            .map(|(u, edits)| DeviceShared {
                queue: Arc::new(Mutex::new(take_disk(u, &planted, params.queue))),
                next_edit: AtomicUsize::new(0),
                edits: Mutex::new(edits),
                retry_taps_ms: Mutex::new(taps_ms.iter().copied().collect()),
                online: AtomicBool::new(true),
                token_valid: AtomicBool::new(true),
                silent_drop: AtomicBool::new(false),
                alive: AtomicBool::new(true),
                nudge: tokio::sync::Notify::new(),
                restarts: AtomicU64::new(0),
                last_committed_req: AtomicU64::new(0),
                calls_in_flight: Mutex::new(BTreeSet::new()),
                clock_seen_ms: AtomicI64::new(i64::MIN),
            })
            .collect();
        let shared = Arc::new(Shared {
            params: params.clone(),
            config,
            plan: plan.clone(),
            start: Instant::now(),
            history: Mutex::new(Vec::new()),
            batch_claims: Mutex::new(BTreeMap::new()),
            recent_commits: Mutex::new(RecentCommits::default()),
            running_calls: Mutex::new(BTreeMap::new()),
            deadlock_victims: Mutex::new(BTreeSet::new()),
            planned: Mutex::new(planned_edges(&plan, params.faults.fault_phase_ms)),
            marks: Mutex::new(BTreeMap::new()),
            trace,
            server: Mutex::new(ServerModel::with_bugs(params.server_bugs)),
            next_req_id: AtomicU64::new(1),
            devices,
            healed: AtomicBool::new(false),
            seed,
            _counted: LiveWorld::new(),
        });
        run_world(shared.clone()).await;
        let end_ms = shared.now_ms();
        shared.write_planned(&mut shared.history.lock().expect("history lock"), end_ms);
        let drained_at_ms = shared
            .history
            .lock()
            .expect("history")
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::Fault { t_ms, what, .. } if what == "quiesced" => Some(*t_ms),
                _ => None,
            });
        let devices = shared
            .devices
            .iter()
            .enumerate()
            .map(|(u, d)| {
                let q = d.queue.lock().expect("queue");
                DeviceFinal {
                    user: u as u32,
                    user_id: user_id(u as u32),
                    local: q.local_entities().expect("local entities"),
                    ops: q.all().expect("ops"),
                    stats: q.stats(end_ms).expect("stats"),
                }
            })
            .collect();
        let history = std::mem::take(&mut *shared.history.lock().expect("history"));
        let server = std::mem::replace(
            &mut *shared.server.lock().expect("server"),
            ServerModel::new(),
        );
        let marks = std::mem::take(&mut *shared.marks.lock().expect("marks"));
        let out = RunOutput {
            marks,
            bad_edits,
            plan,
            history,
            devices,
            server,
            drained_at_ms,
            end_ms,
            fault_phase_ms: params.faults.fault_phase_ms,
        };
        (out, shared)
    });
    // The runtime goes first: it drops the killed nodes' tasks, the last
    // other owners of the world.
    drop(rt);
    return_disks(shared);
    out
}

// ----- the disks ------------------------------------------------------------

/// Users whose disks a worker thread keeps between runs (a bound on the pool).
const DISKS_POOLED_MAX: usize = 64;

thread_local! {
    /// This thread's cleared queues from earlier runs, by user index. Opening
    /// a database, creating its schema and compiling its statements cost 6%
    /// of a sweep's instructions (callgrind, offline-reconnect); a cleared
    /// queue answers exactly as a fresh one (`SyncQueue::clear`, held by
    /// sync-core's tests/queue_model.rs), so a seed's run does not depend on
    /// what its worker ran before. The determinism self-check and the
    /// committed reports (one process renders them all) would show if it did.
    /// One pool per store (`QueueBackend` as index), so a B-tree sweep
    /// that re-runs a seed on SQLite keeps both stores' disks warm.
    static DISKS: std::cell::RefCell<[Vec<Option<SyncQueue>>; QueueBackend::ALL.len()]> =
        const { std::cell::RefCell::new([const { Vec::new() }; QueueBackend::ALL.len()]) };
}

/// User `u`'s disk: this thread's cleared one of that store, or a new
/// one (an in-memory database, or an empty B-tree queue), with the queue's
/// planted bug (if any) set for this run.
fn take_disk(u: usize, planted: &PlantedEngineBugs, backend: QueueBackend) -> SyncQueue {
    let pooled = DISKS.with(|d| {
        d.borrow_mut()[backend as usize]
            .get_mut(u)
            .and_then(Option::take)
    });
    let mut queue = match pooled.filter(|q| q.backend() == backend) {
        Some(mut queue) => {
            queue.clear().expect("clear a pooled queue");
            queue
        }
        None if backend == QueueBackend::Btree => SyncQueue::open_btree(&format!("device-{u}")),
        None => {
            let conn = rusqlite::Connection::open_in_memory().expect("in-memory SQLite");
            // SQLite's default busy wait would freeze the simulation in real
            // time; nothing else holds this database anyway.
            conn.busy_timeout(Duration::ZERO).expect("busy_timeout");
            SyncQueue::from_connection(conn, &format!("device-{u}")).expect("fresh queue schema")
        }
    };
    // Set on every run, off included: a pooled disk may come from a run
    // that planted it.
    queue.plant_merge_keeps_batch_id(planted.merge_keeps_batch_id);
    queue
}

/// Keeps a finished world's disks for the next run on this thread. A world
/// something still holds (none should) just drops its disks.
fn return_disks(shared: Arc<Shared>) {
    let Ok(shared) = Arc::try_unwrap(shared) else {
        return;
    };
    DISKS.with(|d| {
        let mut d = d.borrow_mut();
        for (u, device) in shared
            .devices
            .into_iter()
            .enumerate()
            .take(DISKS_POOLED_MAX)
        {
            let Ok(queue) = Arc::try_unwrap(device.queue) else {
                continue;
            };
            let Ok(queue) = queue.into_inner() else {
                continue;
            };
            let pool = &mut d[queue.backend() as usize];
            if pool.len() <= u {
                pool.resize_with(u + 1, || None);
            }
            pool[u] = Some(queue);
        }
    });
}

async fn run_world(shared: Arc<Shared>) {
    let handle = Handle::current();
    let s = shared.clone();
    let server = handle
        .create_node()
        .name("server")
        .ip(IpAddr::V4(SERVER_IP))
        .init(move || server_main(s.clone()))
        .build();
    // Let the server bind before devices call it.
    sleep(Duration::from_millis(1)).await;
    let mut nodes = Vec::new();
    for u in 0..shared.devices.len() as u32 {
        let s = shared.clone();
        let node = handle
            .create_node()
            .name(format!("device-{u}"))
            .ip(device_ip(u))
            .init(move || device_main(s.clone(), u))
            .build();
        nodes.push(node);
    }

    // The nemesis: every scheduled fault edge, in time order.
    let mut edges: Vec<(i64, u32, u8, bool)> = Vec::new(); // (t, user, kind, begins)
    let plan = &shared.plan;
    for u in 0..shared.devices.len() {
        for (kind, ws) in [
            (0u8, &plan.offline[u]),
            (1, &plan.silent_drop[u]),
            (2, &plan.kills[u]),
            (3, &plan.token_expired[u]),
        ] {
            for w in ws.iter() {
                edges.push((w.start_ms, u as u32, kind, true));
                edges.push((w.end_ms, u as u32, kind, false));
            }
        }
    }
    edges.sort();
    let fault_phase_ms = shared.params.faults.fault_phase_ms;
    for (t, u, kind, begins) in edges {
        sleep_until_ms(&shared, t).await;
        let d = &shared.devices[u as usize];
        let what = match (kind, begins) {
            (0, true) => {
                d.online.store(false, Ordering::SeqCst);
                "offline"
            }
            (0, false) => {
                if d.queue
                    .lock()
                    .expect("queue")
                    .status_counts()
                    .expect("counts")
                    .0
                    > 0
                {
                    shared.mark("reconnect_with_backlog");
                }
                d.online.store(true, Ordering::SeqCst);
                d.nudge.notify_one();
                "online"
            }
            (1, true) => {
                d.silent_drop.store(true, Ordering::SeqCst);
                "silent drops begin"
            }
            (1, false) => {
                d.silent_drop.store(false, Ordering::SeqCst);
                "silent drops end"
            }
            (2, true) => {
                if !d.alive.swap(false, Ordering::SeqCst) {
                    continue;
                }
                handle.kill(nodes[u as usize].id());
                shared.mark("app_killed");
                let dropped = std::mem::take(&mut *d.calls_in_flight.lock().expect("calls"));
                if dropped.contains(&d.last_committed_req.load(Ordering::SeqCst)) {
                    shared.mark("kill_after_commit");
                }
                for req_id in dropped {
                    shared.record(Event::Complete {
                        t_ms: shared.now_ms(),
                        user: u,
                        req_id,
                        outcome: Outcome::Dropped,
                    });
                }
                "app killed"
            }
            (2, false) => {
                if d.alive.swap(true, Ordering::SeqCst) {
                    continue;
                }
                d.restarts.fetch_add(1, Ordering::SeqCst);
                handle.restart(nodes[u as usize].id());
                "app restarted"
            }
            (3, true) => {
                d.token_valid.store(false, Ordering::SeqCst);
                "token expired"
            }
            _ => {
                d.token_valid.store(true, Ordering::SeqCst);
                d.nudge.notify_one();
                "token refreshed"
            }
        };
        shared.record(Event::Fault {
            t_ms: shared.now_ms(),
            user: Some(u),
            what: what.to_string(),
        });
    }

    // Heal.
    sleep_until_ms(&shared, fault_phase_ms).await;
    shared.healed.store(true, Ordering::SeqCst);
    for (u, d) in shared.devices.iter().enumerate() {
        d.online.store(true, Ordering::SeqCst);
        d.silent_drop.store(false, Ordering::SeqCst);
        d.token_valid.store(true, Ordering::SeqCst);
        if !d.alive.swap(true, Ordering::SeqCst) {
            d.restarts.fetch_add(1, Ordering::SeqCst);
            handle.restart(nodes[u].id());
        }
        d.nudge.notify_one();
    }
    shared.record(Event::Fault {
        t_ms: shared.now_ms(),
        user: None,
        what: "healed".to_string(),
    });

    // Quiesce: every edit made and every queue without pending or syncing
    // work (nor failed work a "Retry failed" tap will revive). Checked once
    // a simulated second; bounded by the budget.
    let deadline = shared.params.deadline_ms();
    loop {
        let done = shared.devices.iter().all(|d| {
            let stats = d.queue.lock().expect("queue").stats(0).expect("stats");
            // A failed operation the user will still retry is work left; a
            // quarantined one (a bad record) is not: it fails at every tap.
            let retry_left = stats.failed > stats.quarantined
                && !d.retry_taps_ms.lock().expect("taps").is_empty();
            d.edits.lock().expect("edits").is_empty()
                && stats.pending == 0
                && stats.syncing == 0
                && !retry_left
        });
        if done {
            // The user stops tapping "Retry failed" once all is quiet: a
            // tap in the settle below would revive the quarantined bad
            // records and leave them in flight when the run ends, which
            // the checkers would read as work never finished (found with
            // taps every 90 s, one 19 s after quiescence).
            for d in &shared.devices {
                d.retry_taps_ms.lock().expect("taps").clear();
            }
            shared.record(Event::Fault {
                t_ms: shared.now_ms(),
                user: None,
                what: "quiesced".to_string(),
            });
            break;
        }
        if shared.now_ms() >= deadline {
            shared.record(Event::Fault {
                t_ms: shared.now_ms(),
                user: None,
                what: "quiesce budget exhausted".to_string(),
            });
            break;
        }
        sleep(Duration::from_millis(1_000)).await;
    }
    // Settle: a request still in the network (a timed-out one the server has
    // not processed yet) lands within the statement timeout plus transfer.
    let f = &shared.params.faults;
    let settle_ms = f.statement_timeout_ms + 2 * f.latency_ms.1 + 10_000;
    sleep(Duration::from_millis(settle_ms as u64)).await;
    // Kill every node before the runtime goes: a task parked on a waker that
    // `Shared` itself holds (a device's `nudge`) owns an `Arc<Shared>`, and
    // dropping the runtime does not free such a cycle. Without this each
    // world, queues and history included, leaked: 400 KB a seed, 400 MB
    // over a 1,000-seed sweep.
    handle.kill(server.id());
    for node in &nodes {
        handle.kill(node.id());
    }
}

async fn sleep_until_ms(shared: &Shared, t_ms: i64) {
    let now = shared.now_ms();
    if t_ms > now {
        sleep(Duration::from_millis((t_ms - now) as u64)).await;
    }
}

// ----- server node ---------------------------------------------------------

async fn server_main(shared: Arc<Shared>) {
    let ep = Endpoint::bind(SocketAddr::new(IpAddr::V4(SERVER_IP), SERVER_PORT))
        .await
        .expect("server bind");
    let s = shared.clone();
    ep.add_rpc_handler(move |call: Call| {
        let s = s.clone();
        async move { serve(&s, call).await }
    });
    // Keep the endpoint (and its handler task) alive.
    std::future::pending::<()>().await;
}

async fn serve(shared: &Shared, call: Call) -> Result<Reply, RemoteError> {
    let plan = &shared.plan;
    let name = call.request.name();
    let reject = |shared: &Shared, e: RemoteError| {
        shared.record(Event::Server {
            t_ms: shared.now_ms(),
            user: call.user,
            req_id: call.req_id,
            call: name,
            result: ServerResult::Rejected {
                error: e.to_string(),
            },
        });
        Err(e)
    };
    let healed = shared.healed.load(Ordering::SeqCst);
    if !healed && FaultPlan::in_any(&plan.server_errors, shared.now_ms()) {
        shared.mark("server_5xx");
        return reject(
            shared,
            RemoteError::Server {
                status: plan.server_error_status,
                message: "service unavailable".into(),
            },
        );
    }
    let Some(auth) = call.auth else {
        shared.mark("token_expired_401");
        return reject(
            shared,
            RemoteError::Auth {
                status: 401,
                message: "JWT expired".into(),
            },
        );
    };
    let timed_out = |shared: &Shared| {
        shared.mark("statement_timeout");
        reject(
            shared,
            RemoteError::database("57014", "canceling statement due to statement timeout"),
        )
    };
    // A bulk call with a batch id first claims it for its whole run, as
    // 017 does; a duplicate waits for the claim, within its own statement
    // timeout. The claim is released before the reply, and on every path
    // after it (`BatchClaim`'s drop).
    let arrived_ms = shared.now_ms();
    // 017 checks the caller (above) and the payload's size before it
    // claims: an oversized call neither claims nor waits, and fails at once
    // (`apply` gives its error).
    let oversized = matches!(&call.request, ServerRequest::Bulk(p) if p.op_count() > MAX_BULK_OPS);
    let claim_key = match &call.request {
        ServerRequest::Bulk(p) if !oversized => p.batch_id.clone().map(|b| (auth, b)),
        _ => None,
    };
    let recorded = |(user, batch): &(UserId, String)| {
        shared
            .server
            .lock()
            .expect("server")
            .has_batch(*user, batch)
    };
    let mut claim = None;
    // Planted `batch-claimed-late`: no claim; a call whose batch id was not
    // recorded when it arrived, and is when it applies, fails on the
    // record's key, as 017 did when it looked first and recorded last.
    let late = shared.params.server_bugs.batch_claimed_late;
    let unrecorded_at_arrival = claim_key
        .as_ref()
        .filter(|key| late && !recorded(key))
        .cloned();
    if let Some(key) = claim_key.clone().filter(|_| !late) {
        // Bound: each turn waits for one release; the statement timeout
        // ends the wait.
        loop {
            let held = {
                let mut claims = shared.batch_claims.lock().expect("claims");
                match claims.get(&key) {
                    Some(n) => Some(n.clone()),
                    None => {
                        claims.insert(key.clone(), Arc::new(tokio::sync::Notify::new()));
                        None
                    }
                }
            };
            let Some(released) = held else {
                break;
            };
            shared.mark("batch_duplicate_waited");
            // Single-threaded: the holder cannot release between the lock
            // above and this future's creation, which registers it.
            let left_ms = plan.statement_timeout_ms - (shared.now_ms() - arrived_ms);
            let wait = Duration::from_millis(left_ms.max(0) as u64);
            if timeout(wait, released.notified()).await.is_err() {
                return timed_out(shared);
            }
        }
        claim = Some(BatchClaim { shared, key });
    }
    // The statement begins once the claim is held: what commits after this
    // a roster replacement or game save without a version may not see
    // (`Snapshot`).
    // With versions every roster and game save carries one and is ordered
    // by the gate's lock, so the snapshot would be empty: the bookkeeping
    // is skipped.
    let started_ms = shared.now_ms();
    let without_versions = !shared.config.hardening.versions;
    // A replay reads the record and returns, and a call that fails the
    // size check stops there: neither touches an entity table, so neither
    // is charged for its payload. The replay is decided where 017 decides
    // it: after the claim, or (planted bug) on arrival.
    let replay = claim_key.as_ref().is_some_and(|key| {
        if late {
            unrecorded_at_arrival.is_none()
        } else {
            recorded(key)
        }
    });
    let work_units = if replay || oversized {
        0
    } else {
        call.request.work_units()
    };
    // Statement time grows with the payload; past the statement timeout,
    // counted from the call's arrival, the statement is cancelled and
    // nothing commits.
    let work_ms = 2 + (plan.server_ms_per_row * work_units as f64) as i64;
    let budget_ms = plan.statement_timeout_ms - (shared.now_ms() - arrived_ms);
    if work_ms > budget_ms {
        sleep(Duration::from_millis(budget_ms.max(0) as u64)).await;
        drop(claim);
        return timed_out(shared);
    }
    // The rows this call locks, and when (`RunningCall`).
    let running =
        (work_units > 0).then(|| RunningCall::register(shared, &call, auth, started_ms, work_ms));
    sleep(Duration::from_millis(work_ms as u64)).await;
    if let Some(key) = &unrecorded_at_arrival {
        if recorded(key) {
            return reject(
                shared,
                RemoteError::database(
                    "23505",
                    "duplicate key value violates unique constraint \"sync_batches_pkey\"",
                ),
            );
        }
    }
    // Row locks (`RunningCall`): wait for a call that holds one of this
    // call's rows, settle a deadlock, then commit once the waits are made
    // up. Bounded: each turn waits for one call to end, and the statement
    // timeout, counted from arrival, ends every wait.
    if let Some(running) = &running {
        let deadline_ms = arrived_ms + plan.statement_timeout_ms;
        loop {
            if shared
                .deadlock_victims
                .lock()
                .expect("deadlock victims")
                .remove(&call.req_id)
            {
                return reject(shared, deadlock());
            }
            match running.before_commit() {
                LockWait::Commit { at_ms } => {
                    let now_ms = shared.now_ms();
                    if at_ms > deadline_ms {
                        sleep(Duration::from_millis((deadline_ms - now_ms).max(0) as u64)).await;
                        return timed_out(shared);
                    }
                    if at_ms <= now_ms {
                        break;
                    }
                    // Made-up waits; a call may stop this one meanwhile.
                    sleep(Duration::from_millis((at_ms - now_ms) as u64)).await;
                }
                LockWait::On(released) => {
                    shared.mark("lock_waited");
                    // Single-threaded: the holder cannot end between the
                    // check above and this future's creation, which
                    // registers it.
                    let left_ms = (deadline_ms - shared.now_ms()).max(0) as u64;
                    if timeout(Duration::from_millis(left_ms), released.notified())
                        .await
                        .is_err()
                    {
                        return timed_out(shared);
                    }
                }
                LockWait::Abort { abort_ms } => {
                    let left_ms = (abort_ms - shared.now_ms()).max(0) as u64;
                    sleep(Duration::from_millis(left_ms)).await;
                    return reject(shared, deadlock());
                }
                LockWait::Victim { req_id, abort_ms } => {
                    let left_ms = (abort_ms - shared.now_ms()).max(0) as u64;
                    sleep(Duration::from_millis(left_ms)).await;
                    RunningCall::abort_victim(shared, req_id);
                }
            }
        }
    }
    let (applied, partial) = {
        let mut server = shared.server.lock().expect("server");
        let snapshot = if without_versions {
            call.request.snapshot(
                &shared.recent_commits.lock().expect("recent commits"),
                auth,
                started_ms,
            )
        } else {
            Snapshot::default()
        };
        if server.meets_unseen_rows(auth, &snapshot) {
            shared.mark("roster_rows_unseen");
        }
        if server.meets_unseen_game(auth, &snapshot) {
            shared.mark("game_created_unseen");
        }
        let before = server.mutations();
        let applied = apply(&mut server, &auth, &call.request, &snapshot);
        // A rejected call must leave no trace (all or nothing).
        let partial = applied.is_err() && server.mutations() != before;
        (applied, partial)
    };
    // Committed or rolled back: its locks are gone (a lost response keeps
    // this task parked below, not its locks).
    drop(running);
    let reply = match applied {
        Ok((reply, effects)) => {
            if without_versions {
                shared
                    .recent_commits
                    .lock()
                    .expect("recent commits")
                    .record(
                        auth,
                        shared.now_ms(),
                        &effects,
                        call.request.carried(&reply),
                        plan.statement_timeout_ms,
                    );
            }
            shared.devices[call.user as usize]
                .last_committed_req
                .store(call.req_id, Ordering::SeqCst);
            if matches!(&reply, Reply::Bulk(r) if r.replayed) {
                shared.mark("replay_answered");
            }
            if call.drop_response && !shared.healed.load(Ordering::SeqCst) {
                shared.mark("response_lost_after_commit");
            }
            shared.record(Event::Server {
                t_ms: shared.now_ms(),
                user: call.user,
                req_id: call.req_id,
                call: name,
                result: ServerResult::Committed { effects },
            });
            Ok(reply)
        }
        Err(db) if partial => {
            let e = RemoteError::database(&db.sqlstate, db.message);
            shared.record(Event::Server {
                t_ms: shared.now_ms(),
                user: call.user,
                req_id: call.req_id,
                call: name,
                result: ServerResult::Rejected {
                    error: format!("{e} (partial write: the server changed anyway)"),
                },
            });
            Err(e)
        }
        Err(db) => {
            if db.sqlstate.starts_with("22") || db.sqlstate.starts_with("23") {
                shared.mark("bad_record_rejected");
            }
            reject(shared, RemoteError::database(&db.sqlstate, db.message))
        }
    };
    // Committed or rolled back: a waiting duplicate may go on.
    drop(claim);
    if call.drop_response && !shared.healed.load(Ordering::SeqCst) {
        // Committed (or rejected), but the reply never leaves: the client's
        // timer fires and it sees an AbortError.
        std::future::pending::<()>().await;
    }
    reply
}

/// A server call whose statement runs and will reach its commit, as the
/// row-lock table sees it; removed (and its waiters woken) when dropped.
///
/// PostgreSQL makes a call that reaches a row another open call has
/// written wait for that call to end. The model applies a call at the end
/// of its statement time, so without this a short call would commit ahead
/// of a long one that wrote a shared row first, and the plan's
/// unversioned calls would end in an order PostgreSQL never gives them (a
/// 100-seed audit found it in 59 seeds of `roster-overlap` under the plan,
/// 5 of `full-mix` and `second-tab`, 1 of `abort-cascade`; never under the
/// hardened preset, whose re-sends wait on their batch claim instead).
///
/// Each row is reached at the call's start, plus the base 2 ms, plus
/// `server_ms_per_row` for every row written before it
/// (`server::lock_order`). Two calls of one user are played against each
/// other row by row (`contend`): a call that reaches a row the other holds
/// stops there until the other ends, then runs the rest of its statement,
/// so its commit moves by the time it waited (`delay_ms`). Two calls that
/// each stop at a row the other holds deadlock (`opposite_lock_orders` in
/// tests/postgres.rs): PostgreSQL checks `DEADLOCK_TIMEOUT_MS` after a
/// call began to wait and aborts it with 40P01 if the cycle is closed by
/// then, else the other one at its own check. The waits are taken at the
/// commit point, where the model applies a call; a deadlock's victim
/// answers there too, which can be later than PostgreSQL's abort. Calls
/// are played in pairs: a third call's locks do not move the first two's.
struct RunningCall<'s> {
    shared: &'s Shared,
    req_id: u64,
}

/// PostgreSQL's `deadlock_timeout` default.
const DEADLOCK_TIMEOUT_MS: i64 = 1_000;

/// What `Shared::running_calls` keeps of a `RunningCall`.
struct LockReach {
    user: UserId,
    /// Each row the call locks and when it reaches it, in that order.
    reaches: Vec<((EntityType, String), i64)>,
    /// When its statement ends if nothing makes it wait.
    end_ms: i64,
    /// The time it has waited for other calls so far.
    delay_ms: i64,
    released: Arc<tokio::sync::Notify>,
}

/// What a call about to commit must do first.
enum LockWait {
    /// Nothing holds it: commit at `at_ms` (its end plus its waits).
    Commit { at_ms: i64 },
    /// Wait for a running call that holds one of its rows.
    On(Arc<tokio::sync::Notify>),
    /// A deadlock whose victim is this call: fail at `abort_ms`.
    Abort { abort_ms: i64 },
    /// A deadlock whose victim is the other call: it fails at `abort_ms`,
    /// when its rows are free.
    Victim { req_id: u64, abort_ms: i64 },
}

/// Where two running calls stop for each other's rows, played row by row
/// from the times each reaches them: when `x` stops at a row `y` holds,
/// when `y` stops at one of `x`'s, and whether both stop (a deadlock).
/// A call that ends frees the other. Bound: one step per row of each.
fn contend(x: &LockReach, y: &LockReach) -> (Option<i64>, Option<i64>, bool) {
    let mut held: [BTreeSet<&(EntityType, String)>; 2] = [BTreeSet::new(), BTreeSet::new()];
    let mut stopped: [Option<i64>; 2] = [None, None];
    let mut next = [0usize, 0usize];
    let calls = [x, y];
    loop {
        // The next step: a row reached, or (all reached) the end; the
        // earlier of the two, `x` first on a tie.
        let step = |i: usize| -> Option<i64> {
            if stopped[i].is_some() {
                return None;
            }
            Some(
                calls[i]
                    .reaches
                    .get(next[i])
                    .map_or(calls[i].end_ms, |r| r.1),
            )
        };
        let i = match (step(0), step(1)) {
            (None, None) => return (stopped[0], stopped[1], true),
            (Some(_), None) => 0,
            (None, Some(_)) => 1,
            (Some(a), Some(b)) => usize::from(b < a),
        };
        let Some((key, at_ms)) = calls[i].reaches.get(next[i]) else {
            // It ends and frees the other.
            return (stopped[0], stopped[1], false);
        };
        if held[1 - i].contains(key) {
            stopped[i] = Some(*at_ms);
        } else {
            held[i].insert(key);
            next[i] += 1;
        }
    }
}

/// The victim of a deadlock between a call that began to wait at
/// `first_ms` and one that began at `second_ms` (no earlier), and when it
/// is aborted: the first's check finds the cycle if it is closed by then.
fn deadlock_victim(first_ms: i64, second_ms: i64) -> (bool, i64) {
    if first_ms + DEADLOCK_TIMEOUT_MS >= second_ms {
        (true, first_ms + DEADLOCK_TIMEOUT_MS)
    } else {
        (false, second_ms + DEADLOCK_TIMEOUT_MS)
    }
}

impl<'s> RunningCall<'s> {
    fn register(
        shared: &'s Shared,
        call: &Call,
        user: UserId,
        started_ms: i64,
        work_ms: i64,
    ) -> RunningCall<'s> {
        let ms_per_row = shared.plan.server_ms_per_row;
        let mut reaches = Vec::new();
        let mut reach = |key: (EntityType, String), before: usize| {
            reaches.push((key, started_ms + 2 + (ms_per_row * before as f64) as i64));
        };
        for (lock, before) in call.request.lock_order() {
            match lock {
                Lock::Row(t, id) => reach((t, id), before),
                Lock::Roster {
                    team_id,
                    players,
                    versioned,
                } => {
                    // Rows are keyed by their id, `{team}_{player}`; the
                    // gate's version row by the team's.
                    let t = EntityType::TeamRoster;
                    if versioned {
                        reach((t, team_id.clone()), before);
                    }
                    let old = shared
                        .server
                        .lock()
                        .expect("server")
                        .roster_row_ids(user, &team_id);
                    for id in old {
                        reach((t, id), before);
                    }
                    for (i, p) in players.iter().enumerate() {
                        reach((t, format!("{team_id}_{p}")), before + 1 + i);
                    }
                }
            }
        }
        shared.running_calls.lock().expect("running calls").insert(
            call.req_id,
            LockReach {
                user,
                reaches,
                end_ms: started_ms + work_ms,
                delay_ms: 0,
                released: Arc::new(tokio::sync::Notify::new()),
            },
        );
        RunningCall {
            shared,
            req_id: call.req_id,
        }
    }

    /// What this call must do before it commits: wait for a running call
    /// of its user that holds one of its rows, settle a deadlock with one,
    /// or commit once its waits are made up.
    fn before_commit(&self) -> LockWait {
        let now_ms = self.shared.now_ms();
        let running = self.shared.running_calls.lock().expect("running calls");
        let Some(me) = running.get(&self.req_id) else {
            // Chosen as a deadlock's victim and released by the other call.
            return LockWait::Abort { abort_ms: now_ms };
        };
        for (id, other) in running.iter() {
            if *id == self.req_id || other.user != me.user {
                continue;
            }
            match contend(me, other) {
                (Some(mine_ms), Some(theirs_ms), true) => {
                    self.shared.mark("deadlock_detected");
                    let (first_is_victim, abort_ms) =
                        deadlock_victim(mine_ms.min(theirs_ms), mine_ms.max(theirs_ms));
                    let me_first = mine_ms <= theirs_ms;
                    return if first_is_victim == me_first {
                        LockWait::Abort { abort_ms }
                    } else {
                        LockWait::Victim {
                            req_id: *id,
                            abort_ms,
                        }
                    };
                }
                (Some(_), _, _) => return LockWait::On(other.released.clone()),
                _ => {}
            }
        }
        LockWait::Commit {
            at_ms: me.end_ms + me.delay_ms,
        }
    }

    /// Ends call `req_id` as a deadlock's victim: its rows are free from
    /// now, and the calls it held move by their wait.
    fn abort_victim(shared: &Shared, req_id: u64) {
        // The victim may have reached its own commit point first, found the
        // same deadlock and failed already.
        let running = shared
            .running_calls
            .lock()
            .expect("running calls")
            .contains_key(&req_id);
        if running {
            shared
                .deadlock_victims
                .lock()
                .expect("deadlock victims")
                .insert(req_id);
            Self::release(shared, req_id);
        }
    }

    /// Frees call `req_id`'s rows now: each running call of its user that
    /// stopped at one of them has waited since it did.
    fn release(shared: &Shared, req_id: u64) {
        let now_ms = shared.now_ms();
        let mut running = shared.running_calls.lock().expect("running calls");
        let Some(gone) = running.remove(&req_id) else {
            return;
        };
        for other in running.values_mut() {
            if other.user != gone.user {
                continue;
            }
            if let (Some(stopped_ms), _, _) = contend(other, &gone) {
                if stopped_ms <= now_ms {
                    other.delay_ms += now_ms - stopped_ms;
                    shared.mark("lock_waited");
                }
            }
        }
        gone.released.notify_waiters();
    }
}

impl Drop for RunningCall<'_> {
    fn drop(&mut self) {
        RunningCall::release(self.shared, self.req_id);
    }
}

/// A batch id claimed by a running server call; released (and its waiters
/// woken) when dropped.
struct BatchClaim<'s> {
    shared: &'s Shared,
    key: (UserId, String),
}

impl Drop for BatchClaim<'_> {
    fn drop(&mut self) {
        let released = self
            .shared
            .batch_claims
            .lock()
            .expect("claims")
            .remove(&self.key);
        if let Some(n) = released {
            n.notify_waiters();
        }
    }
}

/// Applies one request to the model: the reply and the per-entity effects.
fn apply(
    server: &mut ServerModel,
    auth: &UserId,
    req: &ServerRequest,
    snapshot: &Snapshot,
) -> Result<(Reply, Vec<crate::server::Effect>), DbError> {
    let auth = Some(*auth);
    match req {
        ServerRequest::Bulk(p) => {
            let out = server.bulk_sync_entities_at(auth, p, snapshot)?;
            Ok((
                Reply::Bulk(BulkSyncResult {
                    replayed: out.replayed,
                    counts: out.result,
                }),
                out.effects,
            ))
        }
        ServerRequest::SaveGame(g) => {
            let out = server.save_game_with_relations_at(auth, g, snapshot)?;
            Ok((Reply::GameVersion(out.version), out.effects))
        }
        ServerRequest::SetRoster {
            team_id,
            roster,
            version,
        } => {
            let effects = server.set_team_roster_at(auth, team_id, roster, *version, snapshot)?;
            Ok((Reply::Done, effects))
        }
        ServerRequest::Upsert {
            entity_type,
            data,
            version,
        } => {
            let effects = server.upsert_entity(auth, *entity_type, data, *version)?;
            Ok((Reply::Done, effects))
        }
        ServerRequest::Delete {
            entity_type,
            entity_id,
            version,
        } => {
            let effects = server.delete_entity(auth, *entity_type, entity_id, *version)?;
            Ok((Reply::Done, effects))
        }
    }
}

// ----- device node ---------------------------------------------------------

/// The device's clock and connectivity, as the engine sees them.
struct SimHost {
    shared: Arc<Shared>,
    user: u32,
}

impl Host for SimHost {
    fn now_ms(&self) -> i64 {
        self.shared.device_now_ms(self.user)
    }

    fn mark(&self, name: &'static str) {
        self.shared.mark(name);
    }

    fn idle_pass(&self) {
        self.shared.record(Event::IdlePass {
            t_ms: self.shared.now_ms(),
            user: self.user,
        });
    }

    fn is_online(&self) -> bool {
        self.shared.devices[self.user as usize]
            .online
            .load(Ordering::SeqCst)
    }
}

/// `Remote` over madsim RPC, with the nemesis's per-request faults.
struct SimRemote {
    shared: Arc<Shared>,
    user: u32,
    /// Which tab this engine runs in (`Tab::number`; the history says
    /// which tab sent each call).
    tab: u32,
    /// This engine's call in flight (its request id), 0 when none: a tab
    /// that closes drops it.
    in_flight: Arc<AtomicU64>,
    ep: Endpoint,
    rng: SplitMix64,
}

impl SimRemote {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.rng.next_u64() % 1_000_000) as f64) < p * 1_000_000.0
    }

    async fn call(
        &mut self,
        ctx: &RequestCtx,
        request: ServerRequest,
    ) -> Result<Reply, RemoteError> {
        let shared = self.shared.clone();
        let d = &shared.devices[self.user as usize];
        let name = request.name();
        if !d.online.load(Ordering::SeqCst) {
            // fetch() fails at once while the browser is offline.
            return Err(RemoteError::Network {
                message: "Failed to fetch (offline)".into(),
            });
        }
        let healed = shared.healed.load(Ordering::SeqCst);
        let plan = &shared.plan;
        let bytes = request.wire_bytes();
        let req_id = shared.next_req_id.fetch_add(1, Ordering::SeqCst);
        shared.record(Event::Invoke {
            t_ms: shared.now_ms(),
            user: self.user,
            tab: self.tab,
            req_id,
            call: name,
            batch_id: match &request {
                ServerRequest::Bulk(p) => p.batch_id.clone(),
                _ => None,
            },
            ops: ctx.ops.clone(),
            bytes,
        });
        self.in_flight.store(req_id, Ordering::SeqCst);
        d.calls_in_flight.lock().expect("calls").insert(req_id);
        let silent = d.silent_drop.load(Ordering::SeqCst);
        let lost = !healed && (silent || self.chance(plan.request_loss));
        let drop_response = !healed && (silent || self.chance(plan.response_loss));
        if lost {
            shared.mark(if silent {
                "silent_drop"
            } else {
                "request_lost"
            });
        }
        let latency = self.rng.range_i64(plan.latency_ms.0, plan.latency_ms.1);
        let transfer_ms = latency + bytes as i64 / plan.bandwidth_bytes_per_ms;
        let auth = d
            .token_valid
            .load(Ordering::SeqCst)
            .then(|| user_id(self.user));
        let call = Call {
            req_id,
            user: self.user,
            auth,
            drop_response,
            request,
        };
        let server = SocketAddr::new(IpAddr::V4(SERVER_IP), SERVER_PORT);
        let ep = &self.ep;
        let exchange = async move {
            sleep(Duration::from_millis(transfer_ms as u64)).await;
            if lost {
                // The request never reaches the server.
                std::future::pending::<()>().await;
            }
            let reply = ep.call(server, call).await;
            // The response travels back.
            sleep(Duration::from_millis(latency as u64)).await;
            reply
        };
        let timeout_ms = ctx.timeout_ms.max(1) as u64;
        let result = match timeout(Duration::from_millis(timeout_ms), exchange).await {
            Err(_) => {
                shared.mark("client_timeout");
                Err(RemoteError::aborted(format!(
                    "request timed out after {timeout_ms} ms"
                )))
            }
            Ok(Err(io)) => Err(RemoteError::Network {
                message: io.to_string(),
            }),
            Ok(Ok(reply)) => reply,
        };
        let outcome = match &result {
            Ok(_) => Outcome::Ok,
            Err(e) if e.is_indeterminate() => Outcome::Indeterminate,
            Err(e) => Outcome::Failed {
                error: e.to_string(),
            },
        };
        self.in_flight.store(0, Ordering::SeqCst);
        d.calls_in_flight.lock().expect("calls").remove(&req_id);
        shared.record(Event::Complete {
            t_ms: shared.now_ms(),
            user: self.user,
            req_id,
            outcome,
        });
        result
    }
}

fn unexpected(reply: Reply) -> RemoteError {
    RemoteError::Network {
        message: format!("unexpected reply {reply:?}"),
    }
}

impl Remote for SimRemote {
    async fn bulk_sync(
        &mut self,
        ctx: &RequestCtx,
        payload: &BulkSyncPayload,
    ) -> Result<BulkSyncResult, RemoteError> {
        match self
            .call(ctx, ServerRequest::Bulk(Box::new(payload.clone())))
            .await?
        {
            Reply::Bulk(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    async fn save_game_with_relations(
        &mut self,
        ctx: &RequestCtx,
        save: &GameSave,
    ) -> Result<i64, RemoteError> {
        match self
            .call(ctx, ServerRequest::SaveGame(save.clone()))
            .await?
        {
            Reply::GameVersion(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }

    async fn set_team_roster(
        &mut self,
        ctx: &RequestCtx,
        team_id: &str,
        roster: &[Value],
        version: Option<i64>,
    ) -> Result<(), RemoteError> {
        let req = ServerRequest::SetRoster {
            team_id: team_id.to_string(),
            roster: roster.to_vec(),
            version,
        };
        self.call(ctx, req).await.map(|_| ())
    }

    async fn upsert_entity(
        &mut self,
        ctx: &RequestCtx,
        entity_type: EntityType,
        data: &Value,
        version: Option<i64>,
    ) -> Result<(), RemoteError> {
        let req = ServerRequest::Upsert {
            entity_type,
            data: data.clone(),
            version,
        };
        self.call(ctx, req).await.map(|_| ())
    }

    async fn delete_entity(
        &mut self,
        ctx: &RequestCtx,
        entity_type: EntityType,
        entity_id: &str,
        _data: &Value,
        version: Option<i64>,
    ) -> Result<(), RemoteError> {
        let req = ServerRequest::Delete {
            entity_type,
            entity_id: entity_id.to_string(),
            version,
        };
        self.call(ctx, req).await.map(|_| ())
    }
}

/// A tab of user `user` closed: its call in flight, if any (`in_flight`),
/// is dropped unanswered. Says whether there was one.
fn tab_closed(shared: &Shared, user: u32, in_flight: &AtomicU64) -> bool {
    let req_id = in_flight.swap(0, Ordering::SeqCst);
    if req_id == 0 {
        return false;
    }
    let d = &shared.devices[user as usize];
    d.calls_in_flight.lock().expect("calls").remove(&req_id);
    shared.record(Event::Complete {
        t_ms: shared.now_ms(),
        user,
        req_id,
        outcome: Outcome::Dropped,
    });
    true
}

/// A line of user `user`'s fault timeline about its tabs.
fn tab_event(shared: &Shared, user: u32, what: String) {
    shared.record(Event::Fault {
        t_ms: shared.now_ms(),
        user: Some(user),
        what,
    });
}

/// Which tab of the app an engine runs in.
#[derive(Clone, Copy)]
enum Tab {
    /// The tab the app opens with, at the device's start or restart. The
    /// user works in it until a tab hand-over closes it, if one does.
    First,
    /// The second tab's `opening`-th window (fault `second_tab`).
    Second { opening: u64 },
    /// The tab opened at the device's `k`-th tab hand-over (from 0, fault
    /// `tab_handover`), which takes over when the tab before it closes.
    Handover { k: u64 },
}

impl Tab {
    /// How the history names it: 0 the first tab, 1 the second tab, and
    /// `2 + k` the tab of hand-over `k`.
    fn number(self) -> u32 {
        match self {
            Tab::First => 0,
            Tab::Second { .. } => 1,
            Tab::Handover { k } => 2 + k as u32,
        }
    }
}

/// One tab's engine on user `user`'s queue, with its own socket, in the
/// device's life after `restarts` restarts. The salts keep the random
/// streams of the tabs and of each restart apart (the first tab's are the
/// ones it had before the second tab existed, so runs without one are
/// unchanged).
async fn open_engine(
    shared: &Arc<Shared>,
    user: u32,
    tab: Tab,
    restarts: u64,
    in_flight: Arc<AtomicU64>,
) -> sync_core::SyncEngine<SimRemote, SimHost> {
    let (remote_salt, engine_salt) = match tab {
        Tab::First => ((restarts << 48) ^ 0xD1CE, restarts << 40),
        Tab::Second { opening } => {
            let salt = 0x7AB0 ^ (opening << 8) ^ (restarts << 48);
            (salt, salt)
        }
        Tab::Handover { k } => {
            let salt = 0x4A0D ^ (k << 8) ^ (restarts << 48);
            (salt, salt)
        }
    };
    let ep = Endpoint::bind(SocketAddr::new(device_ip(user), 0))
        .await
        .expect("device bind");
    let remote = SimRemote {
        shared: shared.clone(),
        user,
        tab: tab.number(),
        in_flight,
        ep,
        rng: SplitMix64::new(shared.seed ^ (u64::from(user) << 32) ^ remote_salt),
    };
    let host = SimHost {
        shared: shared.clone(),
        user,
    };
    let mut engine = sync_core::SyncEngine::new(
        shared.config.clone(),
        shared.devices[user as usize].queue.clone(),
        remote,
        host,
        shared.seed ^ u64::from(user) ^ engine_salt,
    );
    // Engine start: the app's reset of stale syncing operations.
    engine.start().expect("reset_stale_syncing");
    engine
}

async fn device_main(shared: Arc<Shared>, user: u32) {
    let d = &shared.devices[user as usize];
    let restarts = d.restarts.load(Ordering::SeqCst);
    let in_flight = Arc::new(AtomicU64::new(0));
    let engine = open_engine(&shared, user, Tab::First, restarts, in_flight.clone()).await;

    let s = shared.clone();
    madsim::task::spawn(async move { user_main(s, user).await });
    if !shared.plan.second_tab[user as usize].is_empty() {
        let s = shared.clone();
        madsim::task::spawn(async move { second_tab_main(s, user, restarts).await });
    }
    working_tab(shared.clone(), user, restarts, engine, in_flight).await;
    // The device outlives its first tab, and madsim ends a node whose init
    // future returns: this task waits for the kill or the end of the run.
    std::future::pending::<()>().await;
}

/// The tab the user works in: its engine syncs on every edit's nudge and
/// on the interval. The first tab is one until the device's next tab
/// hand-over (fault `tab_handover`) closes it; the tab that hand-over
/// opened is the next one. A closed tab drops its call in flight, as a
/// kill does, and only then frees the device's lock for the next tab.
/// Without hand-overs this is the app's one sync loop, as it always was.
async fn working_tab(
    shared: Arc<Shared>,
    user: u32,
    restarts: u64,
    mut engine: sync_core::SyncEngine<SimRemote, SimHost>,
    in_flight: Arc<AtomicU64>,
) {
    let now_ms = shared.now_ms();
    // The hand-over that closes this tab: the first one still to end (one
    // in progress at a restart opens its tab at once). Hand-overs do not
    // overlap, so it is the next tab's.
    let closer = shared.plan.tab_handover[user as usize]
        .iter()
        .enumerate()
        .find(|(_, w)| w.end_ms > now_ms)
        .map(|(k, w)| (k as u64, *w));
    let (lock_freed, lock_free) = tokio::sync::oneshot::channel::<()>();
    if let Some((k, w)) = closer {
        let s = shared.clone();
        // Boxed: the next tab runs a working tab in its turn.
        let next: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>> =
            Box::pin(handover_tab(s, user, restarts, k, w, lock_free));
        madsim::task::spawn_local(next);
    }
    let d = &shared.devices[user as usize];
    let interval = Duration::from_millis(shared.params.interval_ms.max(1) as u64);
    let debounce_ms = shared.config.debounce_ms;
    let sync = async {
        // Bound: one pass per trigger; the tab's close or the end of the
        // run ends the loop.
        loop {
            engine.process_queue().await.expect("local queue failed");
            record_depth(&shared, user);
            let nudged = timeout(interval, d.nudge.notified()).await.is_ok();
            if nudged && debounce_ms > 0 {
                sleep(Duration::from_millis(debounce_ms as u64)).await;
            }
        }
    };
    let Some((_, w)) = closer else {
        return sync.await;
    };
    let open_ms = (w.end_ms - now_ms).max(0) as u64;
    let _ = timeout(Duration::from_millis(open_ms), sync).await;
    if tab_closed(&shared, user, &in_flight) {
        shared.mark("tab_closed_mid_call");
    }
    tab_event(
        &shared,
        user,
        "the working tab closed (hand-over), its call in flight (if any) dropped".into(),
    );
    // The lock is free once the tab is gone (the Web Locks API releases a
    // closed document's locks).
    let _ = lock_freed.send(());
}

/// The tab opened at hand-over `k` (window `w`): open beside the working
/// tab from the window's start, the working tab from its end. Under the
/// hardened `tab_lock` its engine waits for the device's lock, which the
/// closing tab frees, and starts only then (resetting what that tab left
/// `syncing`, whose calls may still be running on the server). Without the
/// lock its engine starts when the tab opens and syncs on the interval
/// beside the working tab's, as a second tab's does.
async fn handover_tab(
    shared: Arc<Shared>,
    user: u32,
    restarts: u64,
    k: u64,
    w: crate::nemesis::Window,
    lock_free: tokio::sync::oneshot::Receiver<()>,
) {
    sleep_until_ms(&shared, w.start_ms).await;
    let event = |what: String| tab_event(&shared, user, what);
    let tab = Tab::Handover { k };
    let in_flight = Arc::new(AtomicU64::new(0));
    let engine = if shared.config.hardening.tab_lock {
        event(format!(
            "tab h{} opened; the working tab closes at {:.3}s, until then it holds the sync lock",
            k + 1,
            w.end_ms as f64 / 1000.0
        ));
        // Sent or dropped, the working tab is gone: a dropped sender is a
        // tab that died with the device, and so did this task.
        let _ = lock_free.await;
        event(format!(
            "tab h{} took the sync lock, its engine starts",
            k + 1
        ));
        shared.mark("tab_lock_handed_over");
        open_engine(&shared, user, tab, restarts, in_flight.clone()).await
    } else {
        event(format!("tab h{} opened, its engine starts", k + 1));
        shared.mark("second_tab_engine_ran");
        let mut engine = open_engine(&shared, user, tab, restarts, in_flight.clone()).await;
        let interval_ms = shared.params.interval_ms.max(1);
        // Bound: one pass per interval until the window's end.
        loop {
            engine.process_queue().await.expect("local queue failed");
            let left_ms = w.end_ms - shared.now_ms();
            if left_ms <= 0 {
                break;
            }
            sleep(Duration::from_millis(left_ms.min(interval_ms) as u64)).await;
        }
        engine
    };
    working_tab(shared.clone(), user, restarts, engine, in_flight).await;
}

/// The user's second tab of the app. At each `second_tab` window it opens
/// and runs its own engine on the device's queue (a browser shares
/// IndexedDB between the tabs of one site) until the window ends, then
/// closes: a closed tab drops its call in flight, as a kill does. A kill of
/// the device takes this task with it; a restart mid-window reopens the
/// tab. Under the hardened `tab_lock` the engine runs only in the tab that
/// holds the device's lock (the Web Locks API), which the first tab holds
/// for as long as it lives, so a second tab syncs nothing.
async fn second_tab_main(shared: Arc<Shared>, user: u32, restarts: u64) {
    // Bound: one pass per window.
    for (i, w) in shared.plan.second_tab[user as usize].iter().enumerate() {
        if shared.now_ms() >= w.end_ms {
            continue;
        }
        sleep_until_ms(&shared, w.start_ms).await;
        let event = |what: String| tab_event(&shared, user, what);
        if shared.config.hardening.tab_lock {
            // No wake-up at the close: an extra timer would move every
            // later event of the run (madsim draws the order of tasks ready
            // at one instant), so the close time goes in this line.
            event(format!(
                "second tab opened until {:.3}s; the first tab holds the sync lock, so it sends nothing",
                w.end_ms as f64 / 1000.0
            ));
            shared.mark("second_tab_left_to_lock");
            continue;
        }
        event("second tab opened, its engine starts".to_string());
        shared.mark("second_tab_engine_ran");
        let open_ms = (w.end_ms - shared.now_ms()).max(0) as u64;
        let in_flight = Arc::new(AtomicU64::new(0));
        let tab = second_tab_engine(shared.clone(), user, restarts, i as u64, in_flight.clone());
        let _ = timeout(Duration::from_millis(open_ms), tab).await;
        tab_closed(&shared, user, &in_flight);
        event("second tab closed, its call in flight (if any) dropped".to_string());
    }
}

/// One opening of the second tab: its engine starts (resetting whatever
/// is `syncing`, as every engine start does) and syncs on the interval.
async fn second_tab_engine(
    shared: Arc<Shared>,
    user: u32,
    restarts: u64,
    opening: u64,
    in_flight: Arc<AtomicU64>,
) {
    let mut engine = open_engine(&shared, user, Tab::Second { opening }, restarts, in_flight).await;
    let interval = Duration::from_millis(shared.params.interval_ms.max(1) as u64);
    // Bound: the caller's timeout closes the tab.
    loop {
        engine.process_queue().await.expect("local queue failed");
        sleep(interval).await;
    }
}

fn record_depth(shared: &Shared, user: u32) {
    let (pending, syncing, failed) = shared.devices[user as usize]
        .queue
        .lock()
        .expect("queue")
        .status_counts()
        .expect("status counts");
    if pending + syncing + failed > 1000 {
        shared.mark("queue_over_1000");
    }
    shared.record(Event::Depth {
        t_ms: shared.now_ms(),
        user,
        depth: pending + syncing + failed,
        active: pending + syncing,
    });
}

/// The user: makes the pre-generated edits at their times and taps "Retry
/// failed" at theirs (one due while the app is dead waits for the restart;
/// at one instant the edits come first).
async fn user_main(shared: Arc<Shared>, user: u32) {
    let d = &shared.devices[user as usize];
    let atomic = shared.config.hardening.atomic_local_write;
    let policy = shared.config.merge_policy();
    // Bounded: every pass takes an edit or a tap, and there are finitely many.
    loop {
        let next_edit_ms = d.edits.lock().expect("edits").front().map(|e| e.at_ms);
        let next_tap_ms = d.retry_taps_ms.lock().expect("taps").front().copied();
        if let Some(tap_ms) = next_tap_ms.filter(|t| next_edit_ms.is_none_or(|e| *t < e)) {
            retry_failed_tap(&shared, user, tap_ms).await;
            continue;
        }
        let Some(at_ms) = next_edit_ms else {
            return;
        };
        sleep_until_ms(&shared, at_ms).await;
        let made = if atomic {
            // Every edit due at this instant, taken now with no await before
            // the write: a kill comes before them all or after them all, and
            // no sync pass runs in between, so writing them in one
            // transaction is invisible to the world and spares a backlog
            // of 10,000 edits 10,000 commits.
            let due: Vec<Edit> = {
                let mut edits = d.edits.lock().expect("edits");
                let n = edits.iter().take_while(|e| e.at_ms == at_ms).count();
                edits.drain(..n).collect()
            };
            let first = d.next_edit.load(Ordering::SeqCst);
            let mut events = Vec::with_capacity(due.len());
            let mut writes = Vec::with_capacity(due.len());
            for (i, edit) in due.into_iter().enumerate() {
                let op_id = format!("op-u{user}-{}", first + i);
                events.push(edit_event(&shared, user, first + i, &op_id, &edit, true));
                writes.push((edit.op, op_id));
            }
            let written = d
                .queue
                .lock()
                .expect("queue")
                .write_and_enqueue_all(writes, shared.device_now_ms(user), policy)
                .expect("workload edits are valid");
            d.next_edit.fetch_add(written.len(), Ordering::SeqCst);
            let made = written.len();
            for (event, w) in events.into_iter().zip(written) {
                shared.record(with_version(event, w.version));
            }
            made
        } else {
            // Taken now, with no await before the local write: a kill either
            // comes before (the edit waits for the restart) or after it.
            let edit = d
                .edits
                .lock()
                .expect("edits")
                .pop_front()
                .expect("only this task takes edits");
            let next = d.next_edit.load(Ordering::SeqCst);
            let op_id = format!("op-u{user}-{next}");
            let version = d
                .queue
                .lock()
                .expect("queue")
                .write_local(&edit.op)
                .expect("local write");
            d.next_edit.fetch_add(1, Ordering::SeqCst);
            let event = edit_event(&shared, user, next, &op_id, &edit, false);
            shared.record(with_version(event, version));
            // The app's local write and its enqueue are separate IndexedDB
            // transactions: a kill in between loses the enqueue.
            sleep(Duration::from_millis(
                shared.params.local_write_ms.max(0) as u64
            ))
            .await;
            d.queue
                .lock()
                .expect("queue")
                .enqueue(edit.op, &op_id, version, shared.device_now_ms(user), policy)
                .expect("workload edits are valid");
            shared.record(Event::Enqueued {
                t_ms: shared.now_ms(),
                user,
                index: next as u32,
            });
            1
        };
        // One depth sample per instant: a backlog enqueued at one time is
        // one step of the chart, and counting the queue per edit would make
        // a 10,000-edit import quadratic.
        let next_at = d.edits.lock().expect("edits").front().map(|e| e.at_ms);
        if next_at != Some(at_ms) {
            record_depth(&shared, user);
        }
        // One nudge per edit, as the app triggers a sync on every write: the
        // first wakes the engine, the second leaves it a permit for one more
        // pass. (One nudge per instant would change the runs, and reports.)
        for _ in 0..made {
            d.nudge.notify_one();
        }
    }
}

/// The user taps "Retry failed" at `at_ms`: the app's button, which sends
/// every failed (and quarantined) operation back to pending with a fresh
/// retry count, then syncs.
async fn retry_failed_tap(shared: &Shared, user: u32, at_ms: i64) {
    let d = &shared.devices[user as usize];
    sleep_until_ms(shared, at_ms).await;
    // Taken now, with no await before the queue write: a kill comes before
    // the tap (it waits for the restart) or after it. Gone while this one
    // waited: the world quiesced and the user stopped tapping.
    if d.retry_taps_ms.lock().expect("taps").pop_front().is_none() {
        return;
    }
    let revived = d
        .queue
        .lock()
        .expect("queue")
        .retry_failed()
        .expect("retry failed");
    if revived > 0 {
        shared.mark("retry_failed_revived");
    }
    shared.record(Event::RetryFailed {
        t_ms: shared.now_ms(),
        user,
        revived,
    });
    d.nudge.notify_one();
}

/// The `Edit` event of an edit the user is making; `version` is filled in
/// once the local write has bumped it (the write consumes the operation).
fn edit_event(
    shared: &Shared,
    user: u32,
    index: usize,
    op_id: &str,
    edit: &Edit,
    enqueued: bool,
) -> Event {
    Event::Edit {
        t_ms: shared.now_ms(),
        user,
        index: index as u32,
        op_id: op_id.to_string(),
        entity_type: edit.op.entity_type,
        entity_id: edit.op.entity_id.clone(),
        kind: edit.op.kind,
        version: 0,
        bad: edit.bad,
        enqueued,
    }
}

fn with_version(mut event: Event, v: i64) -> Event {
    if let Event::Edit { version, .. } = &mut event {
        *version = v;
    }
    event
}

/// One run with its verdicts and numbers.
pub struct Checked {
    pub output: RunOutput,
    pub verdicts: Vec<crate::checker::CheckResult>,
    pub metrics: crate::metrics::RunMetrics,
}

impl Checked {
    pub fn ok(&self) -> bool {
        self.verdicts.iter().all(|v| v.ok)
    }
}

/// Runs one world and checks it.
pub fn run_checked(params: &WorldParams, seed: u64, config: EngineConfig, trace: bool) -> Checked {
    let output = run(params, seed, config, trace);
    let verdicts = crate::checker::check_all(&output);
    let metrics = crate::metrics::compute(&output);
    Checked {
        output,
        verdicts,
        metrics,
    }
}

#[cfg(test)]
mod tests {
    use super::{contend, deadlock_victim, LockReach, ServerRequest};
    use crate::server::UserId;
    use std::sync::Arc;
    use sync_core::EntityType;

    /// A call that reaches players `ids` at `start_ms`, one a millisecond,
    /// and ends a millisecond after the last.
    fn call(start_ms: i64, ids: &[&str]) -> LockReach {
        let reaches: Vec<((EntityType, String), i64)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| ((EntityType::Player, id.to_string()), start_ms + i as i64))
            .collect();
        LockReach {
            user: UserId(1),
            end_ms: start_ms + ids.len() as i64,
            reaches,
            delay_ms: 0,
            released: Arc::new(tokio::sync::Notify::new()),
        }
    }

    #[test]
    fn calls_that_take_shared_rows_in_opposite_orders_deadlock() {
        // tests/postgres.rs `opposite_lock_orders`, user 940: the first
        // holds p1 and reaches p2 after the second took it.
        let first = call(0, &["p1", "p3", "p2"]);
        let second = call(1, &["p2", "p1"]);
        assert_eq!(contend(&first, &second), (Some(2), Some(2), true));
        // In one order the second stops at p1 and waits; no deadlock.
        let first = call(0, &["p1", "p2", "p3"]);
        let second = call(1, &["p1", "p2"]);
        assert_eq!(contend(&first, &second), (None, Some(1), false));
        assert_eq!(contend(&second, &first), (Some(1), None, false));
        // Nothing shared, or the first ended before the second reached it.
        assert_eq!(
            contend(&call(0, &["p1"]), &call(0, &["p2"])),
            (None, None, false)
        );
        assert_eq!(
            contend(&call(0, &["p1"]), &call(5, &["p1"])),
            (None, None, false)
        );
    }

    #[test]
    fn a_deadlock_aborts_the_first_waiter_when_its_check_finds_the_cycle() {
        // The first waiter's check runs 1 s after it began to wait.
        assert_eq!(deadlock_victim(100, 600), (true, 1_100));
        assert_eq!(deadlock_victim(100, 1_100), (true, 1_100));
        // Closed later, the cycle is found by the second waiter's check.
        assert_eq!(deadlock_victim(100, 1_101), (false, 2_101));
    }
    use serde_json::json;
    use sync_core::payload::{BulkSyncPayload, TeamRosterPayload};

    #[test]
    fn a_roster_costs_the_same_statement_time_in_a_bulk_call_as_alone() {
        let roster = vec![
            json!({"player_id": "p1"}),
            json!({"player_id": "p2"}),
            json!({"player_id": "p3"}),
        ];
        let alone = ServerRequest::SetRoster {
            team_id: "t1".into(),
            roster: roster.clone(),
            version: None,
        };
        let mut payload = BulkSyncPayload::default();
        payload.players.push(json!({"id": "p4"}));
        payload.team_rosters.push(TeamRosterPayload {
            team_id: "t1".into(),
            roster,
        });
        let bulk = ServerRequest::Bulk(Box::new(payload));
        // The roster's own row and one per player.
        assert_eq!(alone.work_units(), 4);
        // The player's row besides.
        assert_eq!(bulk.work_units(), 5);
        // An empty call still costs its base.
        let empty = ServerRequest::Bulk(Box::default());
        assert_eq!(empty.work_units(), 1);
    }
}
