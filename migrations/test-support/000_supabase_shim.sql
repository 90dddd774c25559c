-- TEST ONLY. What Supabase provides and the migrations rely on: the roles
-- `anon` and `authenticated`, and auth.uid(), which Supabase reads from the
-- JWT's subject claim. Here the subject comes from the per-session setting
-- request.jwt.claim.sub (the name PostgREST used for it), so a test sets
--   SELECT set_config('request.jwt.claim.sub', '<uuid>', true);
-- and calls the RPCs as role authenticated. Unset or empty: NULL.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
END;
$$;

CREATE SCHEMA IF NOT EXISTS auth;
GRANT USAGE ON SCHEMA auth TO anon, authenticated;

CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
LANGUAGE sql STABLE AS $$
  SELECT NULLIF(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;

GRANT USAGE ON SCHEMA public TO anon, authenticated;
