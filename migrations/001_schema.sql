-- Schema of the tables the batch-sync plan touches, with the keys, foreign
-- keys, uniqueness and row-level security of reference/app-behavior.md.
-- Every user table has user_id and RLS `auth.uid() = user_id`; primary keys
-- are (user_id, id); singletons (settings, warmup plan) are keyed by user.
--
-- Hardened additions: sync_entity_versions (per-entity versions and
-- tombstones) and sync_batches (batch ids recorded in the same transaction).

CREATE TABLE players (
  user_id uuid NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  jersey_number int CHECK (jersey_number BETWEEN 0 AND 99),
  is_goalie boolean NOT NULL DEFAULT false,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id)
);

CREATE TABLE teams (
  user_id uuid NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  color text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id)
);

CREATE TABLE seasons (
  user_id uuid NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  start_date date,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id)
);

CREATE TABLE tournaments (
  user_id uuid NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  level text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id)
);

CREATE TABLE personnel (
  user_id uuid NOT NULL,
  id text NOT NULL,
  name text NOT NULL,
  role text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id),
  -- "unique per user and name": the app's name-collision hazard.
  UNIQUE (user_id, name)
);

-- The roster: one row per team and player, id '<team>_<player>'. Cascades
-- with its team; no foreign key to players (as in the app).
CREATE TABLE team_players (
  user_id uuid NOT NULL,
  id text NOT NULL,
  team_id text NOT NULL,
  player_id text NOT NULL,
  name text,
  jersey_number int,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, team_id) REFERENCES teams (user_id, id) ON DELETE CASCADE
);

CREATE TABLE warmup_plans (
  user_id uuid PRIMARY KEY,
  id text NOT NULL DEFAULT 'default',
  plan jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_settings (
  user_id uuid PRIMARY KEY,
  settings jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Adjustments have no updated_at (append-style records). Links to
-- seasons, tournaments and teams become NULL when the parent goes
-- (ON DELETE SET NULL on the column only: user_id stays).
CREATE TABLE player_adjustments (
  user_id uuid NOT NULL,
  id text NOT NULL,
  player_id text NOT NULL,
  season_id text,
  tournament_id text,
  team_id text,
  games_played int NOT NULL DEFAULT 0 CHECK (games_played >= 0),
  goals int NOT NULL DEFAULT 0 CHECK (goals >= 0),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, season_id) REFERENCES seasons (user_id, id) ON DELETE SET NULL (season_id),
  FOREIGN KEY (user_id, tournament_id) REFERENCES tournaments (user_id, id) ON DELETE SET NULL (tournament_id),
  FOREIGN KEY (user_id, team_id) REFERENCES teams (user_id, id) ON DELETE SET NULL (team_id)
);

CREATE TABLE games (
  user_id uuid NOT NULL,
  id text NOT NULL,
  team_id text,
  season_id text,
  tournament_id text,
  opponent text NOT NULL,
  game_date date,
  home_score int NOT NULL DEFAULT 0 CHECK (home_score >= 0),
  away_score int NOT NULL DEFAULT 0 CHECK (away_score >= 0),
  -- Server version for save_game_with_relations' optimistic check.
  version int NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, season_id) REFERENCES seasons (user_id, id) ON DELETE SET NULL (season_id),
  FOREIGN KEY (user_id, tournament_id) REFERENCES tournaments (user_id, id) ON DELETE SET NULL (tournament_id),
  FOREIGN KEY (user_id, team_id) REFERENCES teams (user_id, id) ON DELETE SET NULL (team_id)
);

CREATE TABLE game_players (
  user_id uuid NOT NULL,
  id text NOT NULL,
  game_id text NOT NULL,
  player_id text NOT NULL,
  is_starting boolean NOT NULL DEFAULT false,
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, game_id) REFERENCES games (user_id, id) ON DELETE CASCADE
);

CREATE TABLE game_events (
  user_id uuid NOT NULL,
  id text NOT NULL,
  game_id text NOT NULL,
  order_index int NOT NULL,
  event_type text NOT NULL,
  time_seconds int NOT NULL DEFAULT 0 CHECK (time_seconds >= 0),
  PRIMARY KEY (user_id, id),
  UNIQUE (user_id, game_id, order_index),
  FOREIGN KEY (user_id, game_id) REFERENCES games (user_id, id) ON DELETE CASCADE
);

CREATE TABLE player_assessments (
  user_id uuid NOT NULL,
  id text NOT NULL,
  game_id text NOT NULL,
  player_id text NOT NULL,
  rating int NOT NULL CHECK (rating BETWEEN 1 AND 10),
  PRIMARY KEY (user_id, id),
  FOREIGN KEY (user_id, game_id) REFERENCES games (user_id, id) ON DELETE CASCADE
);

CREATE TABLE game_tactical_data (
  user_id uuid NOT NULL,
  game_id text NOT NULL,
  data jsonb NOT NULL,
  PRIMARY KEY (user_id, game_id),
  FOREIGN KEY (user_id, game_id) REFERENCES games (user_id, id) ON DELETE CASCADE
);

-- Hardened: the newest local version the server has applied per entity;
-- deleted = true is a tombstone (a late upsert with a lower version cannot
-- bring the entity back).
CREATE TABLE sync_entity_versions (
  user_id uuid NOT NULL,
  entity_type text NOT NULL,
  entity_id text NOT NULL,
  version bigint NOT NULL,
  deleted boolean NOT NULL,
  PRIMARY KEY (user_id, entity_type, entity_id)
);

-- Hardened: batch ids committed with their result, for exactly-once replay,
-- and the versions the claiming call carried (NULL: an unversioned call), so
-- that a re-send carrying anything else is refused, not answered.
CREATE TABLE sync_batches (
  user_id uuid NOT NULL,
  batch_id text NOT NULL,
  result jsonb NOT NULL,
  versions jsonb,
  committed_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, batch_id)
);

-- Row-level security: a user sees only their own rows. The RPCs are
-- SECURITY DEFINER and scope every statement to auth.uid() themselves.
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'players', 'teams', 'seasons', 'tournaments', 'personnel', 'team_players',
    'warmup_plans', 'user_settings', 'player_adjustments', 'games',
    'game_players', 'game_events', 'player_assessments', 'game_tactical_data',
    'sync_entity_versions', 'sync_batches'
  ] LOOP
    EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format(
      'CREATE POLICY own_rows ON %I FOR ALL TO authenticated
         USING (auth.uid() = user_id) WITH CHECK (auth.uid() = user_id)', t);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO authenticated', t);
  END LOOP;
END;
$$;
