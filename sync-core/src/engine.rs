//! `SyncEngine` (being written).

/// Source of the device clock in milliseconds.
pub trait Clock {
    fn now_ms(&self) -> i64;
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    Individual,
    Batched,
    Hardened,
}

#[derive(Clone, Debug)]
pub struct EngineConfig;

pub struct SyncEngine;
