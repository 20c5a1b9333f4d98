-- Loops whose tempo lies between two BPM values (inclusive), slowest first
-- :min_bpm = 85
-- :max_bpm = 95
-- :limit = 100
SELECT id, name, bpm, key, part, role, patch, status, path
FROM loops
WHERE bpm BETWEEN :min_bpm AND :max_bpm
ORDER BY bpm, rowid
LIMIT :limit;
