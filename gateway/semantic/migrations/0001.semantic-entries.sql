-- The semantic cache's shared index (cache.semantic.index: pgvector, gateway/semantic/pgvector.py):
-- every replica searches this table instead of holding the entries itself. It needs the pgvector
-- extension on the server (CREATE EXTENSION needs a superuser: pgvector is not a trusted
-- extension), so `gateway db upgrade` applies the index's migrations only where the server has
-- pgvector; the ledger's never wait for them. Never edit an applied migration, add the next one.

CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS semantic;

-- One row per cached answer. A lookup searches one (tenant, fingerprint) partition: created is
-- Unix time, as the ledger's, and the TTL is applied to it, text is the opening of the question
-- that the meaning guard reads, and embedding is the request's unit vector (all-MiniLM-L6-v2).
CREATE TABLE semantic.entries (
    id BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL,
    text TEXT NOT NULL,
    payload BYTEA NOT NULL,
    embedding vector(384) NOT NULL
);
-- A small partition is searched exactly through this index, a large one through the HNSW one.
CREATE INDEX entries_partition ON semantic.entries (tenant, fingerprint);
CREATE INDEX entries_created ON semantic.entries (created);
-- Inner product on unit vectors (cosine), the graph sizes of the local FAISS index.
CREATE INDEX entries_embedding ON semantic.entries
    USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 40);
