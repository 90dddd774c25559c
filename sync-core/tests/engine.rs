//! Engine tests against a scripted fake `Remote` (no runtime needed: the
//! fake never pends, so a no-op waker drives every future to completion).
//!
//! Each test shows how the three presets behave on one of the faults the
//! issue names: a lost response after commit, a bad record in a batch of 50,
//! an edit that arrives while its entity is in flight, an abort, a 401 and
//! a 5xx; and hardened rules the simulator's sweeps found missing (a child
//! re-linked to a new parent between selection and send, a game's save
//! superseded by the user's delete).

use serde_json::{json, Value};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use sync_core::engine::{EngineConfig, Host, Preset, SyncEngine};
use sync_core::model::{EntityType, NewOperation, OpKind, OpStatus};
use sync_core::payload::BulkSyncPayload;
use sync_core::remote::{BulkSyncResult, GameSave, Remote, RemoteError, RequestCtx};
use sync_core::SyncQueue;

fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    // Bound: the fake remote is synchronous, so one poll completes.
    for _ in 0..1_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("future did not complete: the fake remote never pends");
}

#[derive(Clone)]
struct FakeHost(Rc<Cell<i64>>);

impl Host for FakeHost {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }
}

/// What the fake does with the next request.
#[derive(Clone, Debug)]
enum Script {
    /// Apply and answer.
    Ok,
    /// Apply, then lose the response (the client sees an abort).
    CommitThenAbort,
    /// Fail without applying.
    Fail(RemoteError),
}

type Hook = Box<dyn FnMut()>;

/// A tiny server: rows by (type, id) with an optional version, batch ids,
/// a script of outcomes, and a count of applied writes.
#[derive(Default)]
struct FakeServer {
    rows: BTreeMap<(EntityType, String), Value>,
    versions: BTreeMap<(EntityType, String), i64>,
    batches: BTreeSet<String>,
    script: VecDeque<Script>,
    /// Ids that make any request containing them fail with 23514.
    bad_ids: BTreeSet<String>,
    requests: usize,
    applied_writes: usize,
    /// Calls of `save_game_with_relations`, whatever their outcome.
    games_saved: usize,
    /// Bulk calls rejected for a personnel name another member held.
    name_clashes: usize,
    /// Runs inside the next request (an edit while in flight).
    during_next_call: Option<Hook>,
    /// Runs inside the request with this number (1-based).
    during_call: Option<(usize, Hook)>,
}

#[derive(Clone)]
struct Fake(Rc<RefCell<FakeServer>>);

impl FakeServer {
    fn write(&mut self, t: EntityType, id: &str, data: Option<Value>, version: Option<i64>) {
        let key = (t, id.to_string());
        if let Some(v) = version {
            if self.versions.get(&key).is_some_and(|held| *held >= v) {
                return; // stale: ignored
            }
            self.versions.insert(key.clone(), v);
        }
        self.applied_writes += 1;
        match data {
            Some(d) => self.rows.insert(key, d),
            None => self.rows.remove(&key),
        };
    }

    fn apply_bulk(&mut self, p: &BulkSyncPayload) {
        let version = |t: EntityType, id: &str| {
            p.versions
                .iter()
                .find(|v| v.entity_type == t && v.id == id)
                .map(|v| v.version)
        };
        for (t, items) in [
            (EntityType::Player, &p.players),
            (EntityType::Team, &p.teams),
            (EntityType::Personnel, &p.personnel),
            (EntityType::PlayerAdjustment, &p.player_adjustments),
        ] {
            for item in items {
                let id = item["id"].as_str().unwrap().to_string();
                self.write(t, &id, Some(item.clone()), version(t, &id));
            }
        }
        for (t, ids) in [
            (EntityType::Player, &p.delete_player_ids),
            (EntityType::Team, &p.delete_team_ids),
            (EntityType::Personnel, &p.delete_personnel_ids),
        ] {
            for id in ids {
                self.write(t, id, None, version(t, id));
            }
        }
    }

    fn mentions_bad(&self, ctx: &RequestCtx) -> bool {
        ctx.ops.iter().any(|o| self.bad_ids.contains(&o.entity_id))
    }

    /// The foreign key of `player_adjustments.team_id`: a team neither on
    /// the server nor in the same call (whose teams go first).
    fn missing_team(&self, p: &BulkSyncPayload) -> Option<String> {
        p.player_adjustments
            .iter()
            .filter_map(|a| a["team_id"].as_str())
            .find(|team| {
                !self
                    .rows
                    .contains_key(&(EntityType::Team, team.to_string()))
                    && !p.teams.iter().any(|t| t["id"] == *team)
            })
            .map(str::to_string)
    }

    /// Personnel names are unique: upserts run in payload order, before
    /// any delete, as `bulk_sync_entities` runs them. The first name an
    /// upsert takes from another member still holding it.
    fn name_clash(&self, p: &BulkSyncPayload) -> Option<String> {
        let mut names: BTreeMap<String, String> = self
            .rows
            .iter()
            .filter(|((t, _), _)| *t == EntityType::Personnel)
            .filter_map(|((_, id), row)| Some((id.clone(), row["name"].as_str()?.to_string())))
            .collect();
        for item in &p.personnel {
            let (id, name) = (item["id"].as_str()?, item["name"].as_str()?);
            if names.iter().any(|(other, n)| other != id && n == name) {
                return Some(name.to_string());
            }
            names.insert(id.to_string(), name.to_string());
        }
        None
    }

    fn begin(&mut self) -> Script {
        self.requests += 1;
        if let Some(mut hook) = self.during_next_call.take() {
            hook();
        }
        if self
            .during_call
            .as_ref()
            .is_some_and(|(n, _)| *n == self.requests)
        {
            if let Some((_, mut hook)) = self.during_call.take() {
                hook();
            }
        }
        self.script.pop_front().unwrap_or(Script::Ok)
    }
}

impl Remote for Fake {
    async fn bulk_sync(
        &mut self,
        ctx: &RequestCtx,
        payload: &BulkSyncPayload,
    ) -> Result<BulkSyncResult, RemoteError> {
        let script = self.0.borrow_mut().begin();
        let mut s = self.0.borrow_mut();
        if s.mentions_bad(ctx) {
            return Err(RemoteError::database("23514", "check violation"));
        }
        if let Some(name) = s.name_clash(payload) {
            s.name_clashes += 1;
            return Err(RemoteError::database(
                "23505",
                format!("duplicate key value violates unique constraint: personnel name {name:?}"),
            ));
        }
        if let Some(team) = s.missing_team(payload) {
            return Err(RemoteError::database(
                "23503",
                format!("team_id = {team} is not present in table \"teams\""),
            ));
        }
        if let Some(b) = &payload.batch_id {
            if s.batches.contains(b) {
                return Ok(BulkSyncResult {
                    counts: json!({}),
                    replayed: true,
                });
            }
        }
        match script {
            Script::Fail(e) => Err(e),
            Script::Ok | Script::CommitThenAbort => {
                s.apply_bulk(payload);
                if let Some(b) = &payload.batch_id {
                    s.batches.insert(b.clone());
                }
                if matches!(script, Script::CommitThenAbort) {
                    Err(RemoteError::aborted("response lost"))
                } else {
                    Ok(BulkSyncResult::default())
                }
            }
        }
    }

    async fn save_game_with_relations(
        &mut self,
        _ctx: &RequestCtx,
        save: &GameSave,
    ) -> Result<i64, RemoteError> {
        let script = self.0.borrow_mut().begin();
        let mut s = self.0.borrow_mut();
        s.games_saved += 1;
        match script {
            Script::Fail(e) => Err(e),
            Script::Ok | Script::CommitThenAbort => {
                let id = save.game["id"].as_str().unwrap().to_string();
                s.write(
                    EntityType::Game,
                    &id,
                    Some(save.game.clone()),
                    save.sync_version,
                );
                if matches!(script, Script::CommitThenAbort) {
                    Err(RemoteError::aborted("response lost"))
                } else {
                    Ok(1)
                }
            }
        }
    }

    async fn set_team_roster(
        &mut self,
        _ctx: &RequestCtx,
        _team_id: &str,
        _roster: &[Value],
        _version: Option<i64>,
    ) -> Result<(), RemoteError> {
        Ok(())
    }

    async fn upsert_entity(
        &mut self,
        ctx: &RequestCtx,
        t: EntityType,
        data: &Value,
        version: Option<i64>,
    ) -> Result<(), RemoteError> {
        let script = self.0.borrow_mut().begin();
        let mut s = self.0.borrow_mut();
        if s.mentions_bad(ctx) {
            return Err(RemoteError::database("23514", "check violation"));
        }
        match script {
            Script::Fail(e) => Err(e),
            Script::Ok | Script::CommitThenAbort => {
                let id = data["id"].as_str().unwrap().to_string();
                s.write(t, &id, Some(data.clone()), version);
                if matches!(script, Script::CommitThenAbort) {
                    Err(RemoteError::aborted("response lost"))
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn delete_entity(
        &mut self,
        _ctx: &RequestCtx,
        t: EntityType,
        id: &str,
        _data: &Value,
        version: Option<i64>,
    ) -> Result<(), RemoteError> {
        let script = self.0.borrow_mut().begin();
        let mut s = self.0.borrow_mut();
        match script {
            Script::Fail(e) => Err(e),
            _ => {
                s.write(t, id, None, version);
                Ok(())
            }
        }
    }
}

struct Rig {
    queue: Arc<Mutex<SyncQueue>>,
    server: Fake,
    clock: Rc<Cell<i64>>,
    engine: SyncEngine<Fake, FakeHost>,
    next_op: usize,
}

impl Rig {
    fn new(preset: Preset) -> Rig {
        Rig::with_config(EngineConfig::preset(preset))
    }

    fn with_config(config: EngineConfig) -> Rig {
        let queue = Arc::new(Mutex::new(SyncQueue::open_in_memory().unwrap()));
        let server = Fake(Rc::new(RefCell::new(FakeServer::default())));
        let clock = Rc::new(Cell::new(1_000));
        let engine = SyncEngine::new(
            config,
            queue.clone(),
            server.clone(),
            FakeHost(clock.clone()),
            7,
        );
        Rig {
            queue,
            server,
            clock,
            engine,
            next_op: 0,
        }
    }

    /// The hardened engine with `plant` applied to its configuration (a
    /// planted bug, for a test's control; or nothing).
    fn hardened_with(plant: fn(&mut EngineConfig)) -> Rig {
        let mut config = EngineConfig::preset(Preset::Hardened);
        plant(&mut config);
        Rig::with_config(config)
    }

    fn edit(&mut self, t: EntityType, id: &str, kind: OpKind, data: Value) {
        edit_queue(
            &self.queue,
            self.engine.config().merge_policy(),
            &mut self.next_op,
            self.clock.get(),
            t,
            id,
            kind,
            data,
        );
    }

    fn player(&mut self, id: &str, name: &str) {
        self.edit(
            EntityType::Player,
            id,
            OpKind::Update,
            json!({"id": id, "name": name}),
        );
    }

    fn pass(&mut self) {
        block_on(self.engine.process_queue()).unwrap();
    }

    fn advance(&mut self, ms: i64) {
        self.clock.set(self.clock.get() + ms);
    }

    fn ops(&self) -> Vec<sync_core::SyncOperation> {
        self.queue.lock().unwrap().all().unwrap()
    }

    fn server_name(&self, id: &str) -> Option<String> {
        self.server
            .0
            .borrow()
            .rows
            .get(&(EntityType::Player, id.to_string()))
            .map(|v| v["name"].as_str().unwrap().to_string())
    }

    fn script(&self, s: Script) {
        self.server.0.borrow_mut().script.push_back(s);
    }

    /// Drives passes with time advancing until the queue has no ready work
    /// (bounded).
    fn drain(&mut self) {
        for _ in 0..200 {
            self.pass();
            self.advance(400_000);
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn edit_queue(
    queue: &Arc<Mutex<SyncQueue>>,
    policy: sync_core::model::MergePolicy,
    next_op: &mut usize,
    now: i64,
    t: EntityType,
    id: &str,
    kind: OpKind,
    data: Value,
) {
    *next_op += 1;
    queue
        .lock()
        .unwrap()
        .write_and_enqueue(
            NewOperation {
                entity_type: t,
                entity_id: id.into(),
                kind,
                data,
            },
            &format!("op-{next_op}"),
            now,
            policy,
        )
        .unwrap();
}

#[test]
fn batched_sends_one_request_for_many_edits() {
    let mut individual = Rig::new(Preset::Individual);
    let mut batched = Rig::new(Preset::Batched);
    for rig in [&mut individual, &mut batched] {
        for i in 0..20 {
            rig.player(&format!("p{i}"), "a");
        }
        rig.pass();
        assert!(rig.ops().is_empty());
    }
    assert_eq!(individual.server.0.borrow().requests, 20);
    assert_eq!(batched.server.0.borrow().requests, 1);
}

#[test]
fn lost_response_after_commit() {
    for preset in Preset::ALL {
        let mut rig = Rig::new(preset);
        rig.player("p1", "a");
        rig.script(Script::CommitThenAbort);
        rig.pass();
        // The server has the write, the client does not know.
        assert_eq!(rig.server_name("p1").as_deref(), Some("a"));
        let op = rig.ops().pop().expect("op still queued");
        assert_eq!(op.status, OpStatus::Pending);
        match preset {
            // The plan marks the whole batch failed: a retry penalty.
            Preset::Batched => assert_eq!(op.retry_count, 1, "{preset:?}"),
            // Abort: no penalty, ready 2 s after the attempt.
            _ => assert_eq!(op.retry_count, 0, "{preset:?}"),
        }
        rig.drain();
        assert!(rig.ops().is_empty());
        let applied = rig.server.0.borrow().applied_writes;
        match preset {
            // The hardened re-send carries the same batch id: answered from
            // the server's record, applied once.
            Preset::Hardened => assert_eq!(applied, 1),
            _ => assert_eq!(applied, 2, "{preset:?} applies the same operation twice"),
        }
    }
}

#[test]
fn bad_record_in_a_batch_of_50() {
    for preset in [Preset::Batched, Preset::Hardened] {
        let mut rig = Rig::new(preset);
        for i in 0..50 {
            rig.player(&format!("p{i}"), "a");
        }
        rig.server.0.borrow_mut().bad_ids.insert("p17".into());
        rig.drain();
        let ops = rig.ops();
        let synced = (0..50)
            .filter(|i| rig.server_name(&format!("p{i}")).is_some())
            .count();
        match preset {
            Preset::Batched => {
                // All-or-nothing plus a catch-all failure: one bad record
                // keeps 49 good ones off the server until all 50 are failed.
                assert_eq!(synced, 0);
                assert_eq!(ops.len(), 50);
                assert!(ops.iter().all(|o| o.status == OpStatus::Failed));
                assert!(ops.iter().all(|o| o.retry_count == 10));
            }
            _ => {
                assert_eq!(synced, 49);
                assert_eq!(ops.len(), 1);
                assert_eq!(ops[0].entity_id, "p17");
                assert!(ops[0].quarantined);
                assert!(ops[0].last_error.as_deref().unwrap().contains("23514"));
                // Bisection: about 2 log2(50) + 1 requests, not 50.
                let requests = rig.server.0.borrow().requests;
                assert!(requests <= 2 * 6 + 1, "{requests} requests");
            }
        }
    }
}

#[test]
fn edit_while_in_flight_then_failure() {
    // The stale replay of app-behavior.md: op1 (v1) in flight, the user
    // edits (op2, v2), op1 fails and backs off, op2 is sent first, then op1
    // is retried and overwrites v2 with v1.
    for preset in Preset::ALL {
        let mut rig = Rig::new(preset);
        rig.player("p1", "v1");
        let queue = rig.queue.clone();
        let policy = rig.engine.config().merge_policy();
        let now = rig.clock.get();
        rig.server.0.borrow_mut().during_next_call = Some(Box::new(move || {
            let mut n = 100;
            edit_queue(
                &queue,
                policy,
                &mut n,
                now + 1,
                EntityType::Player,
                "p1",
                OpKind::Update,
                json!({"id": "p1", "name": "v2"}),
            );
        }));
        rig.script(Script::Fail(RemoteError::Server {
            status: 503,
            message: "unavailable".into(),
        }));
        rig.pass();
        rig.drain();
        let name = rig.server_name("p1");
        match preset {
            Preset::Hardened => assert_eq!(name.as_deref(), Some("v2")),
            _ => assert_eq!(
                name.as_deref(),
                Some("v1"),
                "{preset:?}: the stale retry overwrites the newer edit"
            ),
        }
    }
}

#[test]
fn a_child_relinked_mid_pass_waits_for_its_new_parent() {
    // partial-failure seed 778893, in miniature: a bad record makes the
    // pass bisect, and while the first half is in flight the user creates
    // team t9 and links adjustment a1 (selected before t9 existed, waiting
    // in the second half) to it. Sent in that half without t9, a1 would
    // fail its foreign key alone and be quarantined as if it were bad. It
    // must wait for the next pass and go with (or after) t9. Two rules stop
    // it: the changed operation is held to the selection's rules
    // (`admit_changed`), and so is the whole half when its turn comes; the
    // control plants both off.
    let run = |planted: bool| {
        let mut config = EngineConfig::preset(Preset::Hardened);
        config.planted.changed_op_unchecked = planted;
        config.planted.half_unchecked = planted;
        let mut rig = Rig::with_config(config);
        for i in 0..3 {
            rig.player(&format!("p{i}"), "a");
        }
        rig.player("pbad", "a");
        rig.server.0.borrow_mut().bad_ids.insert("pbad".into());
        rig.edit(
            EntityType::PlayerAdjustment,
            "a1",
            OpKind::Create,
            json!({"id": "a1", "team_id": null}),
        );
        let queue = rig.queue.clone();
        let policy = rig.engine.config().merge_policy();
        let now = rig.clock.get();
        // Request 1 carries all five and fails on pbad; request 2 is the
        // first half, [p0, p1].
        rig.server.0.borrow_mut().during_call = Some((
            2,
            Box::new(move || {
                let mut n = 100;
                for (t, id, kind, data) in [
                    (EntityType::Team, "t9", OpKind::Create, json!({"id": "t9"})),
                    (
                        EntityType::PlayerAdjustment,
                        "a1",
                        OpKind::Update,
                        json!({"id": "a1", "team_id": "t9"}),
                    ),
                ] {
                    edit_queue(&queue, policy, &mut n, now + 1, t, id, kind, data);
                }
            }),
        ));
        rig.drain();
        let a1 = rig
            .server
            .0
            .borrow()
            .rows
            .get(&(EntityType::PlayerAdjustment, "a1".to_string()))
            .cloned();
        (a1, rig.ops())
    };
    let (a1, ops) = run(false);
    assert_eq!(a1, Some(json!({"id": "a1", "team_id": "t9"})));
    assert_eq!(ops.len(), 1, "only the bad record is left: {ops:?}");
    assert_eq!(ops[0].entity_id, "pbad");
    if cfg!(madsim) {
        // The planted bug (simulation builds only) shows the test can fail.
        let (a1, ops) = run(true);
        assert_eq!(a1, None);
        assert!(
            ops.iter().any(|o| o.entity_id == "a1" && o.quarantined),
            "{ops:?}"
        );
    }
}

#[test]
fn a_game_save_superseded_by_the_users_delete_is_never_sent_again() {
    // Regression superseded-game-seed438 (full-mix), in miniature: game
    // g1's save is in flight when the user deletes the game (a second
    // operation: single flight), and then the app is killed. At restart the
    // save goes back to pending beside the newer delete; sent again, it
    // would name parents the user may have deleted since (the server nulls
    // such links). The hardened engine completes it locally and sends only
    // the delete. Two orders: the save's backoff over at restart (single
    // flight takes the entity's oldest, the save, while the delete is
    // queued), or not (the delete goes first and leaves the queue, and the
    // save is then its entity's only operation: regression
    // stale-roster-seed21002778). Each control plants its rule off. (A
    // failed save was already dropped: `drop_superseded`.)
    let run = |plant: fn(&mut EngineConfig), backoff_over: bool| {
        let mut rig = Rig::hardened_with(plant);
        rig.edit(
            EntityType::Game,
            "g1",
            OpKind::Create,
            json!({"game": {"id": "g1", "tournament_id": "t1"}}),
        );
        {
            let mut q = rig.queue.lock().unwrap();
            let ids: Vec<String> = q.all().unwrap().into_iter().map(|o| o.id).collect();
            q.mark_batch_syncing(&ids, rig.clock.get(), None).unwrap();
        }
        rig.edit(EntityType::Game, "g1", OpKind::Delete, Value::Null);
        assert_eq!(rig.ops().len(), 2, "single flight: a second operation");
        rig.queue.lock().unwrap().reset_stale_syncing().unwrap();
        if backoff_over {
            rig.advance(400_000);
        }
        rig.drain();
        let s = rig.server.0.borrow();
        (s.games_saved, s.requests, rig.ops().len())
    };
    let fixed: fn(&mut EngineConfig) = |_| {};
    // No save, one request (the delete), nothing left queued.
    assert_eq!(run(fixed, true), (0, 1, 0));
    assert_eq!(run(fixed, false), (0, 1, 0));
    if cfg!(madsim) {
        // The planted bugs (simulation builds only) show the test can fail:
        // the stale save goes out before the delete, or after it.
        assert_eq!(run(|c| c.planted.superseded_resent = true, true), (1, 2, 0));
        assert_eq!(run(|c| c.planted.stale_resent = true, false), (1, 2, 0));
    }
}

#[test]
fn a_member_taking_a_released_name_waits_for_the_release() {
    // Scenario name-handover in miniature: staff member a ("Ada") is on
    // the server; the user deletes it, or renames it, and adds b under
    // "Ada" at the same instant. In one call b's create would run before
    // a's delete (upserts first), or, for a rename merged with a later
    // edit, before a's rename (payload order), and fail the unique name.
    // The hardened engine holds b until a's operation is acknowledged. The
    // control plants the rule off.
    let run = |plant: fn(&mut EngineConfig), rename: bool| {
        let mut rig = Rig::hardened_with(plant);
        let member = |id: &str, name: &str| json!({"id": id, "name": name});
        rig.edit(
            EntityType::Personnel,
            "a",
            OpKind::Create,
            member("a", "Ada"),
        );
        rig.drain();
        if rename {
            rig.edit(
                EntityType::Personnel,
                "a",
                OpKind::Update,
                member("a", "Bea"),
            );
        } else {
            rig.edit(EntityType::Personnel, "a", OpKind::Delete, Value::Null);
        }
        rig.edit(
            EntityType::Personnel,
            "b",
            OpKind::Create,
            member("b", "Ada"),
        );
        if rename {
            // A later edit of a: its operation moves behind b's.
            rig.advance(1);
            rig.edit(
                EntityType::Personnel,
                "a",
                OpKind::Update,
                member("a", "Cid"),
            );
        }
        rig.drain();
        let s = rig.server.0.borrow();
        let held = |id: &str| {
            s.rows
                .get(&(EntityType::Personnel, id.to_string()))
                .and_then(|r| r["name"].as_str().map(str::to_string))
        };
        (s.name_clashes, held("b"), rig.ops().len())
    };
    let fixed: fn(&mut EngineConfig) = |_| {};
    for rename in [false, true] {
        // No clash; b holds the name; nothing left queued.
        assert_eq!(
            run(fixed, rename),
            (0, Some("Ada".into()), 0),
            "rename {rename}"
        );
    }
    if cfg!(madsim) {
        // The planted bug (simulation builds only) shows the test can fail:
        // the call clashes and b is quarantined as if it were bad.
        for rename in [false, true] {
            let (clashes, b, queued) = run(|c| c.planted.name_handover_unchecked = true, rename);
            assert!(clashes > 0 && b.is_none() && queued == 1, "rename {rename}");
        }
    }
}

#[test]
fn members_that_swapped_names_are_sent_and_refused_not_left_waiting() {
    // a ("Ada") and b ("Bea") are on the server. Offline, the user swaps
    // their names through a spare one: a -> "Tmp", b -> "Ada", a -> "Bea".
    // The edits merge, so the queue holds a (Bea) and b (Ada), each taking
    // the name the other gave up: each would wait for the other forever.
    // No order of sends works without the spare name, so the engine sends
    // them; the server refuses, and both end quarantined (failed), which
    // the user sees, instead of pending forever.
    let mut rig = Rig::new(Preset::Hardened);
    let member = |id: &str, name: &str| json!({"id": id, "name": name});
    for (id, name) in [("a", "Ada"), ("b", "Bea")] {
        rig.edit(EntityType::Personnel, id, OpKind::Create, member(id, name));
    }
    rig.drain();
    let requests_before = rig.server.0.borrow().requests;
    for (id, name) in [("a", "Tmp"), ("b", "Ada"), ("a", "Bea")] {
        rig.edit(EntityType::Personnel, id, OpKind::Update, member(id, name));
    }
    rig.drain();
    let s = rig.server.0.borrow();
    assert!(s.requests > requests_before, "the swap was sent");
    assert!(s.name_clashes > 0);
    let ops = rig.ops();
    assert_eq!(ops.len(), 2);
    assert!(
        ops.iter()
            .all(|o| o.status == OpStatus::Failed && o.quarantined),
        "{ops:?}"
    );
}

#[test]
fn auth_error_and_5xx() {
    let auth = || RemoteError::Auth {
        status: 401,
        message: "JWT expired".into(),
    };
    let five = || RemoteError::Server {
        status: 503,
        message: "unavailable".into(),
    };
    for preset in Preset::ALL {
        let mut rig = Rig::new(preset);
        rig.player("p1", "a");
        rig.script(Script::Fail(auth()));
        rig.pass();
        let op = &rig.ops()[0];
        let expected = if preset == Preset::Batched { 1 } else { 0 };
        assert_eq!(op.retry_count, expected, "{preset:?} 401 penalty");

        // Ten 5xx in a row: today's engine and the plan give up (failed);
        // hardened retries forever.
        for _ in 0..12 {
            rig.script(Script::Fail(five()));
        }
        for _ in 0..12 {
            rig.advance(400_000);
            rig.pass();
        }
        let op = &rig.ops()[0];
        match preset {
            Preset::Hardened => assert_eq!(op.status, OpStatus::Pending),
            _ => assert_eq!(op.status, OpStatus::Failed, "{preset:?}"),
        }
    }
}

#[test]
fn a_failure_while_the_clock_was_a_day_ahead_waits_its_backoff_not_the_day() {
    // The device clock is a day ahead (set by hand) when a call fails with
    // a 503; its operation's ready time is a day out on that clock. The
    // user puts the clock right. The hardened clock guard brings the wait
    // in to the longest backoff (5 min); without it the operation sits a
    // day. The engine sees the clock go back between two rounds of passes,
    // and again at a restart; also when the clock jumped ahead only while
    // the call was in flight, after the round began on the right clock.
    const DAY_MS: i64 = 86_400_000;
    for (guard, restart, mid_call) in [
        (true, false, false),
        (true, true, false),
        (true, false, true),
        (false, false, false),
        (false, false, true),
    ] {
        let mut rig = if guard {
            Rig::new(Preset::Hardened)
        } else {
            Rig::hardened_with(|c| c.hardening.clock_guard = false)
        };
        rig.pass(); // the engine has read the right clock once
        if mid_call {
            let clock = rig.clock.clone();
            rig.server.0.borrow_mut().during_next_call =
                Some(Box::new(move || clock.set(clock.get() + DAY_MS)));
        } else {
            rig.advance(DAY_MS);
        }
        rig.player("p1", "v1");
        rig.script(Script::Fail(RemoteError::Server {
            status: 503,
            message: "unavailable".into(),
        }));
        rig.pass();
        assert_eq!(rig.server.0.borrow().requests, 1);
        assert_eq!(rig.server_name("p1"), None);
        rig.advance(-DAY_MS);
        if restart {
            rig.engine.start().unwrap();
        }
        // Longer than any backoff, far shorter than the day.
        for _ in 0..4 {
            rig.advance(100_000);
            rig.pass();
        }
        let name = rig.server_name("p1");
        if guard {
            assert_eq!(
                name.as_deref(),
                Some("v1"),
                "restart: {restart}, mid call: {mid_call}"
            );
        } else {
            assert_eq!(name, None, "without the guard the operation waits the day");
            assert_eq!(rig.ops().len(), 1);
        }
    }
}

#[test]
fn the_chunk_grows_back_slowly_only_after_the_server_cancelled_a_call() {
    // Hardened adaptive chunk. A call the server cancelled for its
    // statement timeout (57014) halves the chunk and sets where doubling
    // stops: from there it grows by a quarter a success, so it does not
    // climb straight back to a size the server is too slow for (two
    // timeouts a seed on big-import when it did). A client-side abort
    // halves it too, but doubling resumes: the link of the moment says
    // less about size than the server does.
    let run = |error: RemoteError| {
        let mut rig = Rig::new(Preset::Hardened);
        rig.player("p0", "a");
        rig.script(Script::Fail(error));
        let mut sizes = vec![rig.engine.chunk_limit()];
        for i in 1..4 {
            rig.pass();
            sizes.push(rig.engine.chunk_limit());
            rig.advance(400_000);
            rig.player(&format!("p{i}"), "a");
        }
        rig.drain();
        assert!(rig.ops().is_empty());
        sizes
    };
    let cancelled = RemoteError::database("57014", "canceling statement due to statement timeout");
    assert_eq!(run(cancelled), vec![50, 25, 31, 38]);
    assert_eq!(
        run(RemoteError::aborted("request timed out")),
        vec![50, 25, 50, 50]
    );
}
