"""The reference side: the Oracle-to-Kafka publisher and the reference-row model.

Empty until the publisher lands (its own issue); reference updates are
currently modelled by `operators.records.RefUpdate` and read from the demo
source.
"""
