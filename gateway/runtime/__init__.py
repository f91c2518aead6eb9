"""What a loaded policy becomes while serving: providers with warm pools, key rings, sticky
sessions and token counters (`store.Runtime`), swapped atomically on reload by
`store.PolicyStore`. The policy itself (:mod:`gateway.policy`) is pure data: schema, load,
validate."""
