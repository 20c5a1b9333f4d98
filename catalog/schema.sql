-- The Loop Farm catalog: every loop, its labels, its checks and its reviews.
-- Applied by farm.catalog on every open (each statement is idempotent). Paths are relative
-- to the catalog root (the directory holding catalog.db). Times are UTC ISO 8601 strings.
-- Nothing is ever deleted: status changes, and every human decision is a row in reviews.

-- A labelled MIDI template (templates/<id>/template.json beside its part MIDI files).
CREATE TABLE IF NOT EXISTS templates (
    id TEXT PRIMARY KEY,                -- content address of the template
    style TEXT NOT NULL,                -- rule set name (templates/<style>.toml)
    seed INTEGER NOT NULL,
    key TEXT NOT NULL,                  -- short key name: Am, C, Ddor, Ahm
    key_tonic TEXT NOT NULL,            -- A, F#, Bb
    key_mode TEXT NOT NULL,             -- major, minor, harmonic_minor, dorian
    bpm REAL NOT NULL,                  -- quarter notes per minute
    meter TEXT NOT NULL,                -- 4/4, 3/4, 6/8
    bars INTEGER NOT NULL,
    ppq INTEGER NOT NULL,
    progression TEXT NOT NULL,          -- chord symbols bar by bar, space separated
    romans TEXT NOT NULL,               -- roman numerals bar by bar, space separated
    parts TEXT NOT NULL,                -- JSON list of part names
    path TEXT NOT NULL,                 -- templates/<id>
    generator_version TEXT NOT NULL,
    created_at TEXT NOT NULL,
    batch_id TEXT
);

-- A synth patch as it was when a loop was rendered (a patch edited later is a new row).
CREATE TABLE IF NOT EXISTS patches (
    content_hash TEXT PRIMARY KEY,      -- sha256 of the patch TOML (+ its .RfxChain)
    name TEXT NOT NULL,
    roles TEXT NOT NULL,                -- JSON list: chords, pad, keys, bass, lead, arp, drums
    target_lufs REAL NOT NULL,          -- LUFS the renderer normalises to
    description TEXT,
    first_seen TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS patches_name ON patches(name);

-- One audio file: a rendered part of a template, or a permutation of another loop.
CREATE TABLE IF NOT EXISTS loops (
    id TEXT PRIMARY KEY,                -- content address of the loop's inputs
    name TEXT NOT NULL,                 -- file stem: LF_<bpm>_<part>_<patch>_<key>_<id>
    template_id TEXT REFERENCES templates(id),
    parent_id TEXT REFERENCES loops(id),-- NULL for rendered originals
    operation TEXT NOT NULL DEFAULT 'render', -- render | splice | pitch | stretch | repatch
    params TEXT,                        -- JSON parameters of the operation
    style TEXT NOT NULL,
    part TEXT NOT NULL,                 -- chords, bass, arp, melody, drums
    role TEXT NOT NULL,                 -- the patch role playing the part
    patch TEXT NOT NULL,
    patch_hash TEXT,
    key TEXT NOT NULL,                  -- short key name: Am, C, Ddor
    key_tonic TEXT NOT NULL,
    key_mode TEXT NOT NULL,
    tonic_pc INTEGER NOT NULL,          -- 0-11, C = 0
    camelot TEXT NOT NULL,              -- Camelot wheel code: 8A = A minor, 8B = C major
    bpm REAL NOT NULL,
    meter TEXT NOT NULL,
    bars INTEGER NOT NULL,
    progression TEXT NOT NULL,          -- chord symbols bar by bar, space separated
    renderer TEXT NOT NULL,
    renderer_version TEXT NOT NULL,
    format TEXT NOT NULL,               -- flac24, wav24, wav32f (farm.audio.FORMATS)
    sample_rate INTEGER NOT NULL,       -- Hz
    channels INTEGER NOT NULL,
    samples INTEGER NOT NULL,           -- frames per channel
    duration_s REAL NOT NULL,
    lufs REAL,                          -- integrated loudness, LUFS (ITU-R BS.1770)
    true_peak_db REAL,                  -- dBTP
    rms_db REAL,                        -- dBFS over both channels
    onsets INTEGER,                     -- spectral-flux onsets in the loop
    centroid_hz REAL,                   -- mean spectral centroid, Hz
    path TEXT NOT NULL UNIQUE,          -- audio file
    sidecar TEXT NOT NULL,              -- JSON sidecar beside it
    midi TEXT,                          -- the part's MIDI file, when the loop has one
    sha256 TEXT NOT NULL,               -- of the audio file bytes
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    reject_reason TEXT,
    tags TEXT NOT NULL DEFAULT '',      -- space separated words for full-text search
    created_at TEXT NOT NULL,
    batch_id TEXT,
    machine_status TEXT,                -- the machine checks' verdict when catalogued: pending | rejected
    fingerprint TEXT,                   -- onset fingerprint (JSON): spectral flux in low/mid/high bands, 12 steps per beat, and band energy shares
    fp_packed BLOB,                     -- the same fingerprint packed for farm match (farm.fingerprint.pack)
    harmony TEXT                        -- farm match's copy of the chords: "[pitch classes]|bass_pc" per bar, ";" between
);
CREATE INDEX IF NOT EXISTS loops_key_bpm ON loops(key, bpm);
CREATE INDEX IF NOT EXISTS loops_camelot_bpm ON loops(camelot, bpm);
CREATE INDEX IF NOT EXISTS loops_bpm ON loops(bpm);
CREATE INDEX IF NOT EXISTS loops_role_key_bpm ON loops(role, key, bpm);
CREATE INDEX IF NOT EXISTS loops_patch ON loops(patch);
CREATE INDEX IF NOT EXISTS loops_status_created ON loops(status, created_at);
CREATE INDEX IF NOT EXISTS loops_template ON loops(template_id);
CREATE INDEX IF NOT EXISTS loops_parent ON loops(parent_id);
CREATE INDEX IF NOT EXISTS loops_batch ON loops(batch_id);

-- The chord under each bar of each loop: "every loop with Dm7 in bar 3" is plain SQL.
CREATE TABLE IF NOT EXISTS chords (
    loop_id TEXT NOT NULL REFERENCES loops(id),
    bar INTEGER NOT NULL,               -- from 1
    symbol TEXT NOT NULL,               -- Am7, Cmaj7, G/B
    roman TEXT NOT NULL,                -- i7, IIImaj7, V6
    root_pc INTEGER NOT NULL,
    bass_pc INTEGER NOT NULL,
    pitch_classes TEXT NOT NULL,        -- JSON list, chord-tone order from the root
    start_s REAL NOT NULL,              -- bar start in the loop, seconds
    end_s REAL NOT NULL,
    PRIMARY KEY (loop_id, bar)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chords_symbol_bar ON chords(symbol, bar);
CREATE INDEX IF NOT EXISTS chords_roman_bar ON chords(roman, bar);

-- A batch is a job of tasks; a task makes one output (a render task: one loop).
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('running', 'done')),
    config TEXT NOT NULL,               -- JSON of the batch configuration as run
    config_file TEXT,
    backend TEXT NOT NULL,
    workers INTEGER NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    resumed INTEGER NOT NULL DEFAULT 0  -- times the batch was resumed
);

CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY,
    batch_id TEXT NOT NULL REFERENCES batches(id),
    stage TEXT NOT NULL,                -- render, ...
    output_id TEXT NOT NULL,            -- the loop id the task makes
    params TEXT NOT NULL,               -- JSON the worker needs
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'done', 'failed', 'skipped')),
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,                         -- error of the last failed attempt, one line (kept when a retry succeeds)
    log TEXT,                           -- excerpt of the worker log of the last attempt
    worker_pid INTEGER,
    started_at TEXT,
    finished_at TEXT,
    seconds REAL,                       -- wall time of the last attempt
    UNIQUE (batch_id, stage, output_id)
);
CREATE INDEX IF NOT EXISTS tasks_batch_status ON tasks(batch_id, status);

-- A construction kit: one loop per role, aligned, balanced and mixed (farm kit). Its folder
-- (kits/<name>/ under the root) holds stems/, midi/, mix.wav, kit.json and kit.png.
CREATE TABLE IF NOT EXISTS kits (
    id TEXT PRIMARY KEY,                -- content address of its members, their transforms and gains
    name TEXT NOT NULL,                 -- folder name: LFK_<bpm>_<key>_<id>
    style TEXT,                         -- the style its loops share, or NULL when they mix styles
    key TEXT NOT NULL,                  -- short key name (the harmonic stems' key after transforms)
    bpm REAL NOT NULL,
    meter TEXT NOT NULL,
    bars INTEGER NOT NULL,
    progression TEXT NOT NULL,          -- chord symbols bar by bar, space separated
    roles TEXT NOT NULL,                -- JSON list, in the kit's order
    seed INTEGER,                       -- farm kit --seed
    anchor_id TEXT NOT NULL REFERENCES loops(id), -- the loop the others were matched to
    path TEXT NOT NULL UNIQUE,          -- the kit folder, relative to the root
    lufs REAL,                          -- the mix's integrated loudness
    true_peak_db REAL,                  -- the mix's true peak, dBTP
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected')),
    reject_reason TEXT,
    created_at TEXT NOT NULL
);

-- The stems of a kit: the loop each plays (a permutation made for the kit included).
CREATE TABLE IF NOT EXISTS kit_members (
    kit_id TEXT NOT NULL REFERENCES kits(id),
    role TEXT NOT NULL,                 -- drums, bass, chords, arp, melody
    loop_id TEXT NOT NULL REFERENCES loops(id),   -- the stem's loop, at the kit's key and tempo
    source_id TEXT NOT NULL REFERENCES loops(id), -- the loop matched (its parent when transformed)
    transform TEXT,                     -- JSON {"operation", "params"} or NULL
    gain_db REAL NOT NULL,              -- applied to the loop in the stem (loudness balance)
    stem TEXT NOT NULL,                 -- stems/<role>.wav in the kit folder
    midi TEXT,                          -- midi/<role>.mid in the kit folder
    PRIMARY KEY (kit_id, role)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kit_members_loop ON kit_members(loop_id);

-- Every human decision on a kit, in order.
CREATE TABLE IF NOT EXISTS kit_reviews (
    id INTEGER PRIMARY KEY,
    kit_id TEXT NOT NULL REFERENCES kits(id),
    status TEXT NOT NULL CHECK (status IN ('approved', 'rejected')),
    previous_status TEXT NOT NULL,
    reason TEXT,
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL
);

-- Every human decision, in order.
CREATE TABLE IF NOT EXISTS reviews (
    id INTEGER PRIMARY KEY,
    loop_id TEXT NOT NULL REFERENCES loops(id),
    status TEXT NOT NULL CHECK (status IN ('approved', 'rejected')),
    previous_status TEXT NOT NULL,
    reason TEXT,
    reviewer TEXT NOT NULL,
    reviewed_at TEXT NOT NULL,
    previous_reason TEXT,               -- the reject reason before (what an undo restores)
    undone_by TEXT,                     -- set when the decision was taken back (farm undo, u)
    undone_at TEXT
);
CREATE INDEX IF NOT EXISTS reviews_loop ON reviews(loop_id);

-- Full-text search over names and tags (sqlite-utils' FTS5 layout, so table.search() works).
CREATE VIRTUAL TABLE IF NOT EXISTS loops_fts USING fts5(
    name, style, part, role, patch, key, progression, tags,
    content=[loops]
);
CREATE TRIGGER IF NOT EXISTS loops_ai AFTER INSERT ON loops BEGIN
    INSERT INTO loops_fts (rowid, name, style, part, role, patch, key, progression, tags)
    VALUES (new.rowid, new.name, new.style, new.part, new.role, new.patch, new.key,
            new.progression, new.tags);
END;
CREATE TRIGGER IF NOT EXISTS loops_ad AFTER DELETE ON loops BEGIN
    INSERT INTO loops_fts (loops_fts, rowid, name, style, part, role, patch, key, progression, tags)
    VALUES ('delete', old.rowid, old.name, old.style, old.part, old.role, old.patch, old.key,
            old.progression, old.tags);
END;
CREATE TRIGGER IF NOT EXISTS loops_au AFTER UPDATE OF name, style, part, role, patch, key, progression, tags
ON loops BEGIN
    INSERT INTO loops_fts (loops_fts, rowid, name, style, part, role, patch, key, progression, tags)
    VALUES ('delete', old.rowid, old.name, old.style, old.part, old.role, old.patch, old.key,
            old.progression, old.tags);
    INSERT INTO loops_fts (rowid, name, style, part, role, patch, key, progression, tags)
    VALUES (new.rowid, new.name, new.style, new.part, new.role, new.patch, new.key,
            new.progression, new.tags);
END;

-- What a person still has to listen to, oldest first.
CREATE VIEW IF NOT EXISTS pending_review AS
SELECT id, name, style, part, role, patch, key, bpm, meter, bars, progression, lufs, onsets,
       path, parent_id, operation, created_at, batch_id
FROM loops
WHERE status = 'pending'
ORDER BY created_at, rowid;

-- The library a producer may use, with who approved it and when.
CREATE VIEW IF NOT EXISTS approved AS
SELECT l.id, l.name, l.style, l.part, l.role, l.patch, l.key, l.camelot, l.bpm, l.meter, l.bars,
       l.progression, l.lufs, l.path, l.parent_id, l.operation,
       r.reviewer AS approved_by, r.reviewed_at AS approved_at
FROM loops l
LEFT JOIN reviews r ON r.id = (
    SELECT max(id) FROM reviews WHERE loop_id = l.id AND status = 'approved')
WHERE l.status = 'approved';
