"""The routing policy: its schema, loading with file positions, and the live store."""
