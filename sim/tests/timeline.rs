//! The history's fault timeline says what the world did: the 5xx bursts
//! and clock skew (written from the plan, since no task wakes up at them)
//! begin and end where the server and the tabs saw them, every call a
//! second tab sent lies inside one of its openings, and across tab
//! hand-overs only the tab holding the lock sends. A reader of
//! `sim replay --trace` relies on these lines to explain a failure.

use sim::explore::PlantedBug;
use sim::history::{Event, ServerResult};
use sim::scenario::Scenario;
use sim::world::run;
use sync_core::Preset;

/// The fault lines of `history` for `user` (`None`: the server's), in order.
fn fault_lines(history: &[Event], user: Option<u32>) -> Vec<(i64, &str)> {
    history
        .iter()
        .filter_map(|e| match e {
            Event::Fault {
                t_ms,
                user: u,
                what,
            } if *u == user => Some((*t_ms, what.as_str())),
            _ => None,
        })
        .collect()
}

#[test]
fn server_error_lines_bracket_every_5xx() {
    let s = Scenario::embedded("clock-skew").expect("embedded scenario");
    let (params, config) = s.setup(Preset::Hardened, None);
    let mut rejections_seen = 0;
    let mut skews_seen = 0;
    for seed in 1..=6 {
        let out = run(&params, seed, config.clone(), false);
        // Bursts and skew spans alternate begin, end (an overlap of two
        // planned windows is one span).
        let mut on = false;
        for (_, what) in fault_lines(&out.history, None) {
            if what.starts_with("server answers") {
                assert!(!on, "seed {seed}: a 5xx burst began twice");
                on = true;
            } else if what == "server errors end" {
                assert!(on, "seed {seed}: a 5xx burst ended without beginning");
                on = false;
            }
        }
        let mut skewed = false;
        for (_, what) in fault_lines(&out.history, Some(0)) {
            if what.starts_with("device clock off by") {
                assert!(!skewed, "seed {seed}: the clock went off twice");
                skewed = true;
                skews_seen += 1;
            } else if what == "device clock back to true time" {
                assert!(skewed, "seed {seed}: the clock came back without going off");
                skewed = false;
            }
        }
        // Every 5xx the server gave is inside a burst as the history tells
        // it, and every burst the history tells gave its calls a 5xx.
        let mut on = false;
        for e in &out.history {
            match e {
                Event::Fault {
                    user: None, what, ..
                } if what.starts_with("server answers") => on = true,
                Event::Fault {
                    user: None, what, ..
                } if what == "server errors end" || what == "healed" => on = false,
                Event::Server {
                    t_ms,
                    result: ServerResult::Rejected { error },
                    ..
                } => {
                    let is_5xx = error.starts_with("server 5");
                    assert_eq!(
                        is_5xx, on,
                        "seed {seed} at {t_ms} ms: rejection {error:?} against the timeline"
                    );
                    rejections_seen += u32::from(is_5xx);
                }
                Event::Server { t_ms, .. } => {
                    assert!(
                        !on,
                        "seed {seed} at {t_ms} ms: committed inside a 5xx burst"
                    );
                }
                _ => {}
            }
        }
    }
    assert!(
        rejections_seen > 0,
        "no seed had a 5xx: the test checked nothing"
    );
    assert!(
        skews_seen > 0,
        "no seed had clock skew: the test checked nothing"
    );
}

#[test]
fn second_tab_calls_lie_inside_its_openings() {
    let s = Scenario::embedded("second-tab").expect("embedded scenario");
    // Without the lock (planted `no-tab-lock`) the second tab sends calls.
    let bug = PlantedBug::find("no-tab-lock").expect("planted bug");
    let (params, config) = s.setup(Preset::Hardened, Some(bug));
    let out = run(&params, s.seed, config, false);
    let mut open = false;
    let mut sent = 0;
    for e in &out.history {
        match e {
            Event::Fault { what, .. } if what == "second tab opened, its engine starts" => {
                assert!(!open, "the second tab opened twice");
                open = true;
            }
            Event::Fault { what, .. }
                if what.starts_with("second tab closed") || what == "app killed" =>
            {
                open = false
            }
            Event::Invoke { t_ms, tab: 1, .. } => {
                assert!(
                    open,
                    "at {t_ms} ms: the second tab sent a call while closed"
                );
                sent += 1;
            }
            _ => {}
        }
    }
    assert!(
        sent > 0,
        "the second tab never sent: the test checked nothing"
    );

    // With the lock the second tab opens and sends nothing.
    let (params, config) = s.setup(Preset::Hardened, None);
    let out = run(&params, s.seed, config, false);
    let opened = fault_lines(&out.history, Some(0))
        .iter()
        .filter(|(_, what)| what.contains("the first tab holds the sync lock"))
        .count();
    assert!(opened > 0, "no opening of the second tab in the timeline");
    assert!(
        !out.history
            .iter()
            .any(|e| matches!(e, Event::Invoke { tab: 1, .. })),
        "a second tab sent a call under the lock"
    );
}

/// Under the hardened `tab_lock`, calls come from one tab at a time across
/// tab hand-overs: the first tab until it closes, then only the tab that
/// took the lock, from the instant it took it. Without the lock (planted
/// `no-tab-lock`) the new tab syncs from the moment it opens, beside the
/// tab the user still works in.
#[test]
fn across_tab_hand_overs_only_the_lock_holder_sends() {
    use std::collections::BTreeMap;
    let s = Scenario::embedded("tab-handover").expect("embedded scenario");
    let (params, config) = s.setup(Preset::Hardened, None);
    let mut handed_over = 0;
    let mut sent_by_new_tabs = 0;
    for seed in 0..6 {
        let out = run(&params, seed, config.clone(), false);
        // Per user, the tab that may send (`Event::Invoke::tab`); `None`
        // between a close and the next tab's start, and while dead.
        let mut holder: BTreeMap<u32, Option<u32>> = BTreeMap::new();
        for e in &out.history {
            match e {
                Event::Fault {
                    user: Some(u),
                    what,
                    ..
                } => {
                    if what.starts_with("the working tab closed") || what == "app killed" {
                        holder.insert(*u, None);
                    } else if what == "app restarted" {
                        holder.insert(*u, Some(0));
                    } else if let Some(rest) = what.strip_prefix("tab h") {
                        if let Some(n) = rest.strip_suffix(" took the sync lock, its engine starts")
                        {
                            let n: u32 = n.parse().expect("hand-over number");
                            holder.insert(*u, Some(n + 1));
                            handed_over += 1;
                        }
                    }
                }
                Event::Invoke {
                    t_ms, user, tab, ..
                } => {
                    let allowed = holder.get(user).copied().unwrap_or(Some(0));
                    assert_eq!(
                        allowed,
                        Some(*tab),
                        "seed {seed}, at {t_ms} ms: u{user}'s tab {tab} sent a call without the lock"
                    );
                    if *tab >= 2 {
                        sent_by_new_tabs += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert!(
        handed_over > 0 && sent_by_new_tabs > 0,
        "no tab took the lock over and sent in 6 seeds: the test checked nothing"
    );

    // Without the lock a new tab sends while the working tab is still open.
    let bug = PlantedBug::find("no-tab-lock").expect("planted bug");
    let (params, config) = s.setup(Preset::Hardened, Some(bug));
    let beside = (0..6).any(|seed| {
        let out = run(&params, seed, config.clone(), false);
        let mut open_beside = false;
        out.history.iter().any(|e| match e {
            Event::Fault { what, .. } => {
                if what.starts_with("tab h") && what.ends_with("opened, its engine starts") {
                    open_beside = true;
                } else if what.starts_with("the working tab closed") {
                    open_beside = false;
                }
                false
            }
            Event::Invoke { tab, .. } => open_beside && *tab >= 2,
            _ => false,
        })
    });
    assert!(
        beside,
        "without the lock no new tab sent beside the working tab in 6 seeds"
    );
}
