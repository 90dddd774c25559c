//! Scenario files: the schema, loading (embedded or from a path), and
//! validation. A malformed file is an error naming the file, line and
//! column, never a panic or a silent default.

use crate::nemesis::FaultParams;
use crate::script::ScriptSection;
use crate::workload::WorkloadParams;
use crate::world::WorldParams;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use sync_core::engine::Preset;

/// The largest clock skew a scenario or a script may ask for, either way:
/// a week covers a clock set by hand to the wrong day, and keeps every
/// device time far from i64 overflow.
pub(crate) const WEEK_MS: i64 = 7 * 24 * 3_600_000;

/// The largest `world.max_per_type`: twice the server's cap on one call
/// (`server::MAX_BULK_OPS`), so a study can go past the cap and show what
/// it costs, and no selection grows without bound.
pub const MAX_PER_TYPE_LIMIT: usize = 2 * crate::server::MAX_BULK_OPS;

/// Every scenario shipped in `scenarios/`, embedded in the binary.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "normal-usage",
        include_str!("../../scenarios/normal-usage.toml"),
    ),
    (
        "normal-usage-debounce",
        include_str!("../../scenarios/normal-usage-debounce.toml"),
    ),
    (
        "backup-import",
        include_str!("../../scenarios/backup-import.toml"),
    ),
    (
        "partial-failure",
        include_str!("../../scenarios/partial-failure.toml"),
    ),
    ("mixed-ops", include_str!("../../scenarios/mixed-ops.toml")),
    (
        "large-batch",
        include_str!("../../scenarios/large-batch.toml"),
    ),
    (
        "big-import",
        include_str!("../../scenarios/big-import.toml"),
    ),
    (
        "offline-reconnect",
        include_str!("../../scenarios/offline-reconnect.toml"),
    ),
    (
        "abort-cascade",
        include_str!("../../scenarios/abort-cascade.toml"),
    ),
    (
        "app-kill-mid-sync",
        include_str!("../../scenarios/app-kill-mid-sync.toml"),
    ),
    (
        "flaky-network",
        include_str!("../../scenarios/flaky-network.toml"),
    ),
    (
        "auth-expiry",
        include_str!("../../scenarios/auth-expiry.toml"),
    ),
    (
        "server-overload",
        include_str!("../../scenarios/server-overload.toml"),
    ),
    (
        "stale-replay",
        include_str!("../../scenarios/stale-replay.toml"),
    ),
    (
        "parent-child",
        include_str!("../../scenarios/parent-child.toml"),
    ),
    (
        "large-backlog",
        include_str!("../../scenarios/large-backlog.toml"),
    ),
    (
        "tenant-forgery",
        include_str!("../../scenarios/tenant-forgery.toml"),
    ),
    (
        "retry-failed",
        include_str!("../../scenarios/retry-failed.toml"),
    ),
    (
        "retry-quarantined",
        include_str!("../../scenarios/retry-quarantined.toml"),
    ),
    (
        "relink-mid-sync",
        include_str!("../../scenarios/relink-mid-sync.toml"),
    ),
    (
        "team-churn",
        include_str!("../../scenarios/team-churn.toml"),
    ),
    (
        "orphan-resend",
        include_str!("../../scenarios/orphan-resend.toml"),
    ),
    (
        "bisect-churn",
        include_str!("../../scenarios/bisect-churn.toml"),
    ),
    ("full-mix", include_str!("../../scenarios/full-mix.toml")),
    (
        "stale-roster",
        include_str!("../../scenarios/stale-roster.toml"),
    ),
    (
        "name-handover",
        include_str!("../../scenarios/name-handover.toml"),
    ),
    (
        "clock-skew",
        include_str!("../../scenarios/clock-skew.toml"),
    ),
    (
        "second-tab",
        include_str!("../../scenarios/second-tab.toml"),
    ),
    (
        "reload-mid-slow-call",
        include_str!("../../scenarios/reload-mid-slow-call.toml"),
    ),
    (
        "roster-overlap",
        include_str!("../../scenarios/roster-overlap.toml"),
    ),
    (
        "tab-handover",
        include_str!("../../scenarios/tab-handover.toml"),
    ),
];

/// A scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    /// One line for `sim list`.
    pub summary: String,
    /// Presets the report compares.
    #[serde(default = "all_presets")]
    pub presets: Vec<Preset>,
    /// The seed `sim scenario NAME` runs by default.
    #[serde(default = "one")]
    pub seed: u64,
    /// The fixed seed list `0..test_seeds` the test suite sweeps.
    #[serde(default = "default_test_seeds")]
    pub test_seeds: u64,
    /// Coverage marks (marks.rs) a hardened sweep of this scenario must
    /// reach on at least one seed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<String>,
    #[serde(default)]
    pub world: WorldSection,
    #[serde(default)]
    pub workload: WorkloadSection,
    #[serde(default)]
    pub faults: FaultsSection,
    /// An explicit workload and fault plan replacing the seed's (see
    /// `script.rs`); `sim shrink` writes one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<ScriptSection>,
    /// Where a shrunk scenario came from and what it still breaks; the
    /// regression test holds it to that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shrunk: Option<Shrunk>,
    /// The file it was loaded from (`None` for an embedded scenario): a
    /// replay command must name it, since `replay NAME` finds only the
    /// embedded ones.
    #[serde(skip)]
    pub file: Option<PathBuf>,
}

/// The failure a shrunk scenario preserves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shrunk {
    /// The scenario it was shrunk from.
    pub from: String,
    pub seed: u64,
    pub preset: Preset,
    /// A planted bug (`sim bugs`), if the failure needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bug: Option<String>,
    /// The checker that must still fail.
    pub checker: String,
}

fn all_presets() -> Vec<Preset> {
    Preset::ALL.to_vec()
}
fn one() -> u64 {
    1
}
fn default_test_seeds() -> u64 {
    200
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldSection {
    pub users: u32,
    pub fault_phase_ms: i64,
    pub quiesce_budget_ms: i64,
    pub request_timeout_ms: i64,
    pub interval_ms: i64,
    pub debounce_ms: i64,
    /// Time between a non-atomic local write and its enqueue.
    pub local_write_ms: i64,
    /// The engine's operations per entity type in one batch (the plan's
    /// 50; its open question 2). The hardened engine's adaptive chunk size
    /// never goes above it. `sim batch-size` varies it.
    pub max_per_type: usize,
}

impl Default for WorldSection {
    fn default() -> Self {
        WorldSection {
            users: 1,
            fault_phase_ms: 600_000,
            quiesce_budget_ms: 3_600_000,
            request_timeout_ms: 90_000,
            interval_ms: 30_000,
            debounce_ms: 0,
            local_write_ms: 3,
            max_per_type: sync_core::payload::DEFAULT_MAX_PER_TYPE,
        }
    }
}

/// Weights by entity type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TypeWeights {
    pub player: u32,
    pub team: u32,
    pub season: u32,
    pub tournament: u32,
    pub personnel: u32,
    pub settings: u32,
    pub warmup_plan: u32,
    pub game: u32,
    pub team_roster: u32,
    pub player_adjustment: u32,
}

impl Default for TypeWeights {
    fn default() -> Self {
        TypeWeights {
            player: 5,
            team: 2,
            season: 1,
            tournament: 1,
            personnel: 1,
            settings: 1,
            warmup_plan: 1,
            game: 1,
            team_roster: 1,
            player_adjustment: 1,
        }
    }
}

impl TypeWeights {
    /// In `EntityType::ALL` order.
    fn array(&self) -> [u32; 10] {
        [
            self.player,
            self.team,
            self.season,
            self.tournament,
            self.personnel,
            self.settings,
            self.warmup_plan,
            self.game,
            self.team_roster,
            self.player_adjustment,
        ]
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindWeights {
    pub create: u32,
    pub update: u32,
    pub delete: u32,
}

impl Default for KindWeights {
    fn default() -> Self {
        KindWeights {
            create: 5,
            update: 4,
            delete: 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadSection {
    pub edits: u32,
    pub think_time_ms: [i64; 2],
    pub initial_backlog: u32,
    pub types: TypeWeights,
    pub kinds: KindWeights,
    pub bad_records: u32,
    pub delete_recreate: u32,
    /// Name hand-overs per user (a personnel member deleted or renamed and
    /// another, new or renamed, taking its name at the same instant).
    #[serde(skip_serializing_if = "is_zero")]
    pub name_reuse: u32,
    pub children_first: bool,
    /// The last user's client is tampered with: every row it writes claims
    /// user 0's `user_id` (needs two users or more).
    pub forged_user_id: bool,
    /// The user taps "Retry failed" every this many ms until the run ends,
    /// and once more when the faults end (absent: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_failed_every_ms: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for WorkloadSection {
    fn default() -> Self {
        WorkloadSection {
            edits: 100,
            think_time_ms: [50, 2_000],
            initial_backlog: 0,
            types: TypeWeights::default(),
            kinds: KindWeights::default(),
            bad_records: 0,
            delete_recreate: 0,
            name_reuse: 0,
            children_first: false,
            forged_user_id: false,
            retry_failed_every_ms: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Windows {
    pub windows: u32,
    pub duration_ms: [i64; 2],
}

impl Windows {
    fn is_off(&self) -> bool {
        self.windows == 0
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Kills {
    pub count: u32,
    pub restart_delay_ms: [i64; 2],
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenExpiry {
    pub count: u32,
    pub refresh_after_ms: [i64; 2],
}

/// Windows in which a device's clock is off (a user who set it by hand,
/// a bad NTP step): one offset per seed, drawn from `offset_ms`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClockSkew {
    pub windows: u32,
    pub duration_ms: [i64; 2],
    /// Negative: the clock is behind true time.
    pub offset_ms: [i64; 2],
}

impl ClockSkew {
    fn is_off(&self) -> bool {
        self.windows == 0
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerErrors {
    pub bursts: u32,
    pub duration_ms: [i64; 2],
    pub status: u16,
}

impl Default for ServerErrors {
    fn default() -> Self {
        ServerErrors {
            bursts: 0,
            duration_ms: [5_000, 60_000],
            status: 503,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultsSection {
    /// Each seed switches some fault kinds off and reweights the rest.
    pub swarm: bool,
    pub latency_ms: [i64; 2],
    pub bandwidth_bytes_per_ms: i64,
    /// Statement time per row a call writes: one per entity or delete, and
    /// one more per player of a roster (`ServerRequest::work_units`).
    pub server_ms_per_row: f64,
    pub statement_timeout_ms: i64,
    pub request_loss: f64,
    pub response_loss: f64,
    pub offline: Windows,
    pub silent_drop: Windows,
    pub kills: Kills,
    pub token_expiry: TokenExpiry,
    pub server_errors: ServerErrors,
    #[serde(skip_serializing_if = "ClockSkew::is_off")]
    pub clock_skew: ClockSkew,
    /// Windows in which a second tab of the app runs its own engine on the
    /// same queue.
    #[serde(skip_serializing_if = "Windows::is_off")]
    pub second_tab: Windows,
    /// Windows of a tab hand-over: another tab opens at the start, and the
    /// tab the user works in closes at the end, leaving the new one.
    #[serde(skip_serializing_if = "Windows::is_off")]
    pub tab_handover: Windows,
}

impl Default for FaultsSection {
    fn default() -> Self {
        FaultsSection {
            swarm: false,
            latency_ms: [5, 80],
            bandwidth_bytes_per_ms: 2_000,
            server_ms_per_row: 1.0,
            statement_timeout_ms: 8_000,
            request_loss: 0.0,
            response_loss: 0.0,
            offline: Windows::default(),
            silent_drop: Windows::default(),
            kills: Kills::default(),
            token_expiry: TokenExpiry::default(),
            server_errors: ServerErrors::default(),
            clock_skew: ClockSkew::default(),
            second_tab: Windows::default(),
            tab_handover: Windows::default(),
        }
    }
}

/// Why a scenario could not be loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScenarioError {
    /// No scenario of that name; lists the known ones.
    Unknown { name: String, known: Vec<String> },
    /// The file could not be read.
    Io { path: String, detail: String },
    /// TOML syntax or schema error at a line and column.
    Parse {
        file: String,
        line: usize,
        column: usize,
        detail: String,
    },
    /// Parsed, but a value is out of range.
    Invalid { file: String, detail: String },
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScenarioError::Unknown { name, known } => write!(
                f,
                "unknown scenario {name:?}; known scenarios: {}",
                known.join(", ")
            ),
            ScenarioError::Io { path, detail } => write!(f, "cannot read {path}: {detail}"),
            ScenarioError::Parse {
                file,
                line,
                column,
                detail,
            } => write!(f, "{file}:{line}:{column}: {detail}"),
            ScenarioError::Invalid { file, detail } => write!(f, "{file}: {detail}"),
        }
    }
}

impl std::error::Error for ScenarioError {}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let upto = &text[..offset.min(text.len())];
    let line = upto.matches('\n').count() + 1;
    let column = upto
        .rfind('\n')
        .map(|i| upto.len() - i)
        .unwrap_or(upto.len() + 1);
    (line, column)
}

impl Scenario {
    /// Names of the embedded scenarios.
    pub fn known() -> Vec<String> {
        EMBEDDED.iter().map(|(n, _)| n.to_string()).collect()
    }

    /// An embedded scenario by name.
    pub fn embedded(name: &str) -> Result<Scenario, ScenarioError> {
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Scenario::parse(text, &format!("scenarios/{n}.toml")),
            None => Err(ScenarioError::Unknown {
                name: name.to_string(),
                known: Scenario::known(),
            }),
        }
    }

    /// Any scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Io {
            path: path.display().to_string(),
            detail: e.to_string(),
        })?;
        let mut s = Scenario::parse(&text, &path.display().to_string())?;
        s.file = Some(path.to_path_buf());
        Ok(s)
    }

    /// What `sim replay` needs to find this scenario: its name, and the
    /// file for one loaded from a file.
    pub fn replay_target(&self) -> String {
        match &self.file {
            Some(path) => format!("{} --file {}", self.name, path.display()),
            None => self.name.clone(),
        }
    }

    /// Parses and validates TOML text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|r| line_col(text, r.start)).unwrap_or((1, 1));
            ScenarioError::Parse {
                file: file.to_string(),
                line,
                column,
                detail: e.message().to_string(),
            }
        })?;
        s.validate().map_err(|detail| ScenarioError::Invalid {
            file: file.to_string(),
            detail,
        })?;
        Ok(s)
    }

    fn validate(&self) -> Result<(), String> {
        let range = |name: &str, r: [i64; 2]| {
            if r[0] < 0 || r[0] > r[1] {
                Err(format!(
                    "{name} must be [min, max] with 0 <= min <= max, got {r:?}"
                ))
            } else {
                Ok(())
            }
        };
        let prob = |name: &str, p: f64| {
            if !(0.0..=1.0).contains(&p) {
                Err(format!("{name} must be a probability in [0, 1], got {p}"))
            } else {
                Ok(())
            }
        };
        let positive = |name: &str, v: i64| {
            if v <= 0 {
                Err(format!("{name} must be positive, got {v}"))
            } else {
                Ok(())
            }
        };
        if self.name.is_empty() {
            return Err("name must not be empty".into());
        }
        if self.presets.is_empty() {
            return Err("presets must name at least one preset".into());
        }
        let w = &self.world;
        if !(1..=64).contains(&w.users) {
            return Err(format!("world.users must be 1..=64, got {}", w.users));
        }
        positive("world.fault_phase_ms", w.fault_phase_ms)?;
        positive("world.quiesce_budget_ms", w.quiesce_budget_ms)?;
        positive("world.request_timeout_ms", w.request_timeout_ms)?;
        positive("world.interval_ms", w.interval_ms)?;
        if w.debounce_ms < 0 || w.local_write_ms < 0 {
            return Err("world.debounce_ms and world.local_write_ms must be >= 0".into());
        }
        if !(1..=MAX_PER_TYPE_LIMIT).contains(&w.max_per_type) {
            return Err(format!(
                "world.max_per_type must be 1..={MAX_PER_TYPE_LIMIT}, got {}",
                w.max_per_type
            ));
        }
        let wl = &self.workload;
        if wl.edits > 1_000_000 || wl.initial_backlog > 1_000_000 {
            return Err("workload.edits and workload.initial_backlog must be <= 1000000".into());
        }
        range("workload.think_time_ms", wl.think_time_ms)?;
        if wl.types.array().iter().all(|w| *w == 0) {
            return Err("workload.types needs at least one non-zero weight".into());
        }
        if wl.kinds.create == 0 {
            return Err("workload.kinds.create must be non-zero".into());
        }
        if wl.forged_user_id && w.users < 2 {
            return Err(format!(
                "workload.forged_user_id needs world.users >= 2 (a user to impersonate), got {}",
                w.users
            ));
        }
        if let Some(every_ms) = wl.retry_failed_every_ms {
            if every_ms < 1_000 {
                return Err(format!(
                    "workload.retry_failed_every_ms must be >= 1000 (a tap a simulated second at most), got {every_ms}"
                ));
            }
        }
        let f = &self.faults;
        range("faults.latency_ms", f.latency_ms)?;
        positive("faults.bandwidth_bytes_per_ms", f.bandwidth_bytes_per_ms)?;
        positive("faults.statement_timeout_ms", f.statement_timeout_ms)?;
        if !(f.server_ms_per_row >= 0.0 && f.server_ms_per_row.is_finite()) {
            return Err("faults.server_ms_per_row must be >= 0".into());
        }
        prob("faults.request_loss", f.request_loss)?;
        prob("faults.response_loss", f.response_loss)?;
        range("faults.offline.duration_ms", f.offline.duration_ms)?;
        range("faults.silent_drop.duration_ms", f.silent_drop.duration_ms)?;
        range("faults.kills.restart_delay_ms", f.kills.restart_delay_ms)?;
        range(
            "faults.token_expiry.refresh_after_ms",
            f.token_expiry.refresh_after_ms,
        )?;
        range(
            "faults.server_errors.duration_ms",
            f.server_errors.duration_ms,
        )?;
        range("faults.clock_skew.duration_ms", f.clock_skew.duration_ms)?;
        range("faults.second_tab.duration_ms", f.second_tab.duration_ms)?;
        range(
            "faults.tab_handover.duration_ms",
            f.tab_handover.duration_ms,
        )?;
        let [lo, hi] = f.clock_skew.offset_ms;
        if !(lo <= hi && -WEEK_MS <= lo && hi <= WEEK_MS) {
            return Err(format!(
                "faults.clock_skew.offset_ms must be [lo, hi] with -{WEEK_MS} <= lo <= hi <= {WEEK_MS}, got [{lo}, {hi}]"
            ));
        }
        if f.kills.count > 0 && f.kills.restart_delay_ms[0] < 1 {
            // madsim needs a restart at least 1 ms after the kill.
            return Err("faults.kills.restart_delay_ms must start at >= 1".into());
        }
        if !(500..=599).contains(&f.server_errors.status) {
            return Err(format!(
                "faults.server_errors.status must be a 5xx status, got {}",
                f.server_errors.status
            ));
        }
        for (n, v) in [
            ("faults.offline.windows", f.offline.windows),
            ("faults.silent_drop.windows", f.silent_drop.windows),
            ("faults.kills.count", f.kills.count),
            ("faults.token_expiry.count", f.token_expiry.count),
            ("faults.server_errors.bursts", f.server_errors.bursts),
            ("faults.clock_skew.windows", f.clock_skew.windows),
            ("faults.second_tab.windows", f.second_tab.windows),
            ("faults.tab_handover.windows", f.tab_handover.windows),
        ] {
            if v > 10_000 {
                return Err(format!("{n} must be <= 10000, got {v}"));
            }
        }
        for m in &self.marks {
            if !crate::marks::is_known(m) {
                return Err(format!(
                    "unknown mark {m:?}; known marks: {}",
                    crate::marks::names().join(", ")
                ));
            }
        }
        if let Some(script) = &self.script {
            script.to_script(&self.fault_params(), w.users)?;
        }
        if let Some(shrunk) = &self.shrunk {
            if !crate::checker::CHECKERS.contains(&shrunk.checker.as_str()) {
                return Err(format!(
                    "shrunk.checker {:?} is not a checker ({})",
                    shrunk.checker,
                    crate::checker::CHECKERS.join(", ")
                ));
            }
            if let Some(bug) = &shrunk.bug {
                crate::explore::PlantedBug::find(bug).map_err(|e| format!("shrunk.bug: {e}"))?;
            }
        }
        Ok(())
    }

    /// The world this scenario describes.
    pub fn world_params(&self) -> WorldParams {
        let w = &self.world;
        let wl = &self.workload;
        let pair = |r: [i64; 2]| (r[0], r[1]);
        WorldParams {
            workload: WorkloadParams {
                users: w.users,
                edits: wl.edits,
                think_time_ms: pair(wl.think_time_ms),
                initial_backlog: wl.initial_backlog,
                type_weights: wl.types.array(),
                kind_weights: [wl.kinds.create, wl.kinds.update, wl.kinds.delete],
                bad_records: wl.bad_records,
                delete_recreate: wl.delete_recreate,
                name_reuse: wl.name_reuse,
                children_first: wl.children_first,
                forged_user_id: wl.forged_user_id,
                retry_failed_every_ms: wl.retry_failed_every_ms,
            },
            faults: self.fault_params(),
            quiesce_budget_ms: w.quiesce_budget_ms,
            request_timeout_ms: w.request_timeout_ms,
            interval_ms: w.interval_ms,
            local_write_ms: w.local_write_ms,
            server_bugs: crate::server::ServerBugs::default(),
            queue: sync_core::queue::QueueBackend::Sqlite,
            script: self.script.as_ref().map(|script| {
                std::sync::Arc::new(
                    script
                        .to_script(&self.fault_params(), w.users)
                        .expect("a scenario's script is validated when it is loaded"),
                )
            }),
        }
    }

    /// The fault parameters of the `[faults]` section.
    pub fn fault_params(&self) -> FaultParams {
        let w = &self.world;
        let f = &self.faults;
        let pair = |r: [i64; 2]| (r[0], r[1]);
        FaultParams {
            swarm: f.swarm,
            fault_phase_ms: w.fault_phase_ms,
            latency_ms: pair(f.latency_ms),
            bandwidth_bytes_per_ms: f.bandwidth_bytes_per_ms,
            server_ms_per_row: f.server_ms_per_row,
            statement_timeout_ms: f.statement_timeout_ms,
            request_loss: f.request_loss,
            response_loss: f.response_loss,
            offline_windows: f.offline.windows,
            offline_duration_ms: pair(f.offline.duration_ms),
            silent_drop_windows: f.silent_drop.windows,
            silent_drop_duration_ms: pair(f.silent_drop.duration_ms),
            kills: f.kills.count,
            restart_delay_ms: pair(f.kills.restart_delay_ms),
            token_expiries: f.token_expiry.count,
            refresh_after_ms: pair(f.token_expiry.refresh_after_ms),
            server_error_bursts: f.server_errors.bursts,
            server_error_duration_ms: pair(f.server_errors.duration_ms),
            server_error_status: f.server_errors.status,
            clock_skew_windows: f.clock_skew.windows,
            clock_skew_duration_ms: pair(f.clock_skew.duration_ms),
            clock_skew_offset_ms: pair(f.clock_skew.offset_ms),
            second_tab_windows: f.second_tab.windows,
            second_tab_duration_ms: pair(f.second_tab.duration_ms),
            tab_handover_windows: f.tab_handover.windows,
            tab_handover_duration_ms: pair(f.tab_handover.duration_ms),
        }
    }

    /// The world and engine of one preset, with a planted bug if any.
    pub fn setup(
        &self,
        preset: Preset,
        bug: Option<&crate::explore::PlantedBug>,
    ) -> (WorldParams, sync_core::EngineConfig) {
        let mut params = self.world_params();
        let mut config = self.engine_config(preset);
        if let Some(b) = bug {
            b.plant(&mut config, &mut params);
        }
        (params, config)
    }

    /// The engine configuration of a preset under this scenario.
    pub fn engine_config(&self, preset: Preset) -> sync_core::EngineConfig {
        let mut c = sync_core::EngineConfig::preset(preset);
        c.request_timeout_ms = self.world.request_timeout_ms;
        c.debounce_ms = self.world.debounce_ms;
        c.max_per_type = self.world.max_per_type;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_is_embedded_and_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let p = e.unwrap().path();
                (p.extension()? == "toml")
                    .then(|| p.file_stem().unwrap().to_string_lossy().into_owned())
            })
            .collect();
        on_disk.sort();
        let mut embedded = Scenario::known();
        embedded.sort();
        assert_eq!(on_disk, embedded, "scenarios/ and EMBEDDED differ");
        for name in Scenario::known() {
            let s = Scenario::embedded(&name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(s.name, name);
            let text = EMBEDDED.iter().find(|(n, _)| *n == name).unwrap().1;
            assert!(
                text.trim_start().starts_with('#'),
                "{name}: a comment says what it is for"
            );
        }
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let e = Scenario::parse(
            "name = \"x\"\nsummary = \"y\"\n[world]\nusers = \"two\"\n",
            "f.toml",
        )
        .unwrap_err();
        match e {
            ScenarioError::Parse { file, line, .. } => {
                assert_eq!(file, "f.toml");
                assert_eq!(line, 4);
            }
            other => panic!("{other:?}"),
        }
        let e =
            Scenario::parse("name = \"x\"\nsummary = \"y\"\nbogus = 1\n", "f.toml").unwrap_err();
        assert!(e.to_string().starts_with("f.toml:3:"), "{e}");
        // Parsed, but out of range: the message names the key.
        for (body, names) in [
            ("[faults]\nrequest_loss = 2.0", "probability"),
            ("[workload]\nforged_user_id = true", "world.users >= 2"),
            ("[world]\nmax_per_type = 0", "world.max_per_type must be 1..=1000"),
            ("[world]\nmax_per_type = 1001", "world.max_per_type must be 1..=1000"),
            (
                "[workload]\nretry_failed_every_ms = 0",
                "retry_failed_every_ms",
            ),
            (
                "[faults]\nclock_skew = { windows = 1, duration_ms = [1, 2], offset_ms = [5, -5] }",
                "faults.clock_skew.offset_ms",
            ),
            (
                "[faults]\nclock_skew = { windows = 1, duration_ms = [1, 2], offset_ms = [-700000000, 0] }",
                "faults.clock_skew.offset_ms",
            ),
            (
                "[faults]\nclock_skew = { windows = 1, duration_ms = [1, 2], offset_ms = [0, 700000000] }",
                "faults.clock_skew.offset_ms",
            ),
            (
                "[script]\nclock_skew_ms = 1000000000000",
                "script.clock_skew_ms",
            ),
            (
                "[faults]\ntab_handover = { windows = 1, duration_ms = [5, 1] }",
                "faults.tab_handover.duration_ms",
            ),
            (
                "[script]\nwindows = [\
                 { kind = \"tab_handover\", user = 0, start_ms = 10, end_ms = 20 }, \
                 { kind = \"tab_handover\", user = 0, start_ms = 15, end_ms = 30 }]",
                "tab_handover windows of user 0 overlap",
            ),
        ] {
            let text = format!("name = \"x\"\nsummary = \"y\"\n{body}\n");
            let e = Scenario::parse(&text, "f.toml").unwrap_err();
            assert!(e.to_string().contains(names), "{body}: {e}");
        }
        let e = Scenario::embedded("nope").unwrap_err();
        assert!(e.to_string().contains("offline-reconnect"), "{e}");
    }
}
