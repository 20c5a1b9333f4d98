-- Loops a patch role plays (bass, pad, keys, chords, lead, arp, drums), by key then tempo
-- :role = bass
-- :limit = 100
SELECT id, name, role, key, bpm, part, patch, status, path
FROM loops
WHERE role = :role
ORDER BY key, bpm, rowid
LIMIT :limit;
