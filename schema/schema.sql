--
-- PostgreSQL database dump
--



SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: abilitysync; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA abilitysync;


--
-- Name: drizzle; Type: SCHEMA; Schema: -; Owner: -
--

CREATE SCHEMA drizzle;


--
-- Name: blob_name(text); Type: FUNCTION; Schema: abilitysync; Owner: -
--

CREATE FUNCTION abilitysync.blob_name(service_name text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $$ SELECT 'abilities_' || regexp_replace(regexp_replace(service_name, '[^\x01-\uffff]', '__', 'g'), '[^a-zA-Z0-9_]', '_', 'g') $$;


--
-- Name: note_pending_since(); Type: FUNCTION; Schema: abilitysync; Owner: -
--

CREATE FUNCTION abilitysync.note_pending_since() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
  IF NEW.state IN ('pending', 'pending_delete', 'failed')
     AND (TG_OP = 'INSERT' OR OLD.state IN ('synced', 'deleted') OR NEW.pending_since IS NULL) THEN
    NEW.pending_since := now();
  END IF;
  RETURN NEW;
END
$$;


SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: audit_log; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.audit_log (
    id bigint NOT NULL,
    at timestamp with time zone DEFAULT now() NOT NULL,
    key_name text,
    action text NOT NULL,
    params jsonb,
    status integer NOT NULL,
    request_id text NOT NULL,
    host text
);


--
-- Name: audit_log_id_seq; Type: SEQUENCE; Schema: abilitysync; Owner: -
--

CREATE SEQUENCE abilitysync.audit_log_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: audit_log_id_seq; Type: SEQUENCE OWNED BY; Schema: abilitysync; Owner: -
--

ALTER SEQUENCE abilitysync.audit_log_id_seq OWNED BY abilitysync.audit_log.id;


--
-- Name: blobs; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.blobs (
    blob_id text NOT NULL,
    creating_since timestamp with time zone,
    created_at timestamp with time zone
);


--
-- Name: fullset_stage; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.fullset_stage (
    set_id text NOT NULL,
    ord bigint NOT NULL,
    ability_id text NOT NULL,
    vector_id integer NOT NULL,
    ability_name text NOT NULL,
    service_name text NOT NULL,
    description text NOT NULL,
    embedding text NOT NULL,
    metadata text NOT NULL,
    dynamic_header_keys text NOT NULL,
    dynamic_headers_required boolean NOT NULL,
    blob_id text NOT NULL,
    content_hash text NOT NULL,
    staged_at timestamp with time zone DEFAULT now() NOT NULL
);


--
-- Name: reconcile_parts; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.reconcile_parts (
    run_id bigint NOT NULL,
    part integer NOT NULL,
    after_id text,
    upto_id text,
    finished_at timestamp with time zone,
    report jsonb
);


--
-- Name: reconcile_runs; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.reconcile_runs (
    id bigint NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    status text DEFAULT 'running'::text NOT NULL,
    dry_run boolean NOT NULL,
    deep boolean DEFAULT false NOT NULL,
    service_name text,
    report jsonb,
    repairs integer DEFAULT 0 NOT NULL,
    error text,
    host text,
    embedding_model text,
    CONSTRAINT reconcile_runs_status_check CHECK ((status = ANY (ARRAY['running'::text, 'ok'::text, 'failed'::text, 'cancelled'::text])))
);


--
-- Name: reconcile_runs_id_seq; Type: SEQUENCE; Schema: abilitysync; Owner: -
--

CREATE SEQUENCE abilitysync.reconcile_runs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: reconcile_runs_id_seq; Type: SEQUENCE OWNED BY; Schema: abilitysync; Owner: -
--

ALTER SEQUENCE abilitysync.reconcile_runs_id_seq OWNED BY abilitysync.reconcile_runs.id;


--
-- Name: restore_jobs; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.restore_jobs (
    id bigint NOT NULL,
    status text DEFAULT 'running'::text NOT NULL,
    service_name text,
    dry_run boolean DEFAULT false NOT NULL,
    total bigint DEFAULT 0 NOT NULL,
    done bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    cursor text,
    error text,
    host text,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone,
    CONSTRAINT restore_jobs_status_check CHECK ((status = ANY (ARRAY['running'::text, 'done'::text, 'failed'::text, 'interrupted'::text, 'cancelled'::text])))
);


--
-- Name: restore_jobs_id_seq; Type: SEQUENCE; Schema: abilitysync; Owner: -
--

CREATE SEQUENCE abilitysync.restore_jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: restore_jobs_id_seq; Type: SEQUENCE OWNED BY; Schema: abilitysync; Owner: -
--

ALTER SEQUENCE abilitysync.restore_jobs_id_seq OWNED BY abilitysync.restore_jobs.id;


--
-- Name: restore_parts; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.restore_parts (
    job_id bigint NOT NULL,
    part integer NOT NULL,
    after_id text,
    upto_id text,
    cursor text,
    done bigint DEFAULT 0 NOT NULL,
    failed bigint DEFAULT 0 NOT NULL,
    finished_at timestamp with time zone
);


--
-- Name: sync_pause; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.sync_pause (
    id integer DEFAULT 1 NOT NULL,
    paused_at timestamp with time zone DEFAULT now() NOT NULL,
    key_name text,
    reason text,
    request_id text,
    host text,
    CONSTRAINT sync_pause_one_row CHECK ((id = 1))
);


--
-- Name: sync_state; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.sync_state (
    ability_id text NOT NULL,
    blob_id text NOT NULL,
    vector_id integer NOT NULL,
    content_hash text NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    generation bigint DEFAULT 1 NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    next_attempt_at timestamp with time zone DEFAULT now() NOT NULL,
    last_error text,
    synced_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_until timestamp with time zone,
    lease_owner text,
    doubt_until timestamp with time zone,
    pending_since timestamp with time zone,
    CONSTRAINT sync_state_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'synced'::text, 'pending_delete'::text, 'deleted'::text, 'failed'::text])))
);


--
-- Name: vector_ledger; Type: TABLE; Schema: abilitysync; Owner: -
--

CREATE TABLE abilitysync.vector_ledger (
    blob_id text NOT NULL,
    vector_id integer NOT NULL,
    ability_id text NOT NULL,
    first_written_at timestamp with time zone DEFAULT now() NOT NULL,
    last_written_at timestamp with time zone DEFAULT now() NOT NULL,
    deleted_at timestamp with time zone
);


--
-- Name: __drizzle_migrations; Type: TABLE; Schema: drizzle; Owner: -
--

CREATE TABLE drizzle.__drizzle_migrations (
    id integer NOT NULL,
    hash text NOT NULL,
    created_at bigint
);


--
-- Name: __drizzle_migrations_id_seq; Type: SEQUENCE; Schema: drizzle; Owner: -
--

CREATE SEQUENCE drizzle.__drizzle_migrations_id_seq
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


--
-- Name: __drizzle_migrations_id_seq; Type: SEQUENCE OWNED BY; Schema: drizzle; Owner: -
--

ALTER SEQUENCE drizzle.__drizzle_migrations_id_seq OWNED BY drizzle.__drizzle_migrations.id;


--
-- Name: abilities; Type: TABLE; Schema: public; Owner: -
--

CREATE TABLE public.abilities (
    ability_id text NOT NULL,
    vector_id integer NOT NULL,
    ability_name text NOT NULL,
    service_name text NOT NULL,
    description text NOT NULL,
    embedding jsonb NOT NULL,
    dynamic_header_keys jsonb DEFAULT '[]'::jsonb,
    dynamic_headers_required boolean DEFAULT false,
    metadata jsonb DEFAULT '{}'::jsonb,
    created_at timestamp without time zone DEFAULT now(),
    updated_at timestamp without time zone DEFAULT now()
);


--
-- Name: audit_log id; Type: DEFAULT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.audit_log ALTER COLUMN id SET DEFAULT nextval('abilitysync.audit_log_id_seq'::regclass);


--
-- Name: reconcile_runs id; Type: DEFAULT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.reconcile_runs ALTER COLUMN id SET DEFAULT nextval('abilitysync.reconcile_runs_id_seq'::regclass);


--
-- Name: restore_jobs id; Type: DEFAULT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.restore_jobs ALTER COLUMN id SET DEFAULT nextval('abilitysync.restore_jobs_id_seq'::regclass);


--
-- Name: __drizzle_migrations id; Type: DEFAULT; Schema: drizzle; Owner: -
--

ALTER TABLE ONLY drizzle.__drizzle_migrations ALTER COLUMN id SET DEFAULT nextval('drizzle.__drizzle_migrations_id_seq'::regclass);


--
-- Name: audit_log audit_log_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.audit_log
    ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);


--
-- Name: blobs blobs_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.blobs
    ADD CONSTRAINT blobs_pkey PRIMARY KEY (blob_id);


--
-- Name: fullset_stage fullset_stage_set_id_ord_pk; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.fullset_stage
    ADD CONSTRAINT fullset_stage_set_id_ord_pk PRIMARY KEY (set_id, ord);


--
-- Name: reconcile_parts reconcile_parts_run_id_part_pk; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.reconcile_parts
    ADD CONSTRAINT reconcile_parts_run_id_part_pk PRIMARY KEY (run_id, part);


--
-- Name: reconcile_runs reconcile_runs_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.reconcile_runs
    ADD CONSTRAINT reconcile_runs_pkey PRIMARY KEY (id);


--
-- Name: restore_jobs restore_jobs_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.restore_jobs
    ADD CONSTRAINT restore_jobs_pkey PRIMARY KEY (id);


--
-- Name: restore_parts restore_parts_job_id_part_pk; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.restore_parts
    ADD CONSTRAINT restore_parts_job_id_part_pk PRIMARY KEY (job_id, part);


--
-- Name: sync_pause sync_pause_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.sync_pause
    ADD CONSTRAINT sync_pause_pkey PRIMARY KEY (id);


--
-- Name: sync_state sync_state_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.sync_state
    ADD CONSTRAINT sync_state_pkey PRIMARY KEY (ability_id);


--
-- Name: vector_ledger vector_ledger_pkey; Type: CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.vector_ledger
    ADD CONSTRAINT vector_ledger_pkey PRIMARY KEY (blob_id, vector_id);


--
-- Name: __drizzle_migrations __drizzle_migrations_pkey; Type: CONSTRAINT; Schema: drizzle; Owner: -
--

ALTER TABLE ONLY drizzle.__drizzle_migrations
    ADD CONSTRAINT __drizzle_migrations_pkey PRIMARY KEY (id);


--
-- Name: abilities abilities_pkey; Type: CONSTRAINT; Schema: public; Owner: -
--

ALTER TABLE ONLY public.abilities
    ADD CONSTRAINT abilities_pkey PRIMARY KEY (ability_id);


--
-- Name: audit_log_at_idx; Type: INDEX; Schema: abilitysync; Owner: -
--

CREATE INDEX audit_log_at_idx ON abilitysync.audit_log USING btree (at);


--
-- Name: fullset_stage_staged_at_idx; Type: INDEX; Schema: abilitysync; Owner: -
--

CREATE INDEX fullset_stage_staged_at_idx ON abilitysync.fullset_stage USING btree (staged_at);


--
-- Name: sync_state_due_idx; Type: INDEX; Schema: abilitysync; Owner: -
--

CREATE INDEX sync_state_due_idx ON abilitysync.sync_state USING btree (next_attempt_at) WHERE (state = ANY (ARRAY['pending'::text, 'pending_delete'::text]));


--
-- Name: sync_state_state_idx; Type: INDEX; Schema: abilitysync; Owner: -
--

CREATE INDEX sync_state_state_idx ON abilitysync.sync_state USING btree (state);


--
-- Name: vector_ledger_ability_idx; Type: INDEX; Schema: abilitysync; Owner: -
--

CREATE INDEX vector_ledger_ability_idx ON abilitysync.vector_ledger USING btree (ability_id);


--
-- Name: idx_abilities_dynamic_headers; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_abilities_dynamic_headers ON public.abilities USING btree (dynamic_headers_required);


--
-- Name: idx_abilities_service_name; Type: INDEX; Schema: public; Owner: -
--

CREATE INDEX idx_abilities_service_name ON public.abilities USING btree (service_name);


--
-- Name: sync_state sync_state_pending_since; Type: TRIGGER; Schema: abilitysync; Owner: -
--

CREATE TRIGGER sync_state_pending_since BEFORE INSERT OR UPDATE OF state ON abilitysync.sync_state FOR EACH ROW EXECUTE FUNCTION abilitysync.note_pending_since();


--
-- Name: reconcile_parts reconcile_parts_run_id_reconcile_runs_id_fk; Type: FK CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.reconcile_parts
    ADD CONSTRAINT reconcile_parts_run_id_reconcile_runs_id_fk FOREIGN KEY (run_id) REFERENCES abilitysync.reconcile_runs(id) ON DELETE CASCADE;


--
-- Name: restore_parts restore_parts_job_id_restore_jobs_id_fk; Type: FK CONSTRAINT; Schema: abilitysync; Owner: -
--

ALTER TABLE ONLY abilitysync.restore_parts
    ADD CONSTRAINT restore_parts_job_id_restore_jobs_id_fk FOREIGN KEY (job_id) REFERENCES abilitysync.restore_jobs(id) ON DELETE CASCADE;


--
-- PostgreSQL database dump complete
--


