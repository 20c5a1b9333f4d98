-- The latest approvals, newest first, with who approved each loop and when
-- :limit = 50
-- (CROSS JOIN keeps reviews as the outer loop: walk them newest first and stop at :limit.)
SELECT l.id, l.name, l.key, l.bpm, l.part, l.patch, r.reviewer AS approved_by, r.reviewed_at AS approved_at, l.path
FROM reviews r
CROSS JOIN loops l ON l.id = r.loop_id
WHERE r.status = 'approved' AND l.status = 'approved'
  AND r.id = (SELECT max(id) FROM reviews WHERE loop_id = l.id)
ORDER BY r.id DESC
LIMIT :limit;
