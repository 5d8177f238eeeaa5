"""The reference publisher: the Oracle (or SQLite) reference table into the compacted topic.

The topic is where the dataflow rebuilds its rows on every start, so what is
published there is the reference data as the dataflow will see it: key =
lookup id, value = the published columns and a version, tombstone = gone.
`publish` is the command; `load` does one load, reading through `query`,
`source` and `reader`, and keeps its place in `watermark`.
"""
