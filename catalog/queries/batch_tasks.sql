-- Progress of a batch: its tasks by stage and status, with attempts and time spent (the latest batch by default)
-- :batch_id = latest
SELECT t.batch_id, t.stage, t.status, count(*) AS tasks, sum(t.attempts) AS attempts,
       round(sum(t.seconds), 1) AS seconds
FROM tasks t
WHERE t.batch_id = CASE :batch_id
        WHEN 'latest' THEN (SELECT id FROM batches ORDER BY started_at DESC, id DESC LIMIT 1)
        ELSE :batch_id END
GROUP BY t.batch_id, t.stage, t.status
ORDER BY t.stage, t.status;
