"""Gmail analytics jobs: batched fetches, caching, incremental sync, progress, token refresh."""
