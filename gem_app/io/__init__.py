"""Reading data in: corpus files (JSONL, CSV, Parquet), embedding matrices and the offline
sentence encoder; load and validate, rejected rows kept with their reasons."""
