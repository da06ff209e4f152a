-- Search: one row per notebook with its title and the text of its cells, a tsvector for
-- full-text search, and a lexicon of indexed words with a trigram index for typos.
-- collab/search.py writes the cell text (from the live document, debounced); the title and
-- the workspace follow the notebooks table through a trigger, so creating, importing and
-- renaming a notebook need nothing else.
--
-- Locks: the indexer never waits for a row lock (it skips rows that are locked and retries),
-- and search_words has one writer at a time (search_words_update, under an advisory lock),
-- so nothing search adds to a create, rename or delete can deadlock it.

CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS fuzzystrmatch;

-- The text search sees words only: code punctuation would otherwise make PostgreSQL's parser
-- read "df.groupby" as one host name and "data/sales.csv" as one file name.
CREATE FUNCTION search_normalize(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$ SELECT regexp_replace(value, '[^[:alnum:]]+', ' ', 'g') $$;

-- The words of a tsvector that are worth correcting a typo towards.
CREATE FUNCTION search_lexicon(value tsvector) RETURNS text[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    AS $$
        SELECT ARRAY(
            SELECT w FROM unnest(tsvector_to_array(value)) AS w
            WHERE length(w) BETWEEN 3 AND 40 AND w ~ '[[:alpha:]]'
        )
    $$;

-- Title words weigh A, cell words B.
CREATE FUNCTION search_document(title text, body text) RETURNS tsvector
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
        SELECT setweight(to_tsvector('simple', search_normalize(coalesce(title, ''))), 'A')
            || setweight(to_tsvector('simple', search_normalize(coalesce(body, ''))), 'B')
    $$;

CREATE TABLE notebook_search (
    notebook_id   uuid PRIMARY KEY REFERENCES notebooks (id) ON DELETE CASCADE,
    workspace_id  uuid NOT NULL,  -- notebooks.workspace_id, kept by the trigger below
    title         text NOT NULL,
    -- Every cell's source, in order, separated by U+001E; cell_ids[i] is cell i's id.
    body          text NOT NULL DEFAULT '',
    cell_ids      text[] NOT NULL DEFAULT '{}',
    -- The document seq the body reflects (every update up to it); -1: never indexed.
    indexed_seq   bigint NOT NULL DEFAULT -1,
    indexed_at    timestamptz,
    -- When the title or the text last changed (the tie-breaker between equal matches).
    changed_at    timestamptz NOT NULL DEFAULT now(),
    -- search_document(title, body) and the title's own, set when either changes.
    tsv           tsvector NOT NULL DEFAULT '',
    title_tsv     tsvector NOT NULL DEFAULT '',
    -- The words this row counts for in search_words, and whether tsv has moved since.
    lexicon       text[] NOT NULL DEFAULT '{}',
    lexicon_due   boolean NOT NULL DEFAULT true
);
-- Keep the heap small (finding candidates reads a row per match): everything wide goes to
-- TOAST, except the title's tsvector, which ranking reads for every candidate.
ALTER TABLE notebook_search SET (toast_tuple_target = 128);
ALTER TABLE notebook_search ALTER COLUMN title_tsv SET STORAGE PLAIN;
CREATE INDEX notebook_search_tsv_idx ON notebook_search USING gin (tsv);
CREATE INDEX notebook_search_title_idx ON notebook_search USING gin (title_tsv);
CREATE INDEX notebook_search_workspace_idx ON notebook_search (workspace_id);
CREATE INDEX notebook_search_unindexed_idx ON notebook_search (notebook_id) WHERE indexed_seq < 0;
CREATE INDEX notebook_search_lexicon_idx ON notebook_search (notebook_id) WHERE lexicon_due;

-- Every indexed word with the number of notebooks that hold it: typo candidates come from a
-- trigram nearest-neighbour scan of this (small) table, never of the notebooks' text.
CREATE TABLE search_words (
    word       text COLLATE "C" PRIMARY KEY,
    notebooks  integer NOT NULL
);
CREATE INDEX search_words_trgm_idx ON search_words USING gist (word gist_trgm_ops);

-- The words of deleted rows, to uncount.
CREATE TABLE search_words_released (
    id     bigserial PRIMARY KEY,
    words  text[] NOT NULL
);

CREATE FUNCTION notebook_search_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.title IS DISTINCT FROM OLD.title
            OR NEW.body IS DISTINCT FROM OLD.body THEN
        NEW.tsv := search_document(NEW.title, NEW.body);
        NEW.title_tsv := to_tsvector('simple', search_normalize(NEW.title));
        NEW.changed_at := now();
        NEW.lexicon_due := true;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER notebook_search_tsv BEFORE INSERT OR UPDATE ON notebook_search
    FOR EACH ROW EXECUTE FUNCTION notebook_search_tsv();

CREATE FUNCTION notebook_search_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(OLD.lexicon) > 0 THEN
        INSERT INTO search_words_released (words) VALUES (OLD.lexicon);
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER notebook_search_released AFTER DELETE ON notebook_search
    FOR EACH ROW EXECUTE FUNCTION notebook_search_released();

-- Bring search_words up to date with up to ``batch`` changed rows and released word lists.
-- One writer at a time (another caller gets -1 and leaves it to that one); rows being
-- written are skipped, not waited for. Returns the rows and lists done.
CREATE FUNCTION search_words_update(batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    done integer;
    gone text[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(1475027329) THEN
        RETURN -1;
    END IF;
    WITH due AS (
        SELECT notebook_id, lexicon AS before, search_lexicon(tsv) AS after
        FROM notebook_search WHERE lexicon_due
        ORDER BY notebook_id LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), released AS (
        DELETE FROM search_words_released
        WHERE id IN (SELECT id FROM search_words_released ORDER BY id LIMIT batch)
        RETURNING words
    ), delta AS (
        SELECT word, sum(d)::integer AS d FROM (
            SELECT added.word, 1 AS d FROM due, LATERAL (
                SELECT unnest(due.after) EXCEPT SELECT unnest(due.before)) AS added (word)
            UNION ALL
            SELECT removed.word, -1 FROM due, LATERAL (
                SELECT unnest(due.before) EXCEPT SELECT unnest(due.after)) AS removed (word)
            UNION ALL
            SELECT unnest(words), -1 FROM released
        ) AS changes
        GROUP BY word HAVING sum(d) <> 0
    ), counted AS (
        INSERT INTO search_words AS s (word, notebooks)
        SELECT word, d FROM delta ORDER BY word
        ON CONFLICT (word) DO UPDATE SET notebooks = s.notebooks + EXCLUDED.notebooks
        RETURNING s.word, s.notebooks
    ), marked AS (
        UPDATE notebook_search ns SET lexicon = due.after, lexicon_due = false
        FROM due WHERE ns.notebook_id = due.notebook_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM marked) + (SELECT count(*) FROM released),
           ARRAY(SELECT word FROM counted WHERE notebooks <= 0)
    INTO done, gone;
    DELETE FROM search_words WHERE word = ANY(gone) AND notebooks <= 0;
    RETURN done;
END $$;

-- Titles and workspaces follow the catalog; a new notebook's row waits for its cells
-- (indexed_seq -1), which the indexer picks up within a second.
CREATE FUNCTION notebook_search_catalog() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notebook_search (notebook_id, workspace_id, title)
    VALUES (NEW.id, NEW.workspace_id, NEW.title)
    ON CONFLICT (notebook_id) DO UPDATE
        SET workspace_id = EXCLUDED.workspace_id, title = EXCLUDED.title;
    RETURN NULL;
END $$;

CREATE TRIGGER notebooks_search AFTER INSERT OR UPDATE OF title, workspace_id ON notebooks
    FOR EACH ROW EXECUTE FUNCTION notebook_search_catalog();

-- The best ``wanted`` notebooks ``viewer`` may see that match: those of a workspace they are
-- a member of and those granted to them; a guest (in_workspace, and in_notebook for a
-- notebook link, from their share link, which is their access) sees exactly what the link
-- covers. Candidates come from the GIN index, which
-- answers without reading any notebook's tsvector (a sequential scan, the planner's choice
-- for a common word, reads every one: hence enable_seqscan off); when more than
-- ``candidates`` match, title matches and then the most recently changed are ranked.
CREATE FUNCTION search_notebooks(
    match tsquery,        -- every term, as a prefix or as one of its typo candidates
    exact tsquery,        -- any term as typed
    only_titles boolean,  -- a query of single letters: titles alone
    viewer uuid,
    in_workspace uuid,
    in_notebook uuid,
    wanted integer,
    candidates integer
) RETURNS TABLE (found uuid, score double precision)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off
AS $$
BEGIN
    IF only_titles THEN
        RETURN QUERY
        SELECT ns.notebook_id, ts_rank(ns.title_tsv, match)::double precision
        FROM notebook_search ns
        WHERE ns.title_tsv @@ match
          AND (in_workspace IS NOT NULL OR in_notebook IS NOT NULL
               OR ns.workspace_id IN (SELECT m.workspace_id FROM workspace_members m
                                      WHERE m.user_id = viewer)
               OR ns.notebook_id IN (SELECT g.notebook_id FROM notebook_grants g
                                     WHERE g.user_id = viewer))
          AND (in_workspace IS NULL OR ns.workspace_id = in_workspace)
          AND (in_notebook IS NULL OR ns.notebook_id = in_notebook)
        ORDER BY 2 DESC, ns.changed_at DESC, ns.notebook_id
        LIMIT wanted;
        RETURN;
    END IF;
    RETURN QUERY
    WITH hits AS (
        SELECT ns.notebook_id, ns.title_tsv @@ match AS in_title, ns.changed_at
        FROM notebook_search ns
        WHERE ns.tsv @@ match
          AND (in_workspace IS NOT NULL OR in_notebook IS NOT NULL
               OR ns.workspace_id IN (SELECT m.workspace_id FROM workspace_members m
                                      WHERE m.user_id = viewer)
               OR ns.notebook_id IN (SELECT g.notebook_id FROM notebook_grants g
                                     WHERE g.user_id = viewer))
          AND (in_workspace IS NULL OR ns.workspace_id = in_workspace)
          AND (in_notebook IS NULL OR ns.notebook_id = in_notebook)
        ORDER BY in_title DESC, ns.changed_at DESC
        LIMIT candidates
    )
    SELECT h.notebook_id,
           r.by_match + r.by_exact
           + CASE WHEN r.by_exact > 0 THEN 0.25 ELSE 0 END
           + CASE WHEN h.in_title THEN 0.5 ELSE 0 END
    FROM hits h
    JOIN notebook_search ns ON ns.notebook_id = h.notebook_id
    CROSS JOIN LATERAL (
        SELECT ts_rank('{0.1, 0.2, 0.4, 1.0}', ns.tsv, match, 1)::double precision AS by_match,
               ts_rank('{0.1, 0.2, 0.4, 1.0}', ns.tsv, exact, 1)::double precision AS by_exact
    ) AS r
    ORDER BY 2 DESC, h.changed_at DESC, h.notebook_id
    LIMIT wanted;
END $$;

-- Notebooks that exist already are indexed by the first server that starts.
INSERT INTO notebook_search (notebook_id, workspace_id, title)
SELECT id, workspace_id, title FROM notebooks;
