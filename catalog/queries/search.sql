-- Full-text search over loop names and tags, newest first (FTS5 syntax: rhodes, "warm rhodes", pad OR keys, Dm7)
-- :q = rhodes
-- :limit = 100
SELECT l.id, l.name, l.key, l.bpm, l.part, l.patch, l.progression, l.status, l.path
FROM loops_fts
JOIN loops l ON l.rowid = loops_fts.rowid
WHERE loops_fts MATCH :q
ORDER BY loops_fts.rowid DESC
LIMIT :limit;
