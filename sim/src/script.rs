//! A scenario's `[script]`: a run's workload and fault plan spelled out as
//! data instead of expanded from the seed. `sim shrink` writes one (a
//! minimal failing run, to commit as a regression); a person can write one
//! by hand to pin an exact interleaving.
//!
//! The `[faults]` section still gives what a script does not list: latency,
//! bandwidth, server speed, statement timeout, the 5xx status. The seed still
//! drives madsim (which messages a loss probability drops, latency draws,
//! backoff jitter), so a script plus a seed is one exact run.
//!
//! Operation data is a JSON string: TOML has no null, and rows have nulls.

use crate::nemesis::{FaultParams, FaultPlan, Window};
use crate::workload::Edit;
use crate::world::Script;
use serde::{Deserialize, Serialize};
use sync_core::{EntityType, NewOperation, OpKind};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptSection {
    #[serde(default)]
    pub request_loss: f64,
    #[serde(default)]
    pub response_loss: f64,
    /// How far the device clock is off in `clock_skew` windows.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clock_skew_ms: i64,
    #[serde(default)]
    pub windows: Vec<ScriptWindow>,
    #[serde(default)]
    pub edits: Vec<ScriptEdit>,
}

/// Which fault a window is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    /// The device is offline and knows it.
    Offline,
    /// The device's requests vanish; it does not know.
    SilentDrop,
    /// The app is killed at the start and restarted at the end.
    Kill,
    /// The device's token is expired.
    TokenExpired,
    /// The server answers 5xx (no user).
    ServerErrors,
    /// The device's clock reads `clock_skew_ms` off true time.
    ClockSkew,
    /// A second tab of the app runs its own engine on the same queue.
    SecondTab,
    /// Another tab opens at the start; the current one closes at the end.
    TabHandover,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptWindow {
    pub kind: WindowKind,
    /// The device; absent for `server_errors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u32>,
    pub start_ms: i64,
    pub end_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptEdit {
    pub at_ms: i64,
    pub user: u32,
    pub entity_type: String,
    pub entity_id: String,
    pub kind: String,
    /// The operation's data as JSON text.
    pub data: String,
    /// Made bad on purpose: only this edit may end quarantined.
    #[serde(default)]
    pub bad: bool,
}

impl ScriptSection {
    /// Writes a run's script as a section.
    pub fn from_script(script: &Script) -> ScriptSection {
        let p = &script.plan;
        let mut windows = Vec::new();
        for (kind, per_user) in [
            (WindowKind::Offline, &p.offline),
            (WindowKind::SilentDrop, &p.silent_drop),
            (WindowKind::Kill, &p.kills),
            (WindowKind::TokenExpired, &p.token_expired),
            (WindowKind::ClockSkew, &p.clock_skew),
            (WindowKind::SecondTab, &p.second_tab),
            (WindowKind::TabHandover, &p.tab_handover),
        ] {
            for (user, ws) in per_user.iter().enumerate() {
                windows.extend(ws.iter().map(|w| ScriptWindow {
                    kind,
                    user: Some(user as u32),
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                }));
            }
        }
        windows.extend(p.server_errors.iter().map(|w| ScriptWindow {
            kind: WindowKind::ServerErrors,
            user: None,
            start_ms: w.start_ms,
            end_ms: w.end_ms,
        }));
        ScriptSection {
            request_loss: p.request_loss,
            response_loss: p.response_loss,
            clock_skew_ms: p.clock_skew_ms,
            windows,
            edits: script
                .edits
                .iter()
                .map(|e| ScriptEdit {
                    at_ms: e.at_ms,
                    user: e.user,
                    entity_type: e.op.entity_type.as_str().to_string(),
                    entity_id: e.op.entity_id.clone(),
                    kind: e.op.kind.as_str().to_string(),
                    data: e.op.data.to_string(),
                    bad: e.bad,
                })
                .collect(),
        }
    }

    /// The run's script; `Err` names the first bad entry.
    pub fn to_script(&self, faults: &FaultParams, users: u32) -> Result<Script, String> {
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(format!(
                    "script.{name} must be a probability in [0, 1], got {p}"
                ))
            }
        };
        let per_user = || vec![Vec::new(); users as usize];
        let mut plan = FaultPlan {
            request_loss: prob("request_loss", self.request_loss)?,
            response_loss: prob("response_loss", self.response_loss)?,
            latency_ms: faults.latency_ms,
            bandwidth_bytes_per_ms: faults.bandwidth_bytes_per_ms.max(1),
            server_ms_per_row: faults.server_ms_per_row,
            statement_timeout_ms: faults.statement_timeout_ms,
            offline: per_user(),
            silent_drop: per_user(),
            kills: per_user(),
            token_expired: per_user(),
            server_errors: Vec::new(),
            server_error_status: faults.server_error_status,
            clock_skew: per_user(),
            clock_skew_ms: self.clock_skew_ms,
            second_tab: per_user(),
            tab_handover: per_user(),
        };
        if self.clock_skew_ms.abs() > crate::scenario::WEEK_MS {
            return Err(format!(
                "script.clock_skew_ms must be within {} ms either way, got {}",
                crate::scenario::WEEK_MS,
                self.clock_skew_ms
            ));
        }
        for (i, w) in self.windows.iter().enumerate() {
            let at = format!("script.windows[{i}]");
            if !(0 <= w.start_ms && w.start_ms < w.end_ms && w.end_ms <= faults.fault_phase_ms) {
                return Err(format!(
                    "{at}: needs 0 <= start_ms < end_ms <= world.fault_phase_ms ({}), got {}..{}",
                    faults.fault_phase_ms, w.start_ms, w.end_ms
                ));
            }
            let window = Window {
                start_ms: w.start_ms,
                end_ms: w.end_ms,
            };
            let list = match (w.kind, w.user) {
                (WindowKind::ServerErrors, None) => &mut plan.server_errors,
                (WindowKind::ServerErrors, Some(_)) => {
                    return Err(format!("{at}: server_errors windows have no user"))
                }
                (_, None) => return Err(format!("{at}: this window needs a user")),
                (_, Some(u)) if u >= users => {
                    return Err(format!("{at}: user {u} but world.users is {users}"))
                }
                (WindowKind::Offline, Some(u)) => &mut plan.offline[u as usize],
                (WindowKind::SilentDrop, Some(u)) => &mut plan.silent_drop[u as usize],
                (WindowKind::Kill, Some(u)) => &mut plan.kills[u as usize],
                (WindowKind::TokenExpired, Some(u)) => &mut plan.token_expired[u as usize],
                (WindowKind::ClockSkew, Some(u)) => &mut plan.clock_skew[u as usize],
                (WindowKind::SecondTab, Some(u)) => &mut plan.second_tab[u as usize],
                (WindowKind::TabHandover, Some(u)) => &mut plan.tab_handover[u as usize],
            };
            list.push(window);
        }
        for ws in plan
            .offline
            .iter_mut()
            .chain(&mut plan.silent_drop)
            .chain(&mut plan.kills)
            .chain(&mut plan.token_expired)
            .chain(&mut plan.clock_skew)
            .chain(&mut plan.second_tab)
            .chain(&mut plan.tab_handover)
            .chain(std::iter::once(&mut plan.server_errors))
        {
            ws.sort();
        }
        for (u, ws) in plan.kills.iter().enumerate() {
            // A dead app cannot die again, and madsim restarts >= 1 ms later.
            if ws.windows(2).any(|p| p[1].start_ms <= p[0].end_ms) {
                return Err(format!("script.windows: kill windows of user {u} overlap"));
            }
        }
        for (u, ws) in plan.tab_handover.iter().enumerate() {
            // One tab closes at a time: the next hand-over's tab opens after
            // the last one ended.
            if ws.windows(2).any(|p| p[1].start_ms <= p[0].end_ms) {
                return Err(format!(
                    "script.windows: tab_handover windows of user {u} overlap"
                ));
            }
        }
        let mut edits = Vec::with_capacity(self.edits.len());
        for (i, e) in self.edits.iter().enumerate() {
            let at = format!("script.edits[{i}]");
            if e.user >= users {
                return Err(format!("{at}: user {} but world.users is {users}", e.user));
            }
            if e.at_ms < 0 {
                return Err(format!("{at}: at_ms must be >= 0, got {}", e.at_ms));
            }
            let entity_type = EntityType::parse(&e.entity_type)
                .ok_or_else(|| format!("{at}: unknown entity_type {:?}", e.entity_type))?;
            let kind = OpKind::parse(&e.kind).ok_or_else(|| {
                format!("{at}: unknown kind {:?} (create, update, delete)", e.kind)
            })?;
            let data = serde_json::from_str(&e.data)
                .map_err(|err| format!("{at}: data is not JSON: {err}"))?;
            let op = NewOperation {
                entity_type,
                entity_id: e.entity_id.clone(),
                kind,
                data,
            };
            op.validate().map_err(|err| format!("{at}: {err}"))?;
            edits.push(Edit {
                at_ms: e.at_ms,
                user: e.user,
                op,
                bad: e.bad,
            });
        }
        // The world takes each user's edits in time order.
        edits.sort_by_key(|e| (e.at_ms, e.user));
        Ok(Script { edits, plan })
    }
}
