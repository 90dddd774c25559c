//! The history's fault timeline says what the world did: the 5xx bursts
//! and clock skew (written from the plan, since no task wakes up at them)
//! begin and end where the server and the tabs saw them, and every call a
//! second tab sent lies inside one of its openings. A reader of
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
            Event::Invoke {
                t_ms,
                second_tab: true,
                ..
            } => {
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
        !out.history.iter().any(|e| matches!(
            e,
            Event::Invoke {
                second_tab: true,
                ..
            }
        )),
        "a second tab sent a call under the lock"
    );
}
