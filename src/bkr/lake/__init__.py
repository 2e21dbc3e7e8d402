"""Months whose fills stay in the exchange's data lake: their aggregates computed by Apache Spark.

The largest exchanges keep their fills as Parquet files in a data lake and compute over them
with Spark. For such a month bkr never holds the fills: `bkr lake aggregate` writes a snapshot of
what the rules need (`snapshot`), runs one Spark job over the month's files (`job`) that applies
bkr's rules to the records it can decide exactly as a set, and loads what it produced into the
store in one transaction (`load`), where the close, statements and ledger take it as they take
the aggregates of fills bkr stored itself. `reconcile` recounts the month's fills in the lake.

The package imports PySpark (the optional extra `lake`); it stands above `bkr.program` and only
the command line imports it, so that the HTTP API, the venue and everything below run without it.
"""
