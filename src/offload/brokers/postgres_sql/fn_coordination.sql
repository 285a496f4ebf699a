-- Coordination: token buckets (named leases, kv and workers are single statements in
-- queries.sql).
--
-- Tables: {schema}.buckets

-- {schema}.take_tokens(bucket, rate, burst, n, now) -> seconds to wait (0: taken)
--   A bucket refills at `rate` per second up to `burst` and starts full. Takes n tokens
--   if there are enough; otherwise takes nothing and says when there will be. The row
--   lock makes concurrent takers of one bucket take turns; `at` never moves back, so a
--   call stamped before the last refill cannot refill the same interval twice.
CREATE OR REPLACE FUNCTION {schema}.take_tokens(
    p_bucket text, p_rate float8, p_burst float8, p_n float8, p_now float8)
RETURNS float8
LANGUAGE plpgsql AS $$
DECLARE
    v_tokens float8;
    v_at float8;
    v_taken boolean;
BEGIN
    INSERT INTO {schema}.buckets (name, tokens, at, rate, burst)
    VALUES (p_bucket, p_burst, p_now, p_rate, p_burst)
    ON CONFLICT DO NOTHING;
    SELECT b.tokens, b.at INTO v_tokens, v_at
      FROM {schema}.buckets b WHERE b.name = p_bucket FOR UPDATE;
    v_tokens := least(p_burst, v_tokens + greatest(0, p_now - v_at) * p_rate);
    v_taken := v_tokens >= p_n;
    UPDATE {schema}.buckets b
       SET tokens = v_tokens - CASE WHEN v_taken THEN p_n ELSE 0 END,
           at = greatest(v_at, p_now), rate = p_rate, burst = p_burst
     WHERE b.name = p_bucket;
    RETURN CASE WHEN v_taken THEN 0 ELSE (p_n - v_tokens) / p_rate END;
END $$;
