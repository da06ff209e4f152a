-- Typo candidates come only from words the caller may see (issue 11, item 3).
--
-- 021 kept one lexicon of every indexed word on the server, and a query's typo candidates
-- (and whether it got any: only when no indexed word starts with the term) came from it, so
-- an answer depended on notebooks the caller cannot see: a word of a private notebook of
-- another workspace could be read letter by letter through which queries found typo matches.
-- Now the lexicon is kept per workspace, and collab.search draws both from the caller's
-- share only: the lexicons of the workspaces they are a member of, and, for a notebook they
-- see alone (a grant, a notebook link), that notebook's own words (notebook_search.lexicon),
-- never the rest of its workspace.
--
-- Candidates are the caller's words within the allowed edits that keep the start or the end
-- of the term (see _TERMS_SQL in collab/search.py): ranges of a workspace's words and of
-- their reversals, not a nearest-neighbour scan of everyone's words (whose cut-off and ties
-- would depend on words the caller cannot see), so the trigram index is gone.

DROP TABLE search_words;
CREATE TABLE search_words (
    workspace_id  uuid NOT NULL,
    word          text COLLATE "C" NOT NULL,
    -- Notebooks of the workspace whose lexicon holds the word.
    notebooks     integer NOT NULL,
    PRIMARY KEY (workspace_id, word)
);
-- Typo candidates by their end: a workspace's words, reversed ("C" collation, as the key).
CREATE INDEX search_words_reverse_idx ON search_words (workspace_id, reverse(word));

-- The workspace a row's lexicon is counted in (NULL: not counted yet).
ALTER TABLE notebook_search ADD COLUMN lexicon_workspace uuid;

-- Released word lists say where they were counted. Rebuilt below, so old lists can go.
TRUNCATE search_words_released;
ALTER TABLE search_words_released ADD COLUMN workspace_id uuid NOT NULL;

CREATE OR REPLACE FUNCTION notebook_search_tsv() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.title IS DISTINCT FROM OLD.title
            OR NEW.body IS DISTINCT FROM OLD.body THEN
        NEW.tsv := search_document(NEW.title, NEW.body);
        NEW.title_tsv := to_tsvector('simple', search_normalize(NEW.title));
        NEW.changed_at := now();
        NEW.lexicon_due := true;
    END IF;
    -- A notebook that moves takes its words to the other workspace's lexicon.
    IF TG_OP = 'UPDATE' AND NEW.workspace_id IS DISTINCT FROM OLD.workspace_id THEN
        NEW.lexicon_due := true;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION notebook_search_released() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF cardinality(OLD.lexicon) > 0 AND OLD.lexicon_workspace IS NOT NULL THEN
        INSERT INTO search_words_released (workspace_id, words)
        VALUES (OLD.lexicon_workspace, OLD.lexicon);
    END IF;
    RETURN NULL;
END $$;

-- Bring search_words up to date with up to ``batch`` changed rows and released word lists.
-- One writer at a time (another caller gets -1 and leaves it to that one); rows being
-- written are skipped, not waited for. Returns the rows and lists done.
CREATE OR REPLACE FUNCTION search_words_update(batch integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    done integer;
    gone_workspaces uuid[];
    gone_words text[];
BEGIN
    IF NOT pg_try_advisory_xact_lock(1475027329) THEN
        RETURN -1;
    END IF;
    WITH due AS (
        SELECT notebook_id, workspace_id, lexicon_workspace, lexicon AS before,
               search_lexicon(tsv) AS after
        FROM notebook_search WHERE lexicon_due
        ORDER BY notebook_id LIMIT batch
        FOR UPDATE SKIP LOCKED
    ), released AS (
        DELETE FROM search_words_released
        WHERE id IN (SELECT id FROM search_words_released ORDER BY id LIMIT batch)
        RETURNING workspace_id, words
    ), delta AS (
        -- Words of a row (and of a list) are distinct: +1 for each word counted now, -1 for
        -- each counted before (where it was counted); what did not change sums to 0.
        SELECT workspace_id, word, sum(d)::integer AS d FROM (
            SELECT due.workspace_id, w, 1 FROM due, unnest(due.after) AS w
            UNION ALL
            SELECT due.lexicon_workspace, w, -1 FROM due, unnest(due.before) AS w
            WHERE due.lexicon_workspace IS NOT NULL
            UNION ALL
            SELECT released.workspace_id, w, -1 FROM released, unnest(released.words) AS w
        ) AS changes (workspace_id, word, d)
        GROUP BY workspace_id, word HAVING sum(d) <> 0
    ), counted AS (
        INSERT INTO search_words AS s (workspace_id, word, notebooks)
        SELECT workspace_id, word, d FROM delta ORDER BY workspace_id, word
        ON CONFLICT (workspace_id, word) DO UPDATE SET notebooks = s.notebooks + EXCLUDED.notebooks
        RETURNING s.workspace_id, s.word, s.notebooks
    ), marked AS (
        UPDATE notebook_search ns
        SET lexicon = due.after, lexicon_workspace = due.workspace_id, lexicon_due = false
        FROM due WHERE ns.notebook_id = due.notebook_id
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM marked) + (SELECT count(*) FROM released),
           ARRAY(SELECT workspace_id FROM counted WHERE notebooks <= 0 ORDER BY workspace_id, word),
           ARRAY(SELECT word FROM counted WHERE notebooks <= 0 ORDER BY workspace_id, word)
    INTO done, gone_workspaces, gone_words;
    DELETE FROM search_words s
    USING unnest(gone_workspaces, gone_words) AS g (workspace_id, word)
    WHERE s.workspace_id = g.workspace_id AND s.word = g.word AND s.notebooks <= 0;
    RETURN done;
END $$;

-- Count every row's words in its workspace.
UPDATE notebook_search
SET lexicon = search_lexicon(tsv), lexicon_workspace = workspace_id, lexicon_due = false;
INSERT INTO search_words (workspace_id, word, notebooks)
SELECT workspace_id, w, count(*) FROM notebook_search, unnest(lexicon) AS w
GROUP BY workspace_id, w;
