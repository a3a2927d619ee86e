-- Optional indexes for a busy tracking DB: recommendations, never applied by the service.
--
-- MLflow Trace Insights only reads; it never creates an index. MLflow's own schema has no index
-- that lets the tool queries read TOOL spans without scanning the whole `spans` table (whose
-- rows carry each span's JSON content). An operator who owns the tracking DB may add the index
-- below with a role that can write the schema. It is plain PostgreSQL DDL that MLflow's
-- migrations do not know about: MLflow ignores it, and it does not block `mlflow db upgrade`
-- (drop it first if a future migration rewrites `spans`). Build it CONCURRENTLY on a live DB.
--
-- Measured with bench/ (bench/FINDINGS.md), PostgreSQL 15, 2 cores, 1,000,000 traces,
-- 4.9 M spans (spans heap 4.8 GB), one uvicorn process, 3 requests per case, p50:
--
--   endpoint (window)                      without     with      (the same run, 3 requests each)
--   tools/discovery (7 d)                  4,564 ms    2,824 ms
--   tools/metrics, one tool (7 d)          5,864 ms    3,697 ms
--   tools/metrics, all tools (7 d)         6,045 ms    2,999 ms
--   tools/discovery (30 d)                14,765 ms    9,626 ms
--   tools/metrics, one tool (30 d)         8,465 ms    4,983 ms
--   dimensions/calculate-npmi, tool (7 d)  2,634 ms    1,540 ms
--   dimensions/calculate-npmi, tool (30 d) 9,690 ms    5,101 ms
--
-- Size: 134 MB for 1.5 M TOOL spans; build time 15-20 s. It turns the tool queries' scan of the
-- spans heap into an index-only scan (run VACUUM ANALYZE spans after building it, so the
-- visibility map is set). Endpoints that read every span (dimensions/discovery,
-- correlations) do not benefit; see bench/FINDINGS.md for the query changes they need.

CREATE INDEX CONCURRENTLY IF NOT EXISTS insights_tool_spans_cover
    ON spans (trace_id)
    INCLUDE (experiment_id, type, name, status, duration_ns)
    WHERE type = 'TOOL';

-- To remove it:
-- DROP INDEX CONCURRENTLY IF EXISTS insights_tool_spans_cover;
