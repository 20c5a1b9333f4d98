-- Loops that mix with a Camelot key code (same code, one step round the wheel, or relative major/minor) near a tempo
-- :camelot = 8A
-- :bpm = 120
-- :bpm_tolerance = 5
-- :limit = 100
WITH k AS (
    SELECT CAST(substr(:camelot, 1, length(:camelot) - 1) AS INTEGER) AS n,
           upper(substr(:camelot, -1)) AS letter
)
SELECT l.id, l.name, l.camelot, l.key, l.bpm, l.part, l.role, l.patch, l.status, l.path
FROM loops l, k
WHERE l.camelot IN (
        k.n || k.letter,
        (k.n % 12 + 1) || k.letter,
        ((k.n + 10) % 12 + 1) || k.letter,
        k.n || CASE k.letter WHEN 'A' THEN 'B' ELSE 'A' END)
  AND l.bpm BETWEEN :bpm - :bpm_tolerance AND :bpm + :bpm_tolerance
ORDER BY abs(l.bpm - :bpm), l.id
LIMIT :limit;
