-- llm-replay analysis views for DuckDB.
--
-- Set the paths, then read this file:
--   SET VARIABLE results_dir = 'sweep-out';      -- a sweep directory, a folder holding results*.parquet,
--                                                --   or one results file (results-....parquet)
--   SET VARIABLE trace_path  = 'trace.parquet';  -- the trace that was replayed
--   SET VARIABLE slo_ttft_ms = 500; SET VARIABLE slo_tpot_ms = 50;
--   .read scripts/analysis.sql                   -- (Python: con.execute(open(...).read()))
--
-- Every view reads the Parquet files directly; nothing is copied.
--
-- Percentiles are quantile_cont: linear interpolation between the closest
-- ranks, the method of llm-replay's summary, sweep table and report, of
-- numpy's default and of pandas' quantile, so every figure here equals
-- theirs (docs/results-format.md, "How figures are computed").

-- All result rows. A sweep's steps are hive partitions (rate=4/, speedup=2/,
-- concurrency=8/), so `rate`, `speedup` or `concurrency` is a column; a
-- plain run has none (union_by_name). A sharded run's shards (shard=K/) are
-- one run: `shard` is a column and `step` is empty.
CREATE OR REPLACE VIEW results AS
SELECT *,
       send_lag_us + ttft_us AS ttft_sched_us,
       send_lag_us + e2e_us  AS e2e_sched_us,
       CASE WHEN coalesce(usage_completion_tokens, output_tokens) > 1
            THEN (e2e_us - ttft_us) / (coalesce(usage_completion_tokens, output_tokens) - 1) END AS tpot_us,
       regexp_extract(filename, '(rate|speedup|concurrency)=([0-9.]+)', 0) AS step
FROM read_parquet(CASE WHEN ends_with(getvariable('results_dir'), '.parquet')
                       THEN getvariable('results_dir')
                       ELSE getvariable('results_dir') || '/**/results*.parquet' END,
                  hive_partitioning = true, union_by_name = true, filename = true);

-- Per step: offered and achieved rate, outcomes, latency percentiles (ms,
-- from the schedule), and goodput with failures in the denominator. An
-- objective on a value a request does not have (the TTFT of an embeddings
-- request, the TPOT of a one-token reply) does not fail it, as in the
-- summary. Throughputs count the successes (and their tokens) completed
-- in the steady window, as long as from the first to the last scheduled
-- send and a median E2E (from the send) later, per second of it (neither
-- the ramp-up nor the drain tail dilutes them); when nothing completed in
-- it, every success per second of the whole run. The columns after
-- goodput_fraction match the sweep table's of the same name.
CREATE OR REPLACE VIEW step_summary AS
WITH steady AS (
    SELECT *,
           outcome = 'ok'
             AND coalesce(ttft_sched_us, 0) <= getvariable('slo_ttft_ms') * 1e3
             AND coalesce(tpot_us, 0) <= getvariable('slo_tpot_ms') * 1e3 AS met,
           coalesce(usage_completion_tokens, output_tokens) AS out_tokens,
           coalesce(usage_prompt_tokens, input_tokens) AS in_tokens
    FROM results
    WHERE phase = 'steady'
), itl_by_step AS (
    SELECT step,
           quantile_cont(itl_us, 0.5) / 1e3 AS itl_p50_ms,
           quantile_cont(itl_us, 0.99) / 1e3 AS itl_p99_ms
    FROM (SELECT step, unnest(itl_us) AS itl_us FROM steady WHERE outcome = 'ok')
    GROUP BY step
), steps AS (
    SELECT step,
           count(*) AS requests,
           count(*) FILTER (WHERE outcome = 'ok') AS ok,
           count(*) FILTER (WHERE outcome <> 'ok') AS errors,
           (count(*) - 1) / nullif(epoch(max(scheduled_at)) - epoch(min(scheduled_at)), 0) AS scheduled_rate,
           (count(sent_at) - 1) / nullif(epoch(max(sent_at)) - epoch(min(sent_at)), 0) AS achieved_rate,
           quantile_cont(ttft_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p50_ms,
           quantile_cont(ttft_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p99_ms,
           quantile_cont(tpot_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS tpot_p50_ms,
           quantile_cont(tpot_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS tpot_p99_ms,
           quantile_cont(e2e_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p99_ms,
           quantile_cont(send_lag_us, 0.99) / 1e3 AS send_lag_p99_ms,
           avg(CASE WHEN met THEN 1.0 ELSE 0.0 END) AS goodput_fraction,
           quantile_cont(ttft_sched_us, 0.9) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p90_ms,
           quantile_cont(tpot_us, 0.9) FILTER (WHERE outcome = 'ok') / 1e3 AS tpot_p90_ms,
           quantile_cont(e2e_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p50_ms,
           quantile_cont(e2e_sched_us, 0.9) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p90_ms,
           -- The steady window, shifted a median E2E (from the send) later.
           epoch_us(min(scheduled_at))
             + coalesce(quantile_cont(e2e_us, 0.5) FILTER (WHERE outcome = 'ok'), 0) AS window_start_us,
           epoch_us(max(scheduled_at))
             + coalesce(quantile_cont(e2e_us, 0.5) FILTER (WHERE outcome = 'ok'), 0) AS window_end_us,
           (epoch_us(max(scheduled_at)) - epoch_us(min(scheduled_at))) / 1e6 AS steady_span_s,
           (greatest(max(epoch_us(completed_at)), max(epoch_us(sent_at))) - epoch_us(min(scheduled_at))) / 1e6 AS duration_s,
           -- Every success, for a run with no steady window.
           count(*) FILTER (WHERE outcome = 'ok') AS all_done,
           sum(out_tokens) FILTER (WHERE outcome = 'ok') AS all_out,
           sum(in_tokens) FILTER (WHERE outcome = 'ok') AS all_in,
           count(*) FILTER (WHERE met) AS all_met
    FROM steady
    GROUP BY step
), in_window AS (
    -- Successes completed inside the steady window.
    SELECT r.step,
           count(*) AS done,
           sum(r.out_tokens) AS out_tokens,
           sum(r.in_tokens) AS in_tokens,
           count(*) FILTER (WHERE r.met) AS met
    FROM steady r JOIN steps s USING (step)
    WHERE r.outcome = 'ok' AND epoch_us(r.completed_at) BETWEEN s.window_start_us AND s.window_end_us
    GROUP BY r.step
), rates AS (
    SELECT s.*, w.done, w.out_tokens, w.in_tokens, w.met,
           s.steady_span_s > 0 AND coalesce(w.done, 0) > 0 AS steady
    FROM steps s LEFT JOIN in_window w USING (step)
)
SELECT step, requests, ok, errors, scheduled_rate, achieved_rate,
       ttft_p50_ms, ttft_p99_ms, tpot_p50_ms, tpot_p99_ms, e2e_p99_ms, send_lag_p99_ms,
       goodput_fraction,
       CASE WHEN steady THEN done / steady_span_s ELSE all_done / nullif(duration_s, 0) END AS request_throughput,
       CASE WHEN steady THEN out_tokens / steady_span_s ELSE all_out / nullif(duration_s, 0) END AS output_token_throughput,
       CASE WHEN steady THEN in_tokens / steady_span_s ELSE all_in / nullif(duration_s, 0) END AS input_token_throughput,
       CASE WHEN steady THEN met / steady_span_s ELSE all_met / nullif(duration_s, 0) END AS goodput_rate,
       CASE WHEN steady THEN steady_span_s ELSE duration_s END AS window_s,
       ttft_p90_ms, tpot_p90_ms, itl_p50_ms, itl_p99_ms, e2e_p50_ms, e2e_p90_ms
FROM rates LEFT JOIN itl_by_step USING (step)
ORDER BY scheduled_rate;

-- Per second of each step: requests scheduled, sent and completed, and TTFT.
CREATE OR REPLACE VIEW timeline AS
WITH t0 AS (SELECT step, min(scheduled_at) AS t0 FROM results GROUP BY step)
SELECT r.step,
       floor(epoch(r.scheduled_at) - epoch(t0.t0))::INTEGER AS second,
       count(*) AS scheduled,
       count(r.sent_at) AS sent,
       count(*) FILTER (WHERE r.outcome <> 'ok') AS errors,
       quantile_cont(r.ttft_sched_us, 0.5) / 1e3 AS ttft_p50_ms,
       quantile_cont(r.ttft_sched_us, 0.99) / 1e3 AS ttft_p99_ms
FROM results r JOIN t0 USING (step)
GROUP BY ALL
ORDER BY r.step, second;

-- Results joined to the trace on request_id: every trace column is there.
CREATE OR REPLACE VIEW results_with_trace AS
SELECT r.*, t.session_id, t.turn_index, t.arrival_offset_us, t.request_kind,
       len(t.prefix_block_ids) AS prefix_blocks
FROM results r
LEFT JOIN read_parquet(getvariable('trace_path')) t USING (request_id);

-- Latency by prompt length bucket (powers of two).
CREATE OR REPLACE VIEW latency_by_input_length AS
SELECT step,
       pow(2, ceil(log2(greatest(input_tokens, 1))))::BIGINT AS input_tokens_up_to,
       count(*) AS requests,
       quantile_cont(ttft_sched_us, 0.5) / 1e3 AS ttft_p50_ms,
       quantile_cont(ttft_sched_us, 0.99) / 1e3 AS ttft_p99_ms,
       quantile_cont(e2e_sched_us, 0.99) / 1e3 AS e2e_p99_ms
FROM results
WHERE outcome = 'ok'
GROUP BY ALL
ORDER BY step, input_tokens_up_to;

-- Latency by turn of the conversation (needs sessions in the trace).
CREATE OR REPLACE VIEW latency_by_turn AS
SELECT step, turn_index, count(*) AS requests,
       quantile_cont(ttft_sched_us, 0.5) / 1e3 AS ttft_p50_ms,
       quantile_cont(ttft_sched_us, 0.99) / 1e3 AS ttft_p99_ms
FROM results_with_trace
WHERE outcome = 'ok'
GROUP BY ALL
ORDER BY step, turn_index;

-- Session replay, by turn index: how later turns fared against first turns.
-- TTFT from the schedule, the share of each prompt that repeated the
-- conversation so far (what a prefix cache can serve), and how far turns
-- left after their recorded time (stretch). Rows replayed on their own have
-- no turn_index and are left out.
CREATE OR REPLACE VIEW session_turns AS
SELECT step,
       turn_index,
       count(*) AS turns,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       quantile_cont(ttft_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p50_ms,
       quantile_cont(ttft_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p99_ms,
       quantile_cont(e2e_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p99_ms,
       avg(history_tokens / nullif(prompt_tokens_sent, 0)) AS history_share,
       quantile_cont(epoch_us(sent_at) - epoch_us(recorded_at), 0.99) / 1e3 AS stretch_p99_ms
FROM results
WHERE turn_index IS NOT NULL
GROUP BY ALL
ORDER BY step, turn_index;

-- TTFT of later turns against the share of their prompt that repeated the
-- conversation so far (what a prefix cache can serve), in quarters: with a
-- working prefix cache, TTFT falls as the share rises.
CREATE OR REPLACE VIEW ttft_by_history_share AS
SELECT step,
       least(floor(history_tokens / nullif(prompt_tokens_sent, 0) * 4), 3)::INTEGER * 25 AS history_share_from_pct,
       count(*) AS turns,
       avg(prompt_tokens_sent) AS prompt_tokens_mean,
       quantile_cont(ttft_us, 0.5) / 1e3 AS ttft_send_p50_ms,
       quantile_cont(ttft_sched_us, 0.5) / 1e3 AS ttft_p50_ms,
       quantile_cont(ttft_sched_us, 0.99) / 1e3 AS ttft_p99_ms
FROM results
WHERE outcome = 'ok' AND turn_index > 0 AND prompt_tokens_sent > 0
GROUP BY ALL
ORDER BY step, history_share_from_pct;

-- A --stages run, per stage: rows, outcomes, the rate sent (over the span
-- the stage's rows were scheduled in) and latency from the schedule. The
-- stages' loads and lengths are in the results metadata (llm_replay.config).
CREATE OR REPLACE VIEW stages AS
SELECT step,
       stage,
       count(*) AS requests,
       count(sent_at) AS sent,
       count(*) FILTER (WHERE outcome = 'ok') AS ok,
       min(scheduled_at) AS first_scheduled_at,
       (count(sent_at) - 1) / nullif(epoch(max(sent_at)) - epoch(min(sent_at)), 0) AS achieved_rate,
       quantile_cont(ttft_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p50_ms,
       quantile_cont(ttft_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p99_ms,
       quantile_cont(e2e_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p99_ms,
       quantile_cont(send_lag_us, 0.99) / 1e3 AS send_lag_p99_ms
FROM results
WHERE stage IS NOT NULL
GROUP BY ALL
ORDER BY step, stage;

-- Figures by class, as the summary's breakdown: one row per step, class
-- column (api, model, request_kind, user_id) and value. A column is listed
-- when it holds more than one value in a step; rows without a value count
-- as '(null)'. Goodput as in step_summary (failures counted); input_tokens
-- sums the ok rows' prompt tokens (the server's count when it gave one).
CREATE OR REPLACE VIEW by_class AS
WITH steady AS (SELECT * FROM results WHERE phase = 'steady'),
classed AS (
    SELECT 'api' AS class_column, coalesce(api, '(null)') AS class_value, * FROM steady
    UNION ALL
    SELECT 'model', coalesce(model, '(null)'), * FROM steady
    UNION ALL
    SELECT 'request_kind', coalesce(request_kind, '(null)'), * FROM steady
    UNION ALL
    SELECT 'user_id', coalesce(user_id, '(null)'), * FROM steady
),
grouped AS (
    SELECT step,
           class_column,
           class_value,
           count(*) AS requests,
           count(*) FILTER (WHERE outcome = 'ok') AS ok,
           count(*) FILTER (WHERE outcome <> 'ok') AS errors,
           sum(coalesce(usage_prompt_tokens, input_tokens)) FILTER (WHERE outcome = 'ok') AS input_tokens,
           quantile_cont(ttft_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p50_ms,
           quantile_cont(ttft_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS ttft_p99_ms,
           quantile_cont(tpot_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS tpot_p50_ms,
           quantile_cont(tpot_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS tpot_p99_ms,
           quantile_cont(e2e_sched_us, 0.5) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p50_ms,
           quantile_cont(e2e_sched_us, 0.99) FILTER (WHERE outcome = 'ok') / 1e3 AS e2e_p99_ms,
           avg(CASE WHEN outcome = 'ok'
                     AND coalesce(ttft_sched_us, 0) <= getvariable('slo_ttft_ms') * 1e3
                     AND coalesce(tpot_us, 0) <= getvariable('slo_tpot_ms') * 1e3
                    THEN 1.0 ELSE 0.0 END) AS goodput_fraction
    FROM classed
    GROUP BY ALL
)
SELECT * EXCLUDE (values_in_column)
FROM (SELECT *, count(*) OVER (PARTITION BY step, class_column) AS values_in_column FROM grouped)
WHERE values_in_column > 1
ORDER BY step, class_column, class_value;
