-- The ledger on PostgreSQL: the same tables as the SQLite ledger (gateway/ledger/rows.py),
-- in a schema of their own. Applied by `gateway db upgrade` (yoyo-migrations); never edit an
-- applied migration: add the next one.

CREATE SCHEMA IF NOT EXISTS ledger;

-- One row per request, in monthly partitions by UTC day (the writer creates each month's
-- partition before its first record). A record is immutable and keeps its time, so the primary
-- key (day, request_id) makes a replayed record a no-op.
CREATE TABLE ledger.records (
    request_id TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL,
    day INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    tags TEXT NOT NULL,
    route TEXT,
    model TEXT,
    cache TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cost_nusd BIGINT,
    baseline_nusd BIGINT,
    latency_ms DOUBLE PRECISION NOT NULL,
    ttft_ms DOUBLE PRECISION,
    difficulty DOUBLE PRECISION,
    status INTEGER NOT NULL,
    stream INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    extra TEXT,
    PRIMARY KEY (day, request_id)
) PARTITION BY RANGE (day);
CREATE INDEX records_time ON ledger.records (time, request_id);

-- The sums of each (day, tenant, model, route, cache), and of each tag of it
-- (gateway/ledger/sums.py), updated in the transaction that stores the records: a report over
-- whole days reads only these.
CREATE TABLE ledger.rollup (
    day INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    cache TEXT NOT NULL,
    n BIGINT NOT NULL,
    input BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    output BIGINT NOT NULL,
    ptok BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    nocost BIGINT NOT NULL,
    base BIGINT NOT NULL,
    nobase BIGINT NOT NULL,
    "both" BIGINT NOT NULL,
    save BIGINT NOT NULL,
    PRIMARY KEY (day, tenant, model, route, cache)
);
CREATE INDEX rollup_tenant ON ledger.rollup (tenant, day);
CREATE TABLE ledger.rollup_tag (
    day INTEGER NOT NULL,
    tag TEXT NOT NULL,
    tenant TEXT NOT NULL,
    model TEXT NOT NULL,
    route TEXT NOT NULL,
    cache TEXT NOT NULL,
    n BIGINT NOT NULL,
    input BIGINT NOT NULL,
    cached BIGINT NOT NULL,
    output BIGINT NOT NULL,
    ptok BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    nocost BIGINT NOT NULL,
    base BIGINT NOT NULL,
    nobase BIGINT NOT NULL,
    "both" BIGINT NOT NULL,
    save BIGINT NOT NULL,
    PRIMARY KEY (day, tag, tenant, model, route, cache)
);
