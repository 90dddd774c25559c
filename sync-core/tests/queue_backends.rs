//! Differential test of the queue's two stores: one random command sequence
//! runs on two `SyncQueue`s, and after every command every answer and the
//! whole observable state of the two must be equal, down to `seq`, ready
//! times, batch ids, released names and the local store.
//!
//! Why: the simulator can run its sweeps on the B-tree queue, which is
//! several times faster than SQLite, only if nothing a run can observe
//! depends on which store it ran on. `queue_model.rs` checks the rules
//! against a hand-written model; this test needs no model at all, so it
//! reaches every public method and every corner the model leaves out (the
//! local store, released names, forged and stale compare-and-set copies,
//! clock skew, clearing), and any divergence between the two stores fails
//! it, whichever of them is wrong.
//!
//! Commands draw from small spaces (six entity types, two entity ids, three
//! names) so that merges, cancels, replaces, name collisions and re-used
//! names happen in most runs, and operations are picked from the live
//! queue, from every id ever issued (gone ones included) or a never-issued
//! one. The test treats any error other than `QueueError::Invalid` as a
//! failure: nothing here should ever make a store fail.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Value};
use std::fmt::{Arguments, Debug};
use sync_core::model::{
    EntityType, InvalidOperation, MergePolicy, NewOperation, OpKind, OpStatus, SyncOperation,
};
use sync_core::queue::{BatchIdAfter, BatchSelect, EnqueueOutcome, QueueError, Written};
use sync_core::SyncQueue;

/// The two queues compared: SQLite and the B-tree queue.
fn backends() -> (SyncQueue, SyncQueue) {
    (
        SyncQueue::open_in_memory().unwrap(),
        SyncQueue::open_btree("btree"),
    )
}

/// Random cases per run (`PROPTEST_CASES` overrides it: the `proptest!`
/// macro reads the environment over this).
const CASES: u32 = 256;

/// The types drawn: the one with a unique name (personnel), the one whose
/// data is an array (rosters), a singleton (settings, fixed id "app", no
/// delete), the one whose delete needs data (adjustments), a plain bulk type
/// and the one type that is not bulk (games).
const TYPES: [EntityType; 6] = [
    EntityType::Player,
    EntityType::Game,
    EntityType::Personnel,
    EntityType::TeamRoster,
    EntityType::Settings,
    EntityType::PlayerAdjustment,
];

/// Entity ids: two of each type, so that writes collide, plus the
/// singleton's fixed one.
const ENTITY_IDS: [&str; 3] = ["e1", "e2", "app"];

/// Personnel names. Few, so that one member takes the name another gave
/// up; one needs escaping in JSON (SQLite reads the stored name back out
/// of JSON text) and one is empty.
const NAMES: [&str; 3] = ["Ada", "Bé \"B\"", ""];

/// An op id never issued.
const MISSING: &str = "op-missing";

/// A device clock in 2023: far from zero, so clock skew backwards never
/// crosses it.
const START_MS: i64 = 1_700_000_000_000;

/// How many read copies are kept for the compare-and-set: enough that some
/// are stale by the time they are used.
const HELD: usize = 16;

/// One edit, as small numbers; `build` makes the `NewOperation`.
#[derive(Clone, Debug)]
struct Edit {
    t: u8,
    id: u8,
    kind: u8,
    /// `NAMES` index; 3: no name; 4: `"name": null`; 5: a number; 6: an
    /// object (neither is a name, in either store).
    name: u8,
    /// 0: a wrong id for a singleton type; 1: an empty id; 2: bad data (a
    /// non-object, a roster object, an adjustment delete without its
    /// player); 3: a delete that carries data; 4: a float in the data; any
    /// other value: a plain edit.
    quirk: u8,
    /// The float of quirk 4, any bit pattern: the SQLite store keeps data
    /// as JSON text, and serde_json's default parser gives some floats
    /// back one bit off (about one random pattern in three), so a store
    /// that keeps the `Value` itself answers differently.
    x: f64,
    /// The entity of the run's previous edit instead of `t` and `id`: most
    /// merges, cancels and renames need two edits of one entity.
    again: bool,
}

impl Edit {
    /// The operation; `tag` (its op id) goes into the data so that every
    /// edit's content differs from every other's. `last` is the (type, id)
    /// of the run's previous edit, updated here.
    fn build(&self, tag: &str, last: &mut Option<(u8, u8)>) -> NewOperation {
        let (t, id) = match (self.again, *last) {
            (true, Some(prev)) => prev,
            _ => (self.t, self.id),
        };
        *last = Some((t, id));
        let t = TYPES[usize::from(t) % TYPES.len()];
        let kind = [OpKind::Create, OpKind::Update, OpKind::Delete][usize::from(self.kind) % 3];
        let entity_id = match (self.quirk, t.fixed_id()) {
            (0, Some(_)) => "e1",
            (1, _) => "",
            (_, Some(fixed)) => fixed,
            (_, None) => ENTITY_IDS[usize::from(id) % 2],
        }
        .to_string();
        let bad = self.quirk == 2;
        let data = match (kind, t) {
            (OpKind::Delete, EntityType::PlayerAdjustment) if bad => Value::Null,
            (OpKind::Delete, EntityType::PlayerAdjustment) => json!({"player_id": "p1"}),
            (OpKind::Delete, _) if self.quirk == 3 => json!({"id": entity_id, "edit": tag}),
            (OpKind::Delete, _) => Value::Null,
            (_, EntityType::TeamRoster) if bad => json!({"player_id": "p1"}),
            (_, EntityType::TeamRoster) => json!([{"player_id": "p1", "edit": tag}]),
            _ if bad => json!(tag),
            _ => {
                let mut data = json!({"id": entity_id, "edit": tag});
                if t == EntityType::Personnel {
                    match self.name {
                        0..=2 => data["name"] = json!(NAMES[usize::from(self.name)]),
                        3 => {}
                        4 => data["name"] = Value::Null,
                        5 => data["name"] = json!(7),
                        _ => data["name"] = json!({"first": NAMES[0]}),
                    }
                }
                if self.quirk == 4 {
                    data["x"] = json!(self.x);
                }
                data
            }
        };
        NewOperation {
            entity_type: t,
            entity_id,
            kind,
            data,
        }
    }
}

/// An operation to name: mostly one in the queue now, sometimes any id
/// ever issued (it may be gone), sometimes one never issued.
#[derive(Clone, Copy, Debug)]
struct Pick(u8);

impl Pick {
    fn resolve(self, live: &[String], issued: &[String]) -> String {
        let i = usize::from(self.0 / 8);
        let from = |ids: &[String]| ids.get(i % ids.len().max(1)).cloned();
        match self.0 % 8 {
            0..=5 => from(live).or_else(|| from(issued)),
            6 => from(issued),
            _ => None,
        }
        .unwrap_or_else(|| MISSING.to_string())
    }
}

/// The operations a batch call names.
#[derive(Clone, Debug)]
enum Ops {
    /// The ones the last `mark_batch_syncing*` call named (what an engine
    /// does: it settles the batch it sent).
    Sent,
    Picked(Vec<Pick>),
}

/// A read with its arguments. `at` is an offset from the current time.
#[derive(Clone, Debug)]
enum Read {
    LocalEntity { t: u8, id: u8 },
    LocalEntities,
    Get(Pick),
    All,
    GetPending { limit: usize, at: i64 },
    AnyReady { at: i64 },
    GetPendingBatched { max: usize, single: bool, at: i64 },
    Stats { at: i64 },
    StatusCounts,
    NextReadyAt,
    Len,
    IsEmpty,
    QueuedForEntity { t: u8, id: u8 },
    NewerVersion(Pick),
    Superseded(Pick),
    NameReleasers { t: u8, name: u8, id: u8 },
    RetryCount(Pick),
    UnresolvedBatch { at: i64 },
    IsReady { op: Pick, at: i64 },
}

#[derive(Clone, Debug)]
enum Cmd {
    Enqueue {
        edit: Edit,
        version: i64,
        hardened: bool,
    },
    WriteAndEnqueue {
        edit: Edit,
        hardened: bool,
    },
    /// `poison`: an invalid edit (a settings delete) goes in at this
    /// position, so the whole call must fail and write nothing.
    WriteAndEnqueueAll {
        edits: Vec<Edit>,
        poison: Option<usize>,
        hardened: bool,
    },
    WriteLocal(Edit),
    Read(Read),
    MarkSyncing {
        ops: Vec<Pick>,
        batch: Option<u8>,
    },
    /// Copies from earlier reads (indexes into the held ones, listed twice
    /// if `twice`); `forge` alters one copy: its `seq` (`true`) or its data
    /// with the `seq` kept (`false`).
    MarkSyncingUnchanged {
        held: Vec<u8>,
        twice: bool,
        forge: Option<(u8, bool)>,
        batch: Option<u8>,
    },
    MarkCompleted(Ops),
    /// An engine's pass, every call compared: select a batch, mark it
    /// syncing (as a compare-and-set of the copies just read, or by id)
    /// under a batch id, then settle it (`Settle`). Most lifecycles run
    /// through this; the separate commands cover the orders an engine
    /// would not use.
    Sync {
        max: usize,
        single: bool,
        unchanged: bool,
        batch: Option<u8>,
        then: Settle,
    },
    /// `times` calls in a row, so that an operation can reach its retry
    /// limit (10) in a short run.
    MarkFailed {
        ops: Ops,
        forever: bool,
        keep: bool,
        times: u8,
    },
    MarkAborted {
        ops: Ops,
        keep: bool,
    },
    MarkQuarantined(Pick),
    ResetStaleSyncing,
    RetryFailed,
    CapWaits(i64),
    SyncNow,
    DiscardFailed,
    Remove(Pick),
    NextSequence(u8),
    ClearBatchId(Ops),
    /// Offsets from now (or `i64::MIN` / `i64::MAX` as they are); `again`
    /// lists the first id a second time with another time (the last wins).
    SetReadyAt {
        ready: Vec<(Pick, i64)>,
        again: Option<i64>,
    },
    Clear,
    PlantMergeKeepsBatchId(bool),
    /// Moves the clock; negative: the device clock went back.
    Advance(i64),
}

/// How a `Cmd::Sync` batch ends.
#[derive(Clone, Copy, Debug)]
enum Settle {
    /// Left in flight (the app is killed, or the next pass settles it).
    InFlight,
    Completed,
    /// `times` failures in a row (the retry limit is 10).
    Failed {
        forever: bool,
        keep: bool,
        times: u8,
    },
    Aborted {
        keep: bool,
    },
}

/// Which merge policy the writes of a case use: the plan's, the hardened
/// one, or each write its own (an engine restarted with another preset).
#[derive(Clone, Copy, Debug)]
enum Mode {
    PendingOnly,
    PendingOrFailed,
    Mixed,
}

impl Mode {
    fn policy(self, hardened: bool) -> MergePolicy {
        match (self, hardened) {
            (Mode::PendingOnly, _) | (Mode::Mixed, false) => MergePolicy::PendingOnly,
            (Mode::PendingOrFailed, _) | (Mode::Mixed, true) => MergePolicy::PendingOrFailed,
        }
    }
}

fn edit() -> impl Strategy<Value = Edit> {
    // `TYPES` indexes, personnel most often: a released name needs two
    // writes of one member, and a name collision a write of another.
    let t = prop_oneof![
        2 => Just(0u8),
        1 => Just(1u8),
        3 => Just(2u8),
        1 => Just(3u8),
        1 => Just(4u8),
        1 => Just(5u8),
    ];
    let edit = (t, 0u8..2, 0u8..3, 0u8..7, 0u8..16, any::<f64>());
    (edit, prop::bool::weighted(0.5)).prop_map(|((t, id, kind, name, quirk, x), again)| Edit {
        t,
        id,
        kind,
        name,
        quirk,
        x,
        again,
    })
}

fn pick() -> impl Strategy<Value = Pick> {
    any::<u8>().prop_map(Pick)
}

fn picks() -> impl Strategy<Value = Vec<Pick>> {
    prop::collection::vec(pick(), 0..4)
}

fn ops() -> impl Strategy<Value = Ops> {
    prop_oneof![2 => Just(Ops::Sent), 1 => picks().prop_map(Ops::Picked)]
}

/// Read times around the backoff steps: just before and at a 1 s backoff,
/// the 2 s abort delay, the 5 min cap, and a moment ago.
fn at() -> impl Strategy<Value = i64> {
    prop_oneof![
        3 => Just(0i64),
        1 => Just(-1),
        1 => Just(999),
        1 => Just(1_000),
        1 => Just(2_000),
        1 => Just(300_000),
    ]
}

/// A limit below `n`, or now and then none at all (`usize::MAX`, which
/// SQLite is handed as `LIMIT -1`).
fn limit(n: usize) -> impl Strategy<Value = usize> {
    prop_oneof![8 => 0..n, 1 => Just(usize::MAX)]
}

fn read() -> impl Strategy<Value = Read> {
    prop_oneof![
        1 => (0u8..6, 0u8..3).prop_map(|(t, id)| Read::LocalEntity { t, id }),
        1 => Just(Read::LocalEntities),
        1 => pick().prop_map(Read::Get),
        1 => Just(Read::All),
        1 => (limit(6), at()).prop_map(|(limit, at)| Read::GetPending { limit, at }),
        1 => at().prop_map(|at| Read::AnyReady { at }),
        6 => (limit(4), any::<bool>(), at())
            .prop_map(|(max, single, at)| Read::GetPendingBatched { max, single, at }),
        1 => at().prop_map(|at| Read::Stats { at }),
        1 => Just(Read::StatusCounts),
        1 => Just(Read::NextReadyAt),
        1 => Just(Read::Len),
        1 => Just(Read::IsEmpty),
        1 => (0u8..6, 0u8..3).prop_map(|(t, id)| Read::QueuedForEntity { t, id }),
        1 => pick().prop_map(Read::NewerVersion),
        1 => pick().prop_map(Read::Superseded),
        1 => (0u8..6, 0u8..3, 0u8..3)
            .prop_map(|(t, name, id)| Read::NameReleasers { t, name, id }),
        1 => pick().prop_map(Read::RetryCount),
        1 => at().prop_map(|at| Read::UnresolvedBatch { at }),
        1 => (pick(), at()).prop_map(|(op, at)| Read::IsReady { op, at }),
    ]
}

fn ready_time() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(i64::MAX),
        Just(-1_000i64),
        Just(0),
        Just(1_000),
        Just(400_000),
        Just(86_400_000),
    ]
}

fn settlement() -> impl Strategy<Value = Settle> {
    prop_oneof![
        1 => Just(Settle::InFlight),
        2 => Just(Settle::Completed),
        2 => (any::<bool>(), any::<bool>(), prop_oneof![Just(1u8), Just(10u8)])
            .prop_map(|(forever, keep, times)| Settle::Failed { forever, keep, times }),
        2 => prop::bool::weighted(0.75).prop_map(|keep| Settle::Aborted { keep }),
    ]
}

fn cmd() -> impl Strategy<Value = Cmd> {
    // Mostly with a batch id: an unresolved batch needs one.
    let batch = || prop::option::weighted(0.75, 1u8..4);
    prop_oneof![
        4 => (edit(), 0i64..5, any::<bool>())
            .prop_map(|(edit, version, hardened)| Cmd::Enqueue { edit, version, hardened }),
        8 => (edit(), any::<bool>())
            .prop_map(|(edit, hardened)| Cmd::WriteAndEnqueue { edit, hardened }),
        2 => (
            prop::collection::vec(edit(), 0..5),
            prop::option::weighted(0.25, 0usize..5),
            any::<bool>(),
        )
            .prop_map(|(edits, poison, hardened)| Cmd::WriteAndEnqueueAll {
                edits,
                poison,
                hardened,
            }),
        1 => edit().prop_map(Cmd::WriteLocal),
        10 => read().prop_map(Cmd::Read),
        3 => (picks(), batch()).prop_map(|(ops, batch)| Cmd::MarkSyncing { ops, batch }),
        3 => (
            prop::collection::vec(0u8..6, 0..4),
            prop::bool::weighted(0.2),
            prop::option::weighted(0.2, (any::<u8>(), any::<bool>())),
            batch(),
        )
            .prop_map(|(held, twice, forge, batch)| Cmd::MarkSyncingUnchanged {
                held,
                twice,
                forge,
                batch,
            }),
        3 => ops().prop_map(Cmd::MarkCompleted),
        6 => (1usize..4, any::<bool>(), any::<bool>(), batch(), settlement())
            .prop_map(|(max, single, unchanged, batch, then)| Cmd::Sync {
                max,
                single,
                unchanged,
                batch,
                then,
            }),
        3 => (
            ops(),
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(1u8), Just(10u8)],
        )
            .prop_map(|(ops, forever, keep, times)| Cmd::MarkFailed {
                ops,
                forever,
                keep,
                times,
            }),
        // An abort's outcome is unknown: mostly its batch id is kept.
        4 => (ops(), prop::bool::weighted(0.75))
            .prop_map(|(ops, keep)| Cmd::MarkAborted { ops, keep }),
        1 => pick().prop_map(Cmd::MarkQuarantined),
        1 => Just(Cmd::ResetStaleSyncing),
        2 => Just(Cmd::RetryFailed),
        1 => prop_oneof![Just(-1i64), Just(0), Just(1_000), Just(300_000)]
            .prop_map(Cmd::CapWaits),
        1 => Just(Cmd::SyncNow),
        1 => Just(Cmd::DiscardFailed),
        1 => pick().prop_map(Cmd::Remove),
        1 => (0u8..2).prop_map(Cmd::NextSequence),
        1 => ops().prop_map(Cmd::ClearBatchId),
        1 => (
            prop::collection::vec((pick(), ready_time()), 0..4),
            prop::option::weighted(0.3, ready_time()),
        )
            .prop_map(|(ready, again)| Cmd::SetReadyAt { ready, again }),
        1 => Just(Cmd::Clear),
        1 => any::<bool>().prop_map(Cmd::PlantMergeKeepsBatchId),
        8 => prop_oneof![
            1 => Just(0i64),
            3 => Just(500),
            4 => Just(2_000),
            2 => Just(10_000),
            1 => Just(400_000),
            1 => Just(-2_000),
            1 => Just(-400_000),
        ]
        .prop_map(Cmd::Advance),
    ]
}

/// The two queues. `both` runs one call on each and requires equal answers.
struct Pair {
    a: SyncQueue,
    b: SyncQueue,
}

/// An answer with its error reduced to what must agree: the invalid
/// operation and the error's text.
type Answer<T> = Result<T, (InvalidOperation, String)>;

impl Pair {
    /// `call` on the first queue, then on the second; the answers must be
    /// equal.
    fn both<T: PartialEq + Debug>(
        &mut self,
        what: Arguments<'_>,
        mut call: impl FnMut(&mut SyncQueue) -> Result<T, QueueError>,
    ) -> Result<Answer<T>, TestCaseError> {
        let a = settle("first (SQLite)", what, call(&mut self.a))?;
        let b = settle("second", what, call(&mut self.b))?;
        prop_assert_eq!(&a, &b, "{}: the two queues answer differently", what);
        Ok(a)
    }

    /// `both`, and the answers must print alike too: `==` on JSON takes
    /// `-0.0` for `0.0`, and `Debug` does not. (A quarter of the test's
    /// time when done for every answer; the whole queue and local store
    /// hold all the data there is, so `same_state` does it for those.)
    fn strictly<T: PartialEq + Debug>(
        &mut self,
        what: Arguments<'_>,
        mut call: impl FnMut(&mut SyncQueue) -> Result<T, QueueError>,
    ) -> Result<Answer<T>, TestCaseError> {
        let mut printed = Vec::new();
        let answer = self.both(what, |q| {
            let answer = call(q);
            printed.push(format!("{answer:?}"));
            answer
        })?;
        prop_assert_eq!(
            &printed[0],
            &printed[1],
            "{}: the two answers print differently",
            what
        );
        Ok(answer)
    }

    /// `both`, when only the agreement matters.
    fn same<T: PartialEq + Debug>(
        &mut self,
        what: Arguments<'_>,
        call: impl FnMut(&mut SyncQueue) -> Result<T, QueueError>,
    ) -> Result<(), TestCaseError> {
        self.both(what, call).map(drop)
    }

    /// The ids of the operations in the queue now, oldest first.
    fn live(&mut self) -> Result<Vec<String>, TestCaseError> {
        match self.both(format_args!("all()"), |q| q.all())? {
            Ok(all) => Ok(all.into_iter().map(|o| o.id).collect()),
            Err((_, e)) => Err(TestCaseError::fail(format!("all(): {e}"))),
        }
    }
}

/// A store's answer, or a test failure if it failed for a reason other
/// than an invalid operation.
fn settle<T>(
    side: &str,
    what: Arguments<'_>,
    answer: Result<T, QueueError>,
) -> Result<Answer<T>, TestCaseError> {
    match answer {
        Ok(v) => Ok(Ok(v)),
        Err(QueueError::Invalid(e)) => {
            let text = QueueError::Invalid(e.clone()).to_string();
            Ok(Err((e, text)))
        }
        Err(e) => Err(TestCaseError::fail(format!(
            "{what}: the {side} queue failed, which no command here should make it do: {e} ({e:?})"
        ))),
    }
}

/// What a run has reached, so that the fixed script can show it reaches
/// every corner it is meant to.
#[derive(Debug, Default)]
struct Seen {
    inserted: bool,
    merged: bool,
    cancelled: bool,
    replaced: bool,
    invalid: bool,
    batch_refused: bool,
    marked_unchanged: bool,
    refused_stale: bool,
    failed: bool,
    quarantined: bool,
    released_name: bool,
    unresolved: bool,
    seq_reused: bool,
}

impl Seen {
    fn outcome(&mut self, outcome: &EnqueueOutcome) {
        match outcome {
            EnqueueOutcome::Inserted { .. } => self.inserted = true,
            EnqueueOutcome::Merged { .. } => self.merged = true,
            EnqueueOutcome::Cancelled { .. } => self.cancelled = true,
            EnqueueOutcome::Replaced { .. } => self.replaced = true,
        }
    }

    fn all_true(&self) -> bool {
        // Spelled out, so that a new field cannot be left out.
        let Seen {
            inserted,
            merged,
            cancelled,
            replaced,
            invalid,
            batch_refused,
            marked_unchanged,
            refused_stale,
            failed,
            quarantined,
            released_name,
            unresolved,
            seq_reused,
        } = *self;
        inserted
            && merged
            && cancelled
            && replaced
            && invalid
            && batch_refused
            && marked_unchanged
            && refused_stale
            && failed
            && quarantined
            && released_name
            && unresolved
            && seq_reused
    }
}

/// Everything a run tracks besides the queues.
struct Run {
    mode: Mode,
    now: i64,
    /// Every op id handed to a write, in order.
    issued: Vec<String>,
    /// Copies returned by reads, newest last (for the compare-and-set).
    held: Vec<SyncOperation>,
    /// (id, seq) of every operation seen in the queue, to notice a seq
    /// given to a second operation.
    seqs: Vec<(String, i64)>,
    /// The ids the last `mark_batch_syncing*` call named (`Ops::Sent`).
    sent: Vec<String>,
    /// The (type, id) indexes of the last edit (`Edit::again`).
    last: Option<(u8, u8)>,
    seen: Seen,
}

impl Run {
    fn new(mode: Mode) -> Run {
        Run {
            mode,
            now: START_MS,
            issued: Vec::new(),
            held: Vec::new(),
            seqs: Vec::new(),
            sent: Vec::new(),
            last: None,
            seen: Seen::default(),
        }
    }

    fn hold(&mut self, ops: impl IntoIterator<Item = SyncOperation>) {
        self.held.extend(ops);
        let extra = self.held.len().saturating_sub(HELD);
        self.held.drain(..extra);
    }

    fn resolve(&self, live: &[String], picks: &[Pick]) -> Vec<String> {
        picks
            .iter()
            .map(|p| p.resolve(live, &self.issued))
            .collect()
    }

    fn ops(&self, p: &mut Pair, ops: &Ops) -> Result<Vec<String>, TestCaseError> {
        Ok(match ops {
            Ops::Sent => self.sent.clone(),
            Ops::Picked(picks) => self.resolve(&p.live()?, picks),
        })
    }

    /// An offset from now, or an extreme kept as it is.
    fn time(&self, offset: i64) -> i64 {
        match offset {
            i64::MIN | i64::MAX => offset,
            d => self.now + d,
        }
    }
}

fn entity(t: u8, id: u8) -> (EntityType, &'static str) {
    (
        TYPES[usize::from(t) % TYPES.len()],
        ENTITY_IDS[usize::from(id) % ENTITY_IDS.len()],
    )
}

/// Runs one read on both queues.
fn read_both(p: &mut Pair, r: &mut Run, read: &Read) -> Result<(), TestCaseError> {
    match *read {
        Read::LocalEntity { t, id } => {
            let (t, id) = entity(t, id);
            p.same(format_args!("local_entity({t}, {id})"), |q| {
                q.local_entity(t, id)
            })?;
        }
        Read::LocalEntities => {
            p.same(format_args!("local_entities()"), |q| q.local_entities())?;
        }
        Read::Get(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            if let Ok(op) = p.both(format_args!("get({id})"), |q| q.get(&id))? {
                r.hold(op);
            }
        }
        Read::All => {
            if let Ok(all) = p.both(format_args!("all()"), |q| q.all())? {
                r.hold(all);
            }
        }
        Read::GetPending { limit, at } => {
            let at = r.time(at);
            if let Ok(ops) = p.both(format_args!("get_pending({limit}, {at})"), |q| {
                q.get_pending(limit, at)
            })? {
                r.hold(ops);
            }
        }
        Read::AnyReady { at } => {
            let at = r.time(at);
            p.same(format_args!("any_ready({at})"), |q| q.any_ready(at))?;
        }
        Read::GetPendingBatched { max, single, at } => {
            let at = r.time(at);
            let select = BatchSelect {
                max_per_type: max,
                single_flight: single,
            };
            if let Ok(batches) = p
                .both(format_args!("get_pending_batched({select:?}, {at})"), |q| {
                    q.get_pending_batched(select, at)
                })?
            {
                r.hold(batches.into_values().flatten());
            }
        }
        Read::Stats { at } => {
            let at = r.time(at);
            p.same(format_args!("stats({at})"), |q| q.stats(at))?;
        }
        Read::StatusCounts => {
            p.same(format_args!("status_counts()"), |q| q.status_counts())?;
        }
        Read::NextReadyAt => {
            p.same(format_args!("next_ready_at_ms()"), |q| q.next_ready_at_ms())?;
        }
        Read::Len => {
            p.same(format_args!("len()"), |q| q.len())?;
        }
        Read::IsEmpty => {
            p.same(format_args!("is_empty()"), |q| q.is_empty())?;
        }
        Read::QueuedForEntity { t, id } => {
            let (t, id) = entity(t, id);
            p.same(format_args!("queued_for_entity({t}, {id})"), |q| {
                q.queued_for_entity(t, id)
            })?;
        }
        Read::NewerVersion(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            p.same(format_args!("newer_version({id})"), |q| {
                q.newer_version(&id)
            })?;
        }
        Read::Superseded(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            p.same(format_args!("superseded({id})"), |q| q.superseded(&id))?;
        }
        Read::NameReleasers { t, name, id } => {
            let (t, id) = entity(t, id);
            let name = NAMES[usize::from(name) % NAMES.len()];
            p.same(format_args!("name_releasers({t}, {name:?}, {id})"), |q| {
                q.name_releasers(t, name, id)
            })?;
        }
        Read::RetryCount(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            p.same(format_args!("retry_count({id})"), |q| q.retry_count(&id))?;
        }
        Read::UnresolvedBatch { at } => {
            let at = r.time(at);
            if let Ok(Some((_, ops))) = p.both(format_args!("unresolved_batch({at})"), |q| {
                q.unresolved_batch(at)
            })? {
                r.hold(ops);
            }
        }
        Read::IsReady { op, at } => {
            let id = op.resolve(&p.live()?, &r.issued);
            let at = r.time(at);
            p.same(format_args!("is_ready({id}, {at})"), |q| {
                q.is_ready(&id, at)
            })?;
        }
    }
    Ok(())
}

/// Runs one command on both queues.
fn apply(p: &mut Pair, r: &mut Run, step: usize, cmd: &Cmd) -> Result<(), TestCaseError> {
    let now = r.now;
    let error = format!("error of step {step}");
    let after = |keep: bool| {
        if keep {
            BatchIdAfter::Keep
        } else {
            BatchIdAfter::Forget
        }
    };
    match cmd {
        Cmd::Enqueue {
            edit,
            version,
            hardened,
        } => {
            let op_id = format!("op-{step}");
            let op = edit.build(&op_id, &mut r.last);
            let policy = r.mode.policy(*hardened);
            r.issued.push(op_id.clone());
            match p.both(
                format_args!("enqueue({op:?}, {op_id}, {version}, {now}, {policy:?})"),
                |q| q.enqueue(op.clone(), &op_id, *version, now, policy),
            )? {
                Ok(outcome) => r.seen.outcome(&outcome),
                Err(_) => r.seen.invalid = true,
            }
        }
        Cmd::WriteAndEnqueue { edit, hardened } => {
            let op_id = format!("op-{step}");
            let op = edit.build(&op_id, &mut r.last);
            let policy = r.mode.policy(*hardened);
            r.issued.push(op_id.clone());
            match p.both(
                format_args!("write_and_enqueue({op:?}, {op_id}, {now}, {policy:?})"),
                |q| q.write_and_enqueue(op.clone(), &op_id, now, policy),
            )? {
                Ok(Written { outcome, .. }) => r.seen.outcome(&outcome),
                Err(_) => r.seen.invalid = true,
            }
        }
        Cmd::WriteAndEnqueueAll {
            edits,
            poison,
            hardened,
        } => {
            let mut batch: Vec<(NewOperation, String)> = edits
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    let op_id = format!("op-{step}-{i}");
                    (e.build(&op_id, &mut r.last), op_id)
                })
                .collect();
            if let Some(at) = poison {
                let settings_delete = NewOperation {
                    entity_type: EntityType::Settings,
                    entity_id: "app".into(),
                    kind: OpKind::Delete,
                    data: Value::Null,
                };
                let at = at % (batch.len() + 1);
                batch.insert(at, (settings_delete, format!("op-{step}-poison")));
            }
            let policy = r.mode.policy(*hardened);
            r.issued.extend(batch.iter().map(|(_, id)| id.clone()));
            match p.both(
                format_args!("write_and_enqueue_all({batch:?}, {now}, {policy:?})"),
                |q| q.write_and_enqueue_all(batch.clone(), now, policy),
            )? {
                Ok(written) => written.iter().for_each(|w| r.seen.outcome(&w.outcome)),
                Err(_) => r.seen.batch_refused = true,
            }
        }
        Cmd::WriteLocal(edit) => {
            let op = edit.build(&format!("local-{step}"), &mut r.last);
            if p.both(format_args!("write_local({op:?})"), |q| q.write_local(&op))?
                .is_err()
            {
                r.seen.invalid = true;
            }
        }
        Cmd::Read(read) => read_both(p, r, read)?,
        Cmd::MarkSyncing { ops, batch } => {
            let ids = r.resolve(&p.live()?, ops);
            let batch = batch.map(|n| format!("batch-{n}"));
            p.same(
                format_args!("mark_batch_syncing({ids:?}, {now}, {batch:?})"),
                |q| q.mark_batch_syncing(&ids, now, batch.as_deref()),
            )?;
            r.sent = ids;
        }
        Cmd::MarkSyncingUnchanged {
            held,
            twice,
            forge,
            batch,
        } => {
            let mut copies: Vec<SyncOperation> = if r.held.is_empty() {
                Vec::new()
            } else {
                held.iter()
                    .map(|i| {
                        // Counted from the newest copy: recent ones are
                        // more often still current.
                        let back = usize::from(*i) % r.held.len();
                        r.held[r.held.len() - 1 - back].clone()
                    })
                    .collect()
            };
            if *twice {
                if let Some(first) = copies.first().cloned() {
                    copies.push(first);
                }
            }
            if let (Some((i, seq)), false) = (forge, copies.is_empty()) {
                let n = copies.len();
                let copy = &mut copies[usize::from(*i) % n];
                if *seq {
                    copy.seq += 1;
                } else {
                    copy.data = json!({"forged": step});
                }
            }
            let batch = batch.map(|n| format!("batch-{n}"));
            if let Ok(marked) = p.both(
                format_args!("mark_batch_syncing_unchanged({copies:?}, {now}, {batch:?})"),
                |q| q.mark_batch_syncing_unchanged(&copies, now, batch.as_deref()),
            )? {
                r.seen.marked_unchanged |= marked.contains(&true);
                r.seen.refused_stale |= marked.contains(&false);
            }
            r.sent = copies.into_iter().map(|o| o.id).collect();
        }
        Cmd::Sync {
            max,
            single,
            unchanged,
            batch,
            then,
        } => {
            let select = BatchSelect {
                max_per_type: *max,
                single_flight: *single,
            };
            let Ok(picked) = p.both(
                format_args!("get_pending_batched({select:?}, {now})"),
                |q| q.get_pending_batched(select, now),
            )?
            else {
                return Ok(());
            };
            let picked: Vec<SyncOperation> = picked.into_values().flatten().collect();
            r.hold(picked.iter().cloned());
            let ids: Vec<String> = picked.iter().map(|o| o.id.clone()).collect();
            let batch = batch.map(|n| format!("batch-{n}"));
            if *unchanged {
                if let Ok(marked) = p.both(
                    format_args!("mark_batch_syncing_unchanged({picked:?}, {now}, {batch:?})"),
                    |q| q.mark_batch_syncing_unchanged(&picked, now, batch.as_deref()),
                )? {
                    r.seen.marked_unchanged |= marked.contains(&true);
                }
            } else {
                p.same(
                    format_args!("mark_batch_syncing({ids:?}, {now}, {batch:?})"),
                    |q| q.mark_batch_syncing(&ids, now, batch.as_deref()),
                )?;
            }
            match *then {
                Settle::InFlight => {}
                Settle::Completed => {
                    p.same(format_args!("mark_batch_completed({ids:?})"), |q| {
                        q.mark_batch_completed(&ids)
                    })?;
                }
                Settle::Failed {
                    forever,
                    keep,
                    times,
                } => {
                    let after = after(keep);
                    for _ in 0..times {
                        p.same(
                            format_args!(
                                "mark_batch_failed({ids:?}, {error:?}, {now}, {forever}, {after:?})"
                            ),
                            |q| q.mark_batch_failed(&ids, &error, now, forever, after),
                        )?;
                    }
                }
                Settle::Aborted { keep } => {
                    let after = after(keep);
                    p.same(
                        format_args!("mark_batch_aborted({ids:?}, {error:?}, {now}, {after:?})"),
                        |q| q.mark_batch_aborted(&ids, &error, now, after),
                    )?;
                }
            }
            r.sent = ids;
        }
        Cmd::MarkCompleted(ops) => {
            let ids = r.ops(p, ops)?;
            p.same(format_args!("mark_batch_completed({ids:?})"), |q| {
                q.mark_batch_completed(&ids)
            })?;
        }
        Cmd::MarkFailed {
            ops,
            forever,
            keep,
            times,
        } => {
            let ids = r.ops(p, ops)?;
            let after = after(*keep);
            for _ in 0..*times {
                p.same(
                    format_args!(
                        "mark_batch_failed({ids:?}, {error:?}, {now}, {forever}, {after:?})"
                    ),
                    |q| q.mark_batch_failed(&ids, &error, now, *forever, after),
                )?;
            }
        }
        Cmd::MarkAborted { ops, keep } => {
            let ids = r.ops(p, ops)?;
            let after = after(*keep);
            p.same(
                format_args!("mark_batch_aborted({ids:?}, {error:?}, {now}, {after:?})"),
                |q| q.mark_batch_aborted(&ids, &error, now, after),
            )?;
        }
        Cmd::MarkQuarantined(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            p.same(format_args!("mark_quarantined({id}, {error:?})"), |q| {
                q.mark_quarantined(&id, &error)
            })?;
        }
        Cmd::ResetStaleSyncing => {
            p.same(format_args!("reset_stale_syncing()"), |q| {
                q.reset_stale_syncing()
            })?;
        }
        Cmd::RetryFailed => {
            p.same(format_args!("retry_failed()"), |q| q.retry_failed())?;
        }
        Cmd::CapWaits(max_wait) => {
            p.same(format_args!("cap_waits({now}, {max_wait})"), |q| {
                q.cap_waits(now, *max_wait)
            })?;
        }
        Cmd::SyncNow => {
            p.same(format_args!("sync_now()"), |q| q.sync_now())?;
        }
        Cmd::DiscardFailed => {
            p.same(format_args!("discard_failed()"), |q| q.discard_failed())?;
        }
        Cmd::Remove(pick) => {
            let id = pick.resolve(&p.live()?, &r.issued);
            p.same(format_args!("remove({id})"), |q| q.remove(&id))?;
        }
        Cmd::NextSequence(n) => {
            let name = ["batch", "other"][usize::from(*n) % 2];
            p.same(format_args!("next_sequence({name})"), |q| {
                q.next_sequence(name)
            })?;
        }
        Cmd::ClearBatchId(ops) => {
            let ids = r.ops(p, ops)?;
            p.same(format_args!("clear_batch_id({ids:?})"), |q| {
                q.clear_batch_id(&ids)
            })?;
        }
        Cmd::SetReadyAt { ready, again } => {
            let live = p.live()?;
            let mut pairs: Vec<(String, i64)> = ready
                .iter()
                .map(|(pick, at)| (pick.resolve(&live, &r.issued), r.time(*at)))
                .collect();
            if let (Some(at), Some((id, _))) = (again, pairs.first().cloned()) {
                pairs.push((id, r.time(*at)));
            }
            p.same(format_args!("set_ready_at({pairs:?})"), |q| {
                q.set_ready_at(&pairs)
            })?;
        }
        Cmd::Clear => {
            p.same(format_args!("clear()"), |q| q.clear())?;
        }
        Cmd::PlantMergeKeepsBatchId(on) => {
            // The switch exists in simulation builds only (this workspace
            // always sets `--cfg madsim`); elsewhere the command does
            // nothing.
            #[cfg(madsim)]
            {
                p.a.plant_merge_keeps_batch_id(*on);
                p.b.plant_merge_keeps_batch_id(*on);
            }
            #[cfg(not(madsim))]
            let _ = on;
        }
        Cmd::Advance(ms) => r.now += ms,
    }
    Ok(())
}

/// Every observable part of the two queues, compared: the whole queue and
/// local store, every count and selection at the current time, every
/// per-operation answer for every id ever issued (a store that forgets to
/// drop an index entry answers for a gone id), and every per-entity and
/// per-name answer in the small spaces.
fn same_state(p: &mut Pair, r: &mut Run) -> Result<(), TestCaseError> {
    let now = r.now;
    if let Ok(all) = p.strictly(format_args!("all()"), |q| q.all())? {
        for op in &all {
            same_ready_time(p, &op.id)?;
            r.seen.failed |= op.status == OpStatus::Failed && !op.quarantined;
            r.seen.quarantined |= op.quarantined;
            let reused = r
                .seqs
                .iter()
                .any(|(id, seq)| *seq == op.seq && *id != op.id);
            r.seen.seq_reused |= reused;
            if !r.seqs.contains(&(op.id.clone(), op.seq)) {
                r.seqs.push((op.id.clone(), op.seq));
            }
        }
    }
    // Compared, not read: nothing here depends on the local store.
    let _ = p.strictly(format_args!("local_entities()"), |q| q.local_entities())?;
    p.same(format_args!("stats({now})"), |q| q.stats(now))?;
    p.same(format_args!("status_counts()"), |q| q.status_counts())?;
    p.same(format_args!("len()"), |q| q.len())?;
    p.same(format_args!("is_empty()"), |q| q.is_empty())?;
    p.same(format_args!("next_ready_at_ms()"), |q| q.next_ready_at_ms())?;
    p.same(format_args!("any_ready({now})"), |q| q.any_ready(now))?;
    p.same(format_args!("get_pending(1000, {now})"), |q| {
        q.get_pending(1000, now)
    })?;
    for single_flight in [false, true] {
        let select = BatchSelect {
            max_per_type: 50,
            single_flight,
        };
        p.same(
            format_args!("get_pending_batched({select:?}, {now})"),
            |q| q.get_pending_batched(select, now),
        )?;
    }
    if let Ok(Some(_)) = p.both(format_args!("unresolved_batch({now})"), |q| {
        q.unresolved_batch(now)
    })? {
        r.seen.unresolved = true;
    }
    for id in r.issued.iter().map(String::as_str).chain([MISSING]) {
        p.same(format_args!("get({id})"), |q| q.get(id))?;
        p.same(format_args!("newer_version({id})"), |q| q.newer_version(id))?;
        p.same(format_args!("superseded({id})"), |q| q.superseded(id))?;
        p.same(format_args!("retry_count({id})"), |q| q.retry_count(id))?;
        p.same(format_args!("is_ready({id}, {now})"), |q| {
            q.is_ready(id, now)
        })?;
    }
    for t in TYPES {
        for id in ENTITY_IDS {
            p.same(format_args!("queued_for_entity({t}, {id})"), |q| {
                q.queued_for_entity(t, id)
            })?;
            p.same(format_args!("local_entity({t}, {id})"), |q| {
                q.local_entity(t, id)
            })?;
        }
    }
    // Another type never holds a name back: asked once, as a control.
    for t in [EntityType::Personnel, EntityType::Player] {
        for name in NAMES {
            for id in ["e1", "e2", "other"] {
                if let Ok(releasers) = p
                    .both(format_args!("name_releasers({t}, {name:?}, {id})"), |q| {
                        q.name_releasers(t, name, id)
                    })?
                {
                    r.seen.released_name |= !releasers.is_empty();
                }
            }
        }
    }
    Ok(())
}

/// The exact time `op_id` becomes ready must agree, not only whether it is
/// ready now: an operation carries no ready time, so an off-by-one in a
/// backoff would otherwise show only when the clock lands on it. The first
/// queue's time is found by bisection over `is_ready` (monotone in time),
/// and the second must answer alike just before it and at it. An operation
/// that is never ready (not pending, or its entity has one in flight) has
/// nothing to find.
fn same_ready_time(p: &mut Pair, op_id: &str) -> Result<(), TestCaseError> {
    let ready = |t: i64| {
        p.a.is_ready(op_id, t)
            .map_err(|e| TestCaseError::fail(format!("is_ready({op_id}, {t}): {e}")))
    };
    if !ready(i64::MAX)? {
        return Ok(());
    }
    // The earliest ready time lies in (lo, hi].
    let (mut lo, mut hi) = (i128::from(i64::MIN) - 1, i128::from(i64::MAX));
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        // `mid` is within i64: lo < mid < hi.
        if ready(mid as i64)? {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    let at = hi as i64;
    for t in [at.checked_sub(1), Some(at)].into_iter().flatten() {
        p.same(format_args!("is_ready({op_id}, {t})"), |q| {
            q.is_ready(op_id, t)
        })?;
    }
    Ok(())
}

/// Runs `cmds` on the two queues of `backends()`, comparing every answer
/// and then the whole state after every command.
fn run(cmds: &[Cmd], mode: Mode) -> Result<Seen, TestCaseError> {
    let (a, b) = backends();
    let mut p = Pair { a, b };
    let mut r = Run::new(mode);
    same_state(&mut p, &mut r)?;
    for (step, cmd) in cmds.iter().enumerate() {
        apply(&mut p, &mut r, step, cmd)
            .and_then(|()| same_state(&mut p, &mut r))
            .map_err(|e| match e {
                TestCaseError::Fail(why) => {
                    TestCaseError::fail(format!("step {step} ({cmd:?}): {why}"))
                }
                other => other,
            })?;
    }
    Ok(r.seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn both_queues_answer_alike(
        cmds in prop::collection::vec(cmd(), 1..=60),
        mode in prop_oneof![
            Just(Mode::PendingOnly),
            Just(Mode::PendingOrFailed),
            Just(Mode::Mixed),
        ],
    ) {
        run(&cmds, mode)?;
    }
}

/// A fixed script through every command and the corners random runs reach
/// only now and then: each merge outcome under both policies, a `seq`
/// handed to a second operation, a released name, an unresolved batch,
/// current, forged and repeated compare-and-set copies, the retry limit,
/// quarantine, a refused import, clock skew, the planted bug and a clear.
/// `Seen` shows it got there, so the script cannot rot into a no-op.
#[test]
fn a_fixed_script_reaches_every_corner() {
    const PLAYER: u8 = 0;
    const GAME: u8 = 1;
    const PERSONNEL: u8 = 2;
    const ROSTER: u8 = 3;
    const SETTINGS: u8 = 4;
    const ADJUSTMENT: u8 = 5;
    const CREATE: u8 = 0;
    const UPDATE: u8 = 1;
    const DELETE: u8 = 2;
    let odd = |t: u8, id: u8, kind: u8, name: u8, quirk: u8, x: f64| Edit {
        t,
        id,
        kind,
        name,
        quirk,
        x,
        again: false,
    };
    let e = |t, id, kind, name| odd(t, id, kind, name, 15, 0.0);
    let w = |edit: Edit, hardened: bool| Cmd::WriteAndEnqueue { edit, hardened };
    // The first four operations in the queue.
    let first = |n: u8| (0..n).map(|i| Pick(i * 8)).collect::<Vec<_>>();
    let reads = [
        Read::LocalEntity {
            t: PERSONNEL,
            id: 0,
        },
        Read::LocalEntities,
        Read::Get(Pick(0)),
        Read::All,
        Read::GetPending { limit: 2, at: 0 },
        Read::AnyReady { at: -1 },
        Read::GetPendingBatched {
            max: 1,
            single: false,
            at: 1_000,
        },
        Read::Stats { at: 999 },
        Read::StatusCounts,
        Read::NextReadyAt,
        Read::Len,
        Read::IsEmpty,
        Read::QueuedForEntity { t: GAME, id: 0 },
        Read::NewerVersion(Pick(8)),
        Read::Superseded(Pick(6)),
        Read::NameReleasers {
            t: PERSONNEL,
            name: 0,
            id: 1,
        },
        Read::RetryCount(Pick(7)),
        Read::UnresolvedBatch { at: 2_000 },
        Read::IsReady {
            op: Pick(0),
            at: 300_000,
        },
    ];
    let mut script = vec![
        // The merge table: create, merge, cancel (plan policy); the
        // cancelled row had the largest seq, so the next row gets it again.
        w(e(PLAYER, 0, CREATE, 0), false),
        w(e(PLAYER, 0, UPDATE, 0), false),
        w(e(PLAYER, 0, DELETE, 0), false),
        w(e(GAME, 0, CREATE, 0), false),
        // Hardened: create + delete is a delete; delete + create replaces.
        w(e(GAME, 0, DELETE, 0), true),
        w(e(GAME, 0, CREATE, 0), true),
        // A member renamed while its create is in flight releases its name.
        w(e(PERSONNEL, 0, CREATE, 0), true),
        Cmd::Read(Read::GetPendingBatched {
            max: 3,
            single: true,
            at: 0,
        }),
        Cmd::MarkSyncing {
            ops: first(4),
            batch: Some(1),
        },
        w(e(PERSONNEL, 0, UPDATE, 1), true),
        // Aborted with the batch id kept: unresolved once ready.
        Cmd::MarkAborted {
            ops: Ops::Sent,
            keep: true,
        },
        Cmd::Advance(2_000),
        Cmd::Read(Read::UnresolvedBatch { at: 0 }),
        // The copies read before the abort are still current; the forged
        // one and the one listed again are refused.
        Cmd::MarkSyncingUnchanged {
            held: vec![0, 1],
            twice: true,
            forge: Some((1, true)),
            batch: Some(1),
        },
        Cmd::MarkCompleted(Ops::Sent),
        // The retry limit, quarantine, retry and discard.
        Cmd::MarkFailed {
            ops: Ops::Picked(first(1)),
            forever: false,
            keep: true,
            times: 10,
        },
        Cmd::MarkQuarantined(Pick(8)),
        Cmd::RetryFailed,
        Cmd::MarkFailed {
            ops: Ops::Picked(first(2)),
            forever: true,
            keep: false,
            times: 3,
        },
        Cmd::MarkFailed {
            ops: Ops::Picked(first(1)),
            forever: false,
            keep: false,
            times: 10,
        },
        Cmd::DiscardFailed,
        // Invalid edits: each kind of refusal, and an import holding one.
        w(e(SETTINGS, 0, DELETE, 0), false),
        w(odd(SETTINGS, 0, UPDATE, 0, 0, 0.0), false),
        w(odd(PLAYER, 0, UPDATE, 0, 1, 0.0), false),
        w(odd(ROSTER, 1, UPDATE, 0, 2, 0.0), false),
        w(odd(ADJUSTMENT, 1, DELETE, 0, 2, 0.0), false),
        Cmd::WriteAndEnqueueAll {
            edits: vec![e(PLAYER, 1, CREATE, 0), e(ROSTER, 0, CREATE, 0)],
            poison: Some(1),
            hardened: false,
        },
        Cmd::WriteAndEnqueueAll {
            edits: vec![
                e(ROSTER, 0, CREATE, 0),
                e(SETTINGS, 0, UPDATE, 0),
                e(ADJUSTMENT, 1, DELETE, 0),
                // Floats that JSON text does not give back bit for bit
                // (serde_json's default parser), and a negative zero.
                odd(PLAYER, 1, CREATE, 0, 4, -1.603964615428183e143),
                odd(GAME, 1, UPDATE, 0, 4, -0.0),
            ],
            poison: None,
            hardened: true,
        },
        Cmd::Enqueue {
            edit: odd(PERSONNEL, 1, CREATE, 4, 3, 0.0),
            version: 3,
            hardened: false,
        },
        Cmd::WriteLocal(e(PERSONNEL, 1, CREATE, 0)),
        w(e(PERSONNEL, 1, DELETE, 0), true),
        // Clock skew: ready times a day out, the clock going back, the
        // guard and "sync now".
        Cmd::SetReadyAt {
            ready: vec![(Pick(0), 86_400_000), (Pick(8), i64::MAX)],
            again: Some(1_000),
        },
        Cmd::Advance(-400_000),
        Cmd::CapWaits(300_000),
        Cmd::SyncNow,
        Cmd::MarkSyncing {
            ops: first(3),
            batch: None,
        },
        Cmd::ResetStaleSyncing,
        Cmd::ClearBatchId(Ops::Picked(first(4))),
        Cmd::Remove(Pick(0)),
        Cmd::Remove(Pick(7)),
        Cmd::NextSequence(0),
        Cmd::NextSequence(0),
        Cmd::NextSequence(1),
        // The planted bug: a merge keeps the batch id.
        Cmd::PlantMergeKeepsBatchId(true),
        Cmd::MarkSyncing {
            ops: first(4),
            batch: Some(2),
        },
        Cmd::MarkAborted {
            ops: Ops::Sent,
            keep: true,
        },
        w(e(PLAYER, 1, UPDATE, 0), true),
        Cmd::PlantMergeKeepsBatchId(false),
    ];
    script.extend(reads.into_iter().map(Cmd::Read));
    // Sign-out, and the queue starts over.
    script.extend([
        Cmd::Clear,
        w(e(PERSONNEL, 1, CREATE, 1), false),
        Cmd::CapWaits(-1),
    ]);
    let seen = run(&script, Mode::Mixed).unwrap_or_else(|e| panic!("{e}"));
    assert!(seen.all_true(), "the script missed a corner: {seen:?}");
}

/// An operation id already held is SQLite's UNIQUE constraint: both stores
/// refuse it with the same error, and an import that meets one half way
/// writes nothing at all (the random script never repeats an id).
#[test]
fn a_repeated_operation_id_is_refused_alike_and_writes_nothing() {
    let edit = |id: &str| NewOperation {
        entity_type: EntityType::Player,
        entity_id: id.to_string(),
        kind: OpKind::Create,
        data: json!({ "id": id }),
    };
    let (mut a, mut b) = backends();
    for q in [&mut a, &mut b] {
        q.write_and_enqueue(edit("p1"), "op-1", 10, MergePolicy::PendingOrFailed)
            .unwrap();
    }
    let refused = |q: &mut SyncQueue| {
        let single = q.enqueue(edit("p2"), "op-1", 1, 20, MergePolicy::PendingOrFailed);
        let import = q.write_and_enqueue_all(
            vec![
                (edit("p3"), "op-3".to_string()),
                (edit("p4"), "op-3".to_string()),
            ],
            30,
            MergePolicy::PendingOrFailed,
        );
        let errors = [single.map(|_| ()), import.map(|_| ())].map(|r| r.map_err(|e| e.to_string()));
        (errors, q.all().unwrap(), q.local_entities().unwrap())
    };
    let (on_sqlite, on_btree) = (refused(&mut a), refused(&mut b));
    assert_eq!(on_sqlite, on_btree);
    let (errors, ops, local) = on_sqlite;
    assert!(
        errors.iter().all(|e| e
            .as_ref()
            .is_err_and(|e| e.contains("UNIQUE constraint failed: ops.id"))),
        "{errors:?}"
    );
    assert_eq!(ops.len(), 1, "only the first edit's operation");
    assert_eq!(local.len(), 1, "the refused import wrote no local entity");
}
