//! The nemesis: which faults happen when, generated up front from the seed as
//! data (a `FaultPlan`), with swarm testing.
//!
//! Swarm testing (as in FoundationDB and TigerBeetle): each seed switches
//! some fault kinds off entirely and reweights the rest, so that across seeds
//! the world explores corners a uniform mix never reaches (e.g. kills with no
//! packet loss, or loss with no kills).
//!
//! Every fault lives inside the fault phase `[0, fault_phase_ms)`; after it
//! the world heals: online, token valid, no loss, no 5xx, device running.

use std::collections::BTreeMap;
use sync_core::engine::SplitMix64;

/// What the scenario allows (upper bounds); swarm picks within them.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultParams {
    pub swarm: bool,
    pub fault_phase_ms: i64,
    pub latency_ms: (i64, i64),
    pub bandwidth_bytes_per_ms: i64,
    pub server_ms_per_row: f64,
    pub statement_timeout_ms: i64,
    pub request_loss: f64,
    pub response_loss: f64,
    pub offline_windows: u32,
    pub offline_duration_ms: (i64, i64),
    pub silent_drop_windows: u32,
    pub silent_drop_duration_ms: (i64, i64),
    pub kills: u32,
    pub restart_delay_ms: (i64, i64),
    pub token_expiries: u32,
    pub refresh_after_ms: (i64, i64),
    pub server_error_bursts: u32,
    pub server_error_duration_ms: (i64, i64),
    pub server_error_status: u16,
    /// Per user, windows in which the device clock (`Date.now()`, not the
    /// timers) is off by one offset drawn per seed from this range: it
    /// jumps at the window's start and jumps back at its end.
    pub clock_skew_windows: u32,
    pub clock_skew_duration_ms: (i64, i64),
    pub clock_skew_offset_ms: (i64, i64),
    /// Per user, windows in which a second tab of the app is open: a
    /// second engine on the same queue (the browser shares IndexedDB).
    pub second_tab_windows: u32,
    pub second_tab_duration_ms: (i64, i64),
    /// Per user, windows of a tab hand-over: another tab of the app opens
    /// at the window's start, and at its end the tab the user works in
    /// closes, leaving the other one to carry on.
    pub tab_handover_windows: u32,
    pub tab_handover_duration_ms: (i64, i64),
}

/// A time window `[start_ms, end_ms)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn contains(&self, t_ms: i64) -> bool {
        self.start_ms <= t_ms && t_ms < self.end_ms
    }
}

/// The faults of one run, as data.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultPlan {
    pub request_loss: f64,
    pub response_loss: f64,
    pub latency_ms: (i64, i64),
    pub bandwidth_bytes_per_ms: i64,
    pub server_ms_per_row: f64,
    pub statement_timeout_ms: i64,
    /// Per user: the device knows it is offline.
    pub offline: Vec<Vec<Window>>,
    /// Per user: requests vanish silently.
    pub silent_drop: Vec<Vec<Window>>,
    /// Per user: (kill at, restart at).
    pub kills: Vec<Vec<Window>>,
    /// Per user: token invalid during the window.
    pub token_expired: Vec<Vec<Window>>,
    /// Server answers 5xx during these windows.
    pub server_errors: Vec<Window>,
    pub server_error_status: u16,
    /// Per user: the device clock reads `clock_skew_ms` off true time.
    pub clock_skew: Vec<Vec<Window>>,
    /// How far off (negative: behind). Zero when the scenario has no skew.
    pub clock_skew_ms: i64,
    /// Per user: a second tab is open (its own engine, the same queue).
    pub second_tab: Vec<Vec<Window>>,
    /// Per user: tab hand-overs. A new tab is open beside the current one
    /// during the window; at its end the current tab closes (its call in
    /// flight dropped) and the new one becomes the tab the user works in.
    /// Never overlapping, in order.
    pub tab_handover: Vec<Vec<Window>>,
}

impl FaultPlan {
    pub fn in_any(windows: &[Window], t_ms: i64) -> bool {
        windows.iter().any(|w| w.contains(t_ms))
    }

    /// The options the seed expanded to, for reports and `replay`.
    pub fn describe(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let count = |v: &Vec<Vec<Window>>| v.iter().map(Vec::len).sum::<usize>();
        m.insert("request_loss".into(), format!("{:.3}", self.request_loss));
        m.insert("response_loss".into(), format!("{:.3}", self.response_loss));
        m.insert(
            "latency_ms".into(),
            format!("{}..{}", self.latency_ms.0, self.latency_ms.1),
        );
        m.insert(
            "bandwidth_bytes_per_ms".into(),
            self.bandwidth_bytes_per_ms.to_string(),
        );
        m.insert(
            "server_ms_per_row".into(),
            format!("{:.2}", self.server_ms_per_row),
        );
        m.insert(
            "statement_timeout_ms".into(),
            self.statement_timeout_ms.to_string(),
        );
        m.insert("offline_windows".into(), count(&self.offline).to_string());
        m.insert(
            "silent_drop_windows".into(),
            count(&self.silent_drop).to_string(),
        );
        m.insert("kills".into(), count(&self.kills).to_string());
        m.insert(
            "token_expiries".into(),
            count(&self.token_expired).to_string(),
        );
        m.insert(
            "server_error_bursts".into(),
            self.server_errors.len().to_string(),
        );
        // Only where the scenario skews clocks: every other run's options,
        // and so its report, stay as they were before clock skew existed.
        if count(&self.clock_skew) > 0 || self.clock_skew_ms != 0 {
            m.insert(
                "clock_skew_windows".into(),
                count(&self.clock_skew).to_string(),
            );
            m.insert("clock_skew_ms".into(), self.clock_skew_ms.to_string());
        }
        if count(&self.second_tab) > 0 {
            m.insert(
                "second_tab_windows".into(),
                count(&self.second_tab).to_string(),
            );
        }
        if count(&self.tab_handover) > 0 {
            m.insert(
                "tab_handovers".into(),
                count(&self.tab_handover).to_string(),
            );
        }
        m
    }

    /// User `u`'s device clock at true time `t_ms`.
    pub fn device_clock_ms(&self, u: usize, t_ms: i64) -> i64 {
        match self.clock_skew.get(u) {
            Some(ws) if FaultPlan::in_any(ws, t_ms) => t_ms + self.clock_skew_ms,
            _ => t_ms,
        }
    }
}

/// Expands the scenario's fault parameters for one seed.
pub fn plan(p: &FaultParams, users: u32, seed: u64) -> FaultPlan {
    let mut rng = SplitMix64::new(seed.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0xFA17);
    // Swarm: each fault kind on with probability 1/2 (when the scenario has
    // it at all), and its intensity scaled by a factor in [0.25, 1].
    let on = |rng: &mut SplitMix64| !p.swarm || rng.next_u64() % 2 == 0;
    let scale = |rng: &mut SplitMix64| {
        if p.swarm {
            0.25 + 0.75 * (rng.next_u64() % 1000) as f64 / 1000.0
        } else {
            1.0
        }
    };
    let request_loss = if on(&mut rng) {
        p.request_loss * scale(&mut rng)
    } else {
        0.0
    };
    let response_loss = if on(&mut rng) {
        p.response_loss * scale(&mut rng)
    } else {
        0.0
    };
    let offline_on = on(&mut rng);
    let silent_on = on(&mut rng);
    let kills_on = on(&mut rng);
    let token_on = on(&mut rng);
    let errors_on = on(&mut rng);
    let phase = p.fault_phase_ms.max(1);

    let windows = |rng: &mut SplitMix64, n: u32, dur: (i64, i64)| -> Vec<Window> {
        let mut v: Vec<Window> = (0..n)
            .map(|_| {
                let start = rng.range_i64(0, phase - 1);
                let len = rng.range_i64(dur.0, dur.1);
                Window {
                    start_ms: start,
                    end_ms: (start + len).min(phase),
                }
            })
            .collect();
        v.sort();
        v
    };

    let per_user = |rng: &mut SplitMix64, enabled: bool, n: u32, dur: (i64, i64)| {
        (0..users)
            .map(|_| {
                if enabled {
                    windows(rng, n, dur)
                } else {
                    Vec::new()
                }
            })
            .collect::<Vec<_>>()
    };
    let offline = per_user(
        &mut rng,
        offline_on,
        p.offline_windows,
        p.offline_duration_ms,
    );
    let silent_drop = per_user(
        &mut rng,
        silent_on,
        p.silent_drop_windows,
        p.silent_drop_duration_ms,
    );
    let kills = per_user(&mut rng, kills_on, p.kills, p.restart_delay_ms);
    let token_expired = per_user(&mut rng, token_on, p.token_expiries, p.refresh_after_ms);
    let server_errors = if errors_on {
        windows(&mut rng, p.server_error_bursts, p.server_error_duration_ms)
    } else {
        Vec::new()
    };
    // Drawn last, and only when the scenario skews clocks, so that every
    // seed of every other scenario expands exactly as before.
    let skew_on = p.clock_skew_windows > 0 && on(&mut rng);
    let clock_skew_ms = if skew_on {
        rng.range_i64(p.clock_skew_offset_ms.0, p.clock_skew_offset_ms.1)
    } else {
        0
    };
    let clock_skew = per_user(
        &mut rng,
        skew_on,
        p.clock_skew_windows,
        p.clock_skew_duration_ms,
    );
    // After the clock's draws, for the same reason.
    let second_tab_on = p.second_tab_windows > 0 && on(&mut rng);
    let second_tab = per_user(
        &mut rng,
        second_tab_on,
        p.second_tab_windows,
        p.second_tab_duration_ms,
    );
    // After the second tab's draws, for the same reason.
    let handover_on = p.tab_handover_windows > 0 && on(&mut rng);
    let tab_handover = per_user(
        &mut rng,
        handover_on,
        p.tab_handover_windows,
        p.tab_handover_duration_ms,
    );
    FaultPlan {
        request_loss,
        response_loss,
        latency_ms: p.latency_ms,
        bandwidth_bytes_per_ms: p.bandwidth_bytes_per_ms.max(1),
        server_ms_per_row: p.server_ms_per_row,
        statement_timeout_ms: p.statement_timeout_ms,
        offline,
        silent_drop,
        kills: merge_overlaps(kills),
        token_expired,
        server_errors,
        server_error_status: p.server_error_status,
        clock_skew,
        clock_skew_ms,
        second_tab,
        // Overlapping hand-overs are one: the tab opened first is the one
        // that takes over.
        tab_handover: merge_overlaps(tab_handover),
    }
}

/// Windows of one device that overlap or touch become one: kill windows
/// (a dead node cannot die) and tab hand-overs (one tab is closed at a time).
fn merge_overlaps(per_user: Vec<Vec<Window>>) -> Vec<Vec<Window>> {
    per_user
        .into_iter()
        .map(|ws| {
            let mut out: Vec<Window> = Vec::new();
            for w in ws {
                match out.last_mut() {
                    Some(last) if w.start_ms <= last.end_ms + 1 => {
                        last.end_ms = last.end_ms.max(w.end_ms);
                    }
                    _ => out.push(w),
                }
            }
            out
        })
        .collect()
}
