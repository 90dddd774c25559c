-- PR 1 of the plan: bulk_sync_entities. Accepts per-type arrays, settings,
-- warmup plan, rosters, adjustments and delete lists, and applies them in
-- one transaction: all or nothing. Upserts run parents first (players;
-- teams, seasons, tournaments, personnel; settings, warmup plan; rosters,
-- adjustments), then deletes run children first (adjustments, warmup plan,
-- personnel, tournaments, seasons, teams, players), as the plan's section 4
-- asks ("deletes AFTER creates/updates").
--
-- Hardened additions, behind optional parameters (NULL keeps the plan's
-- semantics exactly):
-- - p_batch_id: claimed in sync_batches first and recorded with the result
--   in the same transaction; a replay returns the stored result with
--   "replayed": true and changes nothing, and a duplicate arriving while the
--   first call runs waits for it (then replays, or applies if it rolled
--   back); a versioned re-send may carry fewer versions than the call that
--   claimed the id, never another one (22023);
-- - p_versions: [{"entityType", "id", "version"}]: the version gate skips
--   stale writes and deletes leave tombstones.
-- Always: a size limit per call (54000), malformed items rejected (22023).

CREATE FUNCTION bulk_sync_entities(
  p_players jsonb[] DEFAULT NULL,
  p_teams jsonb[] DEFAULT NULL,
  p_seasons jsonb[] DEFAULT NULL,
  p_tournaments jsonb[] DEFAULT NULL,
  p_personnel jsonb[] DEFAULT NULL,
  p_settings jsonb DEFAULT NULL,
  p_warmup_plan jsonb DEFAULT NULL,
  p_team_rosters jsonb[] DEFAULT NULL,      -- [{teamId, roster: [...]}]
  p_player_adjustments jsonb[] DEFAULT NULL,
  p_delete_player_ids text[] DEFAULT NULL,
  p_delete_team_ids text[] DEFAULT NULL,
  p_delete_season_ids text[] DEFAULT NULL,
  p_delete_tournament_ids text[] DEFAULT NULL,
  p_delete_personnel_ids text[] DEFAULT NULL,
  p_delete_warmup_plan boolean DEFAULT false,
  p_delete_player_adjustment_ids text[] DEFAULT NULL,
  p_batch_id text DEFAULT NULL,
  p_versions jsonb DEFAULT NULL
)
RETURNS jsonb
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = public, pg_temp
AS $$
DECLARE
  v_user uuid := _sync_uid();
  v_result jsonb := '{}';
  v_stored jsonb;
  v_claimed jsonb;
  v_item jsonb;
  v_id text;
  v_count int;
  v_skipped int := 0;
  v_total int;
  v_spec record;
  v_roster jsonb[];
BEGIN
  -- Size limit: one call carries at most 500 operations.
  v_total := COALESCE(array_length(p_players, 1), 0) + COALESCE(array_length(p_teams, 1), 0)
    + COALESCE(array_length(p_seasons, 1), 0) + COALESCE(array_length(p_tournaments, 1), 0)
    + COALESCE(array_length(p_personnel, 1), 0)
    + CASE WHEN p_settings IS NULL THEN 0 ELSE 1 END
    + CASE WHEN p_warmup_plan IS NULL THEN 0 ELSE 1 END
    + COALESCE(array_length(p_team_rosters, 1), 0)
    + COALESCE(array_length(p_player_adjustments, 1), 0)
    + COALESCE(array_length(p_delete_player_ids, 1), 0) + COALESCE(array_length(p_delete_team_ids, 1), 0)
    + COALESCE(array_length(p_delete_season_ids, 1), 0)
    + COALESCE(array_length(p_delete_tournament_ids, 1), 0)
    + COALESCE(array_length(p_delete_personnel_ids, 1), 0)
    + CASE WHEN COALESCE(p_delete_warmup_plan, false) THEN 1 ELSE 0 END
    + COALESCE(array_length(p_delete_player_adjustment_ids, 1), 0);
  IF v_total > 500 THEN
    RAISE EXCEPTION 'payload too large: % operations (max 500)', v_total USING ERRCODE = '54000';
  END IF;
  IF p_versions IS NOT NULL AND jsonb_typeof(p_versions) <> 'array' THEN
    RAISE EXCEPTION 'malformed versions' USING ERRCODE = '22023';
  END IF;

  -- Exactly-once replay. The batch id is claimed before anything is
  -- applied: a second call with the same id (a retry after a client
  -- timeout, a restarted app) that arrives while the first still runs waits
  -- here on the first one's uncommitted claim. If the first commits, the
  -- claim conflicts and the second answers the stored result; if it rolls
  -- back, the second claims the id and applies. Checking for the record
  -- first and writing it last let the second miss it, apply behind the
  -- first one's row locks, and fail on the primary key (23505) for a batch
  -- that had committed. Each statement of this VOLATILE function reads a
  -- fresh snapshot (READ COMMITTED), so the SELECT sees the first's commit.
  IF p_batch_id IS NOT NULL THEN
    INSERT INTO sync_batches (user_id, batch_id, result, versions)
      VALUES (v_user, p_batch_id, 'null'::jsonb, p_versions)
      ON CONFLICT (user_id, batch_id) DO NOTHING;
    IF NOT FOUND THEN
      SELECT result, versions INTO v_stored, v_claimed
        FROM sync_batches WHERE user_id = v_user AND batch_id = p_batch_id;
      -- A batch id names one request's content. A re-send may carry fewer
      -- operations (one merged since left the batch), never another
      -- version: answering that from the record would acknowledge a write
      -- that was never applied. Array containment: every element of the
      -- re-send's versions is one of the claimant's.
      IF v_claimed IS NOT NULL AND p_versions IS NOT NULL AND NOT v_claimed @> p_versions THEN
        RAISE EXCEPTION 'batch % re-used for operations it did not carry', p_batch_id
          USING ERRCODE = '22023';
      END IF;
      RETURN v_stored || '{"replayed": true}'::jsonb;
    END IF;
  END IF;

  -- Upserts of plain entity arrays, parents first.
  FOR v_spec IN SELECT * FROM (VALUES
      (1, 'player', 'players'), (2, 'team', 'teams'), (3, 'season', 'seasons'),
      (4, 'tournament', 'tournaments'), (5, 'personnel', 'personnel')) AS s(ord, typ, name)
    ORDER BY ord
  LOOP
    DECLARE
      v_items jsonb[] := CASE v_spec.typ
        WHEN 'player' THEN p_players WHEN 'team' THEN p_teams WHEN 'season' THEN p_seasons
        WHEN 'tournament' THEN p_tournaments ELSE p_personnel END;
    BEGIN
      IF COALESCE(array_length(v_items, 1), 0) > 0 THEN
        v_count := 0;
        FOREACH v_item IN ARRAY v_items LOOP
          v_id := _sync_item_id(v_spec.typ, v_item);
          IF _sync_gate(v_user, v_spec.typ, v_id, _sync_version(p_versions, v_spec.typ, v_id), false) THEN
            PERFORM _sync_upsert(v_user, v_spec.typ, v_item);
            v_count := v_count + 1;
          ELSE
            v_skipped := v_skipped + 1;
          END IF;
        END LOOP;
        v_result := v_result || jsonb_build_object(v_spec.name, v_count);
      END IF;
    END;
  END LOOP;

  IF p_settings IS NOT NULL THEN
    IF _sync_gate(v_user, 'settings', 'app', _sync_version(p_versions, 'settings', 'app'), false) THEN
      PERFORM _sync_upsert(v_user, 'settings', p_settings);
      v_result := v_result || '{"settings": 1}';
    ELSE
      v_skipped := v_skipped + 1;
      v_result := v_result || '{"settings": 0}';
    END IF;
  END IF;

  IF p_warmup_plan IS NOT NULL THEN
    IF _sync_gate(v_user, 'warmupPlan', 'default', _sync_version(p_versions, 'warmupPlan', 'default'), false) THEN
      PERFORM _sync_upsert(v_user, 'warmupPlan', p_warmup_plan);
      v_result := v_result || '{"warmup_plan": 1}';
    ELSE
      v_skipped := v_skipped + 1;
      v_result := v_result || '{"warmup_plan": 0}';
    END IF;
  END IF;

  -- Rosters (set_team_roster for each: the team must exist).
  IF COALESCE(array_length(p_team_rosters, 1), 0) > 0 THEN
    v_count := 0;
    FOREACH v_item IN ARRAY p_team_rosters LOOP
      IF jsonb_typeof(v_item) IS DISTINCT FROM 'object'
         OR jsonb_typeof(v_item -> 'teamId') IS DISTINCT FROM 'string' THEN
        RAISE EXCEPTION 'malformed teamRoster item' USING ERRCODE = '22023';
      END IF;
      v_id := v_item ->> 'teamId';
      IF jsonb_typeof(v_item -> 'roster') = 'array' THEN
        SELECT COALESCE(array_agg(e), '{}') INTO v_roster FROM jsonb_array_elements(v_item -> 'roster') e;
      ELSE
        v_roster := '{}';
      END IF;
      IF _sync_gate(v_user, 'teamRoster', v_id, _sync_version(p_versions, 'teamRoster', v_id), false) THEN
        PERFORM _sync_roster(v_user, v_id, v_roster);
        v_count := v_count + 1;
      ELSE
        v_skipped := v_skipped + 1;
      END IF;
    END LOOP;
    v_result := v_result || jsonb_build_object('team_rosters', v_count);
  END IF;

  IF COALESCE(array_length(p_player_adjustments, 1), 0) > 0 THEN
    v_count := 0;
    FOREACH v_item IN ARRAY p_player_adjustments LOOP
      v_id := _sync_item_id('playerAdjustment', v_item);
      IF _sync_gate(v_user, 'playerAdjustment', v_id,
                    _sync_version(p_versions, 'playerAdjustment', v_id), false) THEN
        PERFORM _sync_upsert(v_user, 'playerAdjustment', v_item);
        v_count := v_count + 1;
      ELSE
        v_skipped := v_skipped + 1;
      END IF;
    END LOOP;
    v_result := v_result || jsonb_build_object('player_adjustments', v_count);
  END IF;

  -- Deletes, after every upsert, children before parents.
  FOR v_spec IN SELECT * FROM (VALUES
      (1, 'playerAdjustment', 'player_adjustments'), (2, 'warmupPlan', 'warmup_plan'),
      (3, 'personnel', 'personnel'), (4, 'tournament', 'tournaments'),
      (5, 'season', 'seasons'), (6, 'team', 'teams'), (7, 'player', 'players')) AS s(ord, typ, name)
    ORDER BY ord
  LOOP
    DECLARE
      v_ids text[] := CASE v_spec.typ
        WHEN 'playerAdjustment' THEN p_delete_player_adjustment_ids
        WHEN 'warmupPlan' THEN CASE WHEN COALESCE(p_delete_warmup_plan, false)
                                    THEN ARRAY['default'] ELSE NULL END
        WHEN 'personnel' THEN p_delete_personnel_ids WHEN 'tournament' THEN p_delete_tournament_ids
        WHEN 'season' THEN p_delete_season_ids WHEN 'team' THEN p_delete_team_ids
        ELSE p_delete_player_ids END;
    BEGIN
      IF COALESCE(array_length(v_ids, 1), 0) > 0 THEN
        v_count := 0;
        FOREACH v_id IN ARRAY v_ids LOOP
          IF _sync_gate(v_user, v_spec.typ, v_id, _sync_version(p_versions, v_spec.typ, v_id), true) THEN
            IF _sync_delete(v_user, v_spec.typ, v_id) THEN
              v_count := v_count + 1;
            END IF;
          ELSE
            v_skipped := v_skipped + 1;
          END IF;
        END LOOP;
        v_result := v_result || jsonb_build_object('deleted_' || v_spec.name, v_count);
      END IF;
    END;
  END LOOP;

  IF p_versions IS NOT NULL THEN
    v_result := v_result || jsonb_build_object('skipped_stale', v_skipped);
  END IF;
  IF p_batch_id IS NOT NULL THEN
    -- The claim becomes the record, in this transaction: no other call can
    -- see the placeholder.
    UPDATE sync_batches SET result = v_result WHERE user_id = v_user AND batch_id = p_batch_id;
  END IF;
  RETURN v_result;
END;
$$;

-- The version an entity carries in p_versions, or NULL (no gate).
CREATE FUNCTION _sync_version(p_versions jsonb, p_type text, p_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE SET search_path = public, pg_temp AS $$
  SELECT (e ->> 'version')::bigint
    FROM jsonb_array_elements(COALESCE(p_versions, '[]'::jsonb)) e
   WHERE e ->> 'entityType' = p_type AND e ->> 'id' = p_id
   LIMIT 1
$$;

REVOKE ALL ON FUNCTION _sync_version(jsonb, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION bulk_sync_entities(jsonb[], jsonb[], jsonb[], jsonb[], jsonb[], jsonb, jsonb,
  jsonb[], jsonb[], text[], text[], text[], text[], text[], boolean, text[], text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bulk_sync_entities(jsonb[], jsonb[], jsonb[], jsonb[], jsonb[], jsonb, jsonb,
  jsonb[], jsonb[], text[], text[], text[], text[], text[], boolean, text[], text, jsonb) TO authenticated;
