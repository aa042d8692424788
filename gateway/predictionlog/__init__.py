"""Prediction logs for retraining: opt-in, sampled, capped Parquet files of answered requests.

``log.PredictionLog`` is the data path (a random draw and a bounded append per request, a
writer thread that flushes Parquet files), ``folder.LogFolder`` the files of each model (rotation
under a size cap, stats, export reads), ``rows`` the table layout, ``store`` the per-model
setting in the gateway database, and ``control.PredictionLogs`` what the admin API calls.
"""
