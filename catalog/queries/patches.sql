-- How each patch fares: loops rendered, approved, rejected and still pending
SELECT patch,
       count(*) AS loops,
       sum(status = 'approved') AS approved,
       sum(status = 'rejected') AS rejected,
       sum(status = 'pending') AS pending,
       round(avg(lufs), 1) AS mean_lufs
FROM loops
GROUP BY patch
ORDER BY patch;
