-- Bulk jobs are system orchestrations now (`switchyard.Bulk`, engine/src/system.rs): durable by the
-- engine, progress in their custom status. The old runner's tables go. Jobs it left unfinished
-- cannot be carried on by anything: they are kept in `retired_bulk_jobs`, which the server reports
-- at start-up (the job, who started it, how far it got) so that nobody loses track of them.
CREATE TABLE retired_bulk_jobs AS
SELECT j.id, j.action, j.reason, j.actor, j.target, j.total, j.created_ms,
       (SELECT COUNT(*) FROM bulk_job_items i WHERE i.job_id = j.id AND i.outcome IS NOT NULL) AS done
FROM bulk_jobs j
WHERE j.finished_ms IS NULL;
DROP TABLE bulk_job_items;
DROP TABLE bulk_jobs;
