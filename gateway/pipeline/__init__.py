"""The request pipeline: one module per stage, in the order a request meets them.

    authenticate    an API key to its tenant (the front door calls it first)
    normalize       the client's JSON to a `ChatRequest`, checked
    exact_cache     the stored answer to an identical request
    embed           the request's text and embedding, once, when a later stage needs it
    semantic_cache  an answer to a question that means the same, in the same context
    classify        difficulty and category, when the policy's rules test them
    budget          a tenant past its budget is downgraded or refused
    route           the model: named by the client, or the first rule that matches
    call            the provider, with retries and fallbacks, streamed or not
    ledger          what the request cost, written once, for answers and failures alike
                    (after the response: the caches keep a complete answer)

`run.run` calls them in that order and reads top to bottom. Each stage takes the request's
`turn.Turn` and adds what it learns to it. Helpers: `reply` (the one parse of a model's answer),
`cached_answer` (the canonical form both caches store and replay), `cost` (prices to money),
`services` (the long-lived resources a request uses). The pipeline never knows which front
door (:mod:`gateway.api`) a request came through.
"""
