//! The user's edits, generated up front from the seed as data.
//!
//! The workload is a pure function of (parameters, seed): every preset of a
//! run sees the same edits at the same simulated times, so their numbers
//! compare, and a failing run's workload can be shrunk as data.
//!
//! The generator keeps its own model of the device's local state so that
//! every edit is one the app could make: updates and deletes name live
//! entities, children point at live parents, a parent is deleted only when
//! nothing live points at it (a team's roster is cleared first, the app's
//! "children's deletes before parents'"). Rows are complete (every column
//! the server has) so local and server state compare directly.

use serde_json::{json, Value};
use std::collections::BTreeMap;
use sync_core::engine::SplitMix64;
use sync_core::payload::row_parents;
use sync_core::{EntityType, NewOperation, OpKind};

/// What the workload is asked to do (from the scenario file).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkloadParams {
    pub users: u32,
    /// Edits per user during the fault phase.
    pub edits: u32,
    pub think_time_ms: (i64, i64),
    /// Edits per user enqueued at time 0, before the engine first runs.
    pub initial_backlog: u32,
    /// Weights by entity type, in `EntityType::ALL` order.
    pub type_weights: [u32; 10],
    /// Weights of create, update, delete.
    pub kind_weights: [u32; 3],
    /// Edits per user made bad on purpose (they violate a CHECK).
    pub bad_records: u32,
    /// Delete-then-recreate pairs per user.
    pub delete_recreate: u32,
    /// Name hand-overs per user: a live personnel member is deleted or
    /// renamed, and at the same instant another one takes the name it gave
    /// up, a new member or a renamed one (names are unique per user on the
    /// server).
    pub name_reuse: u32,
    /// After a child edit, touch its parent so the parent's operation moves
    /// behind the child's in the queue (children before parents).
    pub children_first: bool,
    /// A tampered client: the last user (of two or more) writes user 0's
    /// uuid into the `user_id` of every plain entity row (players, teams,
    /// seasons, tournaments, personnel, adjustments). The server must take
    /// the owner from `auth.uid()` and ignore it; no random draw depends on
    /// it, so the rest of the workload is the same either way.
    pub forged_user_id: bool,
    /// The user taps "Retry failed" (failed operations back to pending) every
    /// this many ms, from the start until the run ends, and once more when
    /// the faults end, as a user who sees the failed badge would (`None`:
    /// never). A habit, not data: no random draw, so the edits are the same
    /// either way.
    pub retry_failed_every_ms: Option<i64>,
}

impl WorkloadParams {
    /// When the user taps "Retry failed": every `retry_failed_every_ms`
    /// up to `end_ms`, and at `fault_phase_ms` (so that what failed during
    /// the faults is retried as soon as they are over), in time order.
    pub fn retry_failed_taps_ms(&self, fault_phase_ms: i64, end_ms: i64) -> Vec<i64> {
        let Some(every_ms) = self.retry_failed_every_ms.filter(|ms| *ms > 0) else {
            return Vec::new();
        };
        let mut taps: Vec<i64> = (1..)
            .map(|k| k * every_ms)
            .take_while(|t| *t <= end_ms)
            .chain([fault_phase_ms.max(0)])
            .collect();
        taps.sort_unstable();
        taps.dedup();
        taps
    }
}

/// One edit the user makes.
#[derive(Clone, Debug, PartialEq)]
pub struct Edit {
    /// When the user makes it (simulated ms from the start).
    pub at_ms: i64,
    pub user: u32,
    pub op: NewOperation,
    /// Made bad on purpose: the server must reject it with a constraint
    /// violation, and only this operation may end quarantined.
    pub bad: bool,
}

/// What the generator must remember of a live entity: not its row (a
/// 100,000-edit backlog would hold every row twice), only the parents it
/// points at and, for an adjustment, its player (a delete carries it).
#[derive(Default)]
struct Facts {
    links: Vec<(EntityType, String)>,
    player_id: Value,
    /// The name of an entity whose type holds names unique per user on the
    /// server (`EntityType::unique_name`: personnel).
    name: Option<String>,
}

/// The live entities of one type, with the ids also in a vector so a random
/// pick is O(1) (a delete swap-removes, so it is O(log n) too).
#[derive(Default)]
struct Live {
    rows: BTreeMap<String, (usize, Facts)>,
    order: Vec<String>,
}

impl Live {
    fn insert(&mut self, id: String, facts: Facts) -> Option<Facts> {
        if let Some((_, old)) = self.rows.get_mut(&id) {
            return Some(std::mem::replace(old, facts));
        }
        self.rows.insert(id.clone(), (self.order.len(), facts));
        self.order.push(id);
        None
    }

    fn remove(&mut self, id: &str) -> Option<Facts> {
        let (at, facts) = self.rows.remove(id)?;
        self.order.swap_remove(at);
        if let Some(moved) = self.order.get(at) {
            if let Some(entry) = self.rows.get_mut(moved) {
                entry.0 = at;
            }
        }
        Some(facts)
    }
}

/// Per-user local state the generator tracks. Every operation on it is
/// O(log n), so a 100,000-edit backlog generates in linear-ish time.
#[derive(Default)]
struct Local {
    live: BTreeMap<EntityType, Live>,
    /// How many live games and adjustments point at each (parent type, id).
    refs: BTreeMap<(EntityType, String), u32>,
    /// Live personnel names, and whose each is.
    personnel_names: BTreeMap<String, String>,
    next_id: u64,
    has_settings: bool,
    has_warmup: bool,
}

impl Local {
    fn count(&self, t: EntityType) -> usize {
        self.live.get(&t).map_or(0, |l| l.order.len())
    }

    fn contains(&self, t: EntityType, id: &str) -> bool {
        self.live.get(&t).is_some_and(|l| l.rows.contains_key(id))
    }

    /// The player a live adjustment belongs to.
    fn player_of(&self, id: &str) -> Value {
        self.live
            .get(&EntityType::PlayerAdjustment)
            .and_then(|l| l.rows.get(id))
            .map_or(Value::Null, |(_, f)| f.player_id.clone())
    }

    fn pick(&self, rng: &mut SplitMix64, t: EntityType) -> Option<String> {
        let ids = &self.live.get(&t)?.order;
        if ids.is_empty() {
            None
        } else {
            Some(ids[(rng.next_u64() % ids.len() as u64) as usize].clone())
        }
    }

    /// Up to `n` live ids of a type (the oldest surviving ones first).
    fn first_ids(&self, t: EntityType, n: usize) -> Vec<String> {
        self.live
            .get(&t)
            .map(|l| l.order.iter().take(n).cloned().collect())
            .unwrap_or_default()
    }

    fn put(&mut self, t: EntityType, id: String, data: &Value) {
        let facts = Facts {
            links: row_parents(t, data),
            player_id: if t == EntityType::PlayerAdjustment {
                data["player_id"].clone()
            } else {
                Value::Null
            },
            name: t
                .unique_name()
                .then(|| data["name"].as_str().map(str::to_string))
                .flatten(),
        };
        for l in &facts.links {
            *self.refs.entry(l.clone()).or_default() += 1;
        }
        let name = facts.name.clone();
        let old = self.live.entry(t).or_default().insert(id.clone(), facts);
        self.unlink(old);
        if let Some(name) = name {
            self.personnel_names.insert(name, id);
        }
    }

    fn remove(&mut self, t: EntityType, id: &str) {
        let old = self.live.get_mut(&t).and_then(|l| l.remove(id));
        self.unlink(old);
    }

    fn unlink(&mut self, old: Option<Facts>) {
        let Some(old) = old else { return };
        if let Some(name) = &old.name {
            self.personnel_names.remove(name);
        }
        for l in old.links {
            if let Some(n) = self.refs.get_mut(&l) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(&l);
                }
            }
        }
    }

    /// The name of a live personnel member.
    fn personnel_name(&self, id: &str) -> Option<String> {
        let (_, facts) = self.live.get(&EntityType::Personnel)?.rows.get(id)?;
        facts.name.clone()
    }

    /// Whether a personnel member `id` may take `name`: no other live one
    /// holds it.
    fn name_free(&self, name: &str, id: &str) -> bool {
        self.personnel_names
            .get(name)
            .is_none_or(|holder| holder == id)
    }

    /// Whether a live game or adjustment points at (t, id).
    fn referenced(&self, t: EntityType, id: &str) -> bool {
        self.refs.contains_key(&(t, id.to_string()))
    }
}

/// Generates every user's edits, sorted by time then user.
pub fn generate(params: &WorkloadParams, seed: u64) -> Vec<Edit> {
    let mut all = Vec::new();
    for user in 0..params.users {
        let mut rng = SplitMix64::new(seed ^ (0x5EED_0000 + u64::from(user)).wrapping_mul(0x9E37));
        let mut gen = Gen {
            rng: &mut rng,
            local: Local::default(),
            user,
            out: Vec::new(),
            params,
        };
        gen.run();
        all.extend(gen.out);
    }
    all.sort_by_key(|e| (e.at_ms, e.user));
    all
}

/// Whether the workload is one the app could make, as `generate`'s edits
/// are, judged by the generator's own model of the device (`Local`):
/// - every edit names only live parents: a game's or adjustment's row names
///   a season, tournament or team, and a roster its team, that an earlier
///   edit of the same user made and nothing deleted since; and a parent is
///   deleted only once no live child names it (a team's roster cleared
///   first);
/// - no two live staff members of a user share a name (the server's unique
///   constraint): a name is taken only once its holder gave it up;
/// - a create names an entity that is not live, an update or a delete one
///   that is.
///
/// `sim shrink` holds its candidates to it: a candidate that breaks it (a
/// parent's create removed, a child's delete that let its parent go, a
/// hand-over's delete removed) is a workload the app cannot make, and its
/// failure belongs to the missing parent or the duplicate name, not to the
/// bug being shrunk. The shrinker's control cannot always see that,
/// because a planted bug may make the hardened preset skip the child
/// altogether (regression `superseded-game-seed438`: a superseded game
/// that hardened never sends).
///
/// Edits are taken per user in time order, as the world makes them.
pub fn app_could_make(edits: &[Edit]) -> bool {
    let mut order: Vec<&Edit> = edits.iter().collect();
    order.sort_by_key(|e| (e.user, e.at_ms));
    let mut locals: BTreeMap<u32, Local> = BTreeMap::new();
    for e in order {
        let local = locals.entry(e.user).or_default();
        let (t, id) = (e.op.entity_type, e.op.entity_id.as_str());
        // A create makes what is not there; an update or a delete names
        // what is.
        if (e.op.kind == OpKind::Create) == local.contains(t, id) {
            return false;
        }
        if e.op.kind.is_delete() {
            let roster_live = t == EntityType::Team && local.contains(EntityType::TeamRoster, id);
            if local.referenced(t, id) || roster_live {
                return false;
            }
            local.remove(t, id);
        } else {
            let team_live = t != EntityType::TeamRoster || local.contains(EntityType::Team, id);
            let parents_live = row_parents(t, &e.op.data)
                .iter()
                .all(|(pt, pid)| local.contains(*pt, pid));
            let name_free = !t.unique_name()
                || e.op.data["name"]
                    .as_str()
                    .is_none_or(|name| local.name_free(name, id));
            if !(team_live && parents_live && name_free) {
                return false;
            }
            local.put(t, id.to_string(), &e.op.data);
        }
    }
    true
}

/// The kind an edit of a singleton-like entity can have: a delete only of
/// something that exists, an update of what exists, else a create.
fn kind_for(wanted: OpKind, exists: bool) -> OpKind {
    match (wanted, exists) {
        (OpKind::Delete, true) => OpKind::Delete,
        (_, true) => OpKind::Update,
        (_, false) => OpKind::Create,
    }
}

struct Gen<'a> {
    rng: &'a mut SplitMix64,
    local: Local,
    user: u32,
    out: Vec<Edit>,
    params: &'a WorkloadParams,
}

impl Gen<'_> {
    fn run(&mut self) {
        let p = self.params;
        let total = p.initial_backlog + p.edits;
        // Which edit indexes are bad / delete-recreate, chosen up front.
        let bad_at = self.choose_indexes(total, p.bad_records);
        let recreate_at = self.choose_indexes(total, p.delete_recreate);
        // Drawn last, and not at all when zero: the other knobs' edits stay
        // those of a workload without it.
        let reuse_at = self.choose_indexes(total, p.name_reuse);
        let mut t = 0i64;
        // Bound: each iteration emits at least one edit and at most four.
        for i in 0..total {
            if i >= p.initial_backlog {
                t += self.rng.range_i64(p.think_time_ms.0, p.think_time_ms.1);
            }
            if recreate_at.contains(&i) && self.delete_recreate(t) {
                continue;
            }
            if reuse_at.contains(&i) && self.name_reuse(t) {
                continue;
            }
            self.one_edit(t, bad_at.contains(&i));
        }
    }

    fn choose_indexes(&mut self, total: u32, n: u32) -> Vec<u32> {
        let mut v = Vec::new();
        if total == 0 {
            return v;
        }
        for _ in 0..n.min(total) {
            v.push((self.rng.next_u64() % u64::from(total)) as u32);
        }
        v
    }

    fn new_id(&mut self, t: EntityType) -> String {
        self.local.next_id += 1;
        format!("u{}_{}_{}", self.user, t.as_str(), self.local.next_id)
    }

    fn emit(
        &mut self,
        at_ms: i64,
        t: EntityType,
        id: String,
        kind: OpKind,
        data: Value,
        bad: bool,
    ) {
        match kind {
            OpKind::Delete => {
                self.local.remove(t, &id);
                if t == EntityType::WarmupPlan {
                    self.local.has_warmup = false;
                }
            }
            _ => {
                self.local.put(t, id.clone(), &data);
                match t {
                    EntityType::Settings => self.local.has_settings = true,
                    EntityType::WarmupPlan => self.local.has_warmup = true,
                    _ => {}
                }
            }
        }
        self.out.push(Edit {
            at_ms,
            user: self.user,
            op: NewOperation {
                entity_type: t,
                entity_id: id,
                kind,
                data,
            },
            bad,
        });
    }

    fn weighted<const N: usize>(&mut self, weights: &[u32; N]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        if total == 0 {
            return 0;
        }
        let mut r = self.rng.next_u64() % total;
        for (i, w) in weights.iter().enumerate() {
            if r < u64::from(*w) {
                return i;
            }
            r -= u64::from(*w);
        }
        N - 1
    }

    fn one_edit(&mut self, at: i64, bad: bool) {
        let t = if bad {
            // Bad records are players (jersey number out of range) or
            // adjustments (negative games played): CHECK violations, 23514.
            if self.rng.next_u64() % 2 == 0 || self.local.count(EntityType::Player) == 0 {
                EntityType::Player
            } else {
                EntityType::PlayerAdjustment
            }
        } else {
            EntityType::ALL[self.weighted(&self.params.type_weights)]
        };
        let kind_i = self.weighted(&self.params.kind_weights);
        let existing = self.local.pick(self.rng, t);
        let kind = match (kind_i, &existing) {
            _ if bad => {
                if existing.is_some() {
                    OpKind::Update
                } else {
                    OpKind::Create
                }
            }
            (_, None) => OpKind::Create,
            (0, _) => OpKind::Create,
            (1, _) => OpKind::Update,
            _ => OpKind::Delete,
        };
        match (t, kind) {
            (EntityType::Settings, _) => {
                let k = if self.local.has_settings {
                    OpKind::Update
                } else {
                    OpKind::Create
                };
                let data = json!({"theme": self.word(), "language": "en", "autosave": self.rng.next_u64() % 2 == 0});
                self.emit(at, t, "app".into(), k, data, false);
            }
            (EntityType::WarmupPlan, k) => {
                let k = kind_for(k, self.local.has_warmup);
                let data = if k == OpKind::Delete {
                    Value::Null
                } else {
                    json!({"sections": [self.word(), self.word()], "duration_minutes": self.rng.range_i64(5, 30)})
                };
                self.emit(at, t, "default".into(), k, data, false);
            }
            (EntityType::TeamRoster, k) => {
                let Some(team) = self.local.pick(self.rng, EntityType::Team) else {
                    return self.create_plain(at, EntityType::Team, false);
                };
                let has = self.local.contains(t, &team);
                let k = kind_for(k, has);
                let data = if k == OpKind::Delete {
                    Value::Null
                } else {
                    self.roster()
                };
                self.emit(at, t, team.clone(), k, data, false);
                if self.params.children_first {
                    self.touch(at, EntityType::Team, &team);
                }
            }
            (_, OpKind::Create) => self.create_plain(at, t, bad),
            (_, OpKind::Update) => {
                let id = existing.expect("update picks a live entity");
                let data = self.row(t, &id, bad);
                let parents = self.parents_to_touch(t, &data);
                self.emit(at, t, id, OpKind::Update, data, bad);
                self.touch_all(at, parents);
            }
            (_, OpKind::Delete) => {
                let id = existing.expect("delete picks a live entity");
                self.delete(at, t, id);
            }
        }
    }

    fn create_plain(&mut self, at: i64, t: EntityType, bad: bool) {
        let id = self.new_id(t);
        let data = self.row(t, &id, bad);
        let parents = self.parents_to_touch(t, &data);
        self.emit(at, t, id, OpKind::Create, data, bad);
        self.touch_all(at, parents);
    }

    /// Deletes an entity the way the app allows: parents only when nothing
    /// points at them, a team's roster cleared first.
    fn delete(&mut self, at: i64, t: EntityType, id: String) {
        if self.local.referenced(t, &id) {
            // Not allowed by the app's UI while referenced: edit it instead.
            let data = self.row(t, &id, false);
            return self.emit(at, t, id, OpKind::Update, data, false);
        }
        if t == EntityType::Team && self.local.contains(EntityType::TeamRoster, &id) {
            self.emit(
                at,
                EntityType::TeamRoster,
                id.clone(),
                OpKind::Delete,
                Value::Null,
                false,
            );
        }
        let data = if t == EntityType::PlayerAdjustment {
            let player = self.local.player_of(&id);
            json!({ "player_id": player })
        } else {
            Value::Null
        };
        self.emit(at, t, id, OpKind::Delete, data, false);
    }

    /// Delete then recreate one id at one instant (one transaction, the
    /// same batch).
    fn delete_recreate(&mut self, at: i64) -> bool {
        for t in [
            EntityType::Player,
            EntityType::Personnel,
            EntityType::Season,
        ] {
            if let Some(id) = self.local.pick(self.rng, t) {
                if self.local.referenced(t, &id) {
                    continue;
                }
                self.emit(at, t, id.clone(), OpKind::Delete, Value::Null, false);
                let data = self.row(t, &id, false);
                // At the same instant: a later instant would put it after
                // the backlog's next edits (all at 0), which may name it.
                self.emit(at, t, id, OpKind::Create, data, false);
                return true;
            }
        }
        false
    }

    /// A name hand-over at one instant: a live personnel member gives up its
    /// name (deleted, or renamed) and another one takes it: a new member's
    /// create, or (half the time, when there is one) another live member's
    /// rename, which gives up that member's name in turn, so hand-overs
    /// chain. The server holds the old owner under that name until the
    /// delete or rename lands, so the taker must not reach it first. Only a
    /// name someone holds is handed over, so no two members ever wait for
    /// each other (no swap).
    fn name_reuse(&mut self, at: i64) -> bool {
        let t = EntityType::Personnel;
        let Some(old_owner) = self.local.pick(self.rng, t) else {
            return false;
        };
        let Some(name) = self.local.personnel_name(&old_owner) else {
            return false;
        };
        if self.rng.next_u64() % 2 == 0 {
            self.delete(at, t, old_owner.clone());
        } else {
            let mut data = self.row(t, &old_owner, false);
            if data["name"].as_str() == Some(name.as_str()) {
                data["name"] = json!(format!("{name} (renamed)"));
            }
            self.emit(at, t, old_owner.clone(), OpKind::Update, data, false);
        }
        let existing = self
            .local
            .pick(self.rng, t)
            .filter(|_| self.rng.next_u64() % 2 == 0);
        let (id, kind) = match existing {
            Some(id) if id != old_owner => (id, OpKind::Update),
            _ => (self.new_id(t), OpKind::Create),
        };
        let mut data = self.row(t, &id, false);
        data["name"] = json!(name);
        self.emit(at, t, id, kind, data, false);
        true
    }

    /// With `children_first`, the parents a child's row names, to update
    /// right after the child (`touch_all`) so their queued operations move
    /// behind the child's (merge moves it to the back). Read before the
    /// child's row moves into its edit, so the row is not cloned.
    fn parents_to_touch(&self, t: EntityType, data: &Value) -> Vec<(EntityType, String)> {
        if !self.params.children_first {
            return Vec::new();
        }
        let row = if t == EntityType::Game {
            &data["game"]
        } else {
            data
        };
        [
            ("team_id", EntityType::Team),
            ("season_id", EntityType::Season),
            ("tournament_id", EntityType::Tournament),
        ]
        .into_iter()
        .filter_map(|(col, pt)| Some((pt, row.get(col)?.as_str()?.to_string())))
        .collect()
    }

    fn touch_all(&mut self, at: i64, parents: Vec<(EntityType, String)>) {
        for (t, id) in parents {
            self.touch(at, t, &id);
        }
    }

    fn touch(&mut self, at: i64, t: EntityType, id: &str) {
        if self.local.contains(t, id) {
            let data = self.row(t, id, false);
            self.emit(at, t, id.to_string(), OpKind::Update, data, false);
        }
    }

    fn word(&mut self) -> String {
        const WORDS: [&str; 12] = [
            "red", "blue", "north", "south", "spring", "autumn", "cup", "league", "falcons",
            "otters", "lions", "rovers",
        ];
        WORDS[(self.rng.next_u64() % WORDS.len() as u64) as usize].to_string()
    }

    fn link(&mut self, t: EntityType) -> Value {
        // Half the time no link, so both shapes are exercised.
        if self.rng.next_u64() % 2 == 0 {
            return Value::Null;
        }
        self.local
            .pick(self.rng, t)
            .map(Value::String)
            .unwrap_or(Value::Null)
    }

    fn roster(&mut self) -> Value {
        let n = (self.rng.next_u64() % 4) as usize;
        let mut rows = BTreeMap::new();
        for _ in 0..n.min(self.local.count(EntityType::Player)) {
            let Some(p) = self.local.pick(self.rng, EntityType::Player) else {
                break;
            };
            let jersey = self.rng.range_i64(1, 99);
            rows.insert(
                p.clone(),
                json!({"player_id": p, "name": self.word(), "jersey_number": jersey}),
            );
        }
        Value::Array(rows.into_values().collect())
    }

    /// A complete row in the server's shape (every data column, defaults
    /// spelled out) so local and server compare with `==`.
    fn row(&mut self, t: EntityType, id: &str, bad: bool) -> Value {
        let mut row = self.honest_row(t, id, bad);
        let tampered = self.params.forged_user_id && self.user + 1 == self.params.users;
        if tampered && t != EntityType::Game {
            row["user_id"] = json!(crate::server::UserId::from_index(0).uuid());
        }
        row
    }

    fn honest_row(&mut self, t: EntityType, id: &str, bad: bool) -> Value {
        let name = format!("{} {}", self.word(), self.rng.next_u64() % 1000);
        match t {
            EntityType::Player => json!({
                "id": id, "name": name,
                "jersey_number": if bad { 150 } else { self.rng.range_i64(0, 99) },
                "is_goalie": self.rng.next_u64() % 5 == 0, "notes": Value::Null,
            }),
            EntityType::Team => json!({"id": id, "name": name, "color": self.word()}),
            EntityType::Season => json!({"id": id, "name": name, "start_date": "2026-08-01"}),
            EntityType::Tournament => json!({"id": id, "name": name, "level": "regional"}),
            // Personnel names are unique per user on the server: the id in
            // the name keeps them apart, except from a name another member
            // handed over (`name_reuse`), which a suffix avoids (no random
            // draw, so a workload without hand-overs is unchanged).
            EntityType::Personnel => {
                let mut name = format!("{name} {id}");
                // Bound: each pass appends one more mark, and at most every
                // live name is in the way.
                for _ in 0..=self.local.personnel_names.len() {
                    if self.local.name_free(&name, id) {
                        break;
                    }
                    name.push('\'');
                }
                json!({"id": id, "name": name, "role": "coach"})
            }
            EntityType::PlayerAdjustment => {
                let player = self
                    .local
                    .pick(self.rng, EntityType::Player)
                    .unwrap_or_else(|| "unknown_player".to_string());
                json!({
                    "id": id, "player_id": player,
                    "season_id": self.link(EntityType::Season),
                    "tournament_id": self.link(EntityType::Tournament),
                    "team_id": self.link(EntityType::Team),
                    "games_played": if bad { -1 } else { self.rng.range_i64(0, 30) },
                    "goals": self.rng.range_i64(0, 10),
                })
            }
            EntityType::Game => {
                let players = self.local.first_ids(EntityType::Player, 3);
                let mut game_players = Vec::new();
                for (i, p) in players.iter().take(3).enumerate() {
                    game_players.push(
                        json!({"id": format!("{id}_gp{i}"), "player_id": p, "is_starting": i == 0}),
                    );
                }
                let events: Vec<Value> = (0..self.rng.range_i64(0, 3))
                    .map(|i| json!({"id": format!("{id}_ev{i}"), "order_index": i, "event_type": "goal", "time_seconds": 60 * i}))
                    .collect();
                let assessments: Vec<Value> = players
                    .iter()
                    .take(1)
                    .map(|p| json!({"id": format!("{id}_as_{p}"), "player_id": p, "rating": self.rng.range_i64(1, 10)}))
                    .collect();
                json!({
                    "game": {
                        "id": id,
                        "team_id": self.link(EntityType::Team),
                        "season_id": self.link(EntityType::Season),
                        "tournament_id": self.link(EntityType::Tournament),
                        "opponent": name, "game_date": "2026-09-12",
                        "home_score": self.rng.range_i64(0, 5), "away_score": self.rng.range_i64(0, 5),
                    },
                    "players": game_players,
                    "events": events,
                    "assessments": assessments,
                    "tactical": {"formation": "4-4-2"},
                })
            }
            EntityType::Settings | EntityType::WarmupPlan | EntityType::TeamRoster => {
                unreachable!("singletons and rosters have their own shapes")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> WorkloadParams {
        WorkloadParams {
            users: 2,
            edits: 200,
            think_time_ms: (10, 100),
            initial_backlog: 20,
            type_weights: [5, 2, 1, 1, 1, 1, 1, 1, 1, 1],
            kind_weights: [5, 4, 1],
            bad_records: 2,
            delete_recreate: 2,
            name_reuse: 0,
            children_first: true,
            forged_user_id: false,
            retry_failed_every_ms: None,
        }
    }

    #[test]
    fn retry_failed_taps_are_periodic_with_one_when_the_faults_end() {
        let never = params();
        assert!(never.retry_failed_taps_ms(1_000, 10_000).is_empty());
        let p = WorkloadParams {
            retry_failed_every_ms: Some(3_000),
            ..params()
        };
        assert_eq!(
            p.retry_failed_taps_ms(7_000, 12_000),
            vec![3_000, 6_000, 7_000, 9_000, 12_000]
        );
        assert_eq!(p.retry_failed_taps_ms(6_000, 6_000), vec![3_000, 6_000]);
    }

    #[test]
    fn a_forged_user_id_changes_only_the_last_users_rows() {
        let honest = generate(&params(), 7);
        let forged = generate(
            &WorkloadParams {
                forged_user_id: true,
                ..params()
            },
            7,
        );
        assert_eq!(honest.len(), forged.len());
        let victim = crate::server::UserId::from_index(0).uuid();
        let mut claimed = 0;
        for (h, f) in honest.iter().zip(&forged) {
            let mut stripped = f.clone();
            if let Some(m) = stripped.op.data.as_object_mut() {
                if m.remove("user_id").is_some() {
                    assert_eq!(f.user, 1, "only the tampered client forges");
                    assert_eq!(f.op.data["user_id"], json!(victim));
                    claimed += 1;
                }
            }
            assert_eq!(h, &stripped, "nothing else changes");
        }
        assert!(claimed > 0, "the tampered client wrote forged rows");
    }

    #[test]
    fn deterministic_and_valid() {
        let a = generate(&params(), 7);
        let b = generate(&params(), 7);
        assert_eq!(a, b);
        assert_ne!(a, generate(&params(), 8));
        for e in &a {
            e.op.validate()
                .expect("workload edits are valid operations");
        }
        assert!(a.iter().filter(|e| e.bad).count() >= 1);
        assert!(a.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn every_generated_workload_is_one_the_app_could_make() {
        // The rule must be the generator's, or the shrinker would refuse
        // candidates the app could make.
        for name in crate::scenario::Scenario::known() {
            let s = crate::scenario::Scenario::embedded(&name).expect("embedded scenario");
            let (params, _) = s.setup(sync_core::engine::Preset::Hardened, None);
            let seeds = if name == "large-backlog" { 2 } else { 20 };
            for seed in 0..seeds {
                assert!(
                    app_could_make(&params.expand(seed).edits),
                    "{name} seed {seed}"
                );
            }
        }
    }

    fn edit(at_ms: i64, t: EntityType, id: &str, kind: OpKind, data: Value) -> Edit {
        Edit {
            at_ms,
            user: 0,
            op: NewOperation {
                entity_type: t,
                entity_id: id.to_string(),
                kind,
                data,
            },
            bad: false,
        }
    }

    #[test]
    fn a_child_of_a_missing_or_deleted_parent_is_not_a_workload_the_app_makes() {
        let team = || {
            edit(
                0,
                EntityType::Team,
                "u0_team_1",
                OpKind::Create,
                json!({ "id": "u0_team_1" }),
            )
        };
        let adjustment = |at_ms: i64, kind: OpKind| {
            edit(
                at_ms,
                EntityType::PlayerAdjustment,
                "u0_adj_1",
                kind,
                json!({ "id": "u0_adj_1", "player_id": "u0_player_1", "team_id": "u0_team_1" }),
            )
        };
        let roster = |at_ms: i64, kind: OpKind| {
            edit(at_ms, EntityType::TeamRoster, "u0_team_1", kind, json!([]))
        };
        let team_delete = |at_ms: i64| {
            edit(
                at_ms,
                EntityType::Team,
                "u0_team_1",
                OpKind::Delete,
                Value::Null,
            )
        };

        assert!(app_could_make(&[team(), adjustment(1, OpKind::Create)]));
        assert!(!app_could_make(&[adjustment(1, OpKind::Create)]));
        // Order is by time, not by place in the list.
        assert!(!app_could_make(&[
            adjustment(0, OpKind::Create),
            edit(
                1,
                EntityType::Team,
                "u0_team_1",
                OpKind::Create,
                json!({ "id": "u0_team_1" })
            )
        ]));
        // The parent goes only after the child that names it.
        assert!(app_could_make(&[
            team(),
            adjustment(1, OpKind::Create),
            adjustment(2, OpKind::Delete),
            team_delete(3),
        ]));
        assert!(!app_could_make(&[
            team(),
            adjustment(1, OpKind::Create),
            team_delete(2),
        ]));
        // An update that drops the link frees the parent.
        let unlinked = edit(
            2,
            EntityType::PlayerAdjustment,
            "u0_adj_1",
            OpKind::Update,
            json!({ "id": "u0_adj_1", "player_id": "u0_player_1", "team_id": null }),
        );
        assert!(app_could_make(&[
            team(),
            adjustment(1, OpKind::Create),
            unlinked,
            team_delete(3),
        ]));
        // A roster needs its team, and is cleared before the team goes.
        assert!(!app_could_make(&[roster(1, OpKind::Create)]));
        assert!(app_could_make(&[
            team(),
            roster(1, OpKind::Create),
            roster(2, OpKind::Delete),
            team_delete(2),
        ]));
        assert!(!app_could_make(&[
            team(),
            roster(1, OpKind::Create),
            team_delete(2),
        ]));
    }

    #[test]
    fn only_what_is_there_is_updated_or_deleted_and_only_what_is_not_created() {
        let player = |at_ms: i64, kind: OpKind| {
            let data = if kind.is_delete() {
                Value::Null
            } else {
                json!({ "id": "u0_player_1", "name": "Ann" })
            };
            edit(at_ms, EntityType::Player, "u0_player_1", kind, data)
        };
        assert!(app_could_make(&[
            player(0, OpKind::Create),
            player(1, OpKind::Update),
            // Delete and re-create at one instant (delete_recreate).
            player(2, OpKind::Delete),
            player(2, OpKind::Create),
        ]));
        // The create removed (as a shrink might): nothing to update or
        // delete.
        assert!(!app_could_make(&[player(1, OpKind::Update)]));
        assert!(!app_could_make(&[player(1, OpKind::Delete)]));
        // A second create of a live entity.
        assert!(!app_could_make(&[
            player(0, OpKind::Create),
            player(1, OpKind::Create)
        ]));
    }

    #[test]
    fn a_name_another_member_still_holds_is_not_a_workload_the_app_makes() {
        let member = |at_ms: i64, id: &str, kind: OpKind, name: &str| {
            edit(
                at_ms,
                EntityType::Personnel,
                id,
                kind,
                json!({ "id": id, "name": name }),
            )
        };
        let gone = |at_ms: i64, id: &str| {
            edit(
                at_ms,
                EntityType::Personnel,
                id,
                OpKind::Delete,
                Value::Null,
            )
        };
        let a = || member(0, "u0_personnel_1", OpKind::Create, "Kim");
        // A hand-over: the name is given up (deleted, or renamed), then
        // taken; an update that keeps a member's own name is fine.
        assert!(app_could_make(&[
            a(),
            gone(1, "u0_personnel_1"),
            member(1, "u0_personnel_2", OpKind::Create, "Kim"),
        ]));
        assert!(app_could_make(&[
            a(),
            member(1, "u0_personnel_1", OpKind::Update, "Lee"),
            member(1, "u0_personnel_2", OpKind::Create, "Kim"),
            member(2, "u0_personnel_2", OpKind::Update, "Kim"),
        ]));
        // The hand-over's delete or rename removed (as a shrink might).
        assert!(!app_could_make(&[
            a(),
            member(1, "u0_personnel_2", OpKind::Create, "Kim"),
        ]));
        // Other users, and other types, may share a name.
        let mut other_user = member(1, "u1_personnel_1", OpKind::Create, "Kim");
        other_user.user = 1;
        let player = edit(
            1,
            EntityType::Player,
            "u0_player_1",
            OpKind::Create,
            json!({ "id": "u0_player_1", "name": "Kim" }),
        );
        assert!(app_could_make(&[a(), other_user, player]));
    }
}
