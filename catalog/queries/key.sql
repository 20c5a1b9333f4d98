-- Loops in one key (e.g. Am, C, Ddor), slowest first; status pending, approved, rejected or % for all
-- :key = Am
-- :status = %
-- :limit = 100
SELECT id, name, key, bpm, part, role, patch, status, path
FROM loops
WHERE key = :key AND status LIKE :status
ORDER BY bpm, rowid
LIMIT :limit;
