//! A throwaway PostgreSQL cluster for tests, from the machine's own
//! `initdb`/`pg_ctl`, on a Unix socket in a temporary directory; and typed
//! calls of the RPCs in `migrations/`.

use postgres::{Client, NoTls};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use sync_core::payload::BulkSyncPayload;
use sync_core::remote::GameSave;

/// A running cluster; stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    run_as: Option<String>,
    superuser: String,
}

/// An error from a call: SQLSTATE and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqlError {
    pub sqlstate: String,
    pub message: String,
}

fn find_bin() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    // Highest version first (directory names are major versions).
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    candidates.pop().or_else(|| {
        let out = Command::new("sh")
            .args(["-c", "command -v initdb"])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        p.parent()
            .map(Path::to_path_buf)
            .filter(|d| d.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Cluster {
    /// Starts a cluster, or returns None (after one "skipped" line) when
    /// PostgreSQL is not installed. With REQUIRE_POSTGRES=1 a missing
    /// installation panics instead.
    pub fn start(test: &str) -> Option<Cluster> {
        let Some(bin) = find_bin() else {
            if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                panic!(
                    "REQUIRE_POSTGRES=1 but no initdb/pg_ctl found (apt-get install -y postgresql)"
                );
            }
            println!("{test}: skipped: PostgreSQL not installed; apt-get install -y postgresql");
            return None;
        };
        let dir = std::env::temp_dir().join(format!("sync-pg-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        // initdb refuses to run as root: run the cluster as `postgres`.
        let run_as = is_root().then(|| "postgres".to_string());
        if let Some(user) = &run_as {
            let ok = Command::new("chown")
                .args([&format!("{user}:{user}"), dir.to_str().unwrap()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(
                ok,
                "chown {} to {user} (is the postgres user there?)",
                dir.display()
            );
        }
        let superuser = match &run_as {
            Some(u) => u.clone(),
            None => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
        };
        let cluster = Cluster {
            dir,
            bin,
            run_as,
            superuser,
        };
        let data = cluster.dir.join("data");
        cluster.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap(),
                "-A",
                "trust",
                "-U",
                &cluster.superuser,
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ],
        );
        let opts = format!(
            "-c listen_addresses='' -k {} -F -c fsync=off -c full_page_writes=off",
            cluster.dir.display()
        );
        cluster.run(
            "pg_ctl",
            &[
                "-D",
                data.to_str().unwrap(),
                "-o",
                &opts,
                "-l",
                cluster.dir.join("log").to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        Some(cluster)
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let exe = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}\n{}\nlog: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
    }

    /// A superuser connection to a fresh database with the shim and the
    /// migrations applied.
    pub fn fresh_database(&self, name: &str) -> Client {
        let mut admin = self.connect("postgres");
        // Separate statements: a multi-statement batch is one transaction,
        // and DROP/CREATE DATABASE refuse to run inside one.
        admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
            .expect("drop database");
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("create database");
        let mut c = self.connect(name);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
        let mut files = vec![root.join("test-support/000_supabase_shim.sql")];
        let mut migrations: Vec<PathBuf> = std::fs::read_dir(&root)
            .expect("migrations/")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        migrations.sort();
        files.extend(migrations);
        for f in files {
            let sql = std::fs::read_to_string(&f).unwrap();
            c.batch_execute(&sql)
                .unwrap_or_else(|e| panic!("applying {}: {e:?}", f.display()));
        }
        c
    }

    pub fn connect(&self, db: &str) -> Client {
        let conn = format!(
            "host={} user={} dbname={db}",
            self.dir.display(),
            self.superuser
        );
        Client::connect(&conn, NoTls).expect("connect")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let _ = cmd
            .args([
                "-D",
                data.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A driver error as the SQLSTATE and message a test compares.
pub fn sql_error(e: postgres::Error) -> SqlError {
    match e.as_db_error() {
        Some(db) => SqlError {
            sqlstate: db.code().code().to_string(),
            message: db.message().to_string(),
        },
        None => SqlError {
            sqlstate: "?????".into(),
            message: e.to_string(),
        },
    }
}

/// Runs `f` in one transaction as role `authenticated` with auth.uid() =
/// `user` (None: no token). Errors roll the transaction back.
pub fn as_user<T>(
    c: &mut Client,
    user: Option<&str>,
    f: impl FnOnce(&mut postgres::Transaction<'_>) -> Result<T, postgres::Error>,
) -> Result<T, SqlError> {
    let mut tx = begin_as(c, user)?;
    let out = f(&mut tx).map_err(sql_error)?;
    tx.commit().map_err(sql_error)?;
    Ok(out)
}

/// Opens a transaction as role `authenticated` with auth.uid() = `user`
/// (None: no token), for a test that holds it open across another
/// connection's call. Dropped without commit, it rolls back.
pub fn begin_as<'c>(
    c: &'c mut Client,
    user: Option<&str>,
) -> Result<postgres::Transaction<'c>, SqlError> {
    let mut tx = c.transaction().map_err(sql_error)?;
    tx.batch_execute("SET LOCAL ROLE authenticated")
        .map_err(sql_error)?;
    tx.execute(
        "SELECT set_config('request.jwt.claim.sub', $1, true)",
        &[&user.unwrap_or("")],
    )
    .map_err(sql_error)?;
    Ok(tx)
}

fn arr(v: &[Value]) -> Option<Vec<Value>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn ids(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

/// `bulk_sync_entities` with a payload from sync-core.
pub fn bulk_sync(
    c: &mut Client,
    user: Option<&str>,
    p: &BulkSyncPayload,
) -> Result<Value, SqlError> {
    as_user(c, user, |tx| bulk_sync_in(tx, p))
}

/// `bulk_sync_entities` inside the caller's transaction (see `begin_as`).
pub fn bulk_sync_in(
    tx: &mut postgres::Transaction<'_>,
    p: &BulkSyncPayload,
) -> Result<Value, postgres::Error> {
    let rosters: Option<Vec<Value>> = (!p.team_rosters.is_empty()).then(|| {
        p.team_rosters
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    });
    let versions: Option<Value> =
        (!p.versions.is_empty()).then(|| serde_json::to_value(&p.versions).unwrap());
    let row = tx.query_one(
        "SELECT bulk_sync_entities(
           p_players => $1, p_teams => $2, p_seasons => $3, p_tournaments => $4,
           p_personnel => $5, p_settings => $6, p_warmup_plan => $7,
           p_team_rosters => $8, p_player_adjustments => $9,
           p_delete_player_ids => $10, p_delete_team_ids => $11, p_delete_season_ids => $12,
           p_delete_tournament_ids => $13, p_delete_personnel_ids => $14,
           p_delete_warmup_plan => $15, p_delete_player_adjustment_ids => $16,
           p_batch_id => $17, p_versions => $18)",
        &[
            &arr(&p.players),
            &arr(&p.teams),
            &arr(&p.seasons),
            &arr(&p.tournaments),
            &arr(&p.personnel),
            &p.settings,
            &p.warmup_plan,
            &rosters,
            &arr(&p.player_adjustments),
            &ids(&p.delete_player_ids),
            &ids(&p.delete_team_ids),
            &ids(&p.delete_season_ids),
            &ids(&p.delete_tournament_ids),
            &ids(&p.delete_personnel_ids),
            &p.delete_warmup_plan,
            &ids(&p.delete_player_adjustment_ids),
            &p.batch_id,
            &versions,
        ],
    )?;
    Ok(row.get::<_, Value>(0))
}

pub fn save_game(c: &mut Client, user: Option<&str>, g: &GameSave) -> Result<i32, SqlError> {
    as_user(c, user, |tx| save_game_in(tx, g))
}

/// `save_game_with_relations` inside the caller's transaction.
pub fn save_game_in(
    tx: &mut postgres::Transaction<'_>,
    g: &GameSave,
) -> Result<i32, postgres::Error> {
    let expected = g.expected_version.map(|v| v as i32);
    let row = tx.query_one(
        "SELECT save_game_with_relations($1, $2, $3, $4, $5, $6, $7)",
        &[
            &g.game,
            &g.players,
            &g.events,
            &g.assessments,
            &g.tactical,
            &expected,
            &g.sync_version,
        ],
    )?;
    Ok(row.get::<_, i32>(0))
}

pub fn set_team_roster(
    c: &mut Client,
    user: Option<&str>,
    team: &str,
    roster: &[Value],
    version: Option<i64>,
) -> Result<(), SqlError> {
    as_user(c, user, |tx| set_team_roster_in(tx, team, roster, version))
}

/// `set_team_roster` inside the caller's transaction.
pub fn set_team_roster_in(
    tx: &mut postgres::Transaction<'_>,
    team: &str,
    roster: &[Value],
    version: Option<i64>,
) -> Result<(), postgres::Error> {
    tx.execute(
        "SELECT set_team_roster($1, $2, $3)",
        &[&team, &roster.to_vec(), &version],
    )?;
    Ok(())
}

/// `upsert_entity` inside the caller's transaction.
pub fn upsert_entity_in(
    tx: &mut postgres::Transaction<'_>,
    t: &str,
    data: &Value,
    version: Option<i64>,
) -> Result<(), postgres::Error> {
    tx.execute("SELECT upsert_entity($1, $2, $3)", &[&t, data, &version])?;
    Ok(())
}

/// `delete_entity` inside the caller's transaction.
pub fn delete_entity_in(
    tx: &mut postgres::Transaction<'_>,
    t: &str,
    id: &str,
    version: Option<i64>,
) -> Result<(), postgres::Error> {
    tx.execute("SELECT delete_entity($1, $2, $3)", &[&t, &id, &version])?;
    Ok(())
}

/// Every data table of one user, ordered by key, rows without user_id and
/// timestamps: the shape of `ServerModel::rows`.
pub fn dump(c: &mut Client, user: &str) -> BTreeMap<String, Vec<Value>> {
    const TABLES: [(&str, &str); 14] = [
        ("players", "id"),
        ("teams", "id"),
        ("seasons", "id"),
        ("tournaments", "id"),
        ("personnel", "id"),
        ("team_players", "id"),
        ("warmup_plans", "user_id"),
        ("user_settings", "user_id"),
        ("player_adjustments", "id"),
        ("games", "id"),
        ("game_players", "id"),
        ("game_events", "id"),
        ("player_assessments", "id"),
        ("game_tactical_data", "game_id"),
    ];
    let mut out = BTreeMap::new();
    for (table, key) in TABLES {
        let q = format!(
            "SELECT COALESCE(jsonb_agg(to_jsonb(t) - 'user_id' - 'created_at' - 'updated_at' \
             ORDER BY t.{key}::text COLLATE \"C\"), '[]'::jsonb) FROM {table} t WHERE t.user_id::text = $1"
        );
        let v: Value = c.query_one(&q, &[&user]).expect("dump").get(0);
        out.insert(table.to_string(), v.as_array().cloned().unwrap_or_default());
    }
    out
}
