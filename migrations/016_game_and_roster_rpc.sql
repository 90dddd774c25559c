-- RPCs the app already had (save_game_with_relations, set_team_roster), the
-- per-entity calls of today's engine (upsert_entity, delete_entity), and the
-- helpers bulk_sync_entities (017) shares with them, so one rule lives in
-- one place.
--
-- Conventions (see migrations/README.md):
-- - every RPC is SECURITY DEFINER with a fixed search_path, checks
--   auth.uid() first (28000 'Not authenticated'), and forces user_id;
-- - an item's user_id, created_at and updated_at keys are ignored;
-- - a missing or null key takes the column's DEFAULT if it has one;
-- - malformed items (not an object, no id) raise 22023;
-- - the version gate (hardened) skips a write whose version is not newer
--   than sync_entity_versions holds; a delete leaves a tombstone.

-- The caller, or 28000.
CREATE FUNCTION _sync_uid() RETURNS uuid
LANGUAGE plpgsql STABLE SET search_path = public, pg_temp AS $$
DECLARE
  v_uid uuid := auth.uid();
BEGIN
  IF v_uid IS NULL THEN
    RAISE EXCEPTION 'Not authenticated' USING ERRCODE = '28000';
  END IF;
  RETURN v_uid;
END;
$$;

-- An entity item must be an object with a non-empty string id.
CREATE FUNCTION _sync_item_id(p_type text, p_item jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = public, pg_temp AS $$
BEGIN
  IF p_item IS NULL OR jsonb_typeof(p_item) <> 'object'
     OR jsonb_typeof(p_item -> 'id') IS DISTINCT FROM 'string'
     OR p_item ->> 'id' = '' THEN
    RAISE EXCEPTION 'malformed % item', p_type USING ERRCODE = '22023';
  END IF;
  RETURN p_item ->> 'id';
END;
$$;

-- The version gate. NULL version: no gate (the plan's blind semantics).
-- Returns true when the write applies (and records its version), false
-- when it is stale.
CREATE FUNCTION _sync_gate(p_user uuid, p_type text, p_id text, p_version bigint, p_delete boolean)
RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_held bigint;
BEGIN
  IF p_version IS NULL THEN
    RETURN true;
  END IF;
  SELECT version INTO v_held FROM sync_entity_versions
   WHERE user_id = p_user AND entity_type = p_type AND entity_id = p_id
   FOR UPDATE;
  IF FOUND AND v_held >= p_version THEN
    RETURN false;
  END IF;
  -- No row to lock when the entity is new to the server: a concurrent call
  -- may insert it first. This insert then waits for that call and, once it
  -- commits, updates only to a newer version; an older or equal one writes
  -- nothing and is stale (FOUND is false). An unconditional update let a
  -- slow call lower the version and write its older data over the newer.
  INSERT INTO sync_entity_versions (user_id, entity_type, entity_id, version, deleted)
  VALUES (p_user, p_type, p_id, p_version, p_delete)
  ON CONFLICT (user_id, entity_type, entity_id)
  DO UPDATE SET version = EXCLUDED.version, deleted = EXCLUDED.deleted
    WHERE sync_entity_versions.version < EXCLUDED.version;
  RETURN FOUND;
END;
$$;

-- Upsert of one entity row, the row fully replaced (missing keys -> default).
CREATE FUNCTION _sync_upsert(p_user uuid, p_type text, p_item jsonb) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v jsonb := p_item - 'user_id' - 'created_at' - 'updated_at';
BEGIN
  CASE p_type
  WHEN 'player' THEN
    INSERT INTO players (user_id, id, name, jersey_number, is_goalie, notes)
    SELECT p_user, r.id, r.name, r.jersey_number, COALESCE(r.is_goalie, false), r.notes
      FROM jsonb_populate_record(null::players, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      name = EXCLUDED.name, jersey_number = EXCLUDED.jersey_number,
      is_goalie = EXCLUDED.is_goalie, notes = EXCLUDED.notes, updated_at = now();
  WHEN 'team' THEN
    INSERT INTO teams (user_id, id, name, color)
    SELECT p_user, r.id, r.name, r.color FROM jsonb_populate_record(null::teams, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      name = EXCLUDED.name, color = EXCLUDED.color, updated_at = now();
  WHEN 'season' THEN
    INSERT INTO seasons (user_id, id, name, start_date)
    SELECT p_user, r.id, r.name, r.start_date FROM jsonb_populate_record(null::seasons, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      name = EXCLUDED.name, start_date = EXCLUDED.start_date, updated_at = now();
  WHEN 'tournament' THEN
    INSERT INTO tournaments (user_id, id, name, level)
    SELECT p_user, r.id, r.name, r.level FROM jsonb_populate_record(null::tournaments, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      name = EXCLUDED.name, level = EXCLUDED.level, updated_at = now();
  WHEN 'personnel' THEN
    INSERT INTO personnel (user_id, id, name, role)
    SELECT p_user, r.id, r.name, r.role FROM jsonb_populate_record(null::personnel, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      name = EXCLUDED.name, role = EXCLUDED.role, updated_at = now();
  WHEN 'playerAdjustment' THEN
    INSERT INTO player_adjustments
      (user_id, id, player_id, season_id, tournament_id, team_id, games_played, goals)
    SELECT p_user, r.id, r.player_id, r.season_id, r.tournament_id, r.team_id,
           COALESCE(r.games_played, 0), COALESCE(r.goals, 0)
      FROM jsonb_populate_record(null::player_adjustments, v) r
    ON CONFLICT (user_id, id) DO UPDATE SET
      player_id = EXCLUDED.player_id, season_id = EXCLUDED.season_id,
      tournament_id = EXCLUDED.tournament_id, team_id = EXCLUDED.team_id,
      games_played = EXCLUDED.games_played, goals = EXCLUDED.goals;
  WHEN 'settings' THEN
    INSERT INTO user_settings (user_id, settings) VALUES (p_user, p_item)
    ON CONFLICT (user_id) DO UPDATE SET settings = EXCLUDED.settings, updated_at = now();
  WHEN 'warmupPlan' THEN
    INSERT INTO warmup_plans (user_id, id, plan) VALUES (p_user, 'default', p_item)
    ON CONFLICT (user_id) DO UPDATE SET id = 'default', plan = EXCLUDED.plan, updated_at = now();
  ELSE
    RAISE EXCEPTION 'cannot upsert entity type %', p_type USING ERRCODE = '22023';
  END CASE;
END;
$$;

-- Delete of one entity; returns whether a row existed. Cascades and SET
-- NULLs come from the foreign keys.
CREATE FUNCTION _sync_delete(p_user uuid, p_type text, p_id text) RETURNS boolean
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  n int;
BEGIN
  CASE p_type
  WHEN 'player' THEN DELETE FROM players WHERE user_id = p_user AND id = p_id;
  WHEN 'team' THEN DELETE FROM teams WHERE user_id = p_user AND id = p_id;
  WHEN 'season' THEN DELETE FROM seasons WHERE user_id = p_user AND id = p_id;
  WHEN 'tournament' THEN DELETE FROM tournaments WHERE user_id = p_user AND id = p_id;
  WHEN 'personnel' THEN DELETE FROM personnel WHERE user_id = p_user AND id = p_id;
  WHEN 'playerAdjustment' THEN DELETE FROM player_adjustments WHERE user_id = p_user AND id = p_id;
  WHEN 'game' THEN DELETE FROM games WHERE user_id = p_user AND id = p_id;
  WHEN 'warmupPlan' THEN DELETE FROM warmup_plans WHERE user_id = p_user;
  ELSE
    RAISE EXCEPTION 'cannot delete entity type %', p_type USING ERRCODE = '22023';
  END CASE;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n > 0;
END;
$$;

-- Replaces a team's roster: the team must exist (23503).
CREATE FUNCTION _sync_roster(p_user uuid, p_team_id text, p_roster jsonb[]) RETURNS void
LANGUAGE plpgsql SET search_path = public, pg_temp AS $$
DECLARE
  v_item jsonb;
  v_player text;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM teams WHERE user_id = p_user AND id = p_team_id) THEN
    RAISE EXCEPTION 'team % not found', p_team_id USING ERRCODE = '23503';
  END IF;
  DELETE FROM team_players WHERE user_id = p_user AND team_id = p_team_id;
  FOREACH v_item IN ARRAY COALESCE(p_roster, '{}'::jsonb[]) LOOP
    IF jsonb_typeof(v_item) IS DISTINCT FROM 'object' THEN
      RAISE EXCEPTION 'malformed teamRoster item' USING ERRCODE = '22023';
    END IF;
    v_player := v_item ->> 'player_id';
    IF v_player IS NULL THEN
      RAISE EXCEPTION 'null value in column "player_id" of relation "team_players" violates not-null constraint'
        USING ERRCODE = '23502';
    END IF;
    INSERT INTO team_players (user_id, id, team_id, player_id, name, jersey_number)
    SELECT p_user, p_team_id || '_' || v_player, p_team_id, v_player, r.name, r.jersey_number
      FROM jsonb_populate_record(null::team_players,
             v_item - 'user_id' - 'created_at' - 'updated_at' - 'id' - 'team_id') r;
  END LOOP;
END;
$$;

-- set_team_roster(team_id, roster[]): raises if the team is not on the
-- server yet; otherwise replaces the roster in one transaction.
CREATE FUNCTION set_team_roster(p_team_id text, p_roster jsonb[], p_sync_version bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_user uuid := _sync_uid();
BEGIN
  IF NOT EXISTS (SELECT 1 FROM teams WHERE user_id = v_user AND id = p_team_id) THEN
    RAISE EXCEPTION 'team % not found', p_team_id USING ERRCODE = '23503';
  END IF;
  IF NOT _sync_gate(v_user, 'teamRoster', p_team_id, p_sync_version, false) THEN
    RETURN;
  END IF;
  PERFORM _sync_roster(v_user, p_team_id, p_roster);
END;
$$;

-- save_game_with_relations: one transaction; optional expected version
-- (mismatch: 40001); links to a missing season, tournament or team become
-- NULL (the app's later behaviour: a game pushed before its parent loses
-- the link); game version + 1; children replaced; tactical upserted.
CREATE FUNCTION save_game_with_relations(
  p_game jsonb,
  p_players jsonb[],
  p_events jsonb[],
  p_assessments jsonb[],
  p_tactical jsonb,
  p_expected_version int DEFAULT NULL,
  p_sync_version bigint DEFAULT NULL
) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_user uuid := _sync_uid();
  v_id text := _sync_item_id('game', p_game);
  v_current int;
  v_version int;
  v_game jsonb := p_game - 'user_id' - 'created_at' - 'updated_at' - 'version';
  v_item jsonb;
  v_link record;
  v_missing boolean;
BEGIN
  -- The game's version is read after the gate, which may have waited for a
  -- call saving this game at the same time. Read before it, a stale save
  -- answered 0 for a game the other call had just created, and the
  -- engine's next save then failed its expected version (found by the
  -- concurrent differential test in sim/tests/postgres.rs); a newer save
  -- would have checked its expected version against no row.
  IF NOT _sync_gate(v_user, 'game', v_id, p_sync_version, false) THEN
    SELECT version INTO v_current FROM games WHERE user_id = v_user AND id = v_id;
    RETURN COALESCE(v_current, 0);
  END IF;
  SELECT version INTO v_current FROM games WHERE user_id = v_user AND id = v_id FOR UPDATE;
  IF p_expected_version IS NOT NULL AND v_current IS NOT NULL
     AND v_current <> p_expected_version THEN
    RAISE EXCEPTION 'version conflict: expected %, server has %', p_expected_version, v_current
      USING ERRCODE = '40001';
  END IF;
  FOR v_link IN SELECT * FROM (VALUES
      ('season_id', 'seasons'), ('tournament_id', 'tournaments'), ('team_id', 'teams')) AS l(col, tbl)
  LOOP
    IF jsonb_typeof(v_game -> v_link.col) = 'string' THEN
      EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %I WHERE user_id = $1 AND id = $2)', v_link.tbl)
        INTO STRICT v_missing USING v_user, v_game ->> v_link.col;
      IF v_missing THEN
        v_game := jsonb_set(v_game, ARRAY[v_link.col], 'null'::jsonb);
      END IF;
    END IF;
  END LOOP;
  v_version := COALESCE(v_current, 0) + 1;
  INSERT INTO games (user_id, id, team_id, season_id, tournament_id, opponent, game_date,
                     home_score, away_score, version)
  SELECT v_user, v_id, r.team_id, r.season_id, r.tournament_id, r.opponent, r.game_date,
         COALESCE(r.home_score, 0), COALESCE(r.away_score, 0), v_version
    FROM jsonb_populate_record(null::games, v_game) r
  ON CONFLICT (user_id, id) DO UPDATE SET
    team_id = EXCLUDED.team_id, season_id = EXCLUDED.season_id,
    tournament_id = EXCLUDED.tournament_id, opponent = EXCLUDED.opponent,
    game_date = EXCLUDED.game_date, home_score = EXCLUDED.home_score,
    away_score = EXCLUDED.away_score, version = EXCLUDED.version, updated_at = now();

  DELETE FROM game_players WHERE user_id = v_user AND game_id = v_id;
  DELETE FROM game_events WHERE user_id = v_user AND game_id = v_id;
  DELETE FROM player_assessments WHERE user_id = v_user AND game_id = v_id;

  FOREACH v_item IN ARRAY COALESCE(p_players, '{}'::jsonb[]) LOOP
    PERFORM _sync_item_id('game_players', v_item);
    INSERT INTO game_players (user_id, id, game_id, player_id, is_starting)
    SELECT v_user, r.id, v_id, r.player_id, COALESCE(r.is_starting, false)
      FROM jsonb_populate_record(null::game_players, v_item - 'user_id' - 'game_id') r;
  END LOOP;
  FOREACH v_item IN ARRAY COALESCE(p_events, '{}'::jsonb[]) LOOP
    PERFORM _sync_item_id('game_events', v_item);
    INSERT INTO game_events (user_id, id, game_id, order_index, event_type, time_seconds)
    SELECT v_user, r.id, v_id, r.order_index, r.event_type, COALESCE(r.time_seconds, 0)
      FROM jsonb_populate_record(null::game_events, v_item - 'user_id' - 'game_id') r;
  END LOOP;
  FOREACH v_item IN ARRAY COALESCE(p_assessments, '{}'::jsonb[]) LOOP
    PERFORM _sync_item_id('player_assessments', v_item);
    INSERT INTO player_assessments (user_id, id, game_id, player_id, rating)
    SELECT v_user, r.id, v_id, r.player_id, r.rating
      FROM jsonb_populate_record(null::player_assessments, v_item - 'user_id' - 'game_id') r;
  END LOOP;
  IF p_tactical IS NOT NULL THEN
    INSERT INTO game_tactical_data (user_id, game_id, data) VALUES (v_user, v_id, p_tactical)
    ON CONFLICT (user_id, game_id) DO UPDATE SET data = EXCLUDED.data;
  ELSE
    DELETE FROM game_tactical_data WHERE user_id = v_user AND game_id = v_id;
  END IF;
  RETURN v_version;
END;
$$;

-- Today's engine: one upsert per operation (what PostgREST's upsert does,
-- as an RPC so the same rules and gate apply).
CREATE FUNCTION upsert_entity(p_type text, p_data jsonb, p_sync_version bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_user uuid := _sync_uid();
  v_id text;
BEGIN
  CASE p_type
  WHEN 'settings' THEN v_id := 'app';
  WHEN 'warmupPlan' THEN v_id := 'default';
  WHEN 'player', 'team', 'season', 'tournament', 'personnel', 'playerAdjustment' THEN
    v_id := _sync_item_id(p_type, p_data);
  ELSE
    RAISE EXCEPTION 'upsert_entity does not take %', p_type USING ERRCODE = '22023';
  END CASE;
  IF _sync_gate(v_user, p_type, v_id, p_sync_version, false) THEN
    PERFORM _sync_upsert(v_user, p_type, p_data);
  END IF;
END;
$$;

CREATE FUNCTION delete_entity(p_type text, p_id text, p_sync_version bigint DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  v_user uuid := _sync_uid();
BEGIN
  IF p_type NOT IN ('player', 'team', 'season', 'tournament', 'personnel',
                    'playerAdjustment', 'game', 'warmupPlan') THEN
    RAISE EXCEPTION 'delete_entity does not take %', p_type USING ERRCODE = '22023';
  END IF;
  IF _sync_gate(v_user, p_type, p_id, p_sync_version, true) THEN
    PERFORM _sync_delete(v_user, p_type, p_id);
  END IF;
END;
$$;

REVOKE ALL ON FUNCTION _sync_uid(), _sync_item_id(text, jsonb),
  _sync_gate(uuid, text, text, bigint, boolean), _sync_upsert(uuid, text, jsonb),
  _sync_delete(uuid, text, text), _sync_roster(uuid, text, jsonb[]) FROM PUBLIC;
REVOKE ALL ON FUNCTION set_team_roster(text, jsonb[], bigint),
  save_game_with_relations(jsonb, jsonb[], jsonb[], jsonb[], jsonb, int, bigint),
  upsert_entity(text, jsonb, bigint), delete_entity(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION set_team_roster(text, jsonb[], bigint),
  save_game_with_relations(jsonb, jsonb[], jsonb[], jsonb[], jsonb, int, bigint),
  upsert_entity(text, jsonb, bigint), delete_entity(text, text, bigint) TO authenticated;
