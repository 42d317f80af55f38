"""Data in: the synthetic E2I generator and loading of users' own CSV/Parquet files."""
